//! The dependency graph: lock classes and "held -> acquired" edges.
//!
//! Everything lives in fixed-capacity tables (zero-initialised, so they sit
//! in .bss) behind one raw spin lock (lockdep's `GRAPH`, a
//! [`RawSpinLock`](crate::sync::RawSpinLock)) taken with interrupts masked: recording
//! a dependency never allocates and never takes a lock lockdep would track.
//! Links between table entries are stored as `index + 1`, 0 meaning none.

use super::LockClassKey;
use core::fmt;
use core::panic::Location;

/// Lock keys (one per [`lock_class!`](crate::lock_class) site).
pub const MAX_LOCKDEP_KEYS: usize = 512;
/// Classes: a key together with a nesting subclass (Linux's `lock_class`).
pub const MAX_LOCKDEP_CLASSES: usize = 512;
/// Dependency edges.
pub const MAX_LOCKDEP_EDGES: usize = 4096;
/// Nesting subclasses per key (Linux's `MAX_LOCKDEP_SUBCLASSES`).
pub const MAX_LOCKDEP_SUBCLASSES: usize = 8;
/// Distinct problems remembered so that each is reported once.
pub const MAX_REPORTED: usize = 256;
/// Links of a circular chain copied into a report.
pub const MAX_CHAIN: usize = 16;
/// Bytes of a task name kept per edge (Linux's `TASK_COMM_LEN`).
const TASK_COMM_LEN: usize = 16;

/// Index into the class table.
pub(super) type ClassId = u16;

/// Why the graph cannot record something; either turns lockdep off.
#[derive(Clone, Copy, Debug)]
pub(super) enum GraphError {
    /// A fixed table is full: its name and capacity.
    Full(&'static str, usize),
    /// A nesting subclass at or above [`MAX_LOCKDEP_SUBCLASSES`].
    BadSubclass(&'static LockClassKey, u8),
}

/// What kind of problem a dedupe entry stands for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Problem {
    Circular = 1,
    Recursive = 2,
    BadUnlock = 3,
    HeldAtExit = 4,
}

/// A task name copied into the graph (a task may be gone when it is printed).
#[derive(Clone, Copy)]
pub(super) struct TaskName {
    bytes: [u8; TASK_COMM_LEN],
    len: u8,
}

impl TaskName {
    const EMPTY: Self = Self {
        bytes: [0; TASK_COMM_LEN],
        len: 0,
    };

    pub(super) fn new(name: &str) -> Self {
        let mut len = name.len().min(TASK_COMM_LEN);
        while !name.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0; TASK_COMM_LEN];
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        Self {
            bytes,
            len: len as u8,
        }
    }

    pub(super) fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("?")
    }
}

/// A class as reports print it: `name`, or `name/N` for subclass N.
#[derive(Clone, Copy)]
pub(super) struct ClassRef {
    pub key: &'static LockClassKey,
    pub subclass: u8,
}

impl fmt::Display for ClassRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.subclass == 0 {
            f.write_str(self.key.name())
        } else {
            write!(f, "{}/{}", self.key.name(), self.subclass)
        }
    }
}

/// One dependency of a reported chain, with where and by whom it was seen.
#[derive(Clone, Copy)]
pub(super) struct ChainLink {
    pub from: ClassRef,
    pub to: ClassRef,
    /// Where `from` was taken when the dependency was first recorded.
    pub from_loc: Option<&'static Location<'static>>,
    /// Where `to` was taken then.
    pub to_loc: Option<&'static Location<'static>>,
    pub task: TaskName,
}

/// Outcome of recording `prev -> next`.
pub(super) enum Dependency {
    /// Already known (validated when it was first seen).
    Known,
    /// New and safe; now recorded.
    Added,
    /// New, and `next ->* prev` exists: a cycle. Not recorded; the path is
    /// left in the search scratch for [`Graph::cycle_chain`].
    Cycle,
}

#[derive(Clone, Copy)]
struct KeySlot {
    key: Option<&'static LockClassKey>,
    /// Class per subclass, as `ClassId + 1`.
    classes: [u16; MAX_LOCKDEP_SUBCLASSES],
}

#[derive(Clone, Copy)]
struct ClassSlot {
    key: Option<&'static LockClassKey>,
    subclass: u8,
    /// First outgoing edge, as `index + 1`.
    first_edge: u16,
}

#[derive(Clone, Copy)]
struct Edge {
    from: ClassId,
    to: ClassId,
    /// Next edge out of `from`, as `index + 1`.
    next: u16,
    from_loc: Option<&'static Location<'static>>,
    to_loc: Option<&'static Location<'static>>,
    task: TaskName,
}

#[derive(Clone, Copy)]
struct Reported {
    problem: u8,
    a: ClassId,
    b: ClassId,
}

/// Stands in for a key missing from a class slot (never expected).
static UNKNOWN_KEY: LockClassKey = LockClassKey::new("<unknown>");

