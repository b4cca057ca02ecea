//! Sleeping reader-writer semaphore (Linux's rw_semaphore): shared readers,
//! exclusive writers, trylock forms, `downgrade_write`, lockdep annotations.
//!
//! Fair: once a writer waits, new readers queue behind it, and the lock is
//! handed directly to the waiters at the head of the queue (a writer, or
//! every reader up to the next writer), so neither side starves.
//!
//! A task that holds it and asks again for it exclusively (or, as the
//! writer, for it shared) would wait for itself: that is reported as a
//! deadlock and the task parked for good (see `task::deadlock`). Read
//! recursion is allowed, as in Linux (it blocks only behind a waiting
//! writer). Only the first 16 readers are tracked by id, so write-after-read
//! by an untracked reader blocks unreported until every task is blocked.

use super::NotSend;
use super::lockdep::{self, Acquire, LockClassKey, LockdepMap};
use super::raw::RawSpinLock;
use crate::platform::IrqGuard;
use crate::task::deadlock::{self, BlockedOn, WaitTarget};
use crate::task::{self, TaskId, waitlist::WaitList};
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::panic::Location;

const WRITE: u8 = 1;
const READ: u8 = 0;

/// The tasks holding it shared: a count, and the ids of the first few (for
/// deadlock reports). Fixed size, so taking the lock never allocates.
struct Readers {
    count: usize,
    ids: [TaskId; 16],
    tracked: usize,
}

impl Readers {
    const fn new() -> Self {
        Self {
            count: 0,
            ids: [0; 16],
            tracked: 0,
        }
    }

    fn push(&mut self, id: TaskId) {
        self.count += 1;
        if self.tracked < self.ids.len() {
            self.ids[self.tracked] = id;
            self.tracked += 1;
        }
    }

    /// Removes one hold by `id`: true if `id` (or an untracked reader) held it.
    fn remove(&mut self, id: TaskId) -> bool {
        if let Some(i) = self.ids[..self.tracked].iter().position(|r| *r == id) {
            self.ids[i] = self.ids[self.tracked - 1];
            self.tracked -= 1;
            self.count -= 1;
            true
        } else if self.count > self.tracked {
            self.count -= 1;
            true
        } else {
            false
        }
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn ids(&self) -> &[TaskId] {
        &self.ids[..self.tracked]
    }
}

/// Everything about who holds and who waits; protected by `RwCore::state`.
struct State {
    writer: Option<TaskId>,
    readers: Readers,
    /// Waiting tasks, tagged READ or WRITE.
    waiters: WaitList,
}

/// The type-independent part. Every read and write of the holders and the
/// wait list, and every hand-off, is under the internal [`RawSpinLock`], so
/// grants and wake-ups are correct across CPUs.
struct RwCore {
    state: RawSpinLock<State>,
}

impl WaitTarget for RwCore {
    fn holders(&self, out: &mut [TaskId]) -> usize {
        let s = self.state.lock();
        let mut n = 0;
        for id in s.writer.iter().chain(s.readers.ids()) {
            if n < out.len() {
                out[n] = *id;
                n += 1;
            }
        }
        n
    }
}

impl RwCore {
    /// Hands the free lock to the head of the queue. Called with state locked.
    fn grant(s: &mut State) {
        if s.writer.is_some() {
            return;
        }
        while let Some((t, tag)) = s.waiters.front() {
            if t.is_deadlocked() {
                s.waiters.pop_front();
                continue;
            }
            if tag == WRITE {
                if !s.readers.is_empty() {
                    return;
                }
                let (t, _) = s.waiters.pop_front().unwrap();
                s.writer = Some(t.id());
                task::wake_up(&t);
                return;
            }
            let (t, _) = s.waiters.pop_front().unwrap();
            s.readers.push(t.id());
            task::wake_up(&t);
        }
    }
}

/// A sleeping reader-writer semaphore protecting a `T` (see the module documentation).
pub struct RwSemaphore<T: ?Sized> {
    core: RwCore,
    dep_map: LockdepMap,
    data: UnsafeCell<T>,
}

// SAFETY: readers share &T (T: Sync), writers get &mut T (T: Send).
unsafe impl<T: ?Sized + Send + Sync> Sync for RwSemaphore<T> {}
// SAFETY: the semaphore owns its `T`; sending it moves the `T` to another task, which `T: Send`
// allows.
unsafe impl<T: ?Sized + Send> Send for RwSemaphore<T> {}

impl<T> RwSemaphore<T> {
    /// An unlocked semaphore of lockdep class `class`.
    pub const fn new(value: T, class: &'static LockClassKey) -> Self {
        Self {
            core: RwCore {
                state: RawSpinLock::new(State {
                    writer: None,
                    readers: Readers::new(),
                    waiters: WaitList::new(),
                }),
            },
            dep_map: LockdepMap::new(class),
            data: UnsafeCell::new(value),
        }
    }

