//! The inode cache and its reclaim (XFS's `xfs_icache.c`, simplified).
//!
//! In-core inodes (`XfsInode`) come from the slab cache `xfs_inode`
//! (`SlabFlags::RECLAIM_ACCOUNT`). Each AG indexes its cached inodes in a
//! fixed array with one slot per AG inode (`inodes_per_ag` ≤ 4096), made at
//! mount, so inserting never allocates; the per-AG spinlock `xfs_perag_ici`
//! guards the array and the state transitions below. The XFS states are
//! flag bits:
//!
//! - referenced: `refcount > 0` ([`InodeRef`]s exist);
//! - unused, on the inode LRU: the last reference went (the VFS's
//!   `iput_final` keeps the inode cached on `sb->s_inode_lru`); with
//!   `I_REFERENCED` if it was used again while on the LRU;
//! - `I_RECLAIMABLE`: the LRU walk evicted it (what `prune_icache_sb` ->
//!   `evict` -> `xfs_fs_destroy_inode` does: XFS's `XFS_IRECLAIMABLE`), or
//!   it was unlinked and freed on disk; counted per AG and per fs;
//! - `I_RECLAIM`: reclaim owns it; lookups wait until it is requeued or gone;
//! - `I_DIRTY`: the core changed and is not on disk yet (set by
//!   transaction commit, cleared by a successful cluster write);
//! - `I_FLUSHING`: a cluster flush is writing it; reclaim leaves it alone;
//! - `I_UNLINKED`: `nlink` reached 0; the last reference frees it on disk
//!   (inactivation), as XFS's `xfs_inactive`;
//! - `I_INACTIVATING`: the last reference of an unlinked inode went and
//!   that task is freeing it on disk (XFS's `XFS_INACTIVATING`); lookups
//!   wait until it is done, reclaim and unmount leave it alone.
//!
//! The inode LRU in front of XFS reclaim (the VFS's, `fs/inode.c`): the
//! last reference puts the inode at the tail of the LRU
//! ([`ListLru`](crate::mm::list_lru::ListLru)), or,
//! if it is still there (a lookup does not take it off: removal is lazy, as
//! in Linux), sets `I_REFERENCED`. The inode shrinker splits its
//! `nr_to_scan` between the LRU and the reclaimable inodes in proportion to
//! their counts (`super_cache_scan`) and runs `prune_icache_sb` first: its
//! isolate callback (`inode_lru_isolate`) trylocks the AG lock (this
//! inode's `i_lock`; `LRU_SKIP` when busy), takes in-use inodes off the LRU
//! (`LRU_REMOVED`), gives `I_REFERENCED` ones a second chance (clear the
//! bit, `LRU_ROTATE`), and moves the rest to `I_RECLAIMABLE`, where XFS
//! reclaim (`xfs_reclaim_inodes_nr`) finds them. An unlinked inode skips
//! the LRU (the VFS evicts it at once) and becomes reclaimable after
//! inactivation.
//!
//! What protects the reference count and the states: `refcount` only goes
//! from 0 to 1 (a lookup) and from 1 to 0 (the last [`InodeRef`] dropped)
//! under the AG lock; other changes are plain atomic increments by a holder
//! (clone) and decrements that cannot reach 0 (`Fs::irele`'s fast path,
//! Linux's `atomic_dec_and_lock`). So a task that decrements to 0 under the
//! AG lock knows, atomically with the decrement, that it dropped the last
//! reference and that no lookup took a new one. If the inode is unlinked it
//! sets `I_INACTIVATING` in the same critical section, inactivates with the
//! AG lock dropped (an unreferenced `I_INACTIVATING` inode is owned by that
//! task), and then, under the AG lock again, clears it and sets
//! `I_RECLAIMABLE`. `I_RECLAIMABLE` and `I_INACTIVATING` are set and cleared
//! only under the AG lock; `I_RECLAIM` is set under it and cleared by its
//! owner.
//!
//! Every inode's ILOCK is an `RwSemaphore<InodeCore>` of the single lockdep
//! class `xfs_ilock` ([`ilock_class`]). Operations take it on referenced
//! inodes (above reclaim). The inode shrinker takes it on unreferenced
//! inodes (below reclaim): with `try_write` under `reclaim_ilock=trylock`
//! (`xfs_ilock_nowait`), blocking otherwise, and, with
//! `reclaim_final_lock=on` (XFS since 5.9), blocking once more after the
//! inode left the index. A blocking one records lockdep's
//! `fs_reclaim -> xfs_ilock`.
//!
//! Lockdep subclasses of `xfs_ilock`, as XFS annotates inode lock nesting:
//! 0 for the first ILOCK a task takes, [`ILOCK_CHILD`] for a second inode
//! in one operation (create, unlink). Reclaim takes its ILOCKs at subclass
//! 0, as XFS does, so direct reclaim entered by a task that holds an ILOCK
//! and then blocking on another inode's ILOCK is what Linux's lockdep would
//! call "possible recursive locking". [`ILOCK_RECLAIM`] exists only for the
//! `reclaim_subclass` knob (not XFS, off in every era), which annotates
//! that nesting away. Cluster flushing, which may lock *referenced*
//! inodes, never uses it.

