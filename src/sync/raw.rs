//! The SMP building block under every framework lock: a ticket spinlock
//! (Linux's pre-qspinlock `arch_spinlock_t`), and [`RawSpinLock`], an
//! irq-saving spinlock around it that lockdep does not track.
//!
//! A ticket lock is two counters: `next`, the ticket the next CPU to ask
//! will draw, and `owner`, the ticket being served. Locking draws a ticket
//! (one atomic `fetch_add`) and spins until `owner` reaches it; unlocking
//! serves the next ticket. CPUs get the lock in the order they asked for
//! it (FIFO: no starvation), and the lock is free when the counters are
//! equal. Counters wrap; only their difference matters.
//!
//! [`RawSpinLock`] protects the internal state of the other primitives
//! (mutex owner hand-off and wait list, rwsem state, wait queues) and
//! lockdep's own graph: lockdep cannot validate the locks it runs under.
//! Interrupts stay masked while it is held (an interrupt handler on this
//! CPU can never spin on it), so critical sections must be short and must
//! not sleep.

use crate::platform::IrqGuard;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

/// A ticket drawn from a [`TicketLock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(pub u32);

/// A bare ticket spinlock: no interrupt masking, no owner, no lockdep (see
/// the module documentation). The building block of [`RawSpinLock`] and
/// [`SpinLock`](super::SpinLock).
pub struct TicketLock {
    /// The next ticket to hand out.
    next: AtomicU32,
    /// The ticket being served (holding the lock, or about to).
    owner: AtomicU32,
}

impl Default for TicketLock {
    fn default() -> Self {
        Self::new()
    }
}

impl TicketLock {
    /// An unlocked ticket lock.
    pub const fn new() -> Self {
        Self {
            next: AtomicU32::new(0),
            owner: AtomicU32::new(0),
        }
    }

    /// Draws a ticket: the caller's place in the queue. It must then wait
    /// until [`TicketLock::is_served`] and release with
    /// [`TicketLock::unlock`]; a drawn ticket cannot be given back.
    #[inline]
    pub fn take_ticket(&self) -> Ticket {
        Ticket(self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Whether `t`'s turn has come (acquire: the previous holder's writes
    /// are visible once this returns true).
    #[inline]
    pub fn is_served(&self, t: Ticket) -> bool {
        self.owner.load(Ordering::Acquire) == t.0
    }

    /// Spins until the lock is ours.
    #[inline]
    pub fn lock(&self) {
        let t = self.take_ticket();
        let mut spins = 0;
        while !self.is_served(t) {
            crate::platform::spin_relax(&mut spins);
        }
    }

    /// Takes the lock if nobody holds or waits for it; never spins.
    #[inline]
    pub fn try_lock(&self) -> bool {
        let owner = self.owner.load(Ordering::Relaxed);
        self.next
            .compare_exchange(
                owner,
                owner.wrapping_add(1),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Serves the next ticket. Only the holder may call it.
    #[inline]
    pub fn unlock(&self) {
        // Only the holder writes `owner`, so load+store is not a lost update.
        let o = self.owner.load(Ordering::Relaxed);
        self.owner.store(o.wrapping_add(1), Ordering::Release);
    }

    /// Whether some CPU holds the lock (or has drawn a ticket for it).
    #[inline]
    pub fn is_locked(&self) -> bool {
        self.next.load(Ordering::Relaxed) != self.owner.load(Ordering::Relaxed)
    }

    /// `(next, owner)`: tickets drawn so far and the one being served (for
    /// tests and debugging; `next - owner` is the holder plus the waiters).
    pub fn tickets(&self) -> (u32, u32) {
        (
            self.next.load(Ordering::Relaxed),
            self.owner.load(Ordering::Relaxed),
        )
    }
}

/// An irq-saving ticket spinlock protecting a `T`, not tracked by lockdep
/// (see the module documentation). For the framework's own internal state;
/// code outside `sync` wants [`SpinLock`](super::SpinLock).
pub struct RawSpinLock<T: ?Sized> {
    lock: TicketLock,
    data: UnsafeCell<T>,
}

// SAFETY: the ticket lock serialises every access to `data` across CPUs.
unsafe impl<T: ?Sized + Send> Sync for RawSpinLock<T> {}
// SAFETY: the lock owns its `T`; moving it moves the `T`, which `T: Send` allows.
unsafe impl<T: ?Sized + Send> Send for RawSpinLock<T> {}

impl<T> RawSpinLock<T> {
    /// An unlocked raw spinlock holding `value`.
    pub const fn new(value: T) -> Self {
        Self {
            lock: TicketLock::new(),
            data: UnsafeCell::new(value),
        }
    }
}

impl<T: ?Sized> RawSpinLock<T> {
    /// Masks interrupts and spins until the lock is ours.
    #[inline]
    pub fn lock(&self) -> RawSpinLockGuard<'_, T> {
        let irq = IrqGuard::new();
        self.lock.lock();
        RawSpinLockGuard {
            lock: self,
            _irq: irq,
            _not_send: super::NotSend::default(),
        }
    }

    /// Takes the lock if it is free now; never spins.
    #[inline]
    pub fn try_lock(&self) -> Option<RawSpinLockGuard<'_, T>> {
        let irq = IrqGuard::new();
        self.lock.try_lock().then(|| RawSpinLockGuard {
            lock: self,
            _irq: irq,
            _not_send: super::NotSend::default(),
        })
    }

    /// Whether some CPU holds it.
    pub fn is_locked(&self) -> bool {
        self.lock.is_locked()
    }
}

/// Proof of holding a [`RawSpinLock`]; unlocks, then restores interrupts,
/// on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RawSpinLockGuard<'a, T: ?Sized> {
    lock: &'a RawSpinLock<T>,
    _irq: IrqGuard,
    _not_send: super::NotSend,
}

impl<T: ?Sized> Deref for RawSpinLockGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard proves we hold the lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for RawSpinLockGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves we hold the lock, and `&mut self` that
        // this is the only reference through it.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for RawSpinLockGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.lock.unlock();
        // `_irq` restores the interrupt state after this.
    }
}
