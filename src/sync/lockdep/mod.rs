//! Lockdep: the lock validator. It predicts deadlocks from the order in
//! which locks are taken, even when the run at hand never deadlocks.
//!
//! Lock types call [`lock_acquire`] before they try to take a lock (so a
//! would-be deadlock is reported before it hangs; trylocks call it after
//! they succeed) and [`lock_release`] when they let go. Every lock belongs
//! to a class named by a static [`LockClassKey`]; all locks initialised from
//! one place share a class, and lockdep reasons about classes, not instances.
//!
//! As in Linux: each task keeps a stack of held locks; a blocking acquisition
//! records "held -> new" edges between classes and reports a cycle in that
//! graph ("possible circular locking dependency") or a class taken twice
//! ("possible recursive locking"); trylocks are pushed but add no edges and
//! are not checked. Releases of locks not held, and tasks exiting with locks
//! held, are reported too.
//!
//! As in Linux, validated lock chains are cached by their chain key (a hash
//! of the held stack plus the new lock, see `chains`): an acquisition whose
//! chain was validated before costs a hash and a lookup, without the graph
//! lock. [`stats`] counts validations and cache hits.
//!
//! SMP: the dependency graph is one structure for every CPU, protected by
//! its own raw spinlock (`GRAPH`, not tracked by lockdep itself); each
//! task's held-lock stack is the task's own (see `held`); reports name the
//! CPU they were found on.
//!
//! Deviations from Linux, for a kernel whose tests provoke many reports in
//! one boot: each distinct problem is reported once and validation goes on
//! (Linux turns itself off after the first report); [`reset_graph`] forgets
//! the dependencies between test scenarios. There is no IRQ-safety (usage
//! state) tracking and no separate IRQ context, and the held stack is not
//! re-validated when a lock is released out of order.

mod chains;
mod graph;
mod held;
mod report;

pub use chains::CHAIN_HASH_SIZE;
pub use graph::{
    MAX_CHAIN, MAX_LOCKDEP_CLASSES, MAX_LOCKDEP_EDGES, MAX_LOCKDEP_KEYS, MAX_LOCKDEP_SUBCLASSES,
};
pub use held::{HeldLockInfo, MAX_LOCK_DEPTH, TaskLockState};
pub use report::{
    LockdepReport, ReportKind, report_count, reports, reports_since, try_reports_since,
};

use crate::platform::IrqGuard;
use crate::sync::raw::RawSpinLock;
use core::panic::Location;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};
use graph::{ChainLink, ClassId, Dependency, Graph, GraphError, Problem, TaskName};
use held::{Busy, HeldLock, chain_elem, iterate_chain_key, with_current};
use report::{Circular, Pending};

/// Whether lockdep runs, and what a report does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockdepMode {
    /// Validate and print reports (the default).
    On,
    /// No validation at all.
    Off,
    /// Validate; a report also fails the kernel (a test failure).
    Fatal,
}

static MODE: AtomicU8 = AtomicU8::new(LockdepMode::On as u8);

/// Changes the mode. Switching while locks are held confuses the held
/// stacks (a lock taken while off and released while on is a bad unlock).
pub fn set_mode(m: LockdepMode) {
    MODE.store(m as u8, Ordering::Relaxed);
    if m != LockdepMode::Off {
        // The slab fast path skips lockdep's annotations: off it goes (the
        // slab's slow path turns it back on once lockdep is off again).
        crate::platform::SLAB_ALLOC_FAST.store(false, Ordering::SeqCst);
        crate::platform::PAGE_ALLOC_FAST.store(false, Ordering::SeqCst);
    }
}

/// The current mode.
#[inline]
pub fn mode() -> LockdepMode {
    match MODE.load(Ordering::Relaxed) {
        0 => LockdepMode::On,
        1 => LockdepMode::Off,
        _ => LockdepMode::Fatal,
    }
}

/// Cleared for good when a table overflows (Linux's `debug_locks`).
static DEBUG_LOCKS: AtomicBool = AtomicBool::new(true);

/// Whether lockdep is still validating (false once a table overflowed).
pub fn debug_locks() -> bool {
    DEBUG_LOCKS.load(Ordering::Relaxed)
}

/// Stops validation for good: past this point the tables no longer describe
/// what tasks hold, so any further report could be false.
fn debug_locks_off(e: GraphError) {
    if DEBUG_LOCKS.swap(false, Ordering::Relaxed) {
        match e {
            GraphError::Full(what, max) => {
                crate::println!("lockdep: table full, turning off ({what}: {max})")
            }
            GraphError::BadSubclass(key, sub) => crate::println!(
                "lockdep: invalid subclass {sub} for class ({}), turning off (max {})",
                key.name(),
                MAX_LOCKDEP_SUBCLASSES
            ),
        }
    }
}