use super::FsError;
use super::format::{FileType, InodeCore, Mode, ino_to_ag, ino_to_agino, ino_to_cluster_block};
pub(crate) use super::inode::{
    I_DIRTY, I_FLUSHING, I_INACTIVATING, I_RECLAIM, I_RECLAIMABLE, I_REFERENCED, I_UNLINKED, Perag,
    XfsInode, reclaim_subclass,
};
pub use super::inode::{
    ILOCK_CHILD, ILOCK_RECLAIM, dir_ilock_class, ilock_class, iolock_class, nondir_ilock_class,
};
use super::policy::{IlockMode, ReclaimPinned, ReclaimWriteback};
use super::state::Fs;
pub use super::state::{RaceHook, RacePoint};
use crate::mm::gfp::Gfp;
use crate::mm::list_lru::LruStatus;
use crate::mm::memstall::{StallPart, StallTimer};
use crate::mm::shrinker::{CountObjects, ScanObjects, ShrinkControl, Shrinker};
use crate::sync::{RwSemReadGuard, RwSemWriteGuard};
use alloc::sync::{Arc, Weak};
use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering;

/// A VFS reference to an in-core inode. Cloning adds a reference; dropping
/// the last one makes the inode reclaimable (after freeing it on disk if it
/// was unlinked). Drop it with no ILOCK held: inactivation takes one.
pub struct InodeRef {
    pub(crate) fs: Arc<Fs>,
    pub(crate) ip: NonNull<XfsInode>,
}

// SAFETY: the inode is shared through its lock and atomics.
unsafe impl Send for InodeRef {}
// SAFETY: an InodeRef holds a reference count on the inode, whose shared state is behind its locks
// and atomics, so `&InodeRef` may be shared between tasks.
unsafe impl Sync for InodeRef {}

impl InodeRef {
    /// The referenced inode's number.
    pub fn ino(&self) -> u32 {
        self.inode().ino
    }

    pub(crate) fn inode(&self) -> &XfsInode {
        // SAFETY: a referenced inode is never reclaimed.
        unsafe { self.ip.as_ref() }
    }
}

impl Clone for InodeRef {
    fn clone(&self) -> Self {
        self.inode().refcount.fetch_add(1, Ordering::AcqRel);
        Self {
            fs: self.fs.clone(),
            ip: self.ip,
        }
    }
}

impl Drop for InodeRef {
    fn drop(&mut self) {
        self.fs.irele(self.ip);
    }
}

impl core::fmt::Debug for InodeRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "InodeRef({})", self.ino())
    }
}

/// An ILOCK held through [`Fs::ilock`].
pub enum IlockGuard<'a> {
    /// Held for read: the core can be read, not changed.
    Shared(RwSemReadGuard<'a, InodeCore>),
    /// Held for write: the core can be changed.
    Exclusive(RwSemWriteGuard<'a, InodeCore>),
}

/// The outcome of one reclaim pass.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReclaimResult {
    pub(crate) scanned: u64,
    pub(crate) freed: u64,
}

impl Fs {
    fn perag(&self, ino: u32) -> &Perag {
        &self.perags[ino_to_ag(ino) as usize]
    }

