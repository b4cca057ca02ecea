//! The per-task held-lock stack (Linux's `task_struct::held_locks`).
//!
//! Only the task itself touches its stack, always with interrupts masked, so
//! it needs no lock on any number of CPUs: a task runs on one CPU at a time,
//! and an interrupt handler cannot interleave with an update.
//!
//! Each entry also carries the chain key of the stack up to and including
//! it (Linux's `held_lock::prev_chain_key`, one step further): a 64-bit hash
//! of the sequence of (class, read, trylock) entries, computed iteratively
//! with [`iterate_chain_key`]. Lockdep looks the key of "held stack + new
//! lock" up in its chain cache to skip re-validating a chain it has seen.

use super::LockClassKey;
use super::graph::{ClassId, ClassRef};
use core::panic::Location;

/// Locks one task may hold at once (Linux's `MAX_LOCK_DEPTH`).
pub const MAX_LOCK_DEPTH: usize = 48;

/// One entry of the held-lock stack.
#[derive(Clone, Copy)]
pub(super) struct HeldLock {
    pub key: &'static LockClassKey,
    pub class: ClassId,
    pub subclass: u8,
    /// Address of the lock instance; releases are matched by it.
    pub instance: usize,
    pub loc: &'static Location<'static>,
    pub read: bool,
    pub trylock: bool,
    /// Chain key of the stack up to and including this entry.
    pub chain_key: u64,
}

/// The chain key of an empty stack (Linux's `INITIAL_CHAIN_KEY`).
pub(super) const INITIAL_CHAIN_KEY: u64 = u64::MAX;

/// What one held lock contributes to a chain key: its class (which
/// includes the subclass), and whether it is shared or a trylock, since a
/// trylock changes which edges a later acquisition records.
#[inline]
pub(super) fn chain_elem(class: ClassId, read: bool, trylock: bool) -> u32 {
    class as u32 | (read as u32) << 16 | (trylock as u32) << 17
}

/// One step of the chain-key hash (Linux's `iterate_chain_key`): Bob
/// Jenkins' lookup3 mix of the element into the two halves of the key.
#[inline]
pub(super) fn iterate_chain_key(key: u64, elem: u32) -> u64 {
    let (mut a, mut b, mut c) = (elem, key as u32, (key >> 32) as u32);
    a = a.wrapping_sub(c);
    a ^= c.rotate_left(4);
    c = c.wrapping_add(b);
    b = b.wrapping_sub(a);
    b ^= a.rotate_left(6);
    a = a.wrapping_add(c);
    c = c.wrapping_sub(b);
    c ^= b.rotate_left(8);
    b = b.wrapping_add(a);
    a = a.wrapping_sub(c);
    a ^= c.rotate_left(16);
    c = c.wrapping_add(b);
    b = b.wrapping_sub(a);
    b ^= a.rotate_left(19);
    a = a.wrapping_add(c);
    c = c.wrapping_sub(b);
    c ^= b.rotate_left(4);
    b = b.wrapping_add(a);
    b as u64 | (c as u64) << 32
}

impl HeldLock {
    pub(super) fn class_ref(&self) -> ClassRef {
        ClassRef {
            key: self.key,
            subclass: self.subclass,
        }
    }
}

/// A held lock as tests and debugging code see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldLockInfo {
    /// The lock's class name.
    pub class: &'static str,
    /// Nesting subclass it was taken with.
    pub subclass: u8,
    /// The lock instance's address.
    pub instance: usize,
    /// Held shared (a reader, or a downgraded writer).
    pub read: bool,
    /// Taken with a trylock.
    pub trylock: bool,
    /// Where it was taken.
    pub acquired_at: &'static Location<'static>,
}

/// Per-task lockdep state (the held-lock stack), stored in each task.
pub struct TaskLockState {
    held: [Option<HeldLock>; MAX_LOCK_DEPTH],
    depth: usize,
    /// Non-zero while lockdep itself runs on this task (Linux's
    /// `lockdep_recursion`): what lockdep does is not validated.
    recursion: u32,
    /// This task's full validations (chain-cache misses).
    pub(super) validations: u64,
    /// This task's acquisitions whose chain was cached.
    pub(super) chain_hits: u64,
}

impl TaskLockState {
    /// An empty held-lock stack.
    pub const fn new() -> Self {
        Self {
            held: [None; MAX_LOCK_DEPTH],
            depth: 0,
            recursion: 0,
            validations: 0,
            chain_hits: 0,
        }
    }

    /// Whether lockdep itself is running on this task (see [`Busy`]).
    #[inline]
    pub(super) fn recursion(&self) -> bool {
        self.recursion > 0
    }

    /// Number of locks held.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Held locks, oldest first.
    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = &HeldLock> {
        self.held[..self.depth].iter().flatten()
    }