pub(super) struct Graph {
    keys: [KeySlot; MAX_LOCKDEP_KEYS],
    nr_keys: usize,
    classes: [ClassSlot; MAX_LOCKDEP_CLASSES],
    nr_classes: usize,
    edges: [Edge; MAX_LOCKDEP_EDGES],
    nr_edges: usize,
    reported: [Reported; MAX_REPORTED],
    nr_reported: usize,
    /// Breadth-first search scratch: visited bitmap, queue, and the edge
    /// (`index + 1`) through which each class was first reached.
    visited: [u64; MAX_LOCKDEP_CLASSES / 64],
    queue: [ClassId; MAX_LOCKDEP_CLASSES],
    parent: [u16; MAX_LOCKDEP_CLASSES],
}

impl Graph {
    pub(super) const fn new() -> Self {
        const KEY: KeySlot = KeySlot {
            key: None,
            classes: [0; MAX_LOCKDEP_SUBCLASSES],
        };
        const CLASS: ClassSlot = ClassSlot {
            key: None,
            subclass: 0,
            first_edge: 0,
        };
        const EDGE: Edge = Edge {
            from: 0,
            to: 0,
            next: 0,
            from_loc: None,
            to_loc: None,
            task: TaskName::EMPTY,
        };
        const REPORTED: Reported = Reported {
            problem: 0,
            a: 0,
            b: 0,
        };
        Self {
            keys: [KEY; MAX_LOCKDEP_KEYS],
            nr_keys: 0,
            classes: [CLASS; MAX_LOCKDEP_CLASSES],
            nr_classes: 0,
            edges: [EDGE; MAX_LOCKDEP_EDGES],
            nr_edges: 0,
            reported: [REPORTED; MAX_REPORTED],
            nr_reported: 0,
            visited: [0; MAX_LOCKDEP_CLASSES / 64],
            queue: [0; MAX_LOCKDEP_CLASSES],
            parent: [0; MAX_LOCKDEP_CLASSES],
        }
    }

    /// The key's slot, registering the key (assigning its id) on first use.
    fn key_slot(&mut self, key: &'static LockClassKey) -> Result<usize, GraphError> {
        let id = key.id() as usize;
        if id != 0
            && let Some(k) = self.keys[id - 1].key
            && core::ptr::eq(k, key)
        {
            return Ok(id - 1);
        }
        if self.nr_keys == MAX_LOCKDEP_KEYS {
            return Err(GraphError::Full("lock keys", MAX_LOCKDEP_KEYS));
        }
        let slot = self.nr_keys;
        self.nr_keys += 1;
        self.keys[slot].key = Some(key);
        key.id
            .store(slot as u32 + 1, core::sync::atomic::Ordering::Relaxed);
        Ok(slot)
    }

    /// The class of (`key`, `subclass`), registered on first use.
    pub(super) fn class_of(
        &mut self,
        key: &'static LockClassKey,
        subclass: u8,
    ) -> Result<ClassId, GraphError> {
        if subclass as usize >= MAX_LOCKDEP_SUBCLASSES {
            return Err(GraphError::BadSubclass(key, subclass));
        }
        let k = self.key_slot(key)?;
        let c = self.keys[k].classes[subclass as usize];
        if c != 0 {
            key.classes[subclass as usize].store(c, core::sync::atomic::Ordering::Release);
            return Ok(c - 1);
        }
        if self.nr_classes == MAX_LOCKDEP_CLASSES {
            return Err(GraphError::Full("lock classes", MAX_LOCKDEP_CLASSES));
        }
        let id = self.nr_classes;
        self.nr_classes += 1;
        self.classes[id] = ClassSlot {
            key: Some(key),
            subclass,
            first_edge: 0,
        };
        self.keys[k].classes[subclass as usize] = id as u16 + 1;
        key.classes[subclass as usize].store(id as u16 + 1, core::sync::atomic::Ordering::Release);
        Ok(id as ClassId)
    }

    fn class_ref(&self, c: ClassId) -> ClassRef {
        let slot = &self.classes[c as usize];
        ClassRef {
            key: slot.key.unwrap_or(&UNKNOWN_KEY),
            subclass: slot.subclass,
        }
    }

