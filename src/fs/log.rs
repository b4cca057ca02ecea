//! The log, as far as reclaim sees it (XFS's CIL and `xfs_log_force_seq`,
//! reduced to timing): transactions pin the inodes they log until the
//! checkpoint that holds them is written, and a log force writes the
//! checkpoint and waits for it.
//!
//! XFS's delayed logging gathers committed changes in the CIL (committed
//! item list); a checkpoint (a CIL push) writes them to the on-disk log
//! with `REQ_PREFLUSH | REQ_FUA`. An inode logged by a transaction is
//! *pinned* (`xfs_ipincount`) until the checkpoint that carries it has
//! completed; until then its core must not be written in place (the AIL,
//! `xfsaild`, skips pinned items and forces the log). Before 5.9,
//! `xfs_reclaim_inode` with `SYNC_WAIT` waited for a pinned inode with
//! `xfs_iunpin_wait`, which forces the log up to the inode's last commit and
//! sleeps until the checkpoint write completes; since 5.9 it requeues pinned
//! inodes (`if (xfs_ipincount(ip)) goto out_clear_flush`). The
//! `reclaim_pinned` knob chooses (see `policy`).
//!
//! The model keeps no log contents (kreclaim writes metadata through and
//! needs no recovery): a checkpoint is one request of its size on the
//! modelled device, queued behind everything before it
//! ([`BlockDevice::submit_log_write`]), so its cost is the device's
//! backlog, the cache flush it carries (`disk_flush=`,
//! [`DiskModel::flush_us`](super::DiskModel::flush_us)), the transfer and
//! the latency. A commit that takes the CIL past
//! [`CIL_SPACE_LIMIT`] pushes it without waiting (a background push);
//! otherwise the CIL is pushed only by a log force: the flusher when reclaim
//! kicks it (`xfs_ail_push_all` meeting pinned items), sync and unmount, and
//! `xfs_iunpin_wait`. A checkpoint is
//! [`CHECKPOINT_HEADER`] bytes plus [`LOGGED_INODE_BYTES`] per inode a
//! transaction logged since the last one, rounded up to a block (the log
//! writes whole log buffers). Sequences count checkpoints: a commit joins the
//! current sequence, a push closes it.
//!
//! **Deviation:** only the last checkpoint in flight is remembered; when a
//! second push is issued before the first completes, the first one's
//! inodes count as pinned until the second completes (on an in-order
//! device, a little longer than in XFS).

use super::blockdev::BlockDevice;
use crate::sync::{Mutex, SpinLock};
use core::sync::atomic::{AtomicU64, Ordering};

/// The CIL size that starts a background push (XFS's
/// `XLOG_CIL_SPACE_LIMIT`, an eighth of the log: a 2 MiB log here).
pub const CIL_SPACE_LIMIT: u64 = 256 << 10;
/// Log bytes of a checkpoint's headers (record header and commit record).
pub const CHECKPOINT_HEADER: u64 = 512;
/// Log bytes per logged inode: the inode log item's format header and the
/// logged core (XFS formats an `xfs_log_dinode` plus its op headers).
pub const LOGGED_INODE_BYTES: u64 = 256 + 64;

struct LogState {
    /// The sequence commits join now (`xc_current_sequence`).
    cil_seq: u64,
    /// Log bytes committed to it so far.
    cil_bytes: u64,
    /// Every sequence up to this one is on disk: its inodes are unpinned.
    stable_seq: u64,
    /// The last checkpoint pushed, and when its write completes.
    inflight_seq: u64,
    inflight_done_ns: u64,
}

impl LogState {
    fn stable(&mut self, now: u64) -> u64 {
        if self.inflight_seq > self.stable_seq && now >= self.inflight_done_ns {
            self.stable_seq = self.inflight_seq;
        }
        self.stable_seq
    }
}

/// A mounted filesystem's log.
pub(crate) struct Log {
    state: SpinLock<LogState>,
    /// Serialises checkpoint pushes (XFS pushes one CIL at a time).
    push: Mutex<()>,
    /// Checkpoints written.
    pub(crate) checkpoints: AtomicU64,
    /// Log bytes written.
    pub(crate) bytes: AtomicU64,
}

