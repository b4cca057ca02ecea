//! IRQ-saving SMP spinlock with lockdep annotations (Linux's
//! spin_lock_irqsave).
//!
//! Mutual exclusion across CPUs is a ticket lock ([`TicketLock`]): waiters
//! are served in the order they asked (FIFO). Masking interrupts while held
//! means an interrupt handler on this CPU can never spin on a lock its own
//! CPU holds, and also disables preemption.
//!
//! Next to the tickets the lock records its holder's task id, so that the
//! holder taking it again is caught before it draws a ticket: spinning for
//! itself with interrupts masked would hang the CPU. Like Linux's spinlock
//! debugging it prints "BUG: spinlock recursion"; then, unlike Linux (which
//! spins on), the task is reported as deadlocked and parked for good (see
//! `task::deadlock`): it keeps the lock and never runs again, and the
//! scheduler switches to the other tasks, which run with their own interrupt
//! state. A task that then contends for the lock is parked too instead of
//! spinning for ever. Where no other task can run (before the scheduler
//! starts, in the idle task, a host thread) it panics with the report.

use super::NotSend;
use super::lockdep::{self, Acquire, LockClassKey, LockdepMap};
use super::raw::TicketLock;
use crate::platform::IrqGuard;
use crate::task::deadlock::{self, BlockedOn, WaitTarget};
use crate::task::{self, TaskId};
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::panic::Location;
use core::sync::atomic::{AtomicU32, Ordering};

const UNLOCKED: u32 = u32::MAX;

/// The holder's task id, or UNLOCKED. Written only by the holder (set
/// right after its ticket is served, cleared right before it serves the
/// next), so a task that reads its own id here holds the lock.
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
/// `data` is protected by `tickets`; `owner` is debugging state written only
/// by the holder.
pub struct SpinLock<T: ?Sized> {
    tickets: TicketLock,
    owner: SpinOwner,
    dep_map: LockdepMap,
    data: UnsafeCell<T>,
}

// SAFETY: the ticket lock serialises access to `data` across CPUs.
unsafe impl<T: ?Sized + Send> Sync for SpinLock<T> {}
// SAFETY: the lock owns its `T`; sending it moves the `T` to another task, which `T: Send` allows.
unsafe impl<T: ?Sized + Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A spinlock in lock class `class` (see [`lock_class!`](crate::lock_class)).
    pub const fn new(value: T, class: &'static LockClassKey) -> Self {
        Self {
            tickets: TicketLock::new(),
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
        if !self.tickets.try_lock() {
            self.lock_contended(me);
        }
        self.owner.0.store(me, Ordering::Relaxed);
        SpinLockGuard {
            _not_send: NotSend::default(),
            lock: self,
            _irq: irq,
        }
    }

    /// Draws a ticket and spins until it is served; the holder itself never
    /// draws one (it would wait for itself), and nobody spins for a parked
    /// holder.
    #[cold]
    fn lock_contended(&self, me: TaskId) {
        // Only we store our own id, so this is no race: we hold it.
        if self.owner.0.load(Ordering::Relaxed) == me {
            self.recursion(me);
        }
        let ticket = self.tickets.take_ticket();
        let mut checked = UNLOCKED;
        let mut spins = 0;
        while !self.tickets.is_served(ticket) {
            let o = self.owner.0.load(Ordering::Relaxed);
            // A deadlocked holder never runs again to release it.
            if o != checked && o != UNLOCKED {
                checked = o;
                if let Some(holder) = task::deadlocked_task(o) {
                    deadlock::spin_on_deadlocked(self.blocked_on(), holder);
                }
            }
            crate::platform::spin_relax(&mut spins);
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
            crate::platform::cpu_id(),
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
        if !self.tickets.try_lock() {
            return None;
        }
        self.owner.0.store(task::current().id(), Ordering::Relaxed);
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
    }

    /// Whether the lock is held (or a CPU is about to get it).
    pub fn is_locked(&self) -> bool {
        self.tickets.is_locked()
    }

    /// `(next, owner)` of the ticket lock: tickets drawn and the one being
    /// served (tests and debugging).
    pub fn tickets(&self) -> (u32, u32) {
        self.tickets.tickets()
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
        self.lock.owner.0.store(UNLOCKED, Ordering::Relaxed);
        self.lock.tickets.unlock();
        // `_irq` restores the interrupt state after this.
    }
}