    /// Outgoing edges of `c`, as edge indices.
    fn edges_from(&self, c: ClassId) -> impl Iterator<Item = usize> + '_ {
        let mut link = self.classes[c as usize].first_edge;
        core::iter::from_fn(move || {
            let e = link.checked_sub(1)? as usize;
            link = self.edges[e].next;
            Some(e)
        })
    }

    fn has_edge(&self, from: ClassId, to: ClassId) -> bool {
        self.edges_from(from).any(|e| self.edges[e].to == to)
    }

    /// Records `prev -> next` unless it is known or would close a cycle.
    pub(super) fn add_dependency(
        &mut self,
        prev: ClassId,
        next: ClassId,
        prev_loc: &'static Location<'static>,
        next_loc: &'static Location<'static>,
        task: TaskName,
    ) -> Result<Dependency, GraphError> {
        if self.has_edge(prev, next) {
            return Ok(Dependency::Known);
        }
        if self.search(next, prev) {
            return Ok(Dependency::Cycle);
        }
        if self.nr_edges == MAX_LOCKDEP_EDGES {
            return Err(GraphError::Full("dependency edges", MAX_LOCKDEP_EDGES));
        }
        let e = self.nr_edges;
        self.nr_edges += 1;
        self.edges[e] = Edge {
            from: prev,
            to: next,
            next: self.classes[prev as usize].first_edge,
            from_loc: Some(prev_loc),
            to_loc: Some(next_loc),
            task,
        };
        self.classes[prev as usize].first_edge = e as u16 + 1;
        Ok(Dependency::Added)
    }

    /// Breadth-first search for a path `from ->* to`; on success `parent`
    /// holds it (walk back from `to`).
    fn search(&mut self, from: ClassId, to: ClassId) -> bool {
        self.visited = [0; MAX_LOCKDEP_CLASSES / 64];
        let mark = |v: &mut [u64], c: ClassId| {
            let (w, b) = (c as usize / 64, c as usize % 64);
            let seen = v[w] & (1 << b) != 0;
            v[w] |= 1 << b;
            seen
        };
        mark(&mut self.visited, from);
        self.queue[0] = from;
        let (mut head, mut tail) = (0, 1);
        while head < tail {
            let c = self.queue[head];
            head += 1;
            let mut link = self.classes[c as usize].first_edge;
            while let Some(e) = link.checked_sub(1) {
                let edge = self.edges[e as usize];
                link = edge.next;
                if mark(&mut self.visited, edge.to) {
                    continue;
                }
                self.parent[edge.to as usize] = e + 1;
                if edge.to == to {
                    return true;
                }
                // Each class is queued at most once, so the queue never overflows.
                self.queue[tail] = edge.to;
                tail += 1;
            }
        }
        false
    }

    /// After [`Dependency::Cycle`] for `prev -> next`: the existing path
    /// `next ->* prev`, nearest `prev` first. Returns its full length; at
    /// most [`MAX_CHAIN`] links are copied into `out`.
    pub(super) fn cycle_chain(
        &self,
        next: ClassId,
        prev: ClassId,
        out: &mut [Option<ChainLink>; MAX_CHAIN],
    ) -> usize {
        let mut len = 0;
        let mut c = prev;
        while c != next && len < MAX_LOCKDEP_CLASSES {
            let Some(e) = self.parent[c as usize].checked_sub(1) else {
                break;
            };
            let edge = &self.edges[e as usize];
            if len < MAX_CHAIN {
                out[len] = Some(ChainLink {
                    from: self.class_ref(edge.from),
                    to: self.class_ref(edge.to),
                    from_loc: edge.from_loc,
                    to_loc: edge.to_loc,
                    task: edge.task,
                });
            }
            len += 1;
            c = edge.from;
        }
        len
    }

    /// Whether this problem is new; remembers it so it is reported once.
    pub(super) fn first_report(
        &mut self,
        problem: Problem,
        a: ClassId,
        b: ClassId,
    ) -> Result<bool, GraphError> {
        let entry = Reported {
            problem: problem as u8,
            a,
            b,
        };
        let seen = self.reported[..self.nr_reported]
            .iter()
            .any(|r| r.problem == entry.problem && r.a == a && r.b == b);
        if seen {
            return Ok(false);
        }
        if self.nr_reported == MAX_REPORTED {
            return Err(GraphError::Full("reported problems", MAX_REPORTED));
        }
        self.reported[self.nr_reported] = entry;
        self.nr_reported += 1;
        Ok(true)
    }

    /// Forgets every dependency and reported problem; keeps the classes.
    pub(super) fn reset(&mut self) {
        self.nr_edges = 0;
        for c in &mut self.classes[..self.nr_classes] {
            c.first_edge = 0;
        }
        self.nr_reported = 0;
    }

    /// Whether some class of key `from` directly depends on one of key `to`.
    pub(super) fn depends(&self, from: &LockClassKey, to: &LockClassKey) -> bool {
        let id = from.id() as usize;
        if id == 0 || id > self.nr_keys {
            return false;
        }
        self.keys[id - 1]
            .classes
            .iter()
            .filter_map(|c| c.checked_sub(1))
            .flat_map(|c| self.edges_from(c))
            .any(|e| {
                self.classes[self.edges[e].to as usize]
                    .key
                    .is_some_and(|k| core::ptr::eq(k, to))
            })
    }

    pub(super) fn nr_edges(&self) -> usize {
        self.nr_edges
    }

    pub(super) fn nr_classes(&self) -> usize {
        self.nr_classes
    }
}
