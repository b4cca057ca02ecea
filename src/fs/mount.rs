//! The mounted filesystem: mount/unmount and the operations (the VFS-facing
//! part of XFS, over the inode cache, buffer cache and transactions).
//!
//! Locking, top down: a modifying operation allocates its `Transaction`
//! (GFP_KERNEL, nothing held; then the NOFS scope if the policy has one),
//! takes the ILOCK of the inode(s) it works on (exclusive; the second inode
//! of create/unlink with subclass [`ILOCK_CHILD`]), then per-AG `xfs_agf`
//! for allocations, then one buffer lock at a time. Read-only operations
//! (lookup, readdir, read, stat) take the ILOCK shared. Every allocation made
//! while an ILOCK is held uses `policy.gfp_under_ilock` — buffer pages and
//! objects on a cache miss, in-core inodes — so lockdep's `might_alloc`
//! sees exactly what the policy does.
//!
//! Deviations from XFS, on purpose:
//! - No log. Data, directory, indirect and AG-header blocks are written
//!   through when changed; inode cores are written back later by the
//!   flusher, a cluster at a time. Only a clean unmount leaves a consistent
//!   disk (fsck-clean); a crash can lose inode updates.
//! - No page cache: file data goes through the buffer cache.
//! - One flat list of concerns per inode: no separate IOLOCK/MMAPLOCK; the
//!   ILOCK also serialises data IO.
//! - Unlinked inodes are freed on disk when their last reference goes
//!   (inactivation in `InodeRef`'s drop); an error there is printed and
//!   counted and the inode stays allocated (fsck would report it). Lack of
//!   memory is never that error: freeing allocates with `__GFP_NOFAIL`.
//! - The flusher walks the per-AG indexes for dirty clusters instead of
//!   keeping an AIL.

use super::blockdev::BlockDevice;
use super::buf::{BufCache, BufGuard, BufRef};
use super::dir::{self, DIRENTS_PER_BLOCK};
use super::format::{
    AgHeader, BLOCK_SIZE, FileType, InodeCore, MAX_FILE_SIZE, MapSlot, Mode, NDIRECT,
    PTRS_PER_INDIRECT, Superblock, check_pointer, indirect_entry, ino_to_ag, make_ino, map_slot,
    set_indirect_entry,
};
use super::icache::{
    BufShrinker, I_UNLINKED, ILOCK_CHILD, InodeRef, InodeShrinker, Perag, RacePoint, XfsInode,
};
use super::policy::Policy;
use super::trans::Transaction;
use super::{FsError, Meta};
use crate::mm::gfp::{GFP_KERNEL, Gfp};
use crate::mm::shrinker::{ShrinkerBuilder, ShrinkerInfo, ShrinkerRegistration};
use crate::mm::slab::kmalloc::KVec;
use crate::mm::slab::{KmemCache, SlabFlags, SlabInfo};
use crate::sync::{RwSemaphore, WaitQueue};
use crate::task::{self, JoinHandle};
use alloc::sync::{Arc, Weak};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Objects per inode-shrinker scan call. Smaller than XFS's 1024 (a
/// superblock shrinker batch) because this kernel has a few MiB of RAM.
pub const INODE_SHRINK_BATCH: u64 = 32;

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
}

/// A plain-number snapshot of a filesystem's caches and reclaim.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsStats {
    /// In-core inodes now.
    pub inodes_cached: u64,
    /// Of those, unreferenced (what the inode shrinker counts).
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
    pub inode_cache_hits: u64,
    /// Cluster blocks written by inode writeback.
    pub cluster_flushes: u64,
    /// Failed cluster writes (the inodes stayed dirty).
    pub flush_errors: u64,
    /// Neighbours skipped because their ILOCK trylock failed.
    pub flush_trylock_skips: u64,
    /// Passes of the flusher thread that found dirty inodes.
    pub flusher_runs: u64,
    /// Buffers cached now, and of those on the LRU (unreferenced).
    pub buffers_cached: u64,
    pub buffers_lru: u64,
    /// Buffers the `xfs_buf` shrinker freed.
    pub buffers_reclaimed: u64,
    pub buffer_hits: u64,
    pub buffer_misses: u64,
    /// STOPs the inode shrinker returned (no __GFP_FS, s_umount busy).
    pub shrinker_stops: u64,
    pub transactions: u64,
    /// Unlinked inodes freed on disk at their last reference.
    pub inactivations: u64,
}

/// What [`Fs::stat`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub ino: u32,
    pub ftype: FileType,
    pub size: u64,
    pub nlink: u32,
    pub nblocks: u32,
    pub generation: u32,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
}

