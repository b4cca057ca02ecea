//! Where direct reclaim's stall time goes.
//!
//! The page allocator counts the time of every direct reclaim pass
//! (`__perform_reclaim`, as Linux's PSI counts a memstall between
//! `psi_memstall_enter` and `psi_memstall_leave`) in one figure,
//! `stall_ns`. This module splits that figure into the parts measured where
//! they happen: the task enters a memstall for the pass ([`MemstallGuard`],
//! a flag of the task as Linux's `current->in_memstall`),
//! and every blocking wait inside reclaim that a [`StallTimer`] brackets adds
//! its monotonic time to one [`StallPart`], only while the task is in a
//! memstall (kswapd, a test that calls `try_to_free_pages` itself, or a
//! PF_MEMALLOC section outside the allocator add nothing). What no timer
//! covers (the scan's CPU time, the time spent preempted, unbracketed
//! waits) is the rest: `stall_ns` minus the parts. A pass's parts are kept
//! in its task until the pass ends, then added to the totals, so they are
//! counted together with the pass's stall time and never exceed it; every
//! pass is tracked, however many tasks reclaim at once.
//!
//! Linux has no such split in one place: PSI keeps one figure per task
//! group; the parts are found from tracepoints (`mm_vmscan_throttled` for
//! the no-progress throttle, the `pgscan_direct_throttle` count for
//! pfmemalloc_wait, lock contention and block tracepoints for the rest).

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::task::{MEMSTALL_PARTS, Memstall};

/// One part of the direct-reclaim stall time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallPart {
    /// Throttled on pfmemalloc_wait (`throttle_direct_reclaim`).
    Pfmemalloc,
    /// Throttled on the no-progress queue (`consider_reclaim_throttle`,
    /// `reclaim_throttle(VMSCAN_THROTTLE_NOPROGRESS)`).
    NoProgress,
    /// Sleeping on a lock inside a shrinker: the inode shrinker's blocking
    /// ILOCK calls (reclaim's, the cluster flush's, the final lock), its
    /// wait for a running cluster flush (`xfs_iflock`'s sleep) and a turn at
    /// the log's push lock. Bracketed around the blocking call, so an
    /// uncontended lock adds its few nanoseconds too.
    Lock,
    /// Waiting for the device (the disk model's `wait_until`): the log
    /// writes of forces (`xfs_iunpin_wait`), a cluster write in flight (the
    /// flush lock is held until its IO ends), `SYNC_WAIT` writeback and its
    /// flush, buffer reads, a full request queue.
    Io,
}

const PARTS: usize = MEMSTALL_PARTS;

impl StallPart {
    fn index(self) -> usize {
        match self {
            StallPart::Pfmemalloc => 0,
            StallPart::NoProgress => 1,
            StallPart::Lock => 2,
            StallPart::Io => 3,
        }
    }
}

static PART_NS: [AtomicU64; PARTS] = [const { AtomicU64::new(0) }; PARTS];

/// Tasks in a memstall now, so that the waits of a system that is not
/// reclaiming skip looking at the current task. A task that ends inside a
/// memstall (its guard forgotten) stays counted, which only costs speed.
static MEMSTALL_TASKS: AtomicUsize = AtomicUsize::new(0);

/// The current task's memstall state, if it is in a memstall.
fn current_memstall() -> Option<&'static Memstall> {
    if MEMSTALL_TASKS.load(Ordering::Relaxed) == 0 {
        // The task's own enter counted it before returning, so a task in a
        // memstall never reads 0 here.
        return None;
    }
    let m = crate::task::current().memstall();
    m.active().then_some(m)
}

/// Linux's `psi_memstall_enter` .. `psi_memstall_leave`: while held, the
/// task's reclaim waits count as stall parts. The state is the task's own
/// (`current->in_memstall`); a nested enter changes nothing, as in Linux,
/// and the outermost guard ends the memstall.
pub struct MemstallGuard {
    /// This guard entered the memstall (it was not nested).
    outermost: bool,
    /// Left on the task that entered: it ends that task's memstall.
    _not_send: PhantomData<*const ()>,
}