    /// Finds or reads inode `ino` and takes a reference. On a miss reads the
    /// cluster buffer with `gfp` and allocates the in-core inode with the
    /// policy's `inode_gfp` (`xfs_inode_alloc`), holding no fs lock but
    /// possibly an ILOCK of the caller's (create and unlink look the child
    /// up under the parent's ILOCK, inside their transaction). `create` (the type about to be created) returns
    /// free slots too; a miss then makes the in-core inode with that type's
    /// ILOCK class. (A free inode still cached keeps the class it had: a
    /// lockdep-only imprecision for a directory made in a file's old slot.)
    pub(crate) fn iget_inner(
        &self,
        ino: u32,
        gfp: Gfp,
        create: Option<FileType>,
    ) -> Result<NonNull<XfsInode>, FsError> {
        let allow_free = create.is_some();
        self.check_live()?;
        self.sb.geometry.check_ino(ino)?;
        let pag = self.perag(ino);
        let agino = ino_to_agino(ino) as usize;
        loop {
            {
                let ici = pag.ici.lock();
                let p = ici.slots[agino];
                if !p.is_null() {
                    // SAFETY: indexed inodes are live while the AG lock is held.
                    let ip = unsafe { &*p };
                    if ip.flags() & (I_RECLAIM | I_INACTIVATING) != 0 {
                        drop(ici);
                        // Reclaim owns it (wait for the requeue or the
                        // free), or its last reference went and it is being
                        // freed on disk (wait, then see it free): as XFS's
                        // xfs_iget_cache_hit, never hand out a reference to
                        // an inode in either state.
                        crate::task::yield_now();
                        continue;
                    }
                    if ip.refcount.fetch_add(1, Ordering::AcqRel) == 0
                        && ip.clear(I_RECLAIMABLE) & I_RECLAIMABLE != 0
                    {
                        pag.reclaimable.fetch_sub(1, Ordering::Relaxed);
                        self.stats.reclaimable.fetch_sub(1, Ordering::Relaxed);
                    }
                    self.stats.icache_hits.fetch_add(1, Ordering::Relaxed);
                    // SAFETY: `p` was checked non-null above.
                    return Ok(unsafe { NonNull::new_unchecked(p) });
                }
            }
            // Miss: read the core through the cluster buffer, then insert.
            let core = self.read_core(ino, gfp)?;
            if core.mode == Mode::Free && !allow_free {
                return Err(FsError::InodeNotAllocated { ino });
            }
            // `xfs_inode_alloc`: the in-core inode has its own GFP (knob
            // `inode_gfp`, KM_SLEEP in XFS), not the caller's; inside a
            // transaction the task's NOFS scope still strips __GFP_FS.
            let obj = self
                .inode_slab
                .alloc(self.policy.inode_gfp | (gfp & Gfp::__GFP_NOFAIL))
                .map_err(|_| FsError::NoMemory)?
                .cast::<XfsInode>();
            let dir = match create {
                Some(t) if core.mode == Mode::Free => t == FileType::Dir,
                _ => core.mode == Mode::Dir,
            };
            // SAFETY: a fresh object sized and aligned for XfsInode.
            unsafe { obj.as_ptr().write(XfsInode::new(core, dir)) };
            let mut ici = pag.ici.lock();
            if !ici.slots[agino].is_null() {
                drop(ici);
                self.free_inode_object(obj.as_ptr());
                continue;
            }
            ici.slots[agino] = obj.as_ptr();
            drop(ici);
            self.stats.cached.fetch_add(1, Ordering::Relaxed);
            self.stats.inode_reads.fetch_add(1, Ordering::Relaxed);
            return Ok(obj);
        }
    }

    fn read_core(&self, ino: u32, gfp: Gfp) -> Result<InodeCore, FsError> {
        let bp = self.buf_get(ino_to_cluster_block(&self.sb.geometry, ino), gfp)?;
        let g = bp.lock_read()?;
        InodeCore::decode_in_cluster(g.data(), ino)
    }

    pub(crate) fn free_inode_object(&self, p: *mut XfsInode) {
        // SAFETY: unindexed and unreferenced: private to the caller.
        unsafe {
            ptr::drop_in_place(p);
            self.inode_slab.free(NonNull::new_unchecked(p.cast()));
        }
    }

    /// Wraps a referenced inode.
    pub(crate) fn make_ref(&self, ip: NonNull<XfsInode>) -> InodeRef {
        InodeRef { fs: self.arc(), ip }
    }