/// A mounted filesystem.
pub struct Fs {
    pub(crate) me: Weak<Fs>,
    dev: &'static dyn BlockDevice,
    pub(crate) policy: Policy,
    pub(crate) sb: Superblock,
    pub(crate) perags: KVec<Perag>,
    pub(crate) bufs: BufCache,
    pub(crate) inode_slab: KmemCache,
    pub(crate) trans_slab: KmemCache,
    /// The superblock's `s_umount`: unmount holds it for write; the inode
    /// shrinker only trylocks it for read.
    pub(crate) s_umount: RwSemaphore<()>,
    pub(crate) stats: Counters,
    pub(crate) flush_wait: WaitQueue,
    pub(crate) flush_kick: AtomicBool,
    pub(crate) flush_stop: AtomicBool,
    flusher: spin::Mutex<Option<JoinHandle>>,
    shrinkers: spin::Mutex<Option<(ShrinkerRegistration, ShrinkerRegistration)>>,
    unmounted: AtomicBool,
    shut_down: AtomicBool,
    /// AG for the next new directory (XFS spreads directories over AGs).
    dir_rotor: AtomicU32,
    pub(crate) reclaim_rotor: AtomicU32,
    /// The test hook of `set_race_hook`.
    pub(crate) race_hook: crate::sync::Hook<super::icache::RaceHook>,
}

// SAFETY: shared state is behind locks and atomics; raw pointers in the
// per-AG indexes are guarded by the AG locks.
unsafe impl Send for Fs {}
// SAFETY: shared state is behind locks and atomics, and raw pointers in the per-AG indexes are only
// followed under the AG locks, so `&Fs` may be shared between tasks.
unsafe impl Sync for Fs {}

fn now() -> u64 {
    crate::time::now_ns()
}

impl Fs {
    /// Mounts the filesystem on `dev` (made by `mkfs`): reads the
    /// superblock, marks it not clean, sets up the per-AG indexes and the
    /// caches (GFP_KERNEL: mount is setup), starts the flusher thread
    /// `xfsaild` and registers the `xfs_inode` and `xfs_buf` shrinkers.
    pub fn mount(dev: &'static dyn BlockDevice, policy: Policy) -> Result<Arc<Fs>, FsError> {
        if dev.block_size() != BLOCK_SIZE {
            return Err(FsError::BadGeometry {
                reason: "device block size is not 4096",
            });
        }
        let mut buf = [0u8; BLOCK_SIZE];
        dev.read_block(0, &mut buf)
            .map_err(|err| FsError::Io { blk: 0, err })?;
        let sb = Superblock::read_from(&buf)?;
        let geo = sb.geometry;
        if dev.nr_blocks() < geo.total_blocks {
            return Err(FsError::BadGeometry {
                reason: "device is smaller than the filesystem",
            });
        }
        if !sb.clean {
            crate::println!("xfs: mounting a filesystem that was not cleanly unmounted");
        }
        Superblock { clean: false, ..sb }.write_to(&mut buf)?;
        dev.write_block(0, &buf)
            .map_err(|err| FsError::Io { blk: 0, err })?;

        let mut perags = KVec::with_capacity(geo.ag_count as usize, GFP_KERNEL)
            .map_err(|_| FsError::NoMemory)?;
        for ag in 0..geo.ag_count {
            perags
                .push(Perag::new(ag, geo.inodes_per_ag())?, GFP_KERNEL)
                .map_err(|_| FsError::NoMemory)?;
        }
        let bufs = BufCache::new(dev, 1024)?;
        let inode_slab = KmemCache::create(
            "xfs_inode",
            core::mem::size_of::<XfsInode>(),
            core::mem::align_of::<XfsInode>(),
            SlabFlags::RECLAIM_ACCOUNT,
            None,
        )
        .map_err(|_| FsError::NoMemory)?;
        let trans_slab = KmemCache::create("xfs_trans", 64, 8, SlabFlags::empty(), None)
            .map_err(|_| FsError::NoMemory)?;
        let fs = crate::mm::global_alloc::try_arc_cyclic(|me| Fs {
            me: me.clone(),
            dev,
            policy,
            sb,
            perags,
            bufs,
            inode_slab,
            trans_slab,
            s_umount: RwSemaphore::new((), crate::lock_class!("s_umount")),
            stats: Counters::default(),
            flush_wait: WaitQueue::new("xfsaild"),
            flush_kick: AtomicBool::new(false),
            flush_stop: AtomicBool::new(false),
            flusher: spin::Mutex::new(None),
            shrinkers: spin::Mutex::new(None),
            unmounted: AtomicBool::new(false),
            shut_down: AtomicBool::new(false),
            dir_rotor: AtomicU32::new(1),
            reclaim_rotor: AtomicU32::new(0),
            race_hook: crate::sync::Hook::new(),
        })
        .map_err(|_| FsError::NoMemory)?;
        let f2 = fs.clone();
        let h = task::spawn("xfsaild", move || f2.flusher_main()).map_err(|_| FsError::NoMemory)?;
        *fs.flusher.lock() = Some(h);
        let regs = ShrinkerBuilder::new("xfs_inode")
            .batch(INODE_SHRINK_BATCH)
            .register(InodeShrinker(Arc::downgrade(&fs)))
            .and_then(|ri| {
                ShrinkerBuilder::new("xfs_buf")
                    .register(BufShrinker(Arc::downgrade(&fs)))
                    .map(|rb| (ri, rb))
            });
        match regs {
            Ok(r) => *fs.shrinkers.lock() = Some(r),
            Err(_) => {
                fs.stop_flusher(true);
                return Err(FsError::NoMemory);
            }
        }
        Ok(fs)
    }