impl MemstallGuard {
    /// Marks the current task as stalled on memory.
    pub fn enter() -> Self {
        let m = crate::task::current().memstall();
        let outermost = !m.active();
        if outermost {
            MEMSTALL_TASKS.fetch_add(1, Ordering::Relaxed);
            m.set_active(true);
        }
        MemstallGuard {
            outermost,
            _not_send: PhantomData,
        }
    }

    /// Ends the memstall: its parts join the totals. The caller adds the
    /// memstall's own time to `stall_ns` first.
    pub fn leave(self) {
        drop(self);
    }
}

impl Drop for MemstallGuard {
    fn drop(&mut self) {
        if !self.outermost {
            return;
        }
        let m = crate::task::current().memstall();
        for (i, total) in PART_NS.iter().enumerate() {
            total.fetch_add(m.take(i), Ordering::Relaxed);
        }
        m.set_active(false);
        MEMSTALL_TASKS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether the current task is inside a direct-reclaim memstall.
pub fn in_memstall() -> bool {
    current_memstall().is_some()
}

/// The parts of the current task's memstall in progress so far (all 0
/// outside one): each task has its own.
pub fn current_parts() -> StallParts {
    match current_memstall() {
        Some(m) => StallParts {
            pfmemalloc_ns: m.get(StallPart::Pfmemalloc.index()),
            noprogress_ns: m.get(StallPart::NoProgress.index()),
            lock_ns: m.get(StallPart::Lock.index()),
            io_ns: m.get(StallPart::Io.index()),
        },
        None => StallParts::default(),
    }
}

/// Brackets one wait: on drop, adds the time since [`start`](Self::start)
/// to `part` if the task was in a memstall when it started (and still is).
pub struct StallTimer {
    part: StallPart,
    start: Option<u64>,
    /// Dropped on the task that started it: it adds to that task's parts.
    _not_send: PhantomData<*const ()>,
}

impl StallTimer {
    /// Starts timing a wait of kind `part`.
    pub fn start(part: StallPart) -> Self {
        let start = current_memstall().map(|_| crate::time::now_ns());
        StallTimer {
            part,
            start,
            _not_send: PhantomData,
        }
    }
}

impl Drop for StallTimer {
    fn drop(&mut self) {
        if let Some(t0) = self.start
            && let Some(m) = current_memstall()
        {
            let d = crate::time::now_ns().saturating_sub(t0);
            m.add(self.part.index(), d);
        }
    }
}

/// The parts since boot, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StallParts {
    /// See [`StallPart::Pfmemalloc`].
    pub pfmemalloc_ns: u64,
    /// See [`StallPart::NoProgress`].
    pub noprogress_ns: u64,
    /// See [`StallPart::Lock`].
    pub lock_ns: u64,
    /// See [`StallPart::Io`].
    pub io_ns: u64,
}

impl StallParts {
    /// The sum of the measured parts.
    pub fn waits_ns(&self) -> u64 {
        self.pfmemalloc_ns + self.noprogress_ns + self.lock_ns + self.io_ns
    }

    /// The rest of `stall_ns` (the scan's CPU time and whatever no timer
    /// covers).
    pub fn rest_ns(&self, stall_ns: u64) -> u64 {
        stall_ns.saturating_sub(self.waits_ns())
    }

    /// `self - earlier`, part by part.
    pub fn since(&self, earlier: &StallParts) -> StallParts {
        StallParts {
            pfmemalloc_ns: self.pfmemalloc_ns.saturating_sub(earlier.pfmemalloc_ns),
            noprogress_ns: self.noprogress_ns.saturating_sub(earlier.noprogress_ns),
            lock_ns: self.lock_ns.saturating_sub(earlier.lock_ns),
            io_ns: self.io_ns.saturating_sub(earlier.io_ns),
        }
    }
}

/// Reads the parts.
pub fn snapshot() -> StallParts {
    let r = |i: usize| PART_NS[i].load(Ordering::Relaxed);
    StallParts {
        pfmemalloc_ns: r(0),
        noprogress_ns: r(1),
        lock_ns: r(2),
        io_ns: r(3),
    }
}
