//! The buffer cache (XFS's `xfs_buf` layer, much simplified).
//!
//! A buffer caches one filesystem block. Buffer objects come from the slab
//! cache `xfs_buf`; their data is one page from `alloc_pages` with the
//! caller's gfp (`policy.gfp_under_ilock` on operation paths: this is the
//! seed's "readdir holds ILOCK and allocates buffer memory"). Buffers are
//! found through an intrusive hash table sized at mount, so inserting never
//! allocates. A buffer is referenced by [`BufRef`]s; when the last one goes
//! it moves to the buffer LRU (a [`ListLru`], as XFS's `bt_lru`), from
//! which the `xfs_buf` shrinker frees it through `list_lru_shrink_walk`;
//! a lookup takes it off the LRU again.
//!
//! Write policy: buffers are always clean. Whoever modifies a block (data,
//! directory, indirect and AG-header blocks under the owning inode's ILOCK
//! or the AG lock; inode-cluster blocks in the flusher) writes it through to
//! the device while holding the buffer lock. A failed write marks the buffer
//! not up to date, so the next user reads the device again and the failed
//! change is forgotten in memory as it is on disk.
//!
//! Locks: the cache lock `xfs_buf_cache` (a spinlock, never held across an
//! allocation or IO; it is taken before the LRU's list lock `xfs_buf_lru`,
//! so the shrinker's isolate callback, which runs under the list lock, only
//! trylocks it and skips the buffer when it is busy) and one sleeping lock per
//! buffer (`xfs_buf`, class shared by all buffers) held while its data is
//! read or changed and across its device IO. Nobody holds two buffer locks
//! at once, and no allocation happens under a buffer lock.

use super::FsError;
use super::blockdev::BlockDevice;
use super::format::BLOCK_SIZE;
use crate::mm::gfp::Gfp;
use crate::mm::list_lru::{ListLru, ListLruHead, ListLruItem, LruDispose, LruStatus};
use crate::mm::page_alloc::{self, PageOwner, PhysAddr};
use crate::mm::shrinker::{CountObjects, ScanObjects, ShrinkControl, Shrinker};
use crate::mm::slab::kmalloc::KVec;
use crate::mm::slab::{KmemCache, SlabFlags};
use crate::sync::{Mutex, MutexGuard, SpinLock};
use alloc::sync::Weak;
use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU64, Ordering};

/// State guarded by the buffer lock.
pub(crate) struct BufState {
    /// The data matches the device (read, or fully written by the owner).
    uptodate: bool,
    /// A structure verifier (directory block) accepted the data since it
    /// was last read.
    pub(crate) verified: bool,
}

/// Fields guarded by the cache lock.
struct Links {
    refs: u32,
    hash_next: *mut Buf,
}

pub(crate) struct Buf {
    blkno: u64,
    page: PhysAddr,
    data: *mut u8,
    links: UnsafeCell<Links>,
    /// On the buffer LRU while unreferenced (`b_lru`).
    lru: ListLruHead<Buf>,
    lock: Mutex<BufState>,
}

// SAFETY: `lru_head` always returns the buffer's own `lru` field, which no
// other list type uses.
unsafe impl ListLruItem for Buf {
    fn lru_head(&self) -> &ListLruHead<Self> {
        &self.lru
    }
}

impl Buf {
    fn new(blkno: u64, page: PhysAddr) -> Self {
        Self {
            blkno,
            page,
            data: page_alloc::page_address(page),
            links: UnsafeCell::new(Links {
                refs: 1,
                hash_next: ptr::null_mut(),
            }),
            lru: ListLruHead::new(),
            lock: Mutex::new(
                BufState {
                    uptodate: false,
                    verified: false,
                },
                crate::lock_class!("xfs_buf"),
            ),
        }
    }
}

struct CacheState {
    buckets: KVec<*mut Buf>,
    nr: u64,
}

// SAFETY: the raw pointers are only followed under the cache lock.
unsafe impl Send for CacheState {}