impl Log {
    pub(crate) fn new() -> Self {
        Self {
            state: SpinLock::new(
                LogState {
                    cil_seq: 1,
                    cil_bytes: 0,
                    stable_seq: 0,
                    inflight_seq: 0,
                    inflight_done_ns: 0,
                },
                crate::lock_class!("xfs_cil"),
            ),
            push: Mutex::new((), crate::lock_class!("xfs_cil_push")),
            checkpoints: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// A transaction commits (`xlog_cil_commit`) the inodes whose pin
    /// sequences are `pins`: each is pinned by the current sequence, and one
    /// not yet in it adds [`LOGGED_INODE_BYTES`] (delayed logging relogs an
    /// item already in the CIL in place). Returns the sequence, and whether
    /// the CIL passed [`CIL_SPACE_LIMIT`]: the caller then pushes it in the
    /// background (`xlog_cil_push_background`).
    pub(crate) fn commit<'a>(&self, pins: impl Iterator<Item = &'a AtomicU64>) -> (u64, bool) {
        let mut s = self.state.lock();
        let seq = s.cil_seq;
        for pin in pins {
            if pin.fetch_max(seq, Ordering::AcqRel) < seq {
                s.cil_bytes += LOGGED_INODE_BYTES;
            }
        }
        (seq, s.cil_bytes >= CIL_SPACE_LIMIT)
    }

    /// Whether the checkpoint `seq` (an inode's last commit; 0: never
    /// logged) is not on disk yet: the inode is pinned.
    pub(crate) fn is_pinned(&self, seq: u64) -> bool {
        seq != 0 && seq > self.state.lock().stable(crate::time::now_ns())
    }

    /// The sequence a force of everything committed so far must reach
    /// (`xfs_log_force(mp, ...)`): the current one if it holds anything,
    /// else the last pushed.
    pub(crate) fn last_seq(&self) -> u64 {
        let s = self.state.lock();
        if s.cil_bytes > 0 {
            s.cil_seq
        } else {
            s.inflight_seq.max(s.stable_seq)
        }
    }

    /// `xfs_log_force_seq`: makes sure the checkpoint `seq` is written,
    /// pushing the current one if it is not pushed yet. Returns when the
    /// caller met the write (its submission, or now for a checkpoint
    /// already in flight) and when it completes on `dev` (`time::now_ns`),
    /// or `None` when it already has: nothing to wait for. The caller waits
    /// with [`BlockDevice::wait_completion`] (a synchronous force) or goes
    /// on.
    pub(crate) fn force_seq(&self, dev: &dyn BlockDevice, seq: u64) -> Option<(u64, u64)> {
        if !self.is_pinned(seq) {
            return None;
        }
        // A turn at the push lock: direct reclaim's stall part "locks".
        let _push = {
            let _stall =
                crate::mm::memstall::StallTimer::start(crate::mm::memstall::StallPart::Lock);
            self.push.lock()
        };
        let bytes = {
            let mut s = self.state.lock();
            if seq <= s.stable(crate::time::now_ns()) {
                return None;
            }
            if seq <= s.inflight_seq {
                return Some((crate::time::now_ns(), s.inflight_done_ns));
            }
            // Close the current sequence: later commits join the next one.
            let bytes = s.cil_bytes;
            s.cil_bytes = 0;
            s.inflight_seq = s.cil_seq;
            // Not on disk before its write is submitted below.
            s.inflight_done_ns = u64::MAX;
            s.cil_seq += 1;
            bytes
        };
        let size = (CHECKPOINT_HEADER + bytes).next_multiple_of(dev.block_size().max(1) as u64);
        let issued = crate::time::now_ns();
        let done = dev.submit_log_write(size);
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        let mut s = self.state.lock();
        s.inflight_done_ns = done;
        s.stable(crate::time::now_ns());
        Some((issued, done))
    }
}