    /// Consumes the semaphore and returns the data.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> RwSemaphore<T> {
    fn addr(&self) -> usize {
        self as *const Self as *const u8 as usize
    }

    /// The lock's lockdep class.
    pub fn class(&self) -> &'static LockClassKey {
        self.dep_map.class()
    }

    /// (writer, number of readers) right now.
    pub fn holders(&self) -> (Option<TaskId>, usize) {
        let s = self.core.state.lock();
        (s.writer, s.readers.count)
    }

    /// What a task waiting for this rwsem waits for (deadlock reports).
    fn blocked_on(&self, write: bool) -> BlockedOn {
        let target: *const (dyn WaitTarget + 'static) = &self.core as *const RwCore;
        BlockedOn {
            kind: if write {
                "rwsem (write)"
            } else {
                "rwsem (read)"
            },
            name: self.dep_map.class().name(),
            addr: self.addr(),
            target: Some(target),
        }
    }

    fn block(&self, write: bool) {
        let me = task::current();
        loop {
            let _irq = IrqGuard::new();
            {
                // Granted = handed the lock and taken off the wait list.
                let _s = self.core.state.lock();
                if !me.wait_queued.load(core::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                task::prepare_to_block();
            }
            task::set_blocked_on(self.blocked_on(write));
            deadlock::check_cycle(task::current());
            task::block_current_locked();
            task::clear_blocked_on();
        }
    }

    /// Takes it shared; sleeps while a writer holds or waits for it.
    #[track_caller]
    pub fn down_read(&self) -> RwSemReadGuard<'_, T> {
        self.down_read_nested(0)
    }

    /// [`RwSemaphore::down_read`] with lockdep nesting subclass `subclass`.
    #[track_caller]
    pub fn down_read_nested(&self, subclass: u8) -> RwSemReadGuard<'_, T> {
        task::might_sleep();
        let loc = Location::caller();
        lockdep::lock_acquire(
            &self.dep_map,
            self.addr(),
            Acquire::SHARED.nested(subclass),
            loc,
        );
        let me = task::current().id();
        let must_wait = {
            let mut s = self.core.state.lock();
            if s.writer == Some(me) {
                None
            } else if s.writer.is_none() && s.waiters.is_empty() {
                s.readers.push(me);
                Some(false)
            } else {
                task::prepare_to_block();
                s.waiters.push_back(task::current(), READ);
                Some(true)
            }
        };
        let Some(must_wait) = must_wait else {
            // The writer itself: it would wait for itself forever.
            deadlock::self_deadlock(self.blocked_on(false));
        };
        if must_wait {
            // Interrupts were restored in between; the state stays Blocked and
            // the waiter is queued, so a hand-off in the gap makes us Ready.
            self.block(false);
        }
        RwSemReadGuard {
            sem: self,
            _not_send: NotSend::default(),
        }
    }

