//! Wait queues and completions: a task sleeps until a condition holds.
//!
//! SMP: as in Linux, a waiter first marks itself blocked and queues itself
//! (under the queue's internal [`RawSpinLock`]), and only then checks its
//! condition; a waker makes the condition true, then takes waiters off the
//! queue under the same lock and wakes them. Whichever CPU each runs on,
//! either the waiter sees the condition or the waker sees the waiter: no
//! wake-up is lost.

use crate::platform::IrqGuard;
use crate::sync::raw::RawSpinLock;
use crate::task::{self, waitlist::WaitList};
use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;

/// Tasks waiting for an event. Waiters re-check their condition after every
/// wake-up, so spurious wakes are harmless. Waiting never allocates.
pub struct WaitQueue {
    /// The waiting tasks, protected by the queue's internal spinlock.
    waiters: RawSpinLock<WaitList>,
    name: &'static str,
}

impl WaitQueue {
    /// An empty queue named `name` (shown in deadlock reports).
    pub const fn new(name: &'static str) -> Self {
        Self {
            waiters: RawSpinLock::new(WaitList::new()),
            name,
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn enqueue_current(&self) {
        let me = task::current();
        let mut w = self.waiters.lock();
        if !w.contains(me) {
            w.push_back(me, 0);
        }
    }

    /// Takes the current task off the queue and marks it running again
    /// (Linux's `finish_wait`).
    fn finish_wait(&self) {
        self.waiters.lock().remove(task::current());
        task::finish_wait();
    }

    /// Sleeps until `cond()` is true. `cond` runs with interrupts masked.
    #[track_caller]
    pub fn wait_event(&self, mut cond: impl FnMut() -> bool) {
        if !task::started() {
            while !cond() {
                core::hint::spin_loop();
            }
            return;
        }
        task::might_sleep();
        if crate::platform::without_interrupts(&mut cond) {
            return;
        }
        loop {
            let _irq = IrqGuard::new();
            // Blocked and queued before the condition is checked: a waker
            // that makes it true after the check finds us on the queue.
            task::prepare_to_block();
            self.enqueue_current();
            if cond() {
                self.finish_wait();
                return;
            }
            task::set_blocked_on_waitqueue(self);
            task::block_current_locked();
            task::clear_blocked_on();
        }
    }

    /// Sleeps until `cond()` is true or `timeout` passes; returns whether the
    /// condition held.
    pub fn wait_event_timeout(&self, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = crate::time::now_ns().saturating_add(timeout.as_nanos() as u64);
        if !task::started() {
            while !cond() {
                if crate::time::now_ns() >= deadline {
                    return false;
                }
                core::hint::spin_loop();
            }
            return true;
        }
        task::might_sleep();
        loop {
            let _irq = IrqGuard::new();
            task::prepare_to_block_until(deadline);
            self.enqueue_current();
            if cond() {
                self.finish_wait();
                return true;
            }
            if crate::time::now_ns() >= deadline {
                self.finish_wait();
                return false;
            }
            task::block_current_locked();
            task::take_timed_out();
        }
    }

    /// Wakes the longest-waiting task. Returns whether one was woken.
    pub fn wake_one(&self) -> bool {
        loop {
            let t = self.waiters.lock().pop_front();
            match t {
                Some((t, _)) => {
                    if task::wake_up(&t) {
                        return true;
                    }
                }
                None => return false,
            }
        }
    }

    /// Wakes every waiting task; returns how many.
    pub fn wake_all(&self) -> usize {
        let mut n = 0;
        loop {
            let t = self.waiters.lock().pop_front();
            match t {
                Some((t, _)) => n += task::wake_up(&t) as usize,
                None => return n,
            }
        }
    }

    /// Number of waiting tasks.
    pub fn len(&self) -> usize {
        self.waiters.lock().len()
    }

    /// Whether no task waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const DONE_ALL: u32 = u32::MAX;

/// A one-shot (or counted) event: `complete()` releases one waiter,
/// `complete_all()` every waiter now and later.
///
/// SMP: `done` is only changed by atomic read-modify-write (a completer and
/// waiters on other CPUs never lose a count); waiters sleep on the wait
/// queue, which orders the count against the wake-up (see the module
/// documentation).
pub struct Completion {
    /// Completions not yet consumed, or `DONE_ALL`.
    done: AtomicU32,
    wq: WaitQueue,
}

impl Default for Completion {
    fn default() -> Self {
        Self::new()
    }
}

impl Completion {
    /// A completion not yet completed.
    pub const fn new() -> Self {
        Self::new_internal()
    }

    pub(crate) const fn new_internal() -> Self {
        Self {
            done: AtomicU32::new(0),
            wq: WaitQueue::new("completion"),
        }
    }

    /// Completes once: lets one waiter (present or future) through.
    pub fn complete(&self) {
        let _ = self
            .done
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                (d != DONE_ALL).then(|| d.saturating_add(1).min(DONE_ALL - 1))
            });
        self.wq.wake_one();
    }

    /// Completes for good: every waiter, present and future, passes.
    pub fn complete_all(&self) {
        self.done.store(DONE_ALL, Ordering::Release);
        self.wq.wake_all();
    }

    /// Consumes one completion if there is one.
    fn try_take(&self) -> bool {
        self.done
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| match d {
                0 => None,
                DONE_ALL => Some(DONE_ALL),
                d => Some(d - 1),
            })
            .is_ok()
    }

    /// Waits for a completion.
    #[track_caller]
    pub fn wait(&self) {
        self.wq.wait_event(|| self.try_take());
    }

    /// Waits at most `timeout`; returns whether it completed.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wq.wait_event_timeout(timeout, || self.try_take())
    }

    /// Whether it was completed (and not yet consumed by a waiter).
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire) != 0
    }

    /// Re-arms a completion for reuse.
    pub fn reinit(&self) {
        self.done.store(0, Ordering::Relaxed);
    }
}
