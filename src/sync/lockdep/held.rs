//! The per-task held-lock stack (Linux's `task_struct::held_locks`).
//!
//! Only the task itself touches its stack, always with interrupts masked, so
//! it needs no lock; an interrupt handler cannot interleave with an update.

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
}

impl TaskLockState {
    /// An empty held-lock stack.
    pub const fn new() -> Self {
        Self {
            held: [None; MAX_LOCK_DEPTH],
            depth: 0,
            recursion: 0,
        }
    }

    /// Number of locks held.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Held locks, oldest first.
    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = &HeldLock> {
        self.held[..self.depth].iter().flatten()
    }

    /// Pushes `h`; false when the stack is full.
    pub(super) fn push(&mut self, h: HeldLock) -> bool {
        if self.depth == MAX_LOCK_DEPTH {
            return false;
        }
        self.held[self.depth] = Some(h);
        self.depth += 1;
        true
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
        true
    }

    /// Marks the entry for `instance` as held shared. False if not held.
    pub(super) fn downgrade(&mut self, instance: usize) -> bool {
        match self.find(instance).and_then(|i| self.held[i].as_mut()) {
            Some(h) => {
                h.read = true;
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