/// Whether calls must be validated. The off path is one load.
#[inline]
fn active() -> bool {
    MODE.load(Ordering::Relaxed) != LockdepMode::Off as u8 && debug_locks()
}

/// The dependency graph of every task on every CPU, with the reported-problem
/// table; protected by its own raw spinlock (lockdep cannot track the lock
/// it runs under). The chain cache's inserts happen under it too.
static GRAPH: RawSpinLock<Graph> = RawSpinLock::new(Graph::new());

/// Full validations of a blocking acquisition (chain-cache misses).
static VALIDATIONS: AtomicU64 = AtomicU64::new(0);
/// Blocking acquisitions whose chain was found in the cache.
static CHAIN_HITS: AtomicU64 = AtomicU64::new(0);

/// Lockdep's work counters since boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockdepStats {
    /// Blocking acquisitions validated against the graph (cache misses).
    pub validations: u64,
    /// Blocking acquisitions skipped because their chain was cached.
    pub chain_hits: u64,
    /// Validated chains in the cache now.
    pub chains: usize,
}

/// The current task's own counters: `validations` and `chain_hits` of this
/// task alone (exact whatever other CPUs do), `chains` as in [`stats`].
pub fn task_stats() -> LockdepStats {
    let (validations, chain_hits) =
        crate::platform::without_interrupts(|| with_current(|s| (s.validations, s.chain_hits)));
    LockdepStats {
        validations,
        chain_hits,
        chains: chains::nr_chains(),
    }
}

/// The counters of every task (see [`LockdepStats`]).
pub fn stats() -> LockdepStats {
    LockdepStats {
        validations: VALIDATIONS.load(Ordering::Relaxed),
        chain_hits: CHAIN_HITS.load(Ordering::Relaxed),
        chains: chains::nr_chains(),
    }
}

/// A lock class: one per place that initialises locks (Linux's
/// `lock_class_key`). Create them with [`lock_class!`](crate::lock_class).
pub struct LockClassKey {
    name: &'static str,
    id: AtomicU32,
    /// The class of each subclass as `ClassId + 1` (0: not registered),
    /// written under the graph lock: lets the hot path skip it.
    classes: [AtomicU16; MAX_LOCKDEP_SUBCLASSES],
}

impl LockClassKey {
    /// A class named `name` (used in reports).
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            id: AtomicU32::new(0),
            classes: [const { AtomicU16::new(0) }; MAX_LOCKDEP_SUBCLASSES],
        }
    }

    /// The registered class of `subclass`, if any (no lock needed).
    #[inline]
    fn cached_class(&self, subclass: u8) -> Option<ClassId> {
        let c = self.classes.get(subclass as usize)?.load(Ordering::Acquire);
        c.checked_sub(1)
    }

    /// The class's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Class number, assigned on first use (0 = not yet registered).
    pub fn id(&self) -> u32 {
        self.id.load(Ordering::Relaxed)
    }
}

impl core::fmt::Debug for LockClassKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "LockClassKey({:?}, id {})", self.name, self.id())
    }
}

/// A static lock class named `$name`, unique to the call site.
#[macro_export]
macro_rules! lock_class {
    ($name:expr) => {{
        static __KEY: $crate::sync::lockdep::LockClassKey =
            $crate::sync::lockdep::LockClassKey::new($name);
        &__KEY
    }};
}

/// The lockdep view of one lock instance, embedded in every lock.
pub struct LockdepMap {
    key: &'static LockClassKey,
}

impl LockdepMap {
    /// A map tying a lock instance to class `key`.
    pub const fn new(key: &'static LockClassKey) -> Self {
        Self { key }
    }

    /// The lock's class.
    pub fn class(&self) -> &'static LockClassKey {
        self.key
    }
}

/// How a lock is being acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acquire {
    /// Shared (reader) acquisition of a rw lock.
    pub read: bool,
    /// A trylock: adds no dependency edge, is not checked for deadlock, but
    /// is pushed on the held stack.
    pub trylock: bool,
    /// Nesting annotation (`*_nested`): subclasses of one class are ordered.
    pub subclass: u8,
}

impl Acquire {
    /// An exclusive, blocking acquisition (mutex, spinlock, writer).
    pub const EXCLUSIVE: Acquire = Acquire {
        read: false,
        trylock: false,
        subclass: 0,
    };
    /// A shared, blocking acquisition (reader).
    pub const SHARED: Acquire = Acquire {
        read: true,
        trylock: false,
        subclass: 0,
    };
    /// The same acquisition as a trylock.
    pub const fn try_(self) -> Self {
        Self {
            trylock: true,
            ..self
        }
    }
    /// The same acquisition with nesting subclass `subclass`.
    pub const fn nested(self, subclass: u8) -> Self {
        Self { subclass, ..self }
    }
}