    fn stop_flusher(&self, join: bool) {
        self.flush_stop.store(true, Ordering::Release);
        self.flush_wait.wake_all();
        let h = self.flusher.lock().take();
        if join && let Some(h) = h {
            let _ = h.join();
        }
    }

    /// Unmounts: refuses while inodes are referenced; writes back every
    /// dirty inode (an error leaves the filesystem mounted and is returned);
    /// stops the flusher, unregisters the shrinkers (under `s_umount` held
    /// for write), frees the caches and marks the superblock clean.
    pub fn unmount(self: &Arc<Self>) -> Result<(), FsError> {
        self.check_live()?;
        if let Some(ino) = self.find_referenced() {
            return Err(FsError::Busy { ino });
        }
        self.sync_inner()?;
        if self.unmounted.swap(true, Ordering::AcqRel) {
            return Err(FsError::Shutdown);
        }
        self.stop_flusher(true);
        {
            let _w = self.s_umount.down_write();
            drop(self.shrinkers.lock().take());
        }
        // Anything dirtied since the first sync (nothing, normally).
        self.sync_inner()?;
        let left = self.purge_inodes();
        let bufs_left = self.bufs.purge();
        if left != 0 || bufs_left != 0 {
            crate::println!(
                "xfs: unmount: {left} inodes and {bufs_left} buffers still in use; leaking them"
            );
        }
        let mut buf = [0u8; BLOCK_SIZE];
        Superblock {
            clean: true,
            ..self.sb
        }
        .write_to(&mut buf)?;
        self.dev
            .write_block(0, &buf)
            .map_err(|err| FsError::Io { blk: 0, err })?;
        self.dev.flush().map_err(|err| FsError::Io { blk: 0, err })
    }

