//! Wait queues and completions: a task sleeps until a condition holds.

use crate::platform::IrqGuard;
use crate::task::{self, waitlist::WaitList};
use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;

/// Tasks waiting for an event. Waiters re-check their condition after every
/// wake-up, so spurious wakes are harmless. Waiting never allocates.
pub struct WaitQueue {
    waiters: spin::Mutex<WaitList>,
    name: &'static str,
}

impl WaitQueue {
    /// An empty queue named `name` (shown in deadlock reports).
    pub const fn new(name: &'static str) -> Self {
        Self {
            waiters: spin::Mutex::new(WaitList::new()),
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

    fn dequeue_current(&self) {
        self.waiters.lock().remove(task::current());
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
        loop {
            let _irq = IrqGuard::new();
            if cond() {
                self.dequeue_current();
                return;
            }
            task::prepare_to_block();
            self.enqueue_current();
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
            if cond() {
                self.dequeue_current();
                return true;
            }
            if crate::time::now_ns() >= deadline {
                self.dequeue_current();
                return false;
            }
            task::prepare_to_block_until(deadline);
            self.enqueue_current();
            task::block_current_locked();
            task::take_timed_out();
        }
    }

    /// Wakes the longest-waiting task. Returns whether one was woken.
    pub fn wake_one(&self) -> bool {
        let _irq = IrqGuard::new();
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
        let _irq = IrqGuard::new();
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
        crate::platform::without_interrupts(|| self.waiters.lock().len())
    }

    /// Whether no task waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const DONE_ALL: u32 = u32::MAX;

/// A one-shot (or counted) event: `complete()` releases one waiter,
/// `complete_all()` every waiter now and later.
pub struct Completion {
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
        crate::platform::without_interrupts(|| {
            let d = self.done.load(Ordering::Relaxed);
            if d != DONE_ALL {
                self.done.store(d + 1, Ordering::Relaxed);
            }
            self.wq.wake_one();
        });
    }

    /// Completes for good: every waiter, present and future, passes.
    pub fn complete_all(&self) {
        crate::platform::without_interrupts(|| {
            self.done.store(DONE_ALL, Ordering::Relaxed);
            self.wq.wake_all();
        });
    }

    fn try_take(&self) -> bool {
        let d = self.done.load(Ordering::Relaxed);
        if d == 0 {
            return false;
        }
        if d != DONE_ALL {
            self.done.store(d - 1, Ordering::Relaxed);
        }
        true
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
        self.done.load(Ordering::Relaxed) != 0
    }

    /// Re-arms a completion for reuse.
    pub fn reinit(&self) {
        self.done.store(0, Ordering::Relaxed);
    }
}