/// Records that the current task is acquiring `map` (instance `instance`).
///
/// The hot path: a chain already validated (or a trylock) is pushed on the
/// held stack after one hash and one cache lookup.
#[inline]
pub fn lock_acquire(
    map: &LockdepMap,
    instance: usize,
    how: Acquire,
    loc: &'static Location<'static>,
) {
    if !active() {
        return;
    }
    let _irq = IrqGuard::new();
    let key = map.class();
    if let Some(class) = key.cached_class(how.subclass) {
        // SAFETY: interrupts are masked, and nothing below re-enters lockdep
        // while `s` is in use (the slow path starts after its last use).
        let s = unsafe { held::current_state() };
        if s.recursion() {
            return;
        }
        let chain_key = iterate_chain_key(s.chain_key(), chain_elem(class, how.read, how.trylock));
        if how.trylock || chains::lookup(chain_key) {
            let pushed = s.push(HeldLock {
                key,
                class,
                subclass: how.subclass,
                instance,
                loc,
                read: how.read,
                trylock: how.trylock,
                chain_key,
            });
            if pushed {
                if !how.trylock {
                    s.chain_hits += 1;
                    CHAIN_HITS.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            // A full stack: the slow path reports it as lockdep.
        }
    }
    lock_acquire_slow(map, instance, how, loc);
}

/// [`lock_acquire`] when the chain is not cached: full validation under
/// the graph lock, then the reports it found.
#[cold]
#[inline(never)]
fn lock_acquire_slow(
    map: &LockdepMap,
    instance: usize,
    how: Acquire,
    loc: &'static Location<'static>,
) {
    let Some(_busy) = Busy::enter() else {
        return;
    };
    let new = match validate_acquire(map, instance, how, loc) {
        Ok((new, pending)) => {
            for p in pending.into_iter().flatten() {
                report::emit(p);
            }
            new
        }
        Err(e) => return debug_locks_off(e),
    };
    if !with_current(|s| s.push(new)) {
        debug_locks_off(GraphError::Full("held locks", MAX_LOCK_DEPTH));
    }
}

/// Linux's `validate_chain` for one acquisition: the recursion check and the
/// new edges (blocking acquisitions only). Returns the held-stack entry to
/// push and the new problems to report: at most one recursion and one
/// cycle (a recursion does not hide a cycle closed by the same acquisition).
/// A chain validated without problems goes into the chain cache.
fn validate_acquire(
    map: &LockdepMap,
    instance: usize,
    how: Acquire,
    loc: &'static Location<'static>,
) -> Result<(HeldLock, [Option<Pending>; 2]), GraphError> {
    let key = map.class();
    let task = TaskName::new(crate::task::current().name());
    let mut g = GRAPH.lock();
    let class = g.class_of(key, how.subclass)?;
    let chain_key = with_current(|s| {
        iterate_chain_key(s.chain_key(), chain_elem(class, how.read, how.trylock))
    });
    let new = HeldLock {
        key,
        class,
        subclass: how.subclass,
        instance,
        loc,
        read: how.read,
        trylock: how.trylock,
        chain_key,
    };
    if how.trylock {
        return Ok((new, [None, None]));
    }
    VALIDATIONS.fetch_add(1, Ordering::Relaxed);
    with_current(|s| {
        s.validations += 1;
        let mut pending = None;
        let mut cycle = None;
        if let Some(prev) = s.iter().find(|h| h.class == class)
            && g.first_report(Problem::Recursive, class, class)?
        {
            pending = Some(Pending::Recursive {
                prev: *prev,
                next: new,
            });
        }
        let mut problem = s.iter().any(|h| h.class == class);
        // Edges from the most recent held locks down to, and including, the
        // first one taken blocking: it recorded its own edges from the locks
        // below it, so the graph already reaches `new` from those.
        for prev in s.iter().rev() {
            if prev.class != class {
                let dep = g.add_dependency(prev.class, class, prev.loc, loc, task)?;
                if matches!(dep, Dependency::Cycle) {
                    problem = true;
                    if cycle.is_none() && g.first_report(Problem::Circular, prev.class, class)? {
                        cycle = Some(cycle_report(&g, prev, &new));
                    }
                }
            }
            if !prev.trylock {
                break;
            }
        }
        // Only a clean chain is cached: one with a problem is validated
        // again each time (its report is deduplicated), so a reset of the
        // graph or the report table always shows it again.
        if !problem {
            chains::insert(chain_key);
        }
        Ok((new, [pending, cycle]))
    })
}

fn cycle_report(g: &Graph, held: &HeldLock, next: &HeldLock) -> Pending {
    let mut links: [Option<ChainLink>; MAX_CHAIN] = [None; MAX_CHAIN];
    let len = g.cycle_chain(next.class, held.class, &mut links);
    Pending::Circular(Circular {
        held: *held,
        next: *next,
        links,
        len,
    })
}

/// Records that the current task released `map` (instance `instance`).
#[inline]
pub fn lock_release(map: &LockdepMap, instance: usize, loc: &'static Location<'static>) {
    if !active() {
        return;
    }
    let _irq = IrqGuard::new();
    let removed = {
        // SAFETY: interrupts are masked and `s` is dropped before anything
        // that could re-enter lockdep.
        let s = unsafe { held::current_state() };
        if s.recursion() {
            return;
        }
        s.remove(instance)
    };
    if !removed {
        let Some(_busy) = Busy::enter() else {
            return;
        };
        unlock_imbalance(map, instance, loc);
    }
}

/// Turns the current task's exclusive hold of `instance` into a shared one.
pub fn lock_downgrade(map: &LockdepMap, instance: usize, loc: &'static Location<'static>) {
    if !active() {
        return;
    }
    crate::platform::without_interrupts(|| {
        let Some(_busy) = Busy::enter() else {
            return;
        };
        if !with_current(|s| s.downgrade(instance)) {
            unlock_imbalance(map, instance, loc);
        }
    });
}

/// Reports a release of a lock the task does not hold (once per class).
fn unlock_imbalance(map: &LockdepMap, instance: usize, at: &'static Location<'static>) {
    let key = map.class();
    let fresh = {
        let mut g = GRAPH.lock();
        g.class_of(key, 0)
            .and_then(|c| g.first_report(Problem::BadUnlock, c, c))
    };
    match fresh {
        Ok(true) => report::emit(Pending::BadUnlock { key, instance, at }),
        Ok(false) => {}
        Err(e) => debug_locks_off(e),
    }
}

/// Called when a task exits (the running task): reports locks still held.
pub fn task_exit_check(task: &crate::task::Task) {
    if !active() || !core::ptr::eq(task, crate::task::current()) {
        return;
    }
    crate::platform::without_interrupts(|| {
        let Some(_busy) = Busy::enter() else {
            return;
        };
        let ends: Option<(ClassId, ClassId)> = with_current(|s| {
            let first = s.iter().next()?.class;
            let last = s.iter().next_back()?.class;
            Some((first, last))
        });
        let Some((first, last)) = ends else {
            return;
        };
        let fresh = GRAPH.lock().first_report(Problem::HeldAtExit, first, last);
        match fresh {
            Ok(true) => report::emit(Pending::HeldAtExit),
            Ok(false) => {}
            Err(e) => debug_locks_off(e),
        }
        with_current(|s| s.clear());
    });
}

/// The current task's held locks, oldest first.
pub fn held_locks() -> alloc::vec::Vec<HeldLockInfo> {
    let snap = crate::platform::without_interrupts(|| with_current(|s| s.snapshot()));
    snap.iter()
        .map(|h| HeldLockInfo {
            class: h.key.name(),
            subclass: h.subclass,
            instance: h.instance,
            read: h.read,
            trylock: h.trylock,
            acquired_at: h.loc,
        })
        .collect()
}

/// How many locks of class `key` (any subclass) the current task holds, as
/// lockdep tracks them (0 when lockdep is off). Allocates nothing, so
/// reclaim code may use it to pick a nesting subclass.
pub fn held_count(key: &LockClassKey) -> usize {
    if !active() {
        return 0;
    }
    crate::platform::without_interrupts(|| {
        with_current(|s| s.iter().filter(|h| core::ptr::eq(h.key, key)).count())
    })
}

/// Forgets every recorded dependency and which problems were reported, so
/// that test scenarios do not see each other's edges. Classes stay. Call it
/// with no locks held: edges from locks held across it are lost.
pub fn reset_graph() {
    let mut g = GRAPH.lock();
    g.reset();
    chains::reset();
}

/// Whether lockdep recorded "a lock of class `from` held while one of class
/// `to` was taken" (directly, any subclasses).
pub fn has_dependency(from: &LockClassKey, to: &LockClassKey) -> bool {
    GRAPH.lock().depends(from, to)
}

/// Recorded dependency edges.
pub fn dependency_count() -> usize {
    GRAPH.lock().nr_edges()
}

/// Registered classes (key and subclass pairs).
pub fn class_count() -> usize {
    GRAPH.lock().nr_classes()
}