    /// `xfs_force_shutdown`: every later operation fails with
    /// [`FsError::Shutdown`], the shrinkers report nothing and the flusher
    /// stops (not waited for). For tests that leave tasks deadlocked inside
    /// the filesystem.
    pub fn force_shutdown(&self) {
        self.shut_down.store(true, Ordering::Release);
        self.stop_flusher(false);
    }

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

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn device(&self) -> &'static dyn BlockDevice {
        self.dev
    }

    pub fn superblock(&self) -> Superblock {
        self.sb
    }

    pub fn stats(&self) -> FsStats {
        let s = &self.stats;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (nbufs, lru) = self.bufs.counts();
        FsStats {
            inodes_cached: ld(&s.cached),
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

    /// Writes back every dirty inode now.
    pub fn sync(&self) -> Result<(), FsError> {
        self.check_live()?;
        self.sync_inner()
    }

    fn gfp(&self) -> Gfp {
        self.policy.gfp_under_ilock
    }

    /// `gfp` for giving space back (freeing blocks and inodes, truncating):
    /// `__GFP_NOFAIL`, as XFS allocates its buffers, so that an error path
    /// that returns what it took, or an unlinked inode's inactivation,
    /// cannot leak space for lack of memory. Fault injection skips these.
    fn gfp_nofail(&self) -> Gfp {
        self.gfp() | Gfp::__GFP_NOFAIL
    }

    // -- Inodes --------------------------------------------------------------

    pub fn root(&self) -> Result<InodeRef, FsError> {
        self.iget(self.sb.root_ino)
    }

    /// A reference to inode `ino`; `InodeNotAllocated` for a free slot.
    /// Call it with no ILOCK held.
    pub fn iget(&self, ino: u32) -> Result<InodeRef, FsError> {
        let r = self.make_ref(self.iget_inner(ino, self.gfp(), false)?);
        if r.inode().ilock.down_read().mode == Mode::Free {
            return Err(FsError::InodeNotAllocated { ino });
        }
        Ok(r)
    }

    pub fn stat(&self, inode: &InodeRef) -> Result<Stat, FsError> {
        self.check_live()?;
        let c = inode.inode().ilock.down_read();
        let ftype = c
            .mode
            .file_type()
            .ok_or(FsError::InodeNotAllocated { ino: c.ino })?;
        Ok(Stat {
            ino: c.ino,
            ftype,
            size: c.size,
            nlink: c.nlink,
            nblocks: c.nblocks,
            generation: c.generation,
            atime: c.atime,
            mtime: c.mtime,
            ctime: c.ctime,
        })
    }

    // -- AG allocation (under xfs_agf) ---------------------------------------

    fn agh_update<R>(
        &self,
        ag: u32,
        f: impl FnOnce(&mut AgHeader<&mut [u8]>) -> Result<R, FsError>,
    ) -> Result<R, FsError> {
        self.agh_update_gfp(ag, self.gfp(), f)
    }

    fn agh_update_gfp<R>(
        &self,
        ag: u32,
        gfp: Gfp,
        f: impl FnOnce(&mut AgHeader<&mut [u8]>) -> Result<R, FsError>,
    ) -> Result<R, FsError> {
        let geo = self.sb.geometry;
        let _agf = self.perags[ag as usize].agf.lock();
        let bp = self.bufs.get(geo.ag_header_block(ag), gfp)?;
        let mut g = bp.lock_read()?;
        let r = {
            let mut h = AgHeader::load(g.data_mut(), &geo, ag)?;
            f(&mut h)?
        };
        g.write()?;
        Ok(r)
    }

    fn alloc_block(&self, goal: u64) -> Result<u64, FsError> {
        let geo = self.sb.geometry;
        let first = if goal < geo.total_blocks {
            geo.block_ag(goal)
        } else {
            0
        };
        for i in 0..geo.ag_count {
            let ag = (first + i) % geo.ag_count;
            let rel_goal = if ag == first && goal < geo.total_blocks {
                geo.block_rel(goal)
            } else {
                0
            };
            match self.agh_update(ag, |h| h.alloc_block(rel_goal)) {
                Err(FsError::NoSpace { .. }) => continue,
                Err(e) => return Err(e),
                Ok(rel) => return Ok(geo.ag_start(ag) + u64::from(rel)),
            }
        }
        Err(FsError::FsFull)
    }

    fn free_block(&self, blk: u64) -> Result<(), FsError> {
        let geo = self.sb.geometry;
        geo.check_data_block(blk)?;
        self.agh_update_gfp(geo.block_ag(blk), self.gfp_nofail(), |h| {
            h.free_block(geo.block_rel(blk), blk)
        })
    }

    fn alloc_inode(&self, start: u32) -> Result<u32, FsError> {
        let n = self.sb.geometry.ag_count;
        for i in 0..n {
            let ag = (start % n + i) % n;
            match self.agh_update(ag, |h| h.alloc_inode()) {
                Err(FsError::NoFreeInodes { .. }) => continue,
                Err(e) => return Err(e),
                Ok(agino) => return Ok(make_ino(ag, agino)),
            }
        }
        Err(FsError::NoFreeInodes { ag: start % n })
    }

    fn free_inode_bit(&self, ino: u32) -> Result<(), FsError> {
        self.agh_update_gfp(ino_to_ag(ino), self.gfp_nofail(), |h| {
            h.free_inode(super::format::ino_to_agino(ino))
        })
    }

    // -- Block mapping (under the inode's ILOCK) -----------------------------

    fn bmap(&self, core: &InodeCore, fb: u64) -> Result<Option<u64>, FsError> {
        super::format::bmap(&self.sb.geometry, core, fb, |ind, idx| {
            let bp = self.bufs.get(ind, self.gfp())?;
            let g = bp.lock_read()?;
            indirect_entry(g.data(), idx)
        })
    }

    fn goal(&self, core: &InodeCore, fb: u64) -> u64 {
        let geo = &self.sb.geometry;
        if fb > 0
            && let Ok(Some(prev)) = self.bmap(core, fb - 1)
        {
            return prev + 1;
        }
        geo.ag_start(ino_to_ag(core.ino)) + u64::from(geo.data_start())
    }

    /// Points hole `fb` of `core` at `blk` (already written), allocating
    /// the indirect block if needed.
    fn map_new(&self, core: &mut InodeCore, fb: u64, blk: u64) -> Result<(), FsError> {
        match map_slot(core.ino, fb)? {
            MapSlot::Direct(i) => {
                core.direct[i] = blk as u32;
                core.nblocks += 1;
            }
            MapSlot::Indirect(i) if core.indirect == 0 => {
                let ind = self.alloc_block(blk + 1)?;
                let r = self.bufs.get(ind, self.gfp()).and_then(|bp| {
                    let mut g = bp.lock_new();
                    set_indirect_entry(g.data_mut(), i, blk as u32)?;
                    g.write()
                });
                if let Err(e) = r {
                    let _ = self.free_block(ind);
                    return Err(e);
                }
                core.indirect = ind as u32;
                core.nblocks += 2;
            }
            MapSlot::Indirect(i) => {
                let ind = u64::from(core.indirect);
                check_pointer(&self.sb.geometry, core.ino, ind)?;
                let bp = self.bufs.get(ind, self.gfp())?;
                let mut g = bp.lock_read()?;
                set_indirect_entry(g.data_mut(), i, blk as u32)?;
                g.write()?;
                core.nblocks += 1;
            }
        }
        Ok(())
    }

    /// Writes file block `fb` of `core`: `fill` edits the block's data
    /// (zeros for a new block; the old contents unless `whole`).
    fn write_file_block(
        &self,
        core: &mut InodeCore,
        fb: u64,
        whole: bool,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), FsError> {
        if let Some(blk) = self.bmap(core, fb)? {
            let bp = self.bufs.get(blk, self.gfp())?;
            let mut g = if whole {
                bp.lock_new()
            } else {
                bp.lock_read()?
            };
            fill(g.data_mut());
            return g.write();
        }
        map_slot(core.ino, fb)?;
        let blk = self.alloc_block(self.goal(core, fb))?;
        let r = self
            .bufs
            .get(blk, self.gfp())
            .and_then(|bp| {
                let mut g = bp.lock_new();
                fill(g.data_mut());
                g.write()
            })
            .and_then(|()| self.map_new(core, fb, blk));
        if let Err(e) = r {
            let _ = self.free_block(blk);
            return Err(e);
        }
        Ok(())
    }

    /// Frees the blocks wholly past `new_size` and sets the size. Pointers
    /// are cleared before blocks are freed, so an error leaks at worst.
    fn truncate_blocks(&self, core: &mut InodeCore, new_size: u64) -> Result<(), FsError> {
        let bs = BLOCK_SIZE as u64;
        let keep = new_size.div_ceil(bs);
        if new_size < core.size
            && !new_size.is_multiple_of(bs)
            && let Some(blk) = self.bmap(core, keep - 1)?
        {
            // Zero the tail so that growing the file again reads zeros.
            let bp = self.bufs.get(blk, self.gfp_nofail())?;
            let mut g = bp.lock_read()?;
            g.data_mut()[(new_size % bs) as usize..].fill(0);
            g.write()?;
        }
        let from = keep.min(NDIRECT as u64) as usize;
        for i in from..NDIRECT {
            let b = core.direct[i];
            if b != 0 {
                core.direct[i] = 0;
                core.nblocks = core.nblocks.saturating_sub(1);
                self.free_block(b.into())?;
            }
        }
        if core.indirect != 0 {
            let ind = u64::from(core.indirect);
            check_pointer(&self.sb.geometry, core.ino, ind)?;
            let first = keep
                .saturating_sub(NDIRECT as u64)
                .min(PTRS_PER_INDIRECT as u64) as usize;
            let mut ents = [0u32; PTRS_PER_INDIRECT];
            {
                let bp = self.bufs.get(ind, self.gfp_nofail())?;
                let mut g = bp.lock_read()?;
                for (idx, e) in ents.iter_mut().enumerate().skip(first) {
                    *e = indirect_entry(g.data(), idx)?;
                }
                if first > 0 && ents[first..].iter().any(|&e| e != 0) {
                    for idx in first..PTRS_PER_INDIRECT {
                        set_indirect_entry(g.data_mut(), idx, 0)?;
                    }
                    g.write()?;
                }
            }
            if first == 0 {
                core.indirect = 0;
                core.nblocks = core.nblocks.saturating_sub(1);
            }
            for &e in &ents[first..] {
                if e != 0 {
                    core.nblocks = core.nblocks.saturating_sub(1);
                    self.free_block(e.into())?;
                }
            }
            if first == 0 {
                self.free_block(ind)?;
            }
        }
        core.size = new_size;
        Ok(())
    }

    // -- Directories (under the directory's ILOCK) ----------------------------

    fn dir_buf(&self, dir: &InodeCore, fb: u64) -> Result<BufRef<'_>, FsError> {
        let blk = self.bmap(dir, fb)?.ok_or(FsError::Corrupt {
            what: Meta::Inode(dir.ino),
            reason: "hole in a directory",
        })?;
        self.bufs.get(blk, self.gfp())
    }

    fn dir_lock<'b>(&self, bp: &'b BufRef<'_>, dir: u32) -> Result<BufGuard<'b>, FsError> {
        let mut g = bp.lock_read()?;
        if !g.verified() {
            dir::dir_verify(g.data(), dir, bp.blkno())?;
            g.set_verified();
        }
        Ok(g)
    }

    fn dir_lookup(&self, dir: &InodeCore, name: &[u8]) -> Result<Option<(u32, FileType)>, FsError> {
        for fb in 0..dir.size_blocks() {
            let bp = self.dir_buf(dir, fb)?;
            let g = self.dir_lock(&bp, dir.ino)?;
            if let Some(found) = dir::dir_lookup(g.data(), name)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn dir_add(
        &self,
        dir: &mut InodeCore,
        name: &[u8],
        ino: u32,
        ftype: FileType,
    ) -> Result<(), FsError> {
        for fb in 0..dir.size_blocks() {
            let bp = self.dir_buf(dir, fb)?;
            let mut g = self.dir_lock(&bp, dir.ino)?;
            if dir::dir_free_slots(g.data())? > 0 {
                dir::dir_add(g.data_mut(), name, ino, ftype)?;
                return g.write();
            }
        }
        let fb = dir.size_blocks();
        map_slot(dir.ino, fb)?;
        let blk = self.alloc_block(self.goal(dir, fb))?;
        let owner = dir.ino;
        let r = self.bufs.get(blk, self.gfp()).and_then(|bp| {
            let mut g = bp.lock_new();
            dir::dir_init(g.data_mut(), owner)?;
            dir::dir_add(g.data_mut(), name, ino, ftype)?;
            g.write()?;
            g.set_verified();
            Ok(())
        });
        let old = dir.size;
        let r = r.and_then(|()| {
            dir.size = (fb + 1) * BLOCK_SIZE as u64;
            self.map_new(dir, fb, blk)
        });
        if let Err(e) = r {
            dir.size = old;
            let _ = self.free_block(blk);
            return Err(e);
        }
        Ok(())
    }

    fn dir_remove(&self, dir: &InodeCore, name: &[u8]) -> Result<(u32, FileType), FsError> {
        for fb in 0..dir.size_blocks() {
            let bp = self.dir_buf(dir, fb)?;
            let mut g = self.dir_lock(&bp, dir.ino)?;
            if let Some(found) = dir::dir_remove(g.data_mut(), name)? {
                g.write()?;
                return Ok(found);
            }
        }
        Err(FsError::NotFound)
    }

    fn dir_is_empty(&self, dir: &InodeCore) -> Result<bool, FsError> {
        for fb in 0..dir.size_blocks() {
            let bp = self.dir_buf(dir, fb)?;
            let g = self.dir_lock(&bp, dir.ino)?;
            if dir::dir_free_slots(g.data())? != DIRENTS_PER_BLOCK {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn want_dir(c: &InodeCore) -> Result<(), FsError> {
        match c.mode {
            Mode::Dir => Ok(()),
            Mode::File => Err(FsError::NotADirectory { ino: c.ino }),
            Mode::Free => Err(FsError::InodeNotAllocated { ino: c.ino }),
        }
    }

    fn want_file(c: &InodeCore) -> Result<(), FsError> {
        match c.mode {
            Mode::File => Ok(()),
            Mode::Dir => Err(FsError::IsADirectory { ino: c.ino }),
            Mode::Free => Err(FsError::InodeNotAllocated { ino: c.ino }),
        }
    }

    // -- Operations ----------------------------------------------------------

    /// Looks `name` up in `dir` (ILOCK shared; a directory block that is
    /// not cached is read into a buffer allocated with `gfp_under_ilock`).
    /// The inode is taken after the directory's ILOCK is dropped, so an
    /// unlink can remove the name and free the inode in between; then the
    /// name is looked up again (`None` if it is gone). An entry that names
    /// a free inode twice in a row is corruption, reported as the error.
    pub fn lookup(&self, dir: &InodeRef, name: &str) -> Result<Option<InodeRef>, FsError> {
        self.check_live()?;
        dir::check_name(name.as_bytes())?;
        let mut freed = None;
        loop {
            let found = {
                let g = dir.inode().ilock.down_read();
                Self::want_dir(&g)?;
                self.dir_lookup(&g, name.as_bytes())?
            };
            let Some((ino, _)) = found else {
                return Ok(None);
            };
            self.run_race_hook(ino, RacePoint::LookupFound);
            match self.iget(ino) {
                Err(FsError::InodeNotAllocated { .. }) if freed != Some(ino) => freed = Some(ino),
                r => return r.map(Some),
            }
        }
    }

    /// Calls `f(name, ino, type)` for every entry of `dir`; returns the
    /// number of entries. The seed's path: for each directory block the
    /// directory's ILOCK is taken shared and, if the block is not in the
    /// buffer cache, a buffer is allocated with `gfp_under_ilock` while it
    /// is held. As XFS's getdents, the ILOCK is dropped before the entries
    /// of a block are handed to `f` (filldir may fault and allocate), so `f`
    /// runs with no filesystem lock held. Entries added or removed while it
    /// runs may or may not be seen.
    pub fn readdir(
        &self,
        dir: &InodeRef,
        f: &mut dyn FnMut(&str, u32, FileType),
    ) -> Result<usize, FsError> {
        self.check_live()?;
        let mut n = 0;
        let mut copy = [0u8; BLOCK_SIZE];
        let mut fb = 0;
        loop {
            let ino = {
                let g = dir.inode().ilock.down_read();
                Self::want_dir(&g)?;
                if fb >= g.size_blocks() {
                    return Ok(n);
                }
                let bp = self.dir_buf(&g, fb)?;
                let bg = self.dir_lock(&bp, g.ino)?;
                copy.copy_from_slice(bg.data());
                g.ino
            };
            for e in dir::dir_entries(&copy) {
                let e = e?;
                let name = core::str::from_utf8(e.name).map_err(|_| FsError::Corrupt {
                    what: Meta::Inode(ino),
                    reason: "directory entry name is not UTF-8",
                })?;
                f(name, e.ino, e.ftype);
                n += 1;
            }
            fb += 1;
        }
    }

    /// Creates `name` in `dir` as a new empty file or directory. The inode
    /// goes to `dir`'s AG (a new directory to the next AG in turn), then
    /// the following AGs.
    pub fn create(&self, dir: &InodeRef, name: &str, ftype: FileType) -> Result<InodeRef, FsError> {
        self.check_live()?;
        let name = name.as_bytes();
        dir::check_name(name)?;
        let mut tp = Transaction::alloc(self)?;
        let dip = dir.inode();
        let mut dg = dip.ilock.down_write();
        Self::want_dir(&dg)?;
        if self.dir_lookup(&dg, name)?.is_some() {
            return Err(FsError::NameExists);
        }
        let ag = match ftype {
            FileType::Dir => {
                self.dir_rotor.fetch_add(1, Ordering::Relaxed) % self.sb.geometry.ag_count
            }
            FileType::File => ino_to_ag(dg.ino),
        };
        let ino = self.alloc_inode(ag)?;
        let ip_ptr = match self.iget_inner(ino, self.gfp(), true) {
            Ok(p) => p,
            Err(e) => {
                let _ = self.free_inode_bit(ino);
                return Err(e);
            }
        };
        let iref = self.make_ref(ip_ptr);
        let ip = iref.inode();
        let mut ig = ip.ilock.down_write_nested(ILOCK_CHILD);
        if ig.mode != Mode::Free {
            return Err(FsError::Corrupt {
                what: Meta::Inode(ino),
                reason: "in use but free in the inode bitmap",
            });
        }
        let generation = ig.generation;
        let t = now();
        *ig = InodeCore::new(ino, ftype.mode(), generation, t);
        ig.nlink = 1;
        ip.clear(I_UNLINKED);
        tp.log_inode(ip);
        let r = self.dir_add(&mut dg, name, ino, ftype);
        if r.is_err() {
            *ig = InodeCore::free(ino, generation);
            let _ = self.free_inode_bit(ino);
        } else {
            dg.mtime = t;
            dg.ctime = t;
        }
        tp.log_inode(dip);
        tp.commit();
        drop(ig);
        drop(dg);
        r.map(|()| iref)
    }

    /// Reads up to `buf.len()` bytes at `offset` (ILOCK shared); returns
    /// the number read (0 at or past the end). Holes read as zeros.
    pub fn read(&self, file: &InodeRef, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        self.check_live()?;
        let g = file.inode().ilock.down_read();
        Self::want_file(&g)?;
        if offset >= g.size || buf.is_empty() {
            return Ok(0);
        }
        let n = (g.size - offset).min(buf.len() as u64) as usize;
        let bs = BLOCK_SIZE as u64;
        let mut done = 0;
        while done < n {
            let pos = offset + done as u64;
            let (fb, off) = (pos / bs, (pos % bs) as usize);
            let len = (BLOCK_SIZE - off).min(n - done);
            let out = &mut buf[done..done + len];
            match self.bmap(&g, fb)? {
                None => out.fill(0),
                Some(blk) => {
                    let bp = self.bufs.get(blk, self.gfp())?;
                    let bg = bp.lock_read()?;
                    out.copy_from_slice(&bg.data()[off..off + len]);
                }
            }
            done += len;
        }
        Ok(n)
    }

    /// Writes `data` at `offset`, allocating blocks as needed (written
    /// through); the size grows to cover it. Returns the bytes written: all
    /// of them, or fewer if an error stopped it part way (`Err` if none).
    pub fn write(&self, file: &InodeRef, offset: u64, data: &[u8]) -> Result<usize, FsError> {
        self.check_live()?;
        if data.is_empty() {
            return Ok(0);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooBig {
                ino: file.ino(),
                file_block: (offset + data.len() as u64).div_ceil(BLOCK_SIZE as u64),
            })?;
        let _ = end;
        let mut tp = Transaction::alloc(self)?;
        let ip = file.inode();
        let mut g = ip.ilock.down_write();
        Self::want_file(&g)?;
        let bs = BLOCK_SIZE as u64;
        let mut done = 0;
        let mut err = None;
        while done < data.len() {
            let pos = offset + done as u64;
            let (fb, off) = (pos / bs, (pos % bs) as usize);
            let len = (BLOCK_SIZE - off).min(data.len() - done);
            let src = &data[done..done + len];
            let r = self.write_file_block(&mut g, fb, off == 0 && len == BLOCK_SIZE, |b| {
                b[off..off + len].copy_from_slice(src)
            });
            if let Err(e) = r {
                err = Some(e);
                break;
            }
            done += len;
        }
        if done > 0 {
            let t = now();
            g.size = g.size.max(offset + done as u64);
            g.mtime = t;
            g.ctime = t;
        }
        tp.log_inode(ip);
        tp.commit();
        drop(g);
        match err {
            Some(e) if done == 0 => Err(e),
            _ => Ok(done),
        }
    }

    /// Sets the size; blocks wholly past a smaller size are freed.
    pub fn truncate(&self, file: &InodeRef, size: u64) -> Result<(), FsError> {
        self.check_live()?;
        if size > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig {
                ino: file.ino(),
                file_block: size.div_ceil(BLOCK_SIZE as u64),
            });
        }
        let mut tp = Transaction::alloc(self)?;
        let ip = file.inode();
        let mut g = ip.ilock.down_write();
        Self::want_file(&g)?;
        let r = if size < g.size {
            self.truncate_blocks(&mut g, size)
        } else {
            g.size = size;
            Ok(())
        };
        let t = now();
        g.mtime = t;
        g.ctime = t;
        tp.log_inode(ip);
        tp.commit();
        r
    }

    /// Removes `name` from `dir` and drops a link; the inode and its blocks
    /// are freed on disk when no link and no reference is left. A directory
    /// must be empty.
    pub fn unlink(&self, dir: &InodeRef, name: &str) -> Result<(), FsError> {
        self.check_live()?;
        let name = name.as_bytes();
        dir::check_name(name)?;
        let mut tp = Transaction::alloc(self)?;
        let dip = dir.inode();
        let dg = dip.ilock.down_write();
        Self::want_dir(&dg)?;
        let (ino, _) = self.dir_lookup(&dg, name)?.ok_or(FsError::NotFound)?;
        let iref = self.make_ref(self.iget_inner(ino, self.gfp(), false)?);
        let r = (|| -> Result<(), FsError> {
            let ip = iref.inode();
            let mut ig = ip.ilock.down_write_nested(ILOCK_CHILD);
            if ig.mode == Mode::Dir && !self.dir_is_empty(&ig)? {
                return Err(FsError::DirNotEmpty { ino });
            }
            self.dir_remove(&dg, name)?;
            let t = now();
            ig.nlink = ig.nlink.saturating_sub(1);
            ig.ctime = t;
            if ig.nlink == 0 {
                ip.set(I_UNLINKED);
            }
            tp.log_inode(dip);
            tp.log_inode(ip);
            Ok(())
        })();
        if r.is_ok() {
            tp.commit();
        } else {
            drop(tp);
        }
        drop(dg);
        // The last reference (usually this one) frees the inode on disk.
        drop(iref);
        r
    }

    /// `xfs_inactive`: frees an unlinked inode's blocks and the inode on
    /// disk. Called by the task that dropped the last reference, with
    /// `I_INACTIVATING` set (so no new reference exists) and no ILOCK.
    pub(crate) fn inactivate(&self, ip: &XfsInode) -> Result<(), FsError> {
        let mut tp = Transaction::alloc_nofail(self)?;
        let mut g = ip.ilock.down_write();
        if g.mode == Mode::Free || g.nlink != 0 || ip.flags() & I_UNLINKED == 0 {
            return Ok(());
        }
        let r = self.truncate_blocks(&mut g, 0).and_then(|()| {
            self.free_inode_bit(ip.ino)?;
            let generation = g.generation.wrapping_add(1);
            *g = InodeCore::free(ip.ino, generation);
            ip.clear(I_UNLINKED);
            Ok(())
        });
        tp.log_inode(ip);
        tp.commit();
        if r.is_ok() {
            self.stats.inactivations.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl Drop for Fs {
    fn drop(&mut self) {
        // Dropped without unmount (or after a failed one): the shrinkers
        // cannot reach us any more (their Weak is dead). Do not unregister
        // here: this may run inside a shrinker's own call, which
        // unregistration would wait for. Leak the registry entries instead.
        if let Some(r) = self.shrinkers.get_mut().take() {
            core::mem::forget(r);
        }
        if !self.unmounted.load(Ordering::Acquire) {
            self.purge_inodes();
            self.bufs.purge();
        }
    }
}