    /// The chain key of the whole stack.
    #[inline]
    pub(super) fn chain_key(&self) -> u64 {
        match self.depth.checked_sub(1) {
            Some(i) => self.held[i].map_or(INITIAL_CHAIN_KEY, |h| h.chain_key),
            None => INITIAL_CHAIN_KEY,
        }
    }

    /// Pushes `h` (whose `chain_key` the caller computed from
    /// [`TaskLockState::chain_key`]); false when the stack is full.
    #[inline]
    pub(super) fn push(&mut self, h: HeldLock) -> bool {
        if self.depth == MAX_LOCK_DEPTH {
            return false;
        }
        self.held[self.depth] = Some(h);
        self.depth += 1;
        true
    }

    /// Recomputes the chain keys from entry `from` up (after a removal or a
    /// change in the middle of the stack).
    fn rehash_from(&mut self, from: usize) {
        let mut key = match from.checked_sub(1) {
            Some(i) => self.held[i].map_or(INITIAL_CHAIN_KEY, |h| h.chain_key),
            None => INITIAL_CHAIN_KEY,
        };
        for h in self.held[from..self.depth].iter_mut().flatten() {
            key = iterate_chain_key(key, chain_elem(h.class, h.read, h.trylock));
            h.chain_key = key;
        }
    }

    /// The most recent entry for `instance`.
    fn find(&self, instance: usize) -> Option<usize> {
        (0..self.depth)
            .rev()
            .find(|&i| self.held[i].is_some_and(|h| h.instance == instance))
    }

    /// Removes the most recent entry for `instance`, wherever it is in the
    /// stack (locks may be released out of order). False if not held.
    pub(super) fn remove(&mut self, instance: usize) -> bool {
        let Some(i) = self.find(instance) else {
            return false;
        };
        self.held.copy_within(i + 1..self.depth, i);
        self.depth -= 1;
        self.held[self.depth] = None;
        if i < self.depth {
            self.rehash_from(i);
        }
        true
    }

    /// Marks the entry for `instance` as held shared. False if not held.
    pub(super) fn downgrade(&mut self, instance: usize) -> bool {
        match self.find(instance) {
            Some(i) => {
                if let Some(h) = self.held[i].as_mut() {
                    h.read = true;
                }
                self.rehash_from(i);
                true
            }
            None => false,
        }
    }

    pub(super) fn clear(&mut self) {
        self.held = [None; MAX_LOCK_DEPTH];
        self.depth = 0;
    }

    /// A copy of the stack, for a report built outside this state.
    pub(super) fn snapshot(&self) -> HeldSnapshot {
        HeldSnapshot {
            held: self.held,
            depth: self.depth,
        }
    }
}

impl Default for TaskLockState {
    fn default() -> Self {
        Self::new()
    }
}

/// A copy of a held-lock stack.
pub(super) struct HeldSnapshot {
    held: [Option<HeldLock>; MAX_LOCK_DEPTH],
    depth: usize,
}

impl HeldSnapshot {
    pub(super) fn iter(&self) -> impl Iterator<Item = &HeldLock> {
        self.held[..self.depth].iter().flatten()
    }

    pub(super) fn len(&self) -> usize {
        self.depth
    }
}

/// The current task's state, for lockdep's hot path: one lookup of the
/// current task per call.
///
/// # Safety
/// Interrupts masked while the reference lives, and nothing that re-enters
/// lockdep (allocation, printing) may run while it is used.
#[inline]
#[allow(clippy::mut_from_ref)]
pub(super) unsafe fn current_state() -> &'static mut TaskLockState {
    // SAFETY: the caller keeps interrupts masked and does not re-enter
    // lockdep (this fn's contract), and only the running task uses its own
    // state, so this is the only live reference.
    unsafe { crate::task::current().lockdep_state() }
}

/// Runs `f` on the current task's state.
///
/// Callers mask interrupts, and `f` must not call back into lockdep (no
/// allocation, no printing), so its reference is the only one alive.
pub(super) fn with_current<R>(f: impl FnOnce(&mut TaskLockState) -> R) -> R {
    // SAFETY: only the running task uses its own state; interrupts are
    // masked so no handler on this CPU interleaves, and `f` does not
    // re-enter lockdep, so no other reference exists while it runs.
    f(unsafe { crate::task::current().lockdep_state() })
}

/// Marks the current task as inside lockdep until dropped, so that whatever
/// lockdep does itself (allocating or printing a report) is not validated.
#[must_use = "lockdep recursion protection ends as soon as the guard is dropped"]
pub(super) struct Busy(());

impl Busy {
    /// `None` if lockdep is already running on this task.
    pub(super) fn enter() -> Option<Self> {
        with_current(|s| {
            if s.recursion > 0 {
                return None;
            }
            s.recursion += 1;
            Some(Busy(()))
        })
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        with_current(|s| s.recursion -= 1);
    }
}
