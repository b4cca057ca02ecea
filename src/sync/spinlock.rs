//! IRQ-saving spinlock with lockdep annotations (Linux's spin_lock_irqsave).
//!
//! Masking interrupts while held means an interrupt handler on this CPU can
//! never spin on a lock its own CPU holds, and also disables preemption.
//!
//! The lock word is the owner's task id, so that the owner taking it again
//! is caught: spinning for itself with interrupts masked would hang the
//! machine. Like Linux's spinlock debugging it prints "BUG: spinlock
//! recursion"; then, unlike Linux (which spins on), the task is reported as
//! deadlocked and parked for good (see `task::deadlock`): it keeps the lock
//! and never runs again, and the scheduler switches to the other tasks,
//! which run with their own interrupt state. A task that then contends for
//! the lock is parked too instead of spinning for ever. Where no other task
//! can run (before the scheduler starts, in the idle task, a host thread)
//! it panics with the report.

use super::NotSend;
use super::lockdep::{self, Acquire, LockClassKey, LockdepMap};
use crate::platform::IrqGuard;
use crate::task::deadlock::{self, BlockedOn, WaitTarget};
use crate::task::{self, TaskId};
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::panic::Location;
use core::sync::atomic::{AtomicU32, Ordering};

const UNLOCKED: u32 = u32::MAX;

/// The lock word: the holder's task id, or UNLOCKED.
struct SpinOwner(AtomicU32);

impl WaitTarget for SpinOwner {
    fn holders(&self, out: &mut [TaskId]) -> usize {
        let o = self.0.load(Ordering::Relaxed);
        if o != UNLOCKED && !out.is_empty() {
            out[0] = o;
            1
        } else {
            0
        }
    }
}

/// An IRQ-saving spinlock protecting a `T` (see the module documentation).
pub struct SpinLock<T: ?Sized> {
    owner: SpinOwner,
    dep_map: LockdepMap,
    data: UnsafeCell<T>,
}

// SAFETY: the lock serialises access to `data`.
unsafe impl<T: ?Sized + Send> Sync for SpinLock<T> {}
// SAFETY: the lock owns its `T`; sending it moves the `T` to another task, which `T: Send` allows.
unsafe impl<T: ?Sized + Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A spinlock in lock class `class` (see [`lock_class!`](crate::lock_class)).
    pub const fn new(value: T, class: &'static LockClassKey) -> Self {
        Self {
            owner: SpinOwner(AtomicU32::new(UNLOCKED)),
            dep_map: LockdepMap::new(class),
            data: UnsafeCell::new(value),
        }
    }

    /// Consumes the lock and returns the data.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> SpinLock<T> {
    fn addr(&self) -> usize {
        self as *const Self as *const u8 as usize
    }

    /// Masks interrupts and spins until the lock is free.
    #[track_caller]
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        self.lock_nested(0)
    }

    /// Locks with a nesting subclass (two locks of one class in a set order).
    #[track_caller]
    pub fn lock_nested(&self, subclass: u8) -> SpinLockGuard<'_, T> {
        let irq = IrqGuard::new();
        lockdep::lock_acquire(
            &self.dep_map,
            self.addr(),
            Acquire::EXCLUSIVE.nested(subclass),
            Location::caller(),
        );
        let me = task::current().id();
        if self
            .owner
            .0
            .compare_exchange(UNLOCKED, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended(me);
        }
        SpinLockGuard {
            _not_send: NotSend::default(),
            lock: self,
            _irq: irq,
        }
    }

    /// Spins until the lock is free; the owner itself never gets it twice,
    /// and nobody spins for a parked owner.
    #[cold]
    fn lock_contended(&self, me: TaskId) {
        let mut checked = UNLOCKED;
        loop {
            match self.owner.0.load(Ordering::Relaxed) {
                o if o == me => self.recursion(me),
                UNLOCKED => {
                    if self
                        .owner
                        .0
                        .compare_exchange_weak(UNLOCKED, me, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        return;
                    }
                }
                o => {
                    // A deadlocked owner never runs again to release it.
                    if o != checked {
                        checked = o;
                        if let Some(holder) = task::deadlocked_task(o) {
                            deadlock::spin_on_deadlocked(self.blocked_on(), holder);
                        }
                    }
                    core::hint::spin_loop()
                }
            }
        }
    }

    /// What a task spinning on this lock waits for (deadlock reports).
    fn blocked_on(&self) -> BlockedOn {
        let target: *const (dyn WaitTarget + 'static) = &self.owner as *const SpinOwner;
        BlockedOn {
            kind: "spinlock",
            name: self.dep_map.class().name(),
            addr: self.addr(),
            target: Some(target),
        }
    }

    /// The owner is taking it again (Linux's "spinlock recursion").
    #[cold]
    #[inline(never)]
    fn recursion(&self, me: TaskId) -> ! {
        crate::println!(
            "BUG: spinlock recursion on CPU#{}, task '{}' (id {me}), lock '{}' @{:#x}",
            crate::platform::with_irq_guard(|irq| task::this_cpu(irq).cpu_id),
            task::current().name(),
            self.dep_map.class().name(),
            self.addr()
        );
        deadlock::self_deadlock(self.blocked_on())
    }

    /// Takes the lock if it is free; never spins.
    #[track_caller]
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T>> {
        let irq = IrqGuard::new();
        if self
            .owner
            .0
            .compare_exchange(
                UNLOCKED,
                task::current().id(),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            lockdep::lock_acquire(
                &self.dep_map,
                self.addr(),
                Acquire::EXCLUSIVE.try_(),
                Location::caller(),
            );
            Some(SpinLockGuard {
                _not_send: NotSend::default(),
                lock: self,
                _irq: irq,
            })
        } else {
            None
        }
    }

    /// Whether the lock is held.
    pub fn is_locked(&self) -> bool {
        self.owner.0.load(Ordering::Relaxed) != UNLOCKED
    }

    /// The holding task's id, if locked.
    pub fn owner(&self) -> Option<TaskId> {
        let o = self.owner.0.load(Ordering::Relaxed);
        (o != UNLOCKED).then_some(o)
    }

    /// The lock's lockdep class.
    pub fn class(&self) -> &'static LockClassKey {
        self.dep_map.class()
    }
}

/// Proof of holding a [`SpinLock`]; unlocks and restores interrupts on drop.
#[must_use = "the spinlock is released as soon as the guard is dropped"]
pub struct SpinLockGuard<'a, T: ?Sized> {
    _not_send: NotSend,
    lock: &'a SpinLock<T>,
    _irq: IrqGuard,
}

impl<T: ?Sized> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: we hold the lock.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for SpinLockGuard<'_, T> {
    #[track_caller]
    fn drop(&mut self) {
        lockdep::lock_release(&self.lock.dep_map, self.lock.addr(), Location::caller());
        self.lock.owner.0.store(UNLOCKED, Ordering::Release);
        // `_irq` restores the interrupt state after this.
    }
}
