//! Where direct reclaim's stall time goes.
//!
//! The page allocator counts the time of every direct reclaim pass
//! (`__perform_reclaim`, as Linux's PSI counts a memstall between
//! `psi_memstall_enter` and `psi_memstall_leave`) in one figure,
//! `stall_ns`. This module splits that figure into the parts measured where
//! they happen: the task enters a memstall for the pass ([`MemstallGuard`]),
//! and every blocking wait inside reclaim that a [`StallTimer`] brackets adds
//! its monotonic time to one [`StallPart`], only while the task is in a
//! memstall (kswapd, a test that calls `try_to_free_pages` itself, or a
//! PF_MEMALLOC section outside the allocator add nothing). What no timer
//! covers (the scan's CPU time, the time spent preempted, unbracketed
//! waits) is the rest: `stall_ns` minus the parts.
//!
//! Linux has no such split in one place: PSI keeps one figure per task
//! group; the parts are found from tracepoints (`mm_vmscan_throttled` for
//! the no-progress throttle, the `pgscan_direct_throttle` count for
//! pfmemalloc_wait, lock contention and block tracepoints for the rest).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

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

const PARTS: usize = 4;

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
/// Memstalls that found no free slot: their parts are not counted (they
/// fall into the rest).
static UNTRACKED: AtomicU64 = AtomicU64::new(0);

/// Tasks in a memstall now (task id + 1; 0 = free). Linux keeps this as a
/// task flag (`current->in_memstall`); a table keeps it outside the task.
const SLOTS: usize = 128;
static IN_MEMSTALL: [AtomicU32; SLOTS] = [const { AtomicU32::new(0) }; SLOTS];
/// The parts of each slot's current memstall, added to [`PART_NS`] when
/// it ends: so a pass's parts are counted together with its stall time and
/// never exceed it.
static SLOT_NS: [[AtomicU64; PARTS]; SLOTS] =
    [const { [const { AtomicU64::new(0) }; PARTS] }; SLOTS];

fn current_key() -> u32 {
    crate::task::current().id().wrapping_add(1).max(1)
}

/// Slots in use: lets the waits of a system that is not reclaiming skip
/// the table.
static ACTIVE: AtomicU32 = AtomicU32::new(0);

/// The current task's memstall slot, if it is in one.
fn current_slot() -> Option<usize> {
    if ACTIVE.load(Ordering::Acquire) == 0 {
        return None;
    }
    let key = current_key();
    IN_MEMSTALL
        .iter()
        .position(|s| s.load(Ordering::Acquire) == key)
}

/// Linux's `psi_memstall_enter` .. `psi_memstall_leave`: while held, the
/// task's reclaim waits count as stall parts.
pub struct MemstallGuard {
    slot: Option<usize>,
}

impl MemstallGuard {
    /// Marks the current task as stalled on memory.
    pub fn enter() -> Self {
        let key = current_key();
        let slot = IN_MEMSTALL.iter().position(|s| {
            s.compare_exchange(0, key, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        match slot {
            Some(_) => {
                ACTIVE.fetch_add(1, Ordering::AcqRel);
            }
            None => {
                UNTRACKED.fetch_add(1, Ordering::Relaxed);
            }
        }
        MemstallGuard { slot }
    }

    /// Ends the memstall: its parts join the totals. The caller adds the
    /// memstall's own time to `stall_ns` first.
    pub fn leave(self) {
        drop(self);
    }
}

impl Drop for MemstallGuard {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            for (acc, total) in SLOT_NS[i].iter().zip(PART_NS.iter()) {
                total.fetch_add(acc.swap(0, Ordering::Relaxed), Ordering::Relaxed);
            }
            IN_MEMSTALL[i].store(0, Ordering::Release);
            ACTIVE.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Whether the current task is inside a direct-reclaim memstall.
pub fn in_memstall() -> bool {
    current_slot().is_some()
}

/// Brackets one wait: on drop, adds the time since [`start`](Self::start)
/// to `part` if the task was in a memstall when it started.
pub struct StallTimer {
    part: StallPart,
    start: Option<(usize, u64)>,
}

impl StallTimer {
    /// Starts timing a wait of kind `part`.
    pub fn start(part: StallPart) -> Self {
        let start = current_slot().map(|i| (i, crate::time::now_ns()));
        StallTimer { part, start }
    }
}

impl Drop for StallTimer {
    fn drop(&mut self) {
        if let Some((i, t0)) = self.start {
            let d = crate::time::now_ns().saturating_sub(t0);
            SLOT_NS[i][self.part.index()].fetch_add(d, Ordering::Relaxed);
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
    /// Memstalls whose parts could not be tracked (no free slot).
    pub untracked: u64,
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
            untracked: self.untracked.saturating_sub(earlier.untracked),
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
        untracked: UNTRACKED.load(Ordering::Relaxed),
    }
}
