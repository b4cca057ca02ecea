//! Synchronisation: IRQ-safe spinlock, sleeping mutex and rw-semaphore, wait
//! queues and completions, and lockdep.
//!
//! Every primitive is SMP-safe: mutual exclusion comes from ticket spinlocks
//! ([`raw`]), not from masking interrupts on one CPU. Masking interrupts
//! while a spinlock is held only keeps an interrupt handler on the same CPU
//! from spinning on it. Each shared structure says what protects it.
//!
//! Every lock belongs to a lockdep class named by a static key; create one
//! per initialisation site with [`lock_class!`](crate::lock_class):
//! `Mutex::new(0, lock_class!("my_counter"))`.

#![deny(missing_docs)]

pub mod hook;
pub mod lockdep;
pub mod mutex;
pub mod raw;
pub mod rwsem;
pub mod spinlock;

/// Wait queues and completions are the scheduler's sleep and wake-up
/// primitives (Linux's `kernel/sched/wait.c`): they live in
/// [`crate::task::wait`] and are named here too.
pub use crate::task::wait as waitqueue;
pub use crate::task::wait::{Completion, WaitQueue};
pub use hook::Hook;
pub use mutex::{Mutex, MutexGuard};
pub use raw::{RawSpinLock, RawSpinLockGuard, TicketLock};
pub use rwsem::{RwSemReadGuard, RwSemWriteGuard, RwSemaphore};
pub use spinlock::{SpinLock, SpinLockGuard};

/// Marks lock guards `!Send`: a lock must be released by the task that took
/// it (lockdep's held-lock stack and the owner field depend on it, and a
/// spinlock guard restores that task's interrupt state).
pub(crate) type NotSend = core::marker::PhantomData<*const ()>;