impl CacheState {
    fn bucket(&self, blk: u64) -> usize {
        (blk.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize & (self.buckets.len() - 1)
    }

    /// The links of buffer `b`.
    ///
    /// # Safety
    /// `b` must be a live buffer of this cache, the caller must hold the
    /// cache lock (which guards every `links`) for as long as it uses the
    /// result, and no other reference to `b`'s links may be in use.
    unsafe fn links<'a>(b: *mut Buf) -> &'a mut Links {
        // SAFETY: `b` is live (so `links` is valid memory) and the caller's
        // cache lock makes this the only reference in use, per the contract.
        unsafe { &mut *(*b).links.get() }
    }

    fn find(&self, blk: u64) -> *mut Buf {
        let mut p = self.buckets[self.bucket(blk)];
        while !p.is_null() {
            // SAFETY: hashed buffers are live.
            if unsafe { (*p).blkno } == blk {
                return p;
            }
            // SAFETY: `p` is hashed, hence live; `&self` is the locked
            // state, and no other links reference is held here.
            p = unsafe { Self::links(p) }.hash_next;
        }
        ptr::null_mut()
    }

    fn unhash(&mut self, b: *mut Buf) {
        // SAFETY: `b` is live and hashed.
        let i = self.bucket(unsafe { (*b).blkno });
        let mut pp: *mut *mut Buf = &mut self.buckets[i];
        // SAFETY: `&mut self` is the locked state; `pp` points into a bucket
        // or into the `hash_next` of a hashed (live) buffer, and each
        // `links` reference is used once and dropped before the next.
        unsafe {
            while !(*pp).is_null() {
                if *pp == b {
                    *pp = Self::links(b).hash_next;
                    return;
                }
                pp = &mut Self::links(*pp).hash_next;
            }
        }
    }
}

/// The buffer cache of one mounted filesystem.
pub(crate) struct BufCache {
    dev: &'static dyn BlockDevice,
    slab: KmemCache,
    state: SpinLock<CacheState>,
    /// Unreferenced buffers, oldest first (`bt_lru`).
    lru: ListLru<Buf>,
    pub(crate) reclaimed: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) hits: AtomicU64,
}

impl BufCache {
    /// A cache with `buckets` hash buckets (rounded up to a power of two).
    /// Mount-time setup: allocates with GFP_KERNEL.
    pub(crate) fn new(dev: &'static dyn BlockDevice, buckets: usize) -> Result<Self, FsError> {
        let n = buckets.next_power_of_two().max(16);
        let mut v =
            KVec::with_capacity(n, crate::mm::gfp::GFP_KERNEL).map_err(|_| FsError::NoMemory)?;
        for _ in 0..n {
            v.push(ptr::null_mut(), crate::mm::gfp::GFP_KERNEL)
                .map_err(|_| FsError::NoMemory)?;
        }
        let slab = KmemCache::create(
            "xfs_buf",
            core::mem::size_of::<Buf>(),
            core::mem::align_of::<Buf>(),
            SlabFlags::RECLAIM_ACCOUNT,
            None,
        )
        .map_err(|_| FsError::NoMemory)?;
        Ok(Self {
            dev,
            slab,
            state: SpinLock::new(
                CacheState { buckets: v, nr: 0 },
                crate::lock_class!("xfs_buf_cache"),
            ),
            lru: ListLru::new(crate::lock_class!("xfs_buf_lru")),
            reclaimed: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        })
    }

    /// (buffers cached, buffers on the LRU).
    pub(crate) fn counts(&self) -> (u64, u64) {
        let nr = self.state.lock().nr;
        (nr, self.lru.count())
    }

    fn lookup_ref(&self, blk: u64) -> Option<NonNull<Buf>> {
        let s = self.state.lock();
        let p = NonNull::new(s.find(blk))?;
        self.lru_del(p);
        // SAFETY: `find` returned a hashed, hence live, buffer and `s` holds
        // the cache lock.
        unsafe { CacheState::links(p.as_ptr()) }.refs += 1;
        Some(p)
    }