    /// Takes it exclusively; sleeps while anyone holds it.
    #[track_caller]
    pub fn down_write(&self) -> RwSemWriteGuard<'_, T> {
        self.down_write_nested(0)
    }

    /// [`RwSemaphore::down_write`] with lockdep nesting subclass `subclass`.
    #[track_caller]
    pub fn down_write_nested(&self, subclass: u8) -> RwSemWriteGuard<'_, T> {
        task::might_sleep();
        let loc = Location::caller();
        lockdep::lock_acquire(
            &self.dep_map,
            self.addr(),
            Acquire::EXCLUSIVE.nested(subclass),
            loc,
        );
        let me = task::current().id();
        let must_wait = {
            let mut s = self.core.state.lock();
            if s.writer == Some(me) || s.readers.ids().contains(&me) {
                None
            } else if s.writer.is_none() && s.readers.is_empty() && s.waiters.is_empty() {
                s.writer = Some(me);
                Some(false)
            } else {
                task::prepare_to_block();
                s.waiters.push_back(task::current(), WRITE);
                Some(true)
            }
        };
        let Some(must_wait) = must_wait else {
            // We hold it (as writer, or as one of the readers a writer must
            // wait out): report the self-deadlock and park, outside the
            // state lock.
            deadlock::self_deadlock(self.blocked_on(true));
        };
        if must_wait {
            self.block(true);
        }
        RwSemWriteGuard {
            sem: self,
            _not_send: NotSend::default(),
        }
    }

    /// `down_read_trylock`: shared if available now, else `None`.
    #[track_caller]
    pub fn try_read(&self) -> Option<RwSemReadGuard<'_, T>> {
        let me = task::current().id();
        let ok = {
            let mut s = self.core.state.lock();
            if s.writer.is_none() && s.waiters.is_empty() {
                s.readers.push(me);
                true
            } else {
                false
            }
        };
        if !ok {
            return None;
        }
        lockdep::lock_acquire(
            &self.dep_map,
            self.addr(),
            Acquire::SHARED.try_(),
            Location::caller(),
        );
        Some(RwSemReadGuard {
            sem: self,
            _not_send: NotSend::default(),
        })
    }

    /// `down_write_trylock`: exclusive if free now, else `None`.
    #[track_caller]
    pub fn try_write(&self) -> Option<RwSemWriteGuard<'_, T>> {
        let me = task::current().id();
        let ok = {
            let mut s = self.core.state.lock();
            if s.writer.is_none() && s.readers.is_empty() {
                s.writer = Some(me);
                true
            } else {
                false
            }
        };
        if !ok {
            return None;
        }
        lockdep::lock_acquire(
            &self.dep_map,
            self.addr(),
            Acquire::EXCLUSIVE.try_(),
            Location::caller(),
        );
        Some(RwSemWriteGuard {
            sem: self,
            _not_send: NotSend::default(),
        })
    }

    fn up_read(&self, loc: &'static Location<'static>) {
        lockdep::lock_release(&self.dep_map, self.addr(), loc);
        let me = task::current().id();
        let mut s = self.core.state.lock();
        if !s.readers.remove(me) {
            crate::println!(
                "WARNING: up_read of rwsem '{}' with no readers (task '{}')",
                self.dep_map.class().name(),
                task::current().name()
            );
        }
        RwCore::grant(&mut s);
    }

    fn up_write(&self, loc: &'static Location<'static>) {
        lockdep::lock_release(&self.dep_map, self.addr(), loc);
        let mut s = self.core.state.lock();
        s.writer = None;
        RwCore::grant(&mut s);
    }
}

/// Shared hold of a [`RwSemaphore`]; released on drop.
#[must_use = "the read lock is released as soon as the guard is dropped"]
pub struct RwSemReadGuard<'a, T: ?Sized> {
    _not_send: NotSend,
    sem: &'a RwSemaphore<T>,
}

/// Exclusive hold of a [`RwSemaphore`]; released on drop.
#[must_use = "the write lock is released as soon as the guard is dropped"]
pub struct RwSemWriteGuard<'a, T: ?Sized> {
    _not_send: NotSend,
    sem: &'a RwSemaphore<T>,
}

impl<'a, T: ?Sized> RwSemWriteGuard<'a, T> {
    /// `downgrade_write`: become a reader without letting a writer in between;
    /// waiting readers at the head of the queue are let in too.
    #[track_caller]
    pub fn downgrade(self) -> RwSemReadGuard<'a, T> {
        let sem = self.sem;
        core::mem::forget(self);
        lockdep::lock_downgrade(&sem.dep_map, sem.addr(), Location::caller());
        let me = task::current().id();
        let mut s = sem.core.state.lock();
        s.writer = None;
        s.readers.push(me);
        // Admit readers queued at the head (not writers: readers hold it).
        while s.waiters.front().is_some_and(|(_, tag)| tag == READ) {
            let (t, _) = s.waiters.pop_front().unwrap();
            s.readers.push(t.id());
            task::wake_up(&t);
        }
        RwSemReadGuard {
            sem,
            _not_send: NotSend::default(),
        }
    }
}

impl<T: ?Sized> Deref for RwSemReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: shared hold.
        unsafe { &*self.sem.data.get() }
    }
}

impl<T: ?Sized> Drop for RwSemReadGuard<'_, T> {
    #[track_caller]
    fn drop(&mut self) {
        self.sem.up_read(Location::caller());
    }
}

impl<T: ?Sized> Deref for RwSemWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: exclusive hold.
        unsafe { &*self.sem.data.get() }
    }
}

impl<T: ?Sized> DerefMut for RwSemWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: exclusive hold.
        unsafe { &mut *self.sem.data.get() }
    }
}

impl<T: ?Sized> Drop for RwSemWriteGuard<'_, T> {
    #[track_caller]
    fn drop(&mut self) {
        self.sem.up_write(Location::caller());
    }
}
