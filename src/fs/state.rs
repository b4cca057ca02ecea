//! The per-mount state [`Fs`] (XFS's `struct xfs_mount`): the fields every
//! layer reaches (superblock, per-AG indexes, buffer cache, slabs,
//! counters), the [`FsStats`] snapshot and small accessors. The lower layers
//! (icache, inactivation, bmap, allocation, directories, transactions,
//! flush) take `&Fs` from here; mount/unmount ([`super::mount`]) and the
//! operations ([`super::ops`]) sit above them and nothing below imports
//! those.

use super::FsError;
use super::blockdev::BlockDevice;
use super::buf::{BufCache, BufCacheOwner};
use super::format::Superblock;
use super::inode::{Perag, XfsInode};
use super::policy::Policy;
use crate::mm::gfp::Gfp;
use crate::mm::list_lru::ListLru;
use crate::mm::shrinker::{ShrinkerInfo, ShrinkerRegistration};
use crate::mm::slab::kmalloc::KVec;
use crate::mm::slab::{KmemCache, SlabInfo};
use crate::sync::{RwSemaphore, WaitQueue};
use crate::task::JoinHandle;
use alloc::sync::{Arc, Weak};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Counters behind [`FsStats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) cached: AtomicU64,
    pub(crate) reclaimable: AtomicU64,
    pub(crate) dirty: AtomicU64,
    pub(crate) scanned: AtomicU64,
    pub(crate) reclaimed: AtomicU64,
    pub(crate) requeued_dirty: AtomicU64,
    pub(crate) requeued_locked: AtomicU64,
    pub(crate) requeued_flushing: AtomicU64,
    pub(crate) inode_reads: AtomicU64,
    pub(crate) icache_hits: AtomicU64,
    pub(crate) cluster_flushes: AtomicU64,
    pub(crate) flush_errors: AtomicU64,
    pub(crate) flush_trylock_skips: AtomicU64,
    pub(crate) flusher_runs: AtomicU64,
    pub(crate) shrinker_stops: AtomicU64,
    pub(crate) transactions: AtomicU64,
    pub(crate) inactivations: AtomicU64,
    pub(crate) inactivate_errors: AtomicU64,
    pub(crate) reclaim_writebacks: AtomicU64,
    pub(crate) reclaim_final_locks: AtomicU64,
    pub(crate) lru_rotated: AtomicU64,
    pub(crate) reclaim_iflock_waits: AtomicU64,
    pub(crate) pruned: AtomicU64,
    pub(crate) requeued_pinned: AtomicU64,
    pub(crate) reclaim_log_forces: AtomicU64,
    pub(crate) direct_log_forces: AtomicU64,
    pub(crate) direct_io_wait_ns: AtomicU64,
}

/// A plain-number snapshot of a filesystem's caches and reclaim.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsStats {
    /// In-core inodes now.
    pub inodes_cached: u64,
    /// Unused inodes on the inode LRU (`s_inode_lru`), not yet handed to
    /// XFS reclaim; the inode shrinker counts them with the reclaimable
    /// ones.
    pub inodes_lru: u64,
    /// Inodes in XFS's reclaimable state (`XFS_IRECLAIMABLE`): moved off
    /// the LRU by `prune_icache_sb`, or unlinked and freed on disk.
    pub inodes_reclaimable: u64,
    /// Of those, with a core not yet written back.
    pub inodes_dirty: u64,
    /// Reclaimable inodes the shrinker looked at.
    pub inodes_scanned: u64,
    /// Inodes the shrinker freed.
    pub inodes_reclaimed: u64,
    /// Candidates left in the cache because they were dirty.
    pub inodes_requeued_dirty: u64,
    /// Candidates left because their ILOCK trylock failed.
    pub inodes_requeued_locked: u64,
    /// Candidates left because a cluster flush had them.
    pub inodes_requeued_flushing: u64,
    /// Inode cache misses (cores read from their cluster buffer).
    pub inode_reads: u64,
    /// Inode lookups that found the inode in the cache.
    pub inode_cache_hits: u64,
    /// Cluster blocks written by inode writeback.
    pub cluster_flushes: u64,
    /// Failed cluster writes (the inodes stayed dirty).
    pub flush_errors: u64,
    /// Neighbours skipped because their ILOCK trylock failed.
    pub flush_trylock_skips: u64,
    /// Passes of the flusher thread that found dirty inodes.
    pub flusher_runs: u64,
    /// Buffers cached now.
    pub buffers_cached: u64,
    /// Cached buffers on the LRU now (unreferenced, reclaimable).
    pub buffers_lru: u64,
    /// Buffers the `xfs_buf` shrinker freed.
    pub buffers_reclaimed: u64,
    /// Buffer lookups that found the block cached.
    pub buffer_hits: u64,
    /// Buffer lookups that had to allocate a new buffer.
    pub buffer_misses: u64,
    /// STOPs the inode shrinker returned (no __GFP_FS, s_umount busy).
    pub shrinker_stops: u64,
    /// Transactions started.
    pub transactions: u64,
    /// Unlinked inodes freed on disk at their last reference.
    pub inactivations: u64,
    /// Dirty candidates whose cluster reclaim wrote back itself
    /// (`reclaim_writeback=sync`, or the deliberate bug).
    pub reclaim_writebacks: u64,
    /// Final blocking ILOCKs reclaim took before freeing
    /// (`reclaim_final_lock=on`).
    pub reclaim_final_locks: u64,
    /// Candidates whose cluster write was in flight and reclaim waited for
    /// its completion (the flush lock, `reclaim_writeback=sync`).
    pub reclaim_iflock_waits: u64,
    /// Second chances the LRU walk gave (`I_REFERENCED` cleared, rotated).
    pub inodes_lru_rotated: u64,
    /// Inodes the LRU walk moved to XFS's reclaimable state.
    pub inodes_pruned: u64,
    /// Candidates left because they were pinned in the log
    /// (`reclaim_pinned=skip`, XFS since 5.9).
    pub inodes_requeued_pinned: u64,
    /// Log checkpoints written (pushes of the CIL, by any log force).
    pub log_checkpoints: u64,
    /// Log forces reclaim issued or joined for a pinned candidate and
    /// waited for (`xfs_iunpin_wait`, `reclaim_pinned=wait`), by kswapd and
    /// direct reclaim.
    pub reclaim_log_forces: u64,
    /// Of those, the ones direct reclaim waited for.
    pub direct_reclaim_log_forces: u64,
    /// Device time direct reclaim waited for, in nanoseconds, by the disk
    /// model: for each request it waited on (log forces, the flush lock's
    /// cluster writes, synchronous writeback), the request's modelled
    /// completion less its submission (a checkpoint reclaim pushed) or the
    /// start of the wait (a request already in flight). Computed from the
    /// model's times, not from when the task ran again.
    pub direct_reclaim_io_wait_ns: u64,
}

/// Where a hook set with [`Fs::set_race_hook`] runs: the race windows of
/// inode reference handling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RacePoint {
    /// `Fs::irele` (an `InodeRef` dropped), before the reference is dropped.
    Put,
    /// `Fs::irele`: the last reference of an unlinked inode went and it
    /// is `I_INACTIVATING`; before it is freed on disk.
    Inactivate,
    /// [`Fs::lookup`]: the directory named the inode (its ILOCK is
    /// dropped); before a reference is taken.
    LookupFound,
}

/// A test hook for [`Fs::set_race_hook`]: called with the inode number.
pub type RaceHook = fn(u32, RacePoint);

/// A mounted filesystem.
pub struct Fs {
    pub(crate) me: Weak<Fs>,
    pub(super) dev: &'static dyn BlockDevice,
    pub(crate) policy: Policy,
    pub(crate) sb: Superblock,
    pub(crate) perags: KVec<Perag>,
    /// The superblock's inode LRU (`sb->s_inode_lru`): unused inodes.
    pub(crate) inode_lru: ListLru<XfsInode>,
    pub(crate) bufs: BufCache,
    pub(crate) inode_slab: KmemCache,
    pub(crate) trans_slab: KmemCache,
    /// The superblock's `s_umount`: unmount holds it for write; the inode
    /// shrinker only trylocks it for read.
    pub(crate) s_umount: RwSemaphore<()>,
    pub(crate) stats: Counters,
    /// The log: commits pin inodes until a log force (`fs::log`).
    pub(crate) log: super::log::Log,
    pub(crate) flush_wait: WaitQueue,
    pub(crate) flush_kick: AtomicBool,
    pub(crate) flush_stop: AtomicBool,
    pub(super) flusher: spin::Mutex<Option<JoinHandle>>,
    pub(super) shrinkers: spin::Mutex<Option<(ShrinkerRegistration, ShrinkerRegistration)>>,
    pub(super) unmounted: AtomicBool,
    pub(super) shut_down: AtomicBool,
    /// AG for the next new directory (XFS spreads directories over AGs).
    pub(super) dir_rotor: AtomicU32,
    pub(crate) reclaim_rotor: AtomicU32,
    /// The test hook of `set_race_hook`.
    pub(crate) race_hook: crate::sync::Hook<RaceHook>,
}

// SAFETY: shared state is behind locks and atomics; raw pointers in the
// per-AG indexes are guarded by the AG locks.
unsafe impl Send for Fs {}
// SAFETY: shared state is behind locks and atomics, and raw pointers in the per-AG indexes are only
// followed under the AG locks, so `&Fs` may be shared between tasks.
unsafe impl Sync for Fs {}

impl Fs {
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire) || self.unmounted.load(Ordering::Acquire)
    }

    pub(crate) fn check_live(&self) -> Result<(), FsError> {
        if self.is_shut_down() {
            Err(FsError::Shutdown)
        } else {
            Ok(())
        }
    }

    pub(crate) fn arc(&self) -> Arc<Fs> {
        self.me
            .upgrade()
            .expect("Fs used after its last Arc was dropped")
    }

    /// The reclaim policy this filesystem was mounted with.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The device the filesystem is on.
    pub fn device(&self) -> &'static dyn BlockDevice {
        self.dev
    }

    /// The superblock as read at mount.
    pub fn superblock(&self) -> Superblock {
        self.sb
    }

    /// A snapshot of the counters and current cache sizes.
    pub fn stats(&self) -> FsStats {
        let s = &self.stats;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (nbufs, lru) = self.bufs.counts();
        FsStats {
            inodes_cached: ld(&s.cached),
            inodes_lru: self.inode_lru.count(),
            inodes_reclaimable: ld(&s.reclaimable),
            inodes_dirty: ld(&s.dirty),
            inodes_scanned: ld(&s.scanned),
            inodes_reclaimed: ld(&s.reclaimed),
            inodes_requeued_dirty: ld(&s.requeued_dirty),
            inodes_requeued_locked: ld(&s.requeued_locked),
            inodes_requeued_flushing: ld(&s.requeued_flushing),
            inode_reads: ld(&s.inode_reads),
            inode_cache_hits: ld(&s.icache_hits),
            cluster_flushes: ld(&s.cluster_flushes),
            flush_errors: ld(&s.flush_errors),
            flush_trylock_skips: ld(&s.flush_trylock_skips),
            flusher_runs: ld(&s.flusher_runs),
            buffers_cached: nbufs,
            buffers_lru: lru,
            buffers_reclaimed: self.bufs.reclaimed.load(Ordering::Relaxed),
            buffer_hits: self.bufs.hits.load(Ordering::Relaxed),
            buffer_misses: self.bufs.misses.load(Ordering::Relaxed),
            shrinker_stops: ld(&s.shrinker_stops),
            transactions: ld(&s.transactions),
            inactivations: ld(&s.inactivations),
            reclaim_writebacks: ld(&s.reclaim_writebacks),
            reclaim_final_locks: ld(&s.reclaim_final_locks),
            reclaim_iflock_waits: ld(&s.reclaim_iflock_waits),
            inodes_lru_rotated: ld(&s.lru_rotated),
            inodes_pruned: ld(&s.pruned),
            inodes_requeued_pinned: ld(&s.requeued_pinned),
            log_checkpoints: self.log.checkpoints.load(Ordering::Relaxed),
            reclaim_log_forces: ld(&s.reclaim_log_forces),
            direct_reclaim_log_forces: ld(&s.direct_log_forces),
            direct_reclaim_io_wait_ns: ld(&s.direct_io_wait_ns),
        }
    }

    /// The `xfs_inode` slab cache's counters.
    pub fn inode_slab_info(&self) -> SlabInfo {
        self.inode_slab.info()
    }

    /// The shrinkers' counters (inode, buffer), while mounted.
    pub fn shrinker_info(&self) -> Option<(ShrinkerInfo, ShrinkerInfo)> {
        self.shrinkers
            .lock()
            .as_ref()
            .map(|(i, b)| (i.info(), b.info()))
    }

    /// Runs `do_shrink_slab` on the inode shrinker alone, as reclaim would
    /// with `gfp` (filtered by the task's scope) at `priority`. Returns
    /// inodes freed.
    pub fn shrink_inode_cache(&self, gfp: Gfp, priority: u32) -> u64 {
        match self.shrinkers.lock().as_ref() {
            Some((i, _)) => i.shrink(gfp, priority),
            None => 0,
        }
    }

    /// `xfs_log_force(mp, XFS_LOG_SYNC)`: writes everything committed so far
    /// to the log and waits, so that no inode stays pinned (`fs::log`). For
    /// tests and tools; sync and the flusher force the log themselves.
    pub fn log_force(&self) -> Result<(), FsError> {
        self.check_live()?;
        self.log_force_all();
        Ok(())
    }

    /// Writes back every dirty inode now.
    pub fn sync(&self) -> Result<(), FsError> {
        self.check_live()?;
        self.sync_inner()
    }

    pub(super) fn gfp(&self) -> Gfp {
        self.policy.gfp_under_ilock
    }

    /// Gets a buffer (`xfs_buf_get`) allocating with `gfp`, except that
    /// the operations' GFP under ILOCK becomes the policy's `buf_gfp`
    /// (knob `buf_gfp`, as `xfs_buf_alloc` picks its own flags);
    /// `__GFP_NOFAIL` is kept. Other callers' GFP (reclaim's) is used as is.
    pub(crate) fn buf_get(&self, blk: u64, gfp: Gfp) -> Result<super::buf::BufRef<'_>, FsError> {
        let gfp = if gfp.difference(Gfp::__GFP_NOFAIL) == self.policy.gfp_under_ilock {
            self.policy.buf_gfp | (gfp & Gfp::__GFP_NOFAIL)
        } else {
            gfp
        };
        self.bufs.get(blk, gfp)
    }

    /// `gfp` for giving space back (freeing blocks and inodes, truncating):
    /// `__GFP_NOFAIL`, as XFS allocates its buffers, so that an error path
    /// that returns what it took, or an unlinked inode's inactivation,
    /// cannot leak space for lack of memory. Fault injection skips these.
    pub(super) fn gfp_nofail(&self) -> Gfp {
        self.gfp() | Gfp::__GFP_NOFAIL
    }
}

impl BufCacheOwner for Fs {
    fn buf_cache(&self) -> &BufCache {
        &self.bufs
    }
}