    /// A referenced buffer for block `blk`; its data is read from the
    /// device on first [`BufRef::lock_read`]. Allocates (with `gfp`) on a
    /// miss: the buffer object from the `xfs_buf` slab and one data page.
    #[track_caller]
    pub(crate) fn get(&self, blk: u64, gfp: Gfp) -> Result<BufRef<'_>, FsError> {
        if blk >= self.dev.nr_blocks() {
            return Err(FsError::BadBlockNumber {
                blk,
                reason: "beyond the end of the device",
            });
        }
        if let Some(b) = self.lookup_ref(blk) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(BufRef { cache: self, b });
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let obj = self.slab.alloc(gfp).map_err(|_| FsError::NoMemory)?;
        let page = match page_alloc::alloc_pages(gfp, 0) {
            Ok(p) => p,
            Err(_) => {
                // SAFETY: `obj` was just allocated above and never shared.
                unsafe { self.slab.free(obj) };
                return Err(FsError::NoMemory);
            }
        };
        page_alloc::set_page_owner(page, 0, PageOwner::Other("xfs_buf data"));
        let nb = obj.cast::<Buf>();
        // SAFETY: a fresh object of the right size and alignment.
        unsafe { nb.as_ptr().write(Buf::new(blk, page)) };
        let mut s = self.state.lock();
        let found = s.find(blk);
        if let Some(f) = NonNull::new(found) {
            // Somebody inserted it meanwhile: use theirs.
            self.lru_del(f);
            // SAFETY: `find` returned a hashed, hence live, buffer and `s`
            // holds the cache lock.
            unsafe { CacheState::links(found) }.refs += 1;
            drop(s);
            self.free_buf(nb.as_ptr());
            return Ok(BufRef {
                cache: self,
                // SAFETY: `found` was checked non-null above.
                b: unsafe { NonNull::new_unchecked(found) },
            });
        }
        let i = s.bucket(blk);
        // SAFETY: `nb` was initialised above and is not yet reachable by
        // anyone else; `s` holds the cache lock.
        unsafe { CacheState::links(nb.as_ptr()) }.hash_next = s.buckets[i];
        s.buckets[i] = nb.as_ptr();
        s.nr += 1;
        Ok(BufRef { cache: self, b: nb })
    }

    fn free_buf(&self, b: *mut Buf) {
        // SAFETY: unreferenced and unhashed, so nobody else can reach it.
        unsafe {
            let page = (*b).page;
            ptr::drop_in_place(b);
            page_alloc::free_pages(page, 0);
            self.slab.free(NonNull::new_unchecked(b.cast()));
        }
    }

    /// Takes a hashed buffer off the LRU (cache lock held by the caller,
    /// so the shrinker cannot be freeing it).
    fn lru_del(&self, b: NonNull<Buf>) {
        // SAFETY: the buffer is hashed, hence live, and stays so while the
        // caller holds the cache lock; it is only ever on this LRU.
        unsafe { self.lru.del(b) };
    }

    fn release(&self, b: *mut Buf) {
        let _s = self.state.lock();
        // SAFETY: `b` belongs to a live `BufRef` (it holds a reference, so
        // the buffer is not freed) and `_s` holds the cache lock.
        let l = unsafe { CacheState::links(b) };
        l.refs -= 1;
        if l.refs == 0 {
            // SAFETY: hashed and unreferenced: it stays live until the
            // shrinker's isolate callback unhashes it (under the cache
            // lock, after taking it off the LRU); only ever on this LRU.
            unsafe { self.lru.add(NonNull::new_unchecked(b)) };
        }
    }

    /// `xfs_buftarg_shrink_scan`: walks up to `nr` buffers of the LRU,
    /// oldest first, and frees those it isolates. The isolate callback runs
    /// under the LRU lock and only trylocks the cache lock (the usual order
    /// is cache lock, then LRU lock): a busy cache skips the buffer
    /// (`LRU_SKIP`). Returns the number freed.
    fn reclaim(&self, nr: u64) -> u64 {
        let mut dispose = LruDispose::new();
        self.lru.shrink_walk(
            |b, walk| {
                let Some(mut s) = self.state.try_lock() else {
                    return LruStatus::Skip;
                };
                // SAFETY: on the LRU, hence hashed and live; `s` holds the
                // cache lock.
                if unsafe { CacheState::links(b.as_ptr()) }.refs != 0 {
                    // Not reachable: a lookup takes the buffer off the LRU
                    // under the cache lock before referencing it.
                    return LruStatus::Skip;
                }
                s.unhash(b.as_ptr());
                s.nr -= 1;
                walk.isolate_move(b, &mut dispose);
                LruStatus::Removed
            },
            nr,
        );
        let n = dispose.len();
        while let Some(b) = dispose.pop() {
            // Unhashed and off the LRU: only this task can reach it.
            self.free_buf(b.as_ptr());
        }
        self.reclaimed.fetch_add(n, Ordering::Relaxed);
        n
    }

    /// Frees every unreferenced buffer (unmount); returns how many buffers
    /// are still referenced.
    pub(crate) fn purge(&self) -> u64 {
        while self.lru.count() > 0 {
            if self.reclaim(u64::MAX) == 0 {
                // A buffer busy on another task (not at unmount): let it go.
                crate::task::yield_now();
            }
        }
        self.counts().0
    }

    /// `xfs_buftarg_shrink_count`: `list_lru_shrink_count` of the LRU.
    pub(crate) fn shrink_count(&self) -> CountObjects {
        match self.lru.shrink_count() {
            0 => CountObjects::EMPTY,
            n => CountObjects::new(n),
        }
    }

    pub(crate) fn shrink_scan(&self, sc: &mut ShrinkControl) -> ScanObjects {
        // nr_scanned stays nr_to_scan, as in Linux's buffer shrinker
        // (`xfs_buftarg_shrink_scan` walks the LRU and reports only what it
        // freed).
        ScanObjects::freed(self.reclaim(sc.nr_to_scan()))
    }
}

// SAFETY: every shared field is behind the cache lock or atomics.
unsafe impl Send for BufCache {}
// SAFETY: every shared field is behind the cache lock or atomics, and buffers are only reached
// through the locked CacheState, so `&BufCache` may be shared between tasks.
unsafe impl Sync for BufCache {}