    /// Drops a reference (InodeRef's drop). The decrement that reaches 0
    /// happens under the AG lock, so exactly one task sees the last
    /// reference go and no lookup slips in between; that task frees an
    /// unlinked inode on disk (inactivation, under `I_INACTIVATING`), then
    /// the inode becomes reclaimable.
    pub(crate) fn irele(&self, p: NonNull<XfsInode>) {
        // SAFETY: the caller's reference keeps it alive.
        let ip = unsafe { p.as_ref() };
        self.run_race_hook(ip.ino, RacePoint::Put);
        // Not the last reference: drop it without the AG lock.
        if ip
            .refcount
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > 1).then(|| n - 1)
            })
            .is_ok()
        {
            return;
        }
        let pag = self.perag(ip.ino);
        let inactivate = {
            let _ici = pag.ici.lock();
            if ip.refcount.fetch_sub(1, Ordering::AcqRel) != 1 {
                // A lookup took a reference since the check above.
                return;
            }
            if ip.flags() & I_UNLINKED != 0 && !self.is_shut_down() {
                ip.set(I_INACTIVATING);
                true
            } else if self.is_shut_down() {
                // No active superblock: evict at once (iput_final).
                self.lru_del(ip);
                self.mark_reclaimable(pag, ip);
                false
            } else {
                self.inode_lru_list_add(ip);
                false
            }
        };
        if !inactivate {
            return;
        }
        // I_INACTIVATING (unreferenced): ours until cleared; lookups wait,
        // reclaim and unmount skip it.
        self.run_race_hook(ip.ino, RacePoint::Inactivate);
        if let Err(e) = self.inactivate(ip) {
            self.stats.inactivate_errors.fetch_add(1, Ordering::Relaxed);
            crate::println!(
                "xfs: freeing unlinked inode {} failed: {e}; it stays allocated",
                ip.ino
            );
        }
        let _ici = pag.ici.lock();
        ip.clear(I_INACTIVATING);
        // Evicted at its last reference (generic_drop_inode: nlink 0), so
        // never cached on the LRU; it may still be there from before it was
        // looked up and unlinked (lazy removal).
        self.lru_del(ip);
        self.mark_reclaimable(pag, ip);
    }

    /// `__inode_add_lru(inode, rotate = true)` from `iput_final` (AG lock
    /// held): an unused inode goes to the tail of the LRU; one still on it
    /// (used again since it was added) gets `I_REFERENCED`.
    fn inode_lru_list_add(&self, ip: &XfsInode) {
        // SAFETY: the caller holds the AG lock and the inode is indexed, so
        // it stays live until reclaim unindexes it, which happens only after
        // the LRU walk took it off the LRU (or `lru_del` below); the inode
        // is only ever on this LRU.
        if !unsafe { self.inode_lru.add(NonNull::from(ip)) } {
            ip.set(I_REFERENCED);
        }
    }

    /// Takes an inode off the LRU if it is on it (AG lock held).
    fn lru_del(&self, ip: &XfsInode) {
        // SAFETY: live (indexed, AG lock held by the caller); only ever on
        // this LRU.
        unsafe { self.inode_lru.del(NonNull::from(ip)) };
    }

    /// The last reference went (AG lock held): count the inode reclaimable.
    fn mark_reclaimable(&self, pag: &Perag, ip: &XfsInode) {
        if ip.set(I_RECLAIMABLE) & I_RECLAIMABLE == 0 {
            pag.reclaimable.fetch_add(1, Ordering::Relaxed);
            self.stats.reclaimable.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// For tests that force interleavings: runs `hook` at every
    /// [`RacePoint`] this filesystem passes (`None` removes it). The hook
    /// runs with no fs lock held and may yield or sleep, standing in for a
    /// preemption at that point.
    pub fn set_race_hook(&self, hook: Option<RaceHook>) {
        self.race_hook.set(hook);
    }

    pub(crate) fn run_race_hook(&self, ino: u32, point: RacePoint) {
        if let Some(h) = self.race_hook.get() {
            h(ino, point);
        }
    }

    /// `xfs_ilock`: locks a referenced inode (for tests and tools that need
    /// to hold an inode the way an operation does). Subclass 0.
    #[track_caller]
    pub fn ilock<'a>(&self, inode: &'a InodeRef, exclusive: bool) -> IlockGuard<'a> {
        let ip = inode.inode();
        if exclusive {
            IlockGuard::Exclusive(ip.ilock.down_write())
        } else {
            IlockGuard::Shared(ip.ilock.down_read())
        }
    }

    /// `prune_icache_sb`: walks up to `nr` inodes of the inode LRU with
    /// `inode_lru_isolate` (see the module docs) and returns how many it
    /// took off the LRU (evicted, or found in use). Evicted inodes become
    /// `I_RECLAIMABLE` for [`Fs::free_cached_objects`]. Public for tests; the
    /// inode shrinker calls it with its share of `nr_to_scan`.
    ///
    /// **Deviation:** Linux isolates onto a dispose list and evicts after the
    /// walk (`dispose_list` -> `evict` -> `xfs_fs_destroy_inode`); for XFS
    /// eviction only tags the inode reclaimable, which is done here in the
    /// isolate callback under the AG lock, so no `I_FREEING` state is needed.
    pub fn prune_icache_sb(&self, nr: u64) -> u64 {
        self.inode_lru.shrink_walk(
            |item, walk| {
                // SAFETY: on the LRU, hence indexed and live: reclaim frees
                // only inodes that were taken off the LRU first.
                let ip = unsafe { item.as_ref() };
                let pag = self.perag(ip.ino);
                // The AG lock is this inode's i_lock; the usual order is AG
                // lock, then LRU lock, so only try it.
                let Some(_ici) = pag.ici.try_lock() else {
                    return LruStatus::Skip;
                };
                if ip.refcount.load(Ordering::Acquire) != 0
                    || ip.flags() & (I_INACTIVATING | I_RECLAIMABLE | I_RECLAIM) != 0
                {
                    // In use again: off the LRU until its last reference.
                    ip.clear(I_REFERENCED);
                    walk.isolate(item);
                    return LruStatus::Removed;
                }
                if ip.clear(I_REFERENCED) & I_REFERENCED != 0 {
                    // Recently used: one more trip through the LRU.
                    self.stats.lru_rotated.fetch_add(1, Ordering::Relaxed);
                    return LruStatus::Rotate;
                }
                walk.isolate(item);
                // evict -> xfs_fs_destroy_inode: XFS_IRECLAIMABLE.
                self.mark_reclaimable(pag, ip);
                self.stats.pruned.fetch_add(1, Ordering::Relaxed);
                LruStatus::Removed
            },
            nr,
        )
    }

    /// XFS's `free_cached_objects` (`xfs_reclaim_inodes_nr`) as the inode
    /// shrinker runs it with `GFP_KERNEL`: reclaims up to `nr` reclaimable
    /// inodes. Returns the number freed. For tests.
    pub fn free_cached_objects(&self, nr: u64) -> u64 {
        self.reclaim_inodes(nr, crate::mm::gfp::GFP_KERNEL).freed
    }

    /// The inode shrinker's scan (`xfs_reclaim_inodes_nr`): looks at up to
    /// `nr` reclaimable inodes, AG by AG from the per-AG cursors.
    pub(crate) fn reclaim_inodes(&self, nr: u64, gfp: Gfp) -> ReclaimResult {
        let mut res = ReclaimResult::default();
        let nags = self.perags.len();
        let start = self.reclaim_rotor.fetch_add(1, Ordering::Relaxed) as usize;
        for i in 0..nags {
            if res.scanned >= nr {
                break;
            }
            let pag = &self.perags[(start + i) % nags];
            if pag.reclaimable.load(Ordering::Relaxed) == 0 {
                continue;
            }
            self.reclaim_ag(pag, nr, gfp, &mut res);
        }
        res
    }

    fn reclaim_ag(&self, pag: &Perag, nr: u64, gfp: Gfp, res: &mut ReclaimResult) {
        let n = self.sb.geometry.inodes_per_ag();
        let mut looked = 0u32;
        while res.scanned < nr && looked < n {
            // Pick the next candidate under the AG lock.
            let cand = {
                let mut ici = pag.ici.lock();
                let mut found = None;
                while looked < n {
                    let i = ici.cursor % n;
                    ici.cursor = (i + 1) % n;
                    looked += 1;
                    let p = ici.slots[i as usize];
                    if p.is_null() {
                        continue;
                    }
                    // SAFETY: indexed, AG lock held.
                    let ip = unsafe { &*p };
                    let f = ip.flags();
                    if f & I_RECLAIMABLE == 0 || f & I_RECLAIM != 0 {
                        continue;
                    }
                    res.scanned += 1;
                    self.stats.scanned.fetch_add(1, Ordering::Relaxed);
                    if f & I_FLUSHING != 0 {
                        self.stats.requeued_flushing.fetch_add(1, Ordering::Relaxed);
                        if res.scanned >= nr {
                            break;
                        }
                        continue;
                    }
                    ip.set(I_RECLAIM);
                    found = Some(p);
                    break;
                }
                found
            };
            let Some(p) = cand else { break };
            if self.reclaim_one(pag, p, gfp) {
                res.freed += 1;
            }
        }
    }

    /// `xfs_reclaim_inode`: the candidate is I_RECLAIM (so no lookup or
    /// flush takes it); free it if it can be, else requeue it. With
    /// `reclaim_writeback=sync` (before 5.9) a dirty candidate's cluster is
    /// written back here and the IO waited for, and a candidate under flush
    /// (a flush running, or its cluster write still in flight: the flush
    /// lock is held until the IO completes) is waited for (`xfs_iflock`);
    /// otherwise both are requeued (5.9's `XFS_IFLUSHING` test). A candidate
    /// pinned in the log is waited for with `reclaim_pinned=wait`
    /// (`xfs_iunpin_wait`: force the log, sleep until the checkpoint is
    /// written; before 5.9) or requeued (`skip`, 5.9's `xfs_ipincount`
    /// test). With `reclaim_final_lock` the ILOCK is taken once more,
    /// blocking, after the inode left the index (5.9's "(almost) spurious"
    /// lock).
    fn reclaim_one(&self, pag: &Perag, p: *mut XfsInode, gfp: Gfp) -> bool {
        // SAFETY: I_RECLAIM keeps it indexed and unfreed until we decide.
        let ip = unsafe { &*p };
        let sync = self.policy.reclaim_writeback == ReclaimWriteback::Sync;
        let mut guard = self.reclaim_ilock(ip);
        if sync {
            // xfs_iflock: wait for a running cluster flush (with the ILOCK
            // dropped: the flush may be waiting for it).
            let mut waits = 0;
            while guard.is_some() && ip.flags() & I_FLUSHING != 0 && waits < 100 {
                drop(guard.take());
                {
                    let _stall = StallTimer::start(StallPart::Lock);
                    crate::task::sleep(core::time::Duration::from_millis(1));
                }
                waits += 1;
                guard = self.reclaim_ilock(ip);
            }
            // xfs_iflock: the flush lock is held until the cluster write
            // completes on the device; wait for it, holding the ILOCK.
            if guard.is_some() && ip.flush_io_pending() {
                self.stats
                    .reclaim_iflock_waits
                    .fetch_add(1, Ordering::Relaxed);
                let done = ip.flush_done_ns.load(Ordering::Acquire);
                self.account_reclaim_io_wait(crate::time::now_ns(), done);
                self.device().wait_completion(done);
            }
        }
        let Some(guard) = guard else {
            ip.clear(I_RECLAIM);
            self.stats.requeued_locked.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        if ip.flags() & I_FLUSHING != 0 || ip.flush_io_pending() {
            drop(guard);
            ip.clear(I_RECLAIM);
            self.stats.requeued_flushing.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if self.ipinned(ip) {
            match self.policy.reclaim_pinned {
                // Holding the ILOCK, as xfs_reclaim_inode did.
                ReclaimPinned::Wait => self.iunpin_wait(ip),
                ReclaimPinned::Skip => {
                    drop(guard);
                    ip.clear(I_RECLAIM);
                    self.stats.requeued_pinned.fetch_add(1, Ordering::Relaxed);
                    // The AIL forces the log and writes it back later.
                    self.kick_flusher();
                    return false;
                }
            }
        }
        if ip.flags() & I_DIRTY != 0 {
            if sync || self.policy.reclaim_flushes_referenced {
                // Write the cluster back from reclaim and wait for it (the
                // deliberate bug also locks referenced neighbours blocking).
                self.stats
                    .reclaim_writebacks
                    .fetch_add(1, Ordering::Relaxed);
                if self
                    .flush_cluster_of(ip.ino, Some((ip, &guard)), gfp)
                    .is_ok()
                    && sync
                {
                    // SYNC_WAIT: wait for the write (behind the device's
                    // whole queue) before freeing.
                    self.account_reclaim_io_wait(
                        crate::time::now_ns(),
                        ip.flush_done_ns.load(Ordering::Acquire),
                    );
                    let _ = self.device().flush();
                }
            }
            if ip.flags() & I_DIRTY != 0 {
                drop(guard);
                ip.clear(I_RECLAIM);
                self.stats.requeued_dirty.fetch_add(1, Ordering::Relaxed);
                self.kick_flusher();
                return false;
            }
        }
        // Clean, unreferenced, ours: take it out of the index and free it.
        drop(guard);
        {
            let mut ici = pag.ici.lock();
            ici.slots[ino_to_agino(ip.ino) as usize] = ptr::null_mut();
            if ip.clear(I_RECLAIMABLE) & I_RECLAIMABLE != 0 {
                pag.reclaimable.fetch_sub(1, Ordering::Relaxed);
                self.stats.reclaimable.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if self.policy.reclaim_final_lock {
            // Waits out anyone who found the inode without a reference
            // before it left the index; blocking, so lockdep records
            // fs_reclaim -> xfs_ilock.
            {
                let _stall = StallTimer::start(StallPart::Lock);
                drop(ip.ilock.down_write_nested(self.reclaim_ilock_subclass()));
            }
            self.stats
                .reclaim_final_locks
                .fetch_add(1, Ordering::Relaxed);
        }
        self.free_inode_object(p);
        self.stats.cached.fetch_sub(1, Ordering::Relaxed);
        self.stats.reclaimed.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// `xfs_iunpin_wait` (ILOCK held): forces the log up to the inode's
    /// last commit and sleeps until that checkpoint's write completes.
    fn iunpin_wait(&self, ip: &XfsInode) {
        let seq = ip.pin_seq.load(Ordering::Acquire);
        if let Some((issued, done)) = self.log.force_seq(self.device(), seq) {
            self.stats
                .reclaim_log_forces
                .fetch_add(1, Ordering::Relaxed);
            if in_direct_reclaim() {
                self.stats.direct_log_forces.fetch_add(1, Ordering::Relaxed);
            }
            self.account_reclaim_io_wait(issued, done);
            self.device().wait_completion(done);
        }
    }

    /// Adds what direct reclaim waits for the device, by the disk model, to
    /// `direct_reclaim_io_wait_ns`: from `since` to the request's modelled
    /// completion `done_ns`. `since` is when the checkpoint a log force
    /// pushed was submitted (so that one counts its whole modelled service
    /// time, at least the latency, however late the task runs again), or,
    /// for a checkpoint or cluster write already in flight, when reclaim
    /// began to wait for it. Time spent before (the log push lock, reading
    /// a buffer, CPU) is not counted.
    fn account_reclaim_io_wait(&self, since: u64, done_ns: u64) {
        if in_direct_reclaim() {
            let wait = done_ns.saturating_sub(since);
            self.stats
                .direct_io_wait_ns
                .fetch_add(wait, Ordering::Relaxed);
        }
    }

    /// Reclaim's ILOCK on its candidate, per `reclaim_ilock`.
    fn reclaim_ilock<'a>(&self, ip: &'a XfsInode) -> Option<RwSemWriteGuard<'a, InodeCore>> {
        match self.policy.reclaim_ilock {
            IlockMode::Trylock => ip.ilock.try_write(),
            IlockMode::Blocking => {
                let _stall = StallTimer::start(StallPart::Lock);
                Some(ip.ilock.down_write_nested(self.reclaim_ilock_subclass()))
            }
        }
    }

    /// Subclass 0, as XFS; [`ILOCK_RECLAIM`] when the task holds an ILOCK
    /// and the (not XFS) `reclaim_subclass` knob is on.
    fn reclaim_ilock_subclass(&self) -> u8 {
        if self.policy.reclaim_subclass {
            reclaim_subclass()
        } else {
            0
        }
    }

    /// Frees every cached inode (unmount, after a final sync). Returns the
    /// number that could not be freed (referenced or dirty).
    pub(crate) fn purge_inodes(&self) -> u64 {
        let mut left = 0;
        for pag in self.perags.iter() {
            let n = self.sb.geometry.inodes_per_ag() as usize;
            for i in 0..n {
                let p = {
                    let mut ici = pag.ici.lock();
                    let p = ici.slots[i];
                    if p.is_null() {
                        continue;
                    }
                    // SAFETY: indexed, AG lock held.
                    let ip = unsafe { &*p };
                    if ip.refcount.load(Ordering::Acquire) != 0
                        || ip.flags() & (I_DIRTY | I_FLUSHING | I_RECLAIM | I_INACTIVATING) != 0
                    {
                        left += 1;
                        continue;
                    }
                    self.lru_del(ip);
                    ici.slots[i] = ptr::null_mut();
                    if ip.clear(I_RECLAIMABLE) & I_RECLAIMABLE != 0 {
                        pag.reclaimable.fetch_sub(1, Ordering::Relaxed);
                        self.stats.reclaimable.fetch_sub(1, Ordering::Relaxed);
                    }
                    p
                };
                self.free_inode_object(p);
                self.stats.cached.fetch_sub(1, Ordering::Relaxed);
            }
        }
        left
    }

    /// The first referenced or inactivating inode, if any (unmount refuses
    /// then).
    pub(crate) fn find_referenced(&self) -> Option<u32> {
        for pag in self.perags.iter() {
            let ici = pag.ici.lock();
            for &p in ici.slots.iter() {
                if p.is_null() {
                    continue;
                }
                // SAFETY: indexed, AG lock held.
                let ip = unsafe { &*p };
                if ip.refcount.load(Ordering::Acquire) != 0 || ip.flags() & I_INACTIVATING != 0 {
                    return Some(ip.ino);
                }
            }
        }
        None
    }
}

/// The superblock shrinker for inodes (`super_cache_count` /
/// `super_cache_scan` with XFS's `nr_cached_objects` /
/// `free_cached_objects`).
pub(crate) struct InodeShrinker(pub(crate) Weak<Fs>);

impl Shrinker for InodeShrinker {
    fn count_objects(&self, _sc: &ShrinkControl) -> CountObjects {
        let Some(fs) = self.0.upgrade() else {
            return CountObjects::EMPTY;
        };
        // super_cache_count: the inode LRU plus the fs's cached objects
        // (XFS's reclaimable inodes).
        let n = fs.inode_lru.shrink_count() + fs.stats.reclaimable.load(Ordering::Relaxed);
        if n == 0 || fs.is_shut_down() {
            CountObjects::EMPTY
        } else {
            CountObjects::new(n)
        }
    }

    fn scan_objects(&self, sc: &mut ShrinkControl) -> ScanObjects {
        let Some(fs) = self.0.upgrade() else {
            return ScanObjects::STOP;
        };
        // Deadlock avoidance: no filesystem work without __GFP_FS; the work
        // stays deferred for a caller that may (kswapd).
        if !sc.reclaim_fs_allowed() || fs.is_shut_down() {
            fs.stats.shrinker_stops.fetch_add(1, Ordering::Relaxed);
            return ScanObjects::STOP;
        }
        // super_trylock_shared: never wait for unmount.
        let Some(_s) = fs.s_umount.try_read() else {
            fs.stats.shrinker_stops.fetch_add(1, Ordering::Relaxed);
            return ScanObjects::STOP;
        };
        // super_cache_scan: split nr_to_scan between the inode LRU and the
        // fs's objects in proportion to their counts (mult_frac), prune the
        // icache first (it feeds XFS reclaim), then reclaim; each gets at
        // least one object ("+ 1").
        let nr = sc.nr_to_scan();
        let lru = fs.inode_lru.shrink_count();
        let fs_objects = fs.stats.reclaimable.load(Ordering::Relaxed);
        let total = lru + fs_objects + 1;
        let inodes = mult_frac(nr, lru, total);
        let fs_objects = mult_frac(nr, fs_objects, total);
        let mut freed = fs.prune_icache_sb(inodes + 1);
        if fs_objects > 0 {
            freed += fs.reclaim_inodes(fs_objects + 1, sc.gfp()).freed;
        }
        // nr_scanned stays nr_to_scan, as in Linux (`super_cache_scan`
        // and `xfs_reclaim_inodes_nr` leave it alone): an inode that was
        // looked at and skipped still counts as scanned work. The two "+ 1"
        // may take the total one or two past nr_to_scan; reported as at
        // most nr_to_scan.
        ScanObjects::freed(freed.min(nr))
    }
}

/// Whether the current task is in direct reclaim (a reclaimer, PF_MEMALLOC,
/// that is not kswapd).
fn in_direct_reclaim() -> bool {
    use crate::task::TaskFlags;
    let f = crate::task::current().flags();
    f.contains(TaskFlags::PF_MEMALLOC) && !f.contains(TaskFlags::PF_KSWAPD)
}

/// `mult_frac(x, n, d)`: `x * n / d` without overflowing the product.
fn mult_frac(x: u64, n: u64, d: u64) -> u64 {
    (u128::from(x) * u128::from(n) / u128::from(d.max(1))) as u64
}
