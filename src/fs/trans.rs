//! Transactions: the RAII object every modifying operation runs in.
//!
//! As in XFS (`xfs_trans_alloc`), the transaction object itself is
//! allocated first, with GFP_KERNEL and before any inode lock is taken, and
//! only then, when the policy says so (`scoped_nofs_transactions`), the task
//! enters a `memalloc_nofs_save` scope that lasts as long as the
//! transaction: every allocation inside it, whatever gfp its caller passes,
//! loses __GFP_FS, so reclaim entered from a transaction cannot recurse into
//! the filesystem (the inode shrinker answers STOP and its work is deferred).
//!
//! A transaction collects the inodes it changed ([`Transaction::log_inode`])
//! and marks them IDIRTY on [`Transaction::commit`], which the caller does
//! while still holding their ILOCKs exclusively. Dirty inode cores are
//! written back later by the flusher, a cluster at a time. Commit also pins
//! them in the log (`fs::log`) until the checkpoint that holds the commit
//! is written: pinned inodes are not written back, and reclaim waits for
//! (`reclaim_pinned=wait`) or skips them. The log models timing only:
//! commit does not make anything durable by itself (see the module docs of
//! [`super::ops`]).

use super::FsError;
use super::icache::{I_DIRTY, XfsInode};
use super::state::Fs;
use crate::mm::gfp::{GFP_KERNEL, Gfp};
use crate::mm::scope::MemallocScope;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

const MAX_LOGGED: usize = 4;

/// The in-memory transaction record (what the `xfs_trans` slab holds).
struct TransRecord {
    logged: [*const XfsInode; MAX_LOGGED],
    n: usize,
}

pub(crate) struct Transaction<'a> {
    fs: &'a Fs,
    rec: NonNull<TransRecord>,
    /// Dropped after everything else: ends the NOFS scope last.
    _nofs: Option<MemallocScope>,
}

impl<'a> Transaction<'a> {
    /// `xfs_trans_alloc`: allocate (GFP_KERNEL, no locks held), then enter
    /// the NOFS scope if the policy asks for it.
    #[track_caller]
    pub(crate) fn alloc(fs: &'a Fs) -> Result<Self, FsError> {
        Self::alloc_gfp(fs, GFP_KERNEL)
    }

    /// [`Transaction::alloc`] that cannot fail for lack of memory
    /// (`__GFP_NOFAIL`, as XFS allocates every transaction): for freeing an
    /// unlinked inode, which has no caller to report a failure to.
    #[track_caller]
    pub(crate) fn alloc_nofail(fs: &'a Fs) -> Result<Self, FsError> {
        Self::alloc_gfp(fs, GFP_KERNEL | Gfp::__GFP_NOFAIL)
    }

    #[track_caller]
    fn alloc_gfp(fs: &'a Fs, gfp: Gfp) -> Result<Self, FsError> {
        let p = fs
            .trans_slab
            .alloc(gfp)
            .map_err(|_| FsError::NoMemory)?
            .cast::<TransRecord>();
        // SAFETY: a fresh object sized for a TransRecord.
        unsafe {
            p.as_ptr().write(TransRecord {
                logged: [core::ptr::null(); MAX_LOGGED],
                n: 0,
            })
        };
        let nofs = fs.policy.scoped_nofs_transactions.then(MemallocScope::nofs);
        fs.stats.transactions.fetch_add(1, Ordering::Relaxed);
        Ok(Self {
            fs,
            rec: p,
            _nofs: nofs,
        })
    }

    fn rec(&mut self) -> &mut TransRecord {
        // SAFETY: owned by this transaction.
        unsafe { self.rec.as_mut() }
    }

    /// Records that `ip`'s core was changed (the caller holds its ILOCK
    /// exclusively until after commit).
    pub(crate) fn log_inode(&mut self, ip: &XfsInode) {
        let r = self.rec();
        if r.logged[..r.n].contains(&(ip as *const XfsInode)) {
            return;
        }
        assert!(r.n < MAX_LOGGED, "transaction logs too many inodes");
        r.logged[r.n] = ip;
        r.n += 1;
    }

    /// Marks every logged inode IDIRTY (they join the flusher's work) and
    /// pins it in the log until the checkpoint of this commit is written
    /// (`xfs_trans_commit` -> `xlog_cil_commit`; see `fs::log`).
    pub(crate) fn commit(mut self) {
        let fs = self.fs;
        let r = self.rec();
        let (seq, push) = fs.log.commit(r.logged[..r.n].iter().map(|&ip| {
            // SAFETY: the caller holds a reference (or, inactivating,
            // I_INACTIVATING) and the ILOCK.
            &unsafe { &*ip }.pin_seq
        }));
        if push {
            // xlog_cil_push_background: write the checkpoint, do not wait.
            let _ = fs.log.force_seq(fs.device(), seq);
        }
        for &ip in &r.logged[..r.n] {
            // SAFETY: the caller holds a reference (or, inactivating,
            // I_INACTIVATING) and the ILOCK.
            let ip = unsafe { &*ip };
            if ip.flags.fetch_or(I_DIRTY, Ordering::AcqRel) & I_DIRTY == 0 {
                fs.stats.dirty.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        // SAFETY: `rec` was allocated from `trans_slab` for this transaction
        // alone and is not used once the transaction is dropped.
        unsafe { self.fs.trans_slab.free(self.rec.cast()) };
    }
}