/// A reference to a cached buffer; dropping it releases the reference.
pub(crate) struct BufRef<'a> {
    cache: &'a BufCache,
    b: NonNull<Buf>,
}

impl<'a> BufRef<'a> {
    fn buf(&self) -> &Buf {
        // SAFETY: referenced, so not freed.
        unsafe { self.b.as_ref() }
    }

    pub(crate) fn blkno(&self) -> u64 {
        self.buf().blkno
    }

    /// Locks the buffer, reading the block first if the buffer is not up to
    /// date.
    #[track_caller]
    pub(crate) fn lock_read(&self) -> Result<BufGuard<'_>, FsError> {
        let b = self.buf();
        let mut g = b.lock.lock();
        if !g.uptodate {
            // SAFETY: the data page belongs to the buffer; the buffer lock
            // is held.
            let data = unsafe { core::slice::from_raw_parts_mut(b.data, BLOCK_SIZE) };
            self.cache
                .dev
                .read_block(b.blkno, data)
                .map_err(|err| FsError::Io { blk: b.blkno, err })?;
            g.uptodate = true;
            g.verified = false;
        }
        Ok(BufGuard {
            g,
            data: b.data,
            blkno: b.blkno,
            dev: self.cache.dev,
        })
    }

    /// Locks the buffer for a block the caller overwrites completely (a
    /// newly allocated block): no read. The data starts zeroed.
    #[track_caller]
    pub(crate) fn lock_new(&self) -> BufGuard<'_> {
        let b = self.buf();
        let mut g = b.lock.lock();
        // SAFETY: the data page (BLOCK_SIZE bytes) belongs to the buffer,
        // and the buffer lock `g` is held.
        unsafe { ptr::write_bytes(b.data, 0, BLOCK_SIZE) };
        g.uptodate = true;
        g.verified = false;
        BufGuard {
            g,
            data: b.data,
            blkno: b.blkno,
            dev: self.cache.dev,
        }
    }
}

impl Drop for BufRef<'_> {
    fn drop(&mut self) {
        self.cache.release(self.b.as_ptr());
    }
}

/// A locked buffer: its data may be read, changed and written.
#[must_use = "the buffer is unlocked as soon as the guard is dropped"]
pub(crate) struct BufGuard<'a> {
    g: MutexGuard<'a, BufState>,
    data: *mut u8,
    blkno: u64,
    dev: &'static dyn BlockDevice,
}

impl BufGuard<'_> {
    pub(crate) fn data(&self) -> &[u8] {
        // SAFETY: the buffer lock is held.
        unsafe { core::slice::from_raw_parts(self.data, BLOCK_SIZE) }
    }

    pub(crate) fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: the buffer lock is held.
        unsafe { core::slice::from_raw_parts_mut(self.data, BLOCK_SIZE) }
    }

    pub(crate) fn verified(&self) -> bool {
        self.g.verified
    }

    pub(crate) fn set_verified(&mut self) {
        self.g.verified = true;
    }

    /// Writes the block to the device. On failure the buffer is marked not
    /// up to date, so the change is dropped from memory too.
    pub(crate) fn write(&mut self) -> Result<(), FsError> {
        self.write_async().map(|_| ())
    }

    /// [`write`](Self::write), returning when the write completes on the
    /// device (see `BlockDevice::write_block_async`).
    pub(crate) fn write_async(&mut self) -> Result<u64, FsError> {
        let blk = self.blkno;
        let r = self
            .dev
            .write_block_async(blk, self.data())
            .map_err(|err| FsError::Io { blk, err });
        if r.is_err() {
            self.g.uptodate = false;
            self.g.verified = false;
        }
        r
    }
}

/// The `xfs_buf` shrinker: frees clean unreferenced buffers.
pub(crate) struct BufShrinker<O>(pub(crate) Weak<O>);

/// Whatever holds a buffer cache (the mounted `Fs`): the shrinker reaches
/// the cache through a weak reference to its owner, so a dead mount is
/// simply skipped, and this layer needs nothing from the layers above.
pub(crate) trait BufCacheOwner: Send + Sync {
    fn buf_cache(&self) -> &BufCache;
}

impl<O: BufCacheOwner> Shrinker for BufShrinker<O> {
    fn count_objects(&self, _sc: &ShrinkControl) -> CountObjects {
        match self.0.upgrade() {
            Some(fs) => fs.buf_cache().shrink_count(),
            None => CountObjects::EMPTY,
        }
    }

    fn scan_objects(&self, sc: &mut ShrinkControl) -> ScanObjects {
        match self.0.upgrade() {
            Some(fs) => fs.buf_cache().shrink_scan(sc),
            None => ScanObjects::STOP,
        }
    }
}
