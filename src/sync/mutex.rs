//! Sleeping mutex with owner tracking, `try_lock`, lockdep annotations and
//! direct hand-off to the longest waiter (no starvation).
//!
//! SMP: the owner word is taken by compare-and-swap on the fast path; the
//! wait list, and every hand-off of the owner word to a waiter, are under the
//! mutex's internal [`RawSpinLock`], so a waiter queueing itself on one CPU
//! and the owner unlocking on another never miss each other.
//!
//! Not recursive: the owner locking it again is reported as a deadlock and
//! parked for good (see `task::deadlock`), lockdep on or off.

use super::NotSend;
use super::lockdep::{self, Acquire, LockClassKey, LockdepMap};
use super::raw::RawSpinLock;
use crate::task::deadlock::{self, BlockedOn, WaitTarget};
use crate::task::{self, TaskId, waitlist::WaitList};
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::panic::Location;
use core::sync::atomic::{AtomicU32, Ordering};

const UNLOCKED: u32 = u32::MAX;

/// The type-independent part: owner and waiters.
struct MutexCore {
    /// Task id of the owner, or UNLOCKED. Taken from UNLOCKED by CAS; handed
    /// to a waiter (or set back to UNLOCKED on unlock) only under `waiters`.
    owner: AtomicU32,
    /// Tasks waiting for the mutex, in arrival order.
    waiters: RawSpinLock<WaitList>,
}

impl WaitTarget for MutexCore {
    fn holders(&self, out: &mut [TaskId]) -> usize {
        // Acquire: a hand-off dequeues the waiter before it stores the new
        // owner, so whoever sees the owner sees it dequeued (the deadlock
        // search relies on that).
        let o = self.owner.load(Ordering::Acquire);
        if o != UNLOCKED && !out.is_empty() {
            out[0] = o;
            1
        } else {
            0
        }
    }
}

/// A sleeping mutex protecting a `T` (see the module documentation).
pub struct Mutex<T: ?Sized> {
    core: MutexCore,
    dep_map: LockdepMap,
    data: UnsafeCell<T>,
}

// SAFETY: the mutex serialises access to `data`.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}
// SAFETY: the mutex owns its `T`; sending it moves the `T` to another task, which `T: Send` allows.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}

impl<T> Mutex<T> {
    /// A mutex in lock class `class` (see [`lock_class!`](crate::lock_class)).
    pub const fn new(value: T, class: &'static LockClassKey) -> Self {
        Self {
            core: MutexCore {
                owner: AtomicU32::new(UNLOCKED),
                waiters: RawSpinLock::new(WaitList::new()),
            },
            dep_map: LockdepMap::new(class),
            data: UnsafeCell::new(value),
        }
    }

    /// Consumes the mutex and returns the data.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    fn addr(&self) -> usize {
        self as *const Self as *const u8 as usize
    }

    /// The owning task's id, if locked.
    pub fn owner(&self) -> Option<TaskId> {
        let o = self.core.owner.load(Ordering::Relaxed);
        (o != UNLOCKED).then_some(o)
    }

    /// Whether some task holds it.
    pub fn is_locked(&self) -> bool {
        self.owner().is_some()
    }

    /// The lock's lockdep class.
    pub fn class(&self) -> &'static LockClassKey {
        self.dep_map.class()
    }

    /// Takes the lock, sleeping while another task holds it.
    #[track_caller]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.lock_nested(0)
    }

    /// Locks with a nesting subclass (`mutex_lock_nested`).
    #[track_caller]
    pub fn lock_nested(&self, subclass: u8) -> MutexGuard<'_, T> {
        self.lock_impl(subclass, Location::caller())
    }

    fn lock_impl(&self, subclass: u8, loc: &'static Location<'static>) -> MutexGuard<'_, T> {
        task::might_sleep();
        lockdep::lock_acquire(
            &self.dep_map,
            self.addr(),
            Acquire::EXCLUSIVE.nested(subclass),
            loc,
        );
        let me = task::current().id();
        if self
            .core
            .owner
            .compare_exchange(UNLOCKED, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return MutexGuard {
                lock: self,
                loc,
                _not_send: NotSend::default(),
            };
        }
        if self.core.owner.load(Ordering::Relaxed) == me {
            // Only we can have stored our id, and we are not queued, so this
            // is no hand-off: we hold it already. A second guard would alias
            // the first; report the self-deadlock and park instead.
            deadlock::self_deadlock(self.blocked_on());
        }
        loop {
            // Interrupts stay masked from queueing to blocking (as the
            // scheduler wants), with or without the list lock.
            let _irq = crate::platform::IrqGuard::new();
            {
                let mut w = self.core.waiters.lock();
                if self.core.owner.load(Ordering::Acquire) == me {
                    break; // handed to us
                }
                if self
                    .core
                    .owner
                    .compare_exchange(UNLOCKED, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    break;
                }
                task::prepare_to_block();
                if !w.contains(task::current()) {
                    w.push_back(task::current(), 0);
                }
            }
            task::set_blocked_on(self.blocked_on());
            deadlock::check_cycle(task::current());
            task::block_current_locked();
            task::clear_blocked_on();
            if self.core.owner.load(Ordering::Acquire) == me {
                break;
            }
        }
        MutexGuard {
            lock: self,
            loc,
            _not_send: NotSend::default(),
        }
    }

    /// What a task waiting for this mutex waits for (deadlock reports).
    fn blocked_on(&self) -> BlockedOn {
        let target: *const (dyn WaitTarget + 'static) = &self.core as *const MutexCore;
        BlockedOn {
            kind: "mutex",
            name: self.dep_map.class().name(),
            addr: self.addr(),
            target: Some(target),
        }
    }

    /// Takes the lock if it is free; never sleeps.
    #[track_caller]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        let me = task::current().id();
        if self
            .core
            .owner
            .compare_exchange(UNLOCKED, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            let loc = Location::caller();
            lockdep::lock_acquire(&self.dep_map, self.addr(), Acquire::EXCLUSIVE.try_(), loc);
            Some(MutexGuard {
                lock: self,
                loc,
                _not_send: NotSend::default(),
            })
        } else {
            None
        }
    }

    fn unlock(&self, loc: &'static Location<'static>) {
        lockdep::lock_release(&self.dep_map, self.addr(), loc);
        let mut w = self.core.waiters.lock();
        while let Some((next, _)) = w.pop_front() {
            if next.is_deadlocked() {
                continue;
            }
            self.core.owner.store(next.id(), Ordering::Release);
            task::wake_up(&next);
            return;
        }
        self.core.owner.store(UNLOCKED, Ordering::Release);
    }
}

/// Proof of holding a [`Mutex`]; unlocks on drop.
#[must_use = "the mutex is released as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: ?Sized> {
    _not_send: NotSend,
    lock: &'a Mutex<T>,
    loc: &'static Location<'static>,
}

impl<T: ?Sized> MutexGuard<'_, T> {
    /// Where the lock was taken.
    pub fn locked_at(&self) -> &'static Location<'static> {
        self.loc
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we own the mutex.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: we own the mutex.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    #[track_caller]
    fn drop(&mut self) {
        self.lock.unlock(Location::caller());
    }
}
