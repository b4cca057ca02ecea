//! An intrusive FIFO of waiting tasks, linked through the tasks themselves.
//!
//! A blocked task waits on exactly one thing, so one link per task is
//! enough, and queueing never allocates: sleeping must work when memory is
//! exhausted (reclaim itself sleeps on locks and wait queues). The list is
//! protected by its owner's lock; each queued task holds one `Arc` count.

use super::Task;
use alloc::sync::Arc;
use core::ptr;
use core::sync::atomic::Ordering;

/// A FIFO of waiting tasks (see the module documentation).
pub struct WaitList {
    head: *const Task,
    tail: *const Task,
    len: usize,
}

// SAFETY: the raw task pointers are owned references (strong counts) and
// the list is only touched under its owner's lock.
unsafe impl Send for WaitList {}

impl Default for WaitList {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitList {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            head: ptr::null(),
            tail: ptr::null(),
            len: 0,
        }
    }

    /// Number of queued tasks.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no task is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `t` is queued here.
    pub fn contains(&self, t: &Task) -> bool {
        self.iter().any(|x| ptr::eq(x, t))
    }

    /// Queues `t` (which must be an `Arc`-allocated task not queued
    /// anywhere) with a caller-defined `tag` (e.g. "wants to write").
    pub fn push_back(&mut self, t: &Task, tag: u8) {
        debug_assert!(!t.wait_queued.load(Ordering::Relaxed));
        // SAFETY: spawned tasks live in an Arc; the list keeps one count.
        unsafe { Arc::increment_strong_count(t as *const Task) };
        t.wait_queued.store(true, Ordering::Relaxed);
        t.wait_tag.store(tag, Ordering::Relaxed);
        t.wait_next.store(ptr::null_mut(), Ordering::Relaxed);
        if self.tail.is_null() {
            self.head = t;
        } else {
            // SAFETY: the tail is a queued, live task.
            unsafe {
                (*self.tail)
                    .wait_next
                    .store(t as *const Task as *mut Task, Ordering::Relaxed)
            };
        }
        self.tail = t;
        self.len += 1;
    }

    /// The first task and its tag, without dequeueing it.
    pub fn front(&self) -> Option<(&Task, u8)> {
        // SAFETY: queued tasks are alive (the list holds a count).
        let t = unsafe { self.head.as_ref()? };
        Some((t, t.wait_tag.load(Ordering::Relaxed)))
    }

    /// Dequeues the first task.
    pub fn pop_front(&mut self) -> Option<(Arc<Task>, u8)> {
        if self.head.is_null() {
            return None;
        }
        let t = self.head;
        // SAFETY: queued tasks are alive.
        let tr = unsafe { &*t };
        self.head = tr.wait_next.load(Ordering::Relaxed);
        if self.head.is_null() {
            self.tail = ptr::null();
        }
        self.len -= 1;
        tr.wait_queued.store(false, Ordering::Relaxed);
        let tag = tr.wait_tag.load(Ordering::Relaxed);
        // SAFETY: takes back the count added by push_back.
        Some((unsafe { Arc::from_raw(t) }, tag))
    }

    /// Removes `t` if queued here; returns whether it was.
    pub fn remove(&mut self, t: &Task) -> bool {
        let mut prev: *const Task = ptr::null();
        let mut cur = self.head;
        while !cur.is_null() {
            // SAFETY: queued tasks are alive.
            let c = unsafe { &*cur };
            let next = c.wait_next.load(Ordering::Relaxed);
            if ptr::eq(cur, t) {
                if prev.is_null() {
                    self.head = next;
                } else {
                    // SAFETY: `prev` was the previous node of this walk: a queued task, alive while
                    // queued.
                    unsafe { (*prev).wait_next.store(next, Ordering::Relaxed) };
                }
                if ptr::eq(self.tail, cur) {
                    self.tail = prev;
                }
                self.len -= 1;
                c.wait_queued.store(false, Ordering::Relaxed);
                // SAFETY: drops the count added by push_back.
                drop(unsafe { Arc::from_raw(cur) });
                return true;
            }
            prev = cur;
            cur = next;
        }
        false
    }

    /// The queued tasks, first to last.
    pub fn iter(&self) -> impl Iterator<Item = &Task> {
        let mut cur = self.head;
        core::iter::from_fn(move || {
            // SAFETY: queued tasks are alive while the list is borrowed.
            let t = unsafe { cur.as_ref()? };
            cur = t.wait_next.load(Ordering::Relaxed);
            Some(t)
        })
    }
}

impl Drop for WaitList {
    fn drop(&mut self) {
        while self.pop_front().is_some() {}
    }
}
