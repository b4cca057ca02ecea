//! The in-core inode (XFS's `struct xfs_inode`: number, references,
//! flags, the ILOCK over the core) and the per-AG state that indexes the
//! cached inodes (`struct xfs_perag`). They sit below the mount state
//! ([`super::state::Fs`] holds the per-AG array) and the inode cache
//! ([`super::icache`] looks inodes up, references and reclaims them).

use super::FsError;
use super::format::InodeCore;
use crate::mm::list_lru::{ListLruHead, ListLruItem};
use crate::mm::slab::kmalloc::KVec;
use crate::sync::lockdep::{self, LockClassKey};
use crate::sync::{Mutex, RwSemaphore, SpinLock};
use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub(crate) const I_RECLAIMABLE: u32 = 1 << 0;
pub(crate) const I_RECLAIM: u32 = 1 << 1;
pub(crate) const I_DIRTY: u32 = 1 << 2;
pub(crate) const I_FLUSHING: u32 = 1 << 3;
pub(crate) const I_UNLINKED: u32 = 1 << 4;
pub(crate) const I_INACTIVATING: u32 = 1 << 5;
/// The VFS's `I_REFERENCED`: the inode was used again while it sat on the
/// inode LRU; the LRU walk gives it a second chance (clears the bit and
/// rotates it) instead of evicting it.
pub(crate) const I_REFERENCED: u32 = 1 << 6;

/// Lockdep subclass for the second inode an operation locks.
pub const ILOCK_CHILD: u8 = 1;
/// Lockdep subclass for the shrinker's blocking ILOCK on an unreferenced
/// inode while the reclaiming task holds an ILOCK above reclaim; used only
/// with the `reclaim_subclass` knob (not XFS: XFS reclaim uses subclass 0).
pub const ILOCK_RECLAIM: u8 = 2;

/// The lockdep class of a directory's ILOCK (XFS's `xfs_dir_ilock_class`).
pub fn dir_ilock_class() -> &'static LockClassKey {
    crate::lock_class!("xfs_dir_ilock")
}

/// The lockdep class of every other inode's ILOCK (`xfs_nondir_ilock_class`).
pub fn nondir_ilock_class() -> &'static LockClassKey {
    crate::lock_class!("xfs_nondir_ilock")
}

/// The lockdep class of an inode's IOLOCK (XFS's `i_rwsem`).
pub fn iolock_class() -> &'static LockClassKey {
    crate::lock_class!("xfs_iolock")
}

/// The ILOCK class of an inode of type `dir` (set when the in-core inode
/// is made, as `xfs_setup_inode` does).
pub fn ilock_class(dir: bool) -> &'static LockClassKey {
    if dir {
        dir_ilock_class()
    } else {
        nondir_ilock_class()
    }
}

/// Subclass for the shrinker's blocking ILOCK on an unreferenced inode.
pub(crate) fn reclaim_subclass() -> u8 {
    if lockdep::held_count(dir_ilock_class()) + lockdep::held_count(nondir_ilock_class()) > 0 {
        ILOCK_RECLAIM
    } else {
        0
    }
}

/// An in-core inode.
pub(crate) struct XfsInode {
    pub(crate) ino: u32,
    /// VFS references; changes between 0 and 1 happen under the AG lock
    /// (see the module docs).
    pub(crate) refcount: AtomicU32,
    pub(crate) flags: AtomicU32,
    /// ILOCK, guarding the core.
    pub(crate) ilock: RwSemaphore<InodeCore>,
    /// IOLOCK (`i_rwsem`): file data IO. Reads hold it shared and take the
    /// ILOCK only to map blocks; writes and truncates hold it exclusive
    /// before their transaction and ILOCK. Reclaim never takes it.
    pub(crate) iolock: RwSemaphore<()>,
    /// The flush lock's IO: when the last cluster write of this inode
    /// completes on the device (`time::now_ns`). XFS holds the inode's
    /// flush lock (`XFS_IFLUSHING`, the iflock before 5.9) from the cluster
    /// flush until the buffer's IO completes (`xfs_iflush_done`); reclaim
    /// must wait for it (`xfs_iflock`, before 5.9) or skip the inode (5.9
    /// on) until then.
    pub(crate) flush_done_ns: AtomicU64,
    /// The log sequence of the last transaction that logged this inode (0:
    /// none): the inode is pinned (`xfs_ipincount`) until that checkpoint
    /// is on disk (`fs::log`).
    pub(crate) pin_seq: AtomicU64,
    /// On the superblock's inode LRU (`i_lru`) while unused; taken off
    /// lazily (see `Fs::prune_icache_sb`).
    pub(crate) lru: ListLruHead<XfsInode>,
}

// SAFETY: `lru_head` always returns the inode's own `lru` field, used by no
// other list type.
unsafe impl ListLruItem for XfsInode {
    fn lru_head(&self) -> &ListLruHead<Self> {
        &self.lru
    }
}

impl XfsInode {
    pub(crate) fn new(core: InodeCore, dir: bool) -> Self {
        Self {
            ino: core.ino,
            refcount: AtomicU32::new(1),
            flags: AtomicU32::new(0),
            ilock: RwSemaphore::new(core, ilock_class(dir)),
            iolock: RwSemaphore::new((), iolock_class()),
            flush_done_ns: AtomicU64::new(0),
            pin_seq: AtomicU64::new(0),
            lru: ListLruHead::new(),
        }
    }

    pub(crate) fn flags(&self) -> u32 {
        self.flags.load(Ordering::Acquire)
    }

    pub(crate) fn set(&self, f: u32) -> u32 {
        self.flags.fetch_or(f, Ordering::AcqRel)
    }

    pub(crate) fn clear(&self, f: u32) -> u32 {
        self.flags.fetch_and(!f, Ordering::AcqRel)
    }

    /// Whether a cluster write of this inode is still in flight (its flush
    /// lock held until the IO completes).
    pub(crate) fn flush_io_pending(&self) -> bool {
        self.flush_done_ns.load(Ordering::Acquire) > crate::time::now_ns()
    }
}

/// The cached inodes of one AG: a slot per AG inode.
pub(crate) struct Ici {
    pub(crate) slots: KVec<*mut XfsInode>,
    /// Where the next reclaim walk starts (XFS's per-AG reclaim cursor).
    pub(crate) cursor: u32,
}

// SAFETY: the pointers are only followed under the AG lock, or with a
// reference / ILOCK / I_FLUSHING that keeps the inode alive.
unsafe impl Send for Ici {}

/// Per-AG state (`struct xfs_perag`).
pub(crate) struct Perag {
    pub(crate) ici: SpinLock<Ici>,
    /// Serialises the AG header (block and inode allocation), `xfs_agf`.
    pub(crate) agf: Mutex<()>,
    pub(crate) reclaimable: AtomicU64,
}

impl Perag {
    /// Mount-time setup (GFP_KERNEL).
    pub(crate) fn new(agno: u32, inodes: u32) -> Result<Self, FsError> {
        let gfp = crate::mm::gfp::GFP_KERNEL;
        let mut slots = KVec::with_capacity(inodes as usize, gfp).map_err(|_| FsError::NoMemory)?;
        for _ in 0..inodes {
            slots
                .push(ptr::null_mut(), gfp)
                .map_err(|_| FsError::NoMemory)?;
        }
        let _ = agno;
        Ok(Self {
            ici: SpinLock::new(
                Ici { slots, cursor: 0 },
                crate::lock_class!("xfs_perag_ici"),
            ),
            agf: Mutex::new((), crate::lock_class!("xfs_agf")),
            reclaimable: AtomicU64::new(0),
        })
    }
}
