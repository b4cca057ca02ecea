//! IRQ-saving spinlock with lockdep annotations (Linux's spin_lock_irqsave).
//!
//! Masking interrupts while held means an interrupt handler on this CPU can
//! never spin on a lock its own CPU holds, and also disables preemption.

use super::NotSend;
use super::lockdep::{self, Acquire, LockClassKey, LockdepMap};
use crate::platform::IrqGuard;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::panic::Location;
use core::sync::atomic::{AtomicBool, Ordering};

pub struct SpinLock<T: ?Sized> {
    locked: AtomicBool,
    dep_map: LockdepMap,
    data: UnsafeCell<T>,
}

// SAFETY: the lock serialises access to `data`.
unsafe impl<T: ?Sized + Send> Sync for SpinLock<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A spinlock in lock class `class` (see [`lock_class!`](crate::lock_class)).
    pub const fn new(value: T, class: &'static LockClassKey) -> Self {
        Self {
            locked: AtomicBool::new(false),
            dep_map: LockdepMap::new(class),
            data: UnsafeCell::new(value),
        }
    }

    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> SpinLock<T> {
    fn addr(&self) -> usize {
        self as *const Self as *const u8 as usize
    }

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
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        SpinLockGuard {
            _not_send: NotSend::default(),
            lock: self,
            _irq: irq,
        }
    }

    #[track_caller]
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T>> {
        let irq = IrqGuard::new();
        if self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
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

    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }

    pub fn class(&self) -> &'static LockClassKey {
        self.dep_map.class()
    }
}

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
        self.lock.locked.store(false, Ordering::Release);
        // `_irq` restores the interrupt state after this.
    }
}
