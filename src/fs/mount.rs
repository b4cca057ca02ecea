//! Mount, unmount and shutdown (XFS's `xfs_mountfs`/`xfs_unmountfs` with
//! `xfs_fs_fill_super`/`xfs_fs_put_super`): mount checks the superblock,
//! builds the per-AG inode indexes and the caches of a new [`Fs`], starts
//! the flusher `xfsaild` and registers the `xfs_inode` and `xfs_buf`
//! shrinkers; unmount undoes that and leaves a clean disk. The top of the
//! filesystem's layering with [`super::ops`]: nothing below imports it.

use super::FsError;
use super::blockdev::BlockDevice;
use super::buf::{BufCache, BufShrinker};
use super::format::{BLOCK_SIZE, Superblock};
use super::icache::{InodeShrinker, Perag, XfsInode};
use super::policy::Policy;
use super::state::{Counters, Fs};
use crate::mm::gfp::GFP_KERNEL;
use crate::mm::list_lru::ListLru;
use crate::mm::shrinker::ShrinkerBuilder;
use crate::mm::slab::kmalloc::KVec;
use crate::mm::slab::{KmemCache, SlabFlags};
use crate::sync::{RwSemaphore, WaitQueue};
use crate::task;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Objects per inode-shrinker scan call. Smaller than XFS's 1024 (a
/// superblock shrinker batch) because this kernel has a few MiB of RAM.
pub const INODE_SHRINK_BATCH: u64 = 32;

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
            inode_lru: ListLru::new(crate::lock_class!("s_inode_lru")),
            bufs,
            inode_slab,
            trans_slab,
            s_umount: RwSemaphore::new((), crate::lock_class!("s_umount")),
            stats: Counters::default(),
            log: super::log::Log::new(),
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

    pub(super) fn stop_flusher(&self, join: bool) {
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
