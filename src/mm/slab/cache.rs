//! The `kmem_cache` itself: layout, slab lists, alloc and free.

use super::debug::{self, SlabBug};
use crate::mm::gfp::Gfp;
use crate::mm::inline_name::InlineName;
use crate::mm::page_alloc::{self, AllocError, PageOwner, PhysAddr};
use crate::platform::IrqGuard;
use crate::sync::SpinLock;
use alloc::string::String;
use core::cell::UnsafeCell;
use core::fmt;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

bitflags::bitflags! {
    /// Cache flags with Linux's values (`include/linux/slab.h`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct SlabFlags: u32 {
        /// `F`: check every free (pointer, cache, offset).
        const CONSISTENCY_CHECKS = 0x100;
        /// `Z`: red zone after each object.
        const RED_ZONE = 0x400;
        /// `P`: poison free objects, check on allocation.
        const POISON = 0x800;
        /// A kmalloc cache.
        const KMALLOC = 0x1000;
        /// Align objects on cache lines.
        const HWCACHE_ALIGN = 0x2000;
        /// Pages count as reclaimable (for caches with a shrinker).
        const RECLAIM_ACCOUNT = 0x20000;
        /// No cache merging (kreclaim never merges caches; accepted).
        const NO_MERGE = 0x0100_0000;
        /// Memcg accounting (no memcg here; ignored).
        const ACCOUNT = 0x0400_0000;
    }
}

impl SlabFlags {
    /// All debug checks: `F`, `Z` and `P` (Linux's `slab_debug=FZP`).
    pub const DEBUG: SlabFlags = SlabFlags::CONSISTENCY_CHECKS
        .union(SlabFlags::RED_ZONE)
        .union(SlabFlags::POISON);
}

const PAGE: usize = 4096;
const HEADER_SIZE: usize = 128;
const MAX_OBJECTS: usize = 512;
const SLAB_MAGIC: u32 = 0x51ab_cafe;
const CACHE_LINE: usize = 64;
/// Caches keep up to this many empty slabs before giving pages back.
pub const MIN_PARTIAL: usize = 5;

/// Where a slab sits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum ListKind {
    Partial = 0,
    Full = 1,
    Empty = 2,
    None = 3,
}

/// Metadata at the start of every slab.
#[repr(C, align(64))]
pub(crate) struct SlabHeader {
    magic: u32,
    objects: u16,
    inuse: u16,
    pub(crate) cache: *const CacheInner,
    /// Encoded pointer to the first free object (0 = none).
    freelist: usize,
    next: *mut SlabHeader,
    prev: *mut SlabHeader,
    list: ListKind,
    order: u8,
    /// Objects handed out (the bits set in `allocated`); `inuse` also
    /// counts the objects of this slab sitting in per-CPU arrays.
    users: u16,
    /// Bit i set = object i allocated.
    allocated: [u64; MAX_OBJECTS / 64],
}

const _: () = assert!(core::mem::size_of::<SlabHeader>() <= HEADER_SIZE);

#[derive(Clone, Copy)]
struct ListHead {
    head: *mut SlabHeader,
    len: usize,
}

impl ListHead {
    const EMPTY: ListHead = ListHead {
        head: ptr::null_mut(),
        len: 0,
    };
}

struct Lists {
    partial: ListHead,
    full: ListHead,
    empty: ListHead,
    active_objs: usize,
}

// SAFETY: the raw slab pointers are only followed under the list lock.
unsafe impl Send for Lists {}

/// A cache's immutable layout and its locked lists.
pub(crate) struct CacheInner {
    pub(crate) name: String,
    pub(crate) object_size: usize,
    /// Bytes per object including red zone and free pointer, aligned.
    pub(crate) size: usize,
    pub(crate) flags: SlabFlags,
    ctor: Option<fn(*mut u8)>,
    order: u32,
    objects: usize,
    first_offset: usize,
    /// Offset of the free pointer inside an object slot.
    freeptr_offset: usize,
    /// Red zone [object_size, object_size + rz_len).
    pub(crate) rz_len: usize,
    /// Where a kmalloc cache with red zones keeps the size each object was
    /// asked for (SLUB's `orig_size`), so that the slack between it and
    /// `object_size` is red-zoned too; 0 if the cache does not.
    orig_size_offset: usize,
    /// `ceil(2^32 / size)`: object index by multiplication (SLUB's
    /// `reciprocal_divide`), exact for offsets inside a slab.
    size_recip: u64,
    cookie: usize,
    lists: SpinLock<Lists>,
    /// `lists.empty.len`, readable without the lock (the free fast path
    /// asks whether a slab going empty would be released).
    empty_len: AtomicUsize,
    /// Per-CPU object arrays (0 entries: the cache bypasses them).
    cpu_limit: usize,
    cpu: [UnsafeCell<CpuCache>; NR_CPUS],
    allocs: AtomicU64,
    frees: AtomicU64,
    slabs_created: AtomicU64,
    slabs_freed: AtomicU64,
}

/// CPUs with a per-CPU object array; kreclaim runs on one.
const NR_CPUS: usize = 1;
/// Capacity of a per-CPU object array.
const CPU_ARRAY: usize = 32;

/// This CPU's number (the per-CPU arrays' index). One CPU today.
#[inline(always)]
fn this_cpu_id() -> usize {
    0
}

/// A per-CPU list of free objects in front of a cache (SLUB's per-CPU
/// freelist, SLAB's `array_cache` in size): the alloc and free fast paths pop
/// and push here with interrupts masked only, without the list lock; it is
/// refilled and drained in batches under the list lock. The list is linked
/// through the objects' free pointers, encoded like a slab's free list, so a
/// free object never holds a raw address. Objects on it are free for the
/// allocation bitmap (a double free of one is caught) and for
/// `active_objs`, but still counted in their slab's `inuse`.
struct CpuCache {
    /// First free object (a raw address, as SLUB keeps `c->freelist`), 0 if none.
    head: usize,
    avail: usize,
    /// Statistics of the fast path (per CPU, no atomics).
    allocs: u64,
    frees: u64,
}

impl CpuCache {
    const EMPTY: CpuCache = CpuCache {
        head: 0,
        avail: 0,
        allocs: 0,
        frees: 0,
    };
}

/// Per-CPU list length by object size (SLAB's `enable_cpucache` table,
/// scaled down), at most one slab's worth; 0 (bypass) for caches with
/// poison or red zones, whose checks run under the list lock.
fn cpu_limit_for(size: usize, objects: usize, flags: SlabFlags) -> usize {
    if flags.intersects(SlabFlags::POISON | SlabFlags::RED_ZONE) {
        return 0;
    }
    // These lists assume one CPU (they update slab bitmaps with interrupts
    // masked only). The host build runs each thread as a CPU of its own, so
    // there every cache goes through its list lock. (Per-CPU sheaves,
    // indexed by `platform::cpu_id`, replace this.)
    if !cfg!(target_os = "none") {
        return 0;
    }
    let by_size = match size {
        0..=256 => 32,
        257..=1024 => 16,
        1025..=4096 => 8,
        _ => 4,
    };
    by_size.min(objects).min(CPU_ARRAY)
}

/// Slabs to give back after a drain, once the list lock is dropped: unlinked
/// slabs chained through their `next` field.
struct Discards {
    head: *mut SlabHeader,
}

impl Discards {
    const NONE: Discards = Discards {
        head: ptr::null_mut(),
    };

    fn add(&mut self, s: *mut SlabHeader) {
        // SAFETY: an unlinked slab of ours.
        unsafe { (*s).next = self.head };
        self.head = s;
    }
}

/// Objects on their way between a per-CPU list and the slabs, held on the
/// stack while the list lock is taken (see `alloc_cpu`).
struct Batch {
    objs: [usize; CPU_ARRAY],
    n: usize,
}

impl Batch {
    const EMPTY: Batch = Batch {
        objs: [0; CPU_ARRAY],
        n: 0,
    };
}

/// What popping this CPU's list gave.
enum CpuPop {
    Object(usize),
    Empty,
    /// The list was overwritten at this object and has been dropped.
    Corrupt(usize),
}

/// Why a cache could not be created. Every variant names the cache; the
/// name is kept inline ([`InlineName`]) so reporting a failure allocates
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    /// Size 0 or too large for a slab (use the page allocator).
    BadSize {
        /// The cache's name.
        name: InlineName,
        /// The requested object size, in bytes.
        size: usize,
    },
    /// Alignment not a power of two or larger than a page.
    BadAlign {
        /// The cache's name.
        name: InlineName,
        /// The requested alignment, in bytes.
        align: usize,
    },
    /// Every one of the registry's `max` slots holds a live cache: destroy
    /// one first. Not a lack of memory; retrying after reclaim won't help.
    RegistryFull {
        /// The cache's name.
        name: InlineName,
        /// Slots in the registry.
        max: usize,
    },
    /// The cache's descriptor or name could not be allocated.
    NoMemory {
        /// The cache's name.
        name: InlineName,
    },
}

impl CreateError {
    /// The cache that could not be created.
    pub fn name(&self) -> &InlineName {
        match self {
            Self::BadSize { name, .. }
            | Self::BadAlign { name, .. }
            | Self::RegistryFull { name, .. }
            | Self::NoMemory { name } => name,
        }
    }
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadSize { name, size } => {
                write!(f, "kmem_cache_create({name}): bad object size {size}")
            }
            Self::BadAlign { name, align } => {
                write!(f, "kmem_cache_create({name}): bad alignment {align}")
            }
            Self::RegistryFull { name, max } => write!(
                f,
                "kmem_cache_create({name}): cache registry full ({max} caches live)"
            ),
            Self::NoMemory { name } => write!(f, "kmem_cache_create({name}): out of memory"),
        }
    }
}

/// Why a cache could not be destroyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestroyError {
    /// Objects are still allocated; the cache is kept (leaked) for them.
    LiveObjects {
        /// The cache's name.
        cache: String,
        /// Objects still allocated.
        count: usize,
    },
}

impl fmt::Display for DestroyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LiveObjects { cache, count } => write!(
                f,
                "kmem_cache_destroy {cache}: Slab cache still has objects: {count} objects remaining"
            ),
        }
    }
}

/// A slab cache. Dropping it destroys it (reporting live objects).
pub struct KmemCache {
    inner: NonNull<CacheInner>,
}

// SAFETY: CacheInner is shared through its lock and atomics.
unsafe impl Send for KmemCache {}
// SAFETY: all shared state of CacheInner is behind its list lock, per-CPU arrays (used with
// interrupts masked) and atomics, so `&KmemCache` may be used from any task.
unsafe impl Sync for KmemCache {}

/// Every live cache, for slabinfo and OOM reports.
const MAX_CACHES: usize = 256;
struct Registry([*const CacheInner; MAX_CACHES]);
// SAFETY: entries are only followed under the lock while the cache lives.
unsafe impl Send for Registry {}
static CACHES: SpinLock<Registry> = SpinLock::new(
    Registry([ptr::null(); MAX_CACHES]),
    crate::lock_class!("slab_caches"),
);

/// The lockdep class of every cache's list lock (one initialisation site).
static LIST_LOCK_CLASS: crate::sync::lockdep::LockClassKey =
    crate::sync::lockdep::LockClassKey::new("kmem_cache_node->list_lock");

/// The lockdep class shared by the caches' list locks, for tests that
/// provoke a lockdep report while a cache takes its list lock.
pub fn list_lock_class() -> &'static crate::sync::lockdep::LockClassKey {
    &LIST_LOCK_CLASS
}

/// Whether every slab so far sits at a virtual address aligned to its size
/// (then a free object's slab is its address masked); cleared for good by
/// the first slab that does not.
static SLABS_ALIGNED: AtomicBool = AtomicBool::new(true);

static COOKIE_SEED: AtomicUsize = AtomicUsize::new(0x9e37_79b9_7f4a_7c15);

fn random_cookie() -> usize {
    // splitmix64 over a counter mixed with the cycle counter.
    let mut z = COOKIE_SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        ^ crate::time::cycles() as usize;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

fn align_up(x: usize, a: usize) -> usize {
    (x + a - 1) & !(a - 1)
}

/// Global debug flags from `slab_debug=` (applied to caches created later),
/// optionally restricted to one cache name.
static GLOBAL_DEBUG: SpinLock<(SlabFlags, Option<String>)> =
    SpinLock::new((SlabFlags::empty(), None), crate::lock_class!("slab_debug"));

/// A `slab_debug=` value kreclaim cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadSlabDebug;

/// Parses Linux's `slab_debug=` value: letters F, Z, P (and U, T, A, O,
/// accepted and ignored: kreclaim does not implement them), `-` for none,
/// an empty value for all, optionally `,cachename`.
pub fn slab_debug_parse(v: &str) -> Result<(SlabFlags, Option<&str>), BadSlabDebug> {
    let (letters, cache) = match v.split_once(',') {
        Some((l, c)) if !c.is_empty() => (l, Some(c)),
        Some((l, _)) => (l, None),
        None => (v, None),
    };
    let mut f = SlabFlags::empty();
    if letters.is_empty() {
        f = SlabFlags::DEBUG;
    }
    for c in letters.chars() {
        match c.to_ascii_uppercase() {
            'F' => f |= SlabFlags::CONSISTENCY_CHECKS,
            'Z' => f |= SlabFlags::RED_ZONE,
            'P' => f |= SlabFlags::POISON,
            '-' | 'U' | 'T' | 'A' | 'O' => {}
            _ => return Err(BadSlabDebug),
        }
    }
    Ok((f, cache))
}

/// Sets the debug flags applied to caches created from now on.
pub fn set_global_debug(flags: SlabFlags, only: Option<String>) {
    *GLOBAL_DEBUG.lock() = (flags, only);
}

/// `kmem_cache_create(name, size, align, flags, ctor)`.
pub fn kmem_cache_create(
    name: &str,
    size: usize,
    align: usize,
    flags: SlabFlags,
    ctor: Option<fn(*mut u8)>,
) -> Result<KmemCache, CreateError> {
    KmemCache::create(name, size, align, flags, ctor)
}

impl KmemCache {
    /// Creates a cache of `size`-byte objects aligned to `align`, with an
    /// optional constructor; errors name the cache.
    pub fn create(
        name: &str,
        size: usize,
        align: usize,
        mut flags: SlabFlags,
        ctor: Option<fn(*mut u8)>,
    ) -> Result<KmemCache, CreateError> {
        if size == 0 || size > 8 * PAGE {
            return Err(CreateError::BadSize {
                name: InlineName::new(name),
                size,
            });
        }
        let align_req = align.max(1);
        if !align_req.is_power_of_two() || align_req > PAGE {
            return Err(CreateError::BadAlign {
                name: InlineName::new(name),
                align,
            });
        }
        {
            let g = GLOBAL_DEBUG.lock();
            if g.1.as_deref().is_none_or(|only| only == name) {
                flags |= g.0;
            }
        }
        if ctor.is_some() {
            // Like SLUB: a constructed object's state must survive free.
            flags.remove(SlabFlags::POISON);
        }
        let mut align = align_req.max(8);
        if flags.contains(SlabFlags::HWCACHE_ALIGN) {
            let mut ralign = CACHE_LINE;
            while size <= ralign / 2 {
                ralign /= 2;
            }
            align = align.max(ralign);
        }
        let object_size = size;
        let mut off = object_size;
        let mut rz_len = 0;
        if flags.contains(SlabFlags::RED_ZONE) {
            rz_len = (align_up(object_size, 8) - object_size).max(8);
            off += rz_len;
        }
        let freeptr_offset;
        if flags.intersects(SlabFlags::POISON | SlabFlags::RED_ZONE)
            || ctor.is_some()
            || object_size < 8
        {
            off = align_up(off, 8);
            freeptr_offset = off;
            off += 8;
        } else {
            freeptr_offset = 0;
        }
        let mut orig_size_offset = 0;
        if flags.contains(SlabFlags::KMALLOC | SlabFlags::RED_ZONE) {
            orig_size_offset = off;
            off += 8;
        }
        let slot = align_up(off, align);
        let first_offset = align_up(HEADER_SIZE, align);
        // Smallest order that wastes at most 1/8 of the slab (max order 3).
        let mut order = 0;
        loop {
            let bytes = PAGE << order;
            let n = bytes.saturating_sub(first_offset) / slot;
            let waste = bytes - first_offset - n * slot;
            if n >= 1 && (waste * 8 <= bytes || order == 3) {
                break;
            }
            order += 1;
            if order > 3 {
                return Err(CreateError::BadSize {
                    name: InlineName::new(name),
                    size,
                });
            }
        }
        let objects = ((PAGE << order) - first_offset) / slot;
        let objects = objects.min(MAX_OBJECTS);
        let nomem = |_| CreateError::NoMemory {
            name: InlineName::new(name),
        };
        let name_copy = crate::mm::global_alloc::try_string(name).map_err(nomem)?;
        let inner = crate::mm::global_alloc::try_box(CacheInner {
            name: name_copy,
            object_size,
            size: slot,
            flags,
            ctor,
            order,
            objects,
            first_offset,
            freeptr_offset,
            rz_len,
            orig_size_offset,
            size_recip: (1u64 << 32).div_ceil(slot as u64),
            cookie: random_cookie(),
            lists: SpinLock::new(
                Lists {
                    partial: ListHead::EMPTY,
                    full: ListHead::EMPTY,
                    empty: ListHead::EMPTY,
                    active_objs: 0,
                },
                &LIST_LOCK_CLASS,
            ),
            empty_len: AtomicUsize::new(0),
            cpu_limit: cpu_limit_for(slot, objects, flags),
            cpu: [const { UnsafeCell::new(CpuCache::EMPTY) }; NR_CPUS],
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            slabs_created: AtomicU64::new(0),
            slabs_freed: AtomicU64::new(0),
        })
        .map_err(nomem)?;
        let raw = alloc::boxed::Box::into_raw(inner);
        let mut reg = CACHES.lock();
        match reg.0.iter_mut().find(|p| p.is_null()) {
            Some(slot) => *slot = raw,
            None => {
                drop(reg);
                // SAFETY: just leaked above and not published.
                drop(unsafe { alloc::boxed::Box::from_raw(raw) });
                return Err(CreateError::RegistryFull {
                    name: InlineName::new(name),
                    max: MAX_CACHES,
                });
            }
        }
        Ok(KmemCache {
            // SAFETY: Box::into_raw is never null.
            inner: unsafe { NonNull::new_unchecked(raw) },
        })
    }

    pub(crate) fn inner(&self) -> &CacheInner {
        // SAFETY: the inner lives until destroy succeeds.
        unsafe { self.inner.as_ref() }
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.inner().name
    }

    /// Object size as requested at creation, in bytes.
    pub fn object_size(&self) -> usize {
        self.inner().object_size
    }

    /// The cache's flags.
    pub fn flags(&self) -> SlabFlags {
        self.inner().flags
    }

    /// `kmem_cache_alloc`: one object, or `Err` (never a panic).
    #[track_caller]
    pub fn alloc(&self, gfp: Gfp) -> Result<NonNull<u8>, AllocError> {
        self.inner().alloc(gfp)
    }

    /// kmalloc's allocation of `size` bytes from this class: the slack after
    /// `size` is red-zoned when the cache has red zones (SLUB's `orig_size`).
    #[track_caller]
    pub(crate) fn alloc_kmalloc(&self, size: usize, gfp: Gfp) -> Result<NonNull<u8>, AllocError> {
        self.inner().alloc_orig(gfp, size)
    }

    /// `kmem_cache_zalloc`.
    #[track_caller]
    pub fn zalloc(&self, gfp: Gfp) -> Result<NonNull<u8>, AllocError> {
        self.inner().alloc(gfp | Gfp::__GFP_ZERO)
    }

    /// `kmem_cache_free`. Misuse (double free, wrong cache, foreign pointer)
    /// is reported and the free ignored, so the allocator stays intact.
    ///
    /// # Safety
    /// Once `obj` is freed the cache hands its memory out again, so nothing
    /// may use the object after this call: if `obj` is a live object of this
    /// cache, the caller must own it, with no reference to it (a `SlabBox`
    /// included) used afterwards. Pointers the checks reject (already free,
    /// another cache's object, not a slab object) are only reported.
    #[track_caller]
    pub unsafe fn free(&self, obj: NonNull<u8>) {
        self.inner().free(obj.as_ptr())
    }

    /// `kmem_cache_shrink`: drains the per-CPU arrays, then releases every
    /// empty slab; returns pages freed.
    pub fn shrink(&self) -> usize {
        let inner = self.inner();
        inner.drain_cpu() + inner.release_empty(0)
    }

    /// The slabinfo row, after draining this CPU's array (so the partial /
    /// full / empty split is exact).
    pub fn info(&self) -> SlabInfo {
        let inner = self.inner();
        inner.drain_cpu();
        inner.info()
    }

    /// Linux's `validate_slab_cache`: drains this CPU's list, then checks
    /// every slab under the list lock: objects counted in use = objects
    /// allocated (the bitmap) = objects handed out, and the free list holds
    /// the rest. A mismatch (an object lost between the lists, a corrupt
    /// free list) is printed and returned; `Ok` gives the slabs checked.
    pub fn validate(&self) -> Result<usize, SlabInconsistency> {
        let inner = self.inner();
        inner.drain_cpu();
        let r = inner.validate();
        if let Err(e) = &r {
            crate::println!("BUG {}: {e}", inner.name);
        }
        r
    }

    /// `kmem_cache_destroy`. With objects still allocated, reports them
    /// and keeps the cache's memory (it is leaked, never reused).
    pub fn destroy(self) -> Result<(), DestroyError> {
        let r = self.destroy_inner();
        core::mem::forget(self);
        r
    }

    fn destroy_inner(&self) -> Result<(), DestroyError> {
        let inner = self.inner();
        inner.drain_cpu();
        let live = inner.lists.lock().active_objs;
        if live != 0 {
            let e = DestroyError::LiveObjects {
                cache: inner.name.clone(),
                count: live,
            };
            crate::println!("BUG {}: {e}", inner.name);
            debug::record(SlabBug::LiveObjectsAtDestroy, &inner.name);
            return Err(e);
        }
        inner.release_empty(0);
        let mut reg = CACHES.lock();
        for p in reg.0.iter_mut() {
            if ptr::eq(*p, inner) {
                *p = ptr::null();
            }
        }
        drop(reg);
        // SAFETY: unpublished, no slabs and no objects remain.
        drop(unsafe { alloc::boxed::Box::from_raw(self.inner.as_ptr()) });
        Ok(())
    }
}

impl Drop for KmemCache {
    fn drop(&mut self) {
        let _ = self.destroy_inner();
    }
}

/// A slab whose counts disagree (see [`KmemCache::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlabInconsistency {
    /// The cache's name.
    pub cache: String,
    /// The slab's address.
    pub slab: usize,
    /// Objects the slab counts as taken (handed out or on a per-CPU list).
    pub inuse: usize,
    /// Objects marked in the allocation bitmap.
    pub allocated: usize,
    /// Objects on the slab's free list.
    pub free: usize,
    /// Object slots per slab.
    pub objects: usize,
}

impl fmt::Display for SlabInconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "slab {:#x} of {} inconsistent: inuse {}, allocated {}, on the free list {}, objects {}",
            self.slab, self.cache, self.inuse, self.allocated, self.free, self.objects
        )
    }
}

/// One line of slabinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlabInfo {
    /// The cache's name.
    pub name: String,
    /// Objects handed out (per-CPU free objects not counted).
    pub active_objs: usize,
    /// Object slots in all slabs.
    pub num_objs: usize,
    /// Bytes per object slot (with debug padding).
    pub objsize: usize,
    /// Object slots per slab.
    pub objperslab: usize,
    /// Pages per slab.
    pub pagesperslab: usize,
    /// Slabs holding at least one object (partial and full).
    pub active_slabs: usize,
    /// All slabs.
    pub num_slabs: usize,
    /// Slabs on the partial list.
    pub partial_slabs: usize,
    /// Slabs on the full list.
    pub full_slabs: usize,
    /// Empty slabs kept (up to `min_partial`).
    pub empty_slabs: usize,
    /// Created with `RECLAIM_ACCOUNT`.
    pub reclaimable: bool,
}

impl SlabHeader {
    fn base(&self) -> usize {
        self as *const Self as usize
    }
}

impl CacheInner {
    fn encode(&self, ptr_val: usize, at: usize) -> usize {
        if ptr_val == 0 {
            0
        } else {
            ptr_val ^ self.cookie ^ at.swap_bytes()
        }
    }

    fn decode(&self, stored: usize, at: usize) -> usize {
        if stored == 0 {
            0
        } else {
            stored ^ self.cookie ^ at.swap_bytes()
        }
    }

    /// The slab of `obj`, a free object from a per-CPU list: by masking
    /// while slabs sit at addresses aligned to their size (buddy blocks in a
    /// direct map always do), through the page otherwise; `None` if that is
    /// not a slab of this cache (an overwritten list).
    #[inline(always)]
    fn own_slab_of(&self, obj: usize) -> Option<*mut SlabHeader> {
        let s = if SLABS_ALIGNED.load(Ordering::Relaxed) {
            (obj & !((PAGE << self.order) - 1)) as *mut SlabHeader
        } else {
            slab_of(obj)?
        };
        // SAFETY: an aligned slab base of a page the list pointed into; the
        // header is readable while the slab lives.
        let ok = unsafe { (*s).magic == SLAB_MAGIC && ptr::eq((*s).cache, self) };
        ok.then_some(s)
    }

    /// `rel / size` for an offset `rel` from the first object of a slab
    /// (below 2^15: a slab is at most 32 KiB). Exact: with
    /// `m = ceil(2^32 / size) = (2^32 + e) / size`, `e < size <= 2^15`, the
    /// error `rel * e / 2^32 / size` stays below `1 / size`.
    #[inline(always)]
    fn index_of(&self, rel: usize) -> usize {
        if rel >= 1 << 15 {
            return rel / self.size;
        }
        ((rel as u64 * self.size_recip) >> 32) as usize
    }

    #[inline(always)]
    fn freeptr_slot(&self, obj: usize) -> *mut usize {
        (obj + self.freeptr_offset) as *mut usize
    }

    fn obj_addr(&self, slab: &SlabHeader, i: usize) -> usize {
        slab.base() + self.first_offset + i * self.size
    }

    fn unlink(l: &mut Lists, s: *mut SlabHeader) {
        // SAFETY: `s` is on the list named by its `list` field (lock held).
        unsafe {
            let head = match (*s).list {
                ListKind::Partial => &mut l.partial,
                ListKind::Full => &mut l.full,
                ListKind::Empty => &mut l.empty,
                ListKind::None => return,
            };
            if !(*s).prev.is_null() {
                (*(*s).prev).next = (*s).next;
            } else {
                head.head = (*s).next;
            }
            if !(*s).next.is_null() {
                (*(*s).next).prev = (*s).prev;
            }
            head.len -= 1;
            (*s).next = ptr::null_mut();
            (*s).prev = ptr::null_mut();
            (*s).list = ListKind::None;
        }
    }

    fn push(l: &mut Lists, s: *mut SlabHeader, kind: ListKind) {
        let head = match kind {
            ListKind::Partial => &mut l.partial,
            ListKind::Full => &mut l.full,
            ListKind::Empty => &mut l.empty,
            ListKind::None => return,
        };
        // SAFETY: `s` is a live slab not on any list (lock held).
        unsafe {
            (*s).prev = ptr::null_mut();
            (*s).next = head.head;
            if !head.head.is_null() {
                (*head.head).prev = s;
            }
            (*s).list = kind;
        }
        head.head = s;
        head.len += 1;
    }

    fn place(l: &mut Lists, s: *mut SlabHeader) {
        // SAFETY: live slab under the lock.
        let (inuse, objects) = unsafe { ((*s).inuse as usize, (*s).objects as usize) };
        let kind = if inuse == 0 {
            ListKind::Empty
        } else if inuse == objects {
            ListKind::Full
        } else {
            ListKind::Partial
        };
        // SAFETY: `s` is the same live slab of this cache, read under the list lock held via `l`.
        if unsafe { (*s).list } != kind {
            Self::unlink(l, s);
            Self::push(l, s, kind);
        }
    }

    #[track_caller]
    fn alloc(&self, gfp: Gfp) -> Result<NonNull<u8>, AllocError> {
        self.alloc_orig(gfp, self.object_size)
    }

    /// The size `obj` was allocated with (`object_size` unless tracked).
    pub(crate) fn orig_size(&self, obj: usize) -> usize {
        if self.orig_size_offset == 0 {
            return self.object_size;
        }
        // SAFETY: the metadata word of an object slot of ours.
        let v = unsafe { *((obj + self.orig_size_offset) as *const usize) };
        v.min(self.object_size)
    }

    /// Records that `obj` was allocated for `size` bytes and red-zones the
    /// slack after them.
    fn set_orig_size(&self, obj: usize, size: usize) {
        if self.orig_size_offset == 0 {
            return;
        }
        let size = size.min(self.object_size);
        // SAFETY: the metadata word and the object of a slot of ours.
        unsafe {
            *((obj + self.orig_size_offset) as *mut usize) = size;
            ptr::write_bytes(
                (obj + size) as *mut u8,
                debug::RED_ACTIVE,
                self.object_size - size,
            );
        }
    }

    /// `ksize` hands the whole object to the caller: stop red-zoning its
    /// slack (SLUB's `skip_orig_size_check`).
    pub(crate) fn skip_orig_size_check(&self, obj: usize) {
        if self.orig_size_offset != 0 {
            // SAFETY: the metadata word of an allocated object of ours.
            unsafe { *((obj + self.orig_size_offset) as *mut usize) = self.object_size };
        }
    }

    #[track_caller]
    fn alloc_orig(&self, gfp: Gfp, orig_size: usize) -> Result<NonNull<u8>, AllocError> {
        // The task's NOFS/NOIO scope (`current_gfp_context`) only removes
        // __GFP_FS, __GFP_IO and __GFP_MOVABLE: `might_alloc` applies it
        // itself where it matters (lockdep), and `should_failslab` looks at
        // none of them, so the fast path leaves it to the page allocation
        // and the error value.
        // A sleeping allocation where sleeping is not allowed is reported
        // (at the caller) and goes on without direct reclaim.
        let gfp = crate::mm::fs_reclaim::might_alloc_gfp(gfp);
        if should_failslab(gfp, self.object_size) {
            let gfp = crate::mm::scope::current_gfp_context(gfp);
            if !gfp.contains(Gfp::__GFP_NOWARN) {
                crate::println!(
                    "{}: slab allocation failure (injected): cache {}, size {}, mode:{gfp}",
                    crate::task::current().name(),
                    self.name,
                    self.object_size
                );
            }
            return Err(AllocError { gfp, order: 0 });
        }
        if self.cpu_limit != 0 {
            return self.alloc_cpu(gfp);
        }
        let gfp = crate::mm::scope::current_gfp_context(gfp);
        loop {
            let got = {
                let mut l = self.lists.lock();
                let s = if !l.partial.head.is_null() {
                    l.partial.head
                } else {
                    l.empty.head
                };
                if s.is_null() {
                    None
                } else {
                    // SAFETY: a live slab of this cache with a free object.
                    let slab = unsafe { &mut *s };
                    let obj = self.decode(slab.freelist, slab.base());
                    debug_assert!(obj != 0);
                    // SAFETY: free objects hold an encoded next pointer.
                    let next_raw = unsafe { *self.freeptr_slot(obj) };
                    slab.freelist = self.encode(self.decode(next_raw, obj), slab.base());
                    let idx = self.index_of(obj - slab.base() - self.first_offset);
                    slab.allocated[idx / 64] |= 1 << (idx % 64);
                    slab.inuse += 1;
                    slab.users += 1;
                    l.active_objs += 1;
                    Self::place(&mut l, s);
                    self.sync_empty_len(&l);
                    Some(obj)
                }
            };
            if let Some(obj) = got {
                self.allocs.fetch_add(1, Ordering::Relaxed);
                if self
                    .flags
                    .intersects(SlabFlags::POISON | SlabFlags::RED_ZONE)
                {
                    // SAFETY: `obj` was just taken off a free list of this
                    // cache's live slab, so only this caller holds it.
                    unsafe { debug::check_on_alloc(self, obj) };
                }
                if gfp.contains(Gfp::__GFP_ZERO) {
                    // SAFETY: the object is ours now.
                    unsafe { ptr::write_bytes(obj as *mut u8, 0, self.object_size) };
                }
                self.set_orig_size(obj, orig_size);
                // SAFETY: non-null by construction.
                return Ok(unsafe { NonNull::new_unchecked(obj as *mut u8) });
            }
            self.new_slab(gfp)?;
        }
    }

    /// This CPU's array.
    ///
    /// # Safety
    /// Interrupts masked for as long as the reference is used: the array is
    /// this CPU's alone, and nothing else on it runs meanwhile.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    unsafe fn this_cpu(&self) -> &mut CpuCache {
        // SAFETY: the caller keeps interrupts masked while it uses the reference (this fn's
        // contract), so nothing else on this CPU touches this CPU's array.
        unsafe { &mut *self.cpu[this_cpu_id()].get() }
    }

    fn sync_empty_len(&self, l: &Lists) {
        self.empty_len.store(l.empty.len, Ordering::Relaxed);
    }

    /// The allocation fast path: pop from this CPU's list, refilling it in
    /// a batch under the list lock; a new slab when no slab has room.
    ///
    /// No reference to the per-CPU list lives across a call that can take a
    /// lock or allocate: taking the list lock can make lockdep print a report,
    /// which allocates through kmalloc and can re-enter this very cache and
    /// use the list meanwhile. A refill therefore collects its batch on the
    /// stack and splices it onto the list afterwards, whatever the list holds
    /// by then.
    #[inline]
    fn alloc_cpu(&self, gfp: Gfp) -> Result<NonNull<u8>, AllocError> {
        loop {
            let irq = IrqGuard::new();
            match self.cpu_pop() {
                CpuPop::Object(obj) => {
                    drop(irq);
                    if gfp.contains(Gfp::__GFP_ZERO) {
                        // SAFETY: the object is ours now.
                        unsafe { ptr::write_bytes(obj as *mut u8, 0, self.object_size) };
                    }
                    // SAFETY: non-null by construction.
                    return Ok(unsafe { NonNull::new_unchecked(obj as *mut u8) });
                }
                CpuPop::Corrupt(obj) => {
                    drop(irq);
                    crate::println!(
                        "BUG {}: Freepointer corrupt: per-CPU free list abandoned at {obj:#x}",
                        self.name
                    );
                    continue;
                }
                CpuPop::Empty => {}
            }
            let mut batch = Batch::EMPTY;
            self.refill(&mut batch);
            if batch.n != 0 {
                let mut d = Discards::NONE;
                self.cpu_splice(&batch, &mut d);
                drop(irq);
                if !d.head.is_null() {
                    self.discard_all(d);
                }
                continue;
            }
            // No slab has a free object: a new one, with interrupts enabled
            // again (the page allocator may reclaim and sleep).
            drop(irq);
            self.new_slab(crate::mm::scope::current_gfp_context(gfp))?;
        }
    }

    /// Pops this CPU's newest free object and marks it allocated.
    /// Interrupts are masked by the caller; the per-CPU reference ends here.
    #[inline(always)]
    fn cpu_pop(&self) -> CpuPop {
        // SAFETY: interrupts are masked and nothing below takes a lock.
        let c = unsafe { self.this_cpu() };
        if c.avail == 0 {
            return CpuPop::Empty;
        }
        let obj = c.head;
        // SAFETY: a free object of this cache holds an encoded next pointer.
        let next = self.decode(unsafe { *self.freeptr_slot(obj) }, obj);
        let Some(s) = self.own_slab_of(obj) else {
            // The list was overwritten (a write after free into a free
            // object): drop it rather than hand out its garbage.
            c.head = 0;
            c.avail = 0;
            return CpuPop::Corrupt(obj);
        };
        c.head = next;
        c.avail -= 1;
        c.allocs += 1;
        // SAFETY: a live slab of this cache; its bitmap and `users` change
        // only with interrupts masked (one CPU).
        unsafe {
            let idx = self.index_of(obj - (*s).base() - self.first_offset);
            (*s).allocated[idx / 64] |= 1 << (idx % 64);
            (*s).users += 1;
        }
        CpuPop::Object(obj)
    }

    /// Takes up to half a list of free objects from the slabs (partial ones
    /// first, in their free-list order) into `b`, under the list lock.
    /// Interrupts are masked by the caller.
    #[cold]
    fn refill(&self, b: &mut Batch) {
        let batch = self.cpu_limit.div_ceil(2);
        let mut l = self.lists.lock();
        while b.n < batch {
            let s = if !l.partial.head.is_null() {
                l.partial.head
            } else {
                l.empty.head
            };
            if s.is_null() {
                break;
            }
            // SAFETY: a live slab of this cache with a free object.
            let slab = unsafe { &mut *s };
            while b.n < batch && slab.freelist != 0 {
                let obj = self.decode(slab.freelist, slab.base());
                // SAFETY: free objects hold an encoded next pointer.
                let next_raw = unsafe { *self.freeptr_slot(obj) };
                slab.freelist = self.encode(self.decode(next_raw, obj), slab.base());
                slab.inuse += 1;
                l.active_objs += 1;
                b.objs[b.n] = obj;
                b.n += 1;
            }
            Self::place(&mut l, s);
        }
        self.sync_empty_len(&l);
    }

    /// Puts the objects of `b` in front of this CPU's list, in the order
    /// taken (the next allocation takes the first); if the list is then
    /// longer than its limit (a re-entered refill filled it meanwhile), the
    /// oldest objects go back to the slabs. Interrupts are masked by the
    /// caller.
    #[cold]
    fn cpu_splice(&self, b: &Batch, out: &mut Discards) {
        let over = {
            // SAFETY: interrupts are masked; the reference ends in this block.
            let c = unsafe { self.this_cpu() };
            let mut next = c.head;
            for &obj in b.objs[..b.n].iter().rev() {
                // SAFETY: free objects of ours.
                unsafe { *self.freeptr_slot(obj) = self.encode(next, obj) };
                next = obj;
            }
            c.head = next;
            c.avail += b.n;
            c.avail > self.cpu_limit
        };
        if over {
            self.flush(self.cpu_limit, out);
        }
    }

    /// Returns all but the `keep` newest objects of this CPU's list to their
    /// slabs under the list lock; slabs that go empty beyond `MIN_PARTIAL`
    /// are unlinked into `out`, for the caller to discard once interrupts
    /// are enabled again. Interrupts are masked by the caller. The objects
    /// are cut off the list before the lock is taken, so a re-entry through
    /// the lock finds a consistent (shorter) list.
    fn flush(&self, keep: usize, out: &mut Discards) {
        loop {
            let mut b = Batch::EMPTY;
            {
                // SAFETY: interrupts are masked; the reference ends in this block.
                let c = unsafe { self.this_cpu() };
                if c.avail <= keep {
                    return;
                }
                // Walk past the kept ones, cut out up to a batch after them.
                let mut last_kept = 0;
                let mut obj = c.head;
                for _ in 0..keep {
                    last_kept = obj;
                    // SAFETY: free objects on our list hold encoded next pointers.
                    obj = self.decode(unsafe { *self.freeptr_slot(obj) }, obj);
                }
                while obj != 0 && b.n < CPU_ARRAY && b.n < c.avail - keep {
                    b.objs[b.n] = obj;
                    b.n += 1;
                    // SAFETY: `obj` is the next object on this CPU's private free list, which holds
                    // an encoded free pointer in its free-pointer slot.
                    obj = self.decode(unsafe { *self.freeptr_slot(obj) }, obj);
                }
                if last_kept == 0 {
                    c.head = obj;
                } else {
                    // SAFETY: `obj` is the next object on this CPU's private free list, which holds
                    // an encoded free pointer in its free-pointer slot.
                    unsafe { *self.freeptr_slot(last_kept) = self.encode(obj, last_kept) };
                }
                if obj == 0 {
                    // The list ends here, whatever `avail` said (it cannot
                    // say more unless the list was overwritten).
                    c.avail = keep.min(c.avail);
                } else {
                    c.avail -= b.n;
                }
            }
            self.return_objects(&b, out);
        }
    }

    /// Puts the objects of `b` back onto their slabs' free lists under the
    /// list lock (oldest first, so the newest ends up first on its slab).
    fn return_objects(&self, b: &Batch, out: &mut Discards) {
        let mut l = self.lists.lock();
        for &obj in b.objs[..b.n].iter().rev() {
            let Some(s) = self.own_slab_of(obj) else {
                continue; // an overwritten list: leak rather than corrupt a slab
            };
            // SAFETY: a live slab of this cache; the object goes back onto
            // its own slab's list.
            let slab = unsafe { &mut *s };
            let head = self.decode(slab.freelist, slab.base());
            // SAFETY: `obj` is a free object of the live slab `s` (checked by own_slab_of), written
            // under the list lock.
            unsafe { *self.freeptr_slot(obj) = self.encode(head, obj) };
            slab.freelist = self.encode(obj, slab.base());
            slab.inuse -= 1;
            l.active_objs -= 1;
            Self::place(&mut l, s);
            if slab.inuse == 0 && l.empty.len > MIN_PARTIAL {
                Self::unlink(&mut l, s);
                out.add(s);
            }
        }
        self.sync_empty_len(&l);
    }

    fn discard_all(&self, d: Discards) -> usize {
        let mut pages = 0;
        let mut s = d.head;
        while !s.is_null() {
            // SAFETY: an unlinked slab chained by `Discards::add`.
            let next = unsafe { (*s).next };
            self.discard_slab(s);
            pages += 1 << self.order;
            s = next;
        }
        pages
    }

    /// Empties this CPU's list into the slabs; returns pages released.
    pub(crate) fn drain_cpu(&self) -> usize {
        if self.cpu_limit == 0 {
            return 0;
        }
        let mut d = Discards::NONE;
        {
            let _irq = IrqGuard::new();
            self.flush(0, &mut d);
        }
        self.discard_all(d)
    }

    /// See [`KmemCache::validate`]; this CPU's list is drained by the caller
    /// (objects on it count as taken but not allocated).
    fn validate(&self) -> Result<usize, SlabInconsistency> {
        let mut bad = None;
        let mut checked = 0;
        {
            let l = self.lists.lock();
            let cpu = self.cpu_avail();
            'lists: for head in [l.partial.head, l.full.head, l.empty.head] {
                let mut s = head;
                while !s.is_null() {
                    // SAFETY: a slab on our lists, under the list lock.
                    let slab = unsafe { &*s };
                    let allocated: usize =
                        slab.allocated.iter().map(|w| w.count_ones() as usize).sum();
                    let mut free = 0;
                    let mut obj = self.decode(slab.freelist, slab.base());
                    while obj != 0 && free <= self.objects {
                        free += 1;
                        // SAFETY: free objects hold encoded next pointers.
                        obj = self.decode(unsafe { *self.freeptr_slot(obj) }, obj);
                    }
                    let inuse = slab.inuse as usize;
                    let ok = cpu != 0
                        || (inuse == allocated
                            && allocated == slab.users as usize
                            && free + inuse == self.objects);
                    if !ok {
                        bad = Some(SlabInconsistency {
                            cache: String::new(),
                            slab: slab.base(),
                            inuse,
                            allocated,
                            free,
                            objects: self.objects,
                        });
                        break 'lists;
                    }
                    checked += 1;
                    s = slab.next;
                }
            }
        }
        match bad {
            None => Ok(checked),
            Some(mut e) => {
                e.cache = self.name.clone();
                Err(e)
            }
        }
    }

    /// Objects sitting on per-CPU lists. Interrupts are masked by the
    /// caller (it holds the list lock).
    fn cpu_avail(&self) -> usize {
        (0..NR_CPUS)
            // SAFETY: one CPU: with interrupts masked nobody else touches it.
            .map(|i| unsafe { (*self.cpu[i].get()).avail })
            .sum()
    }

    /// The free fast path: the object goes onto this CPU's list (all but
    /// the newest half go back to the slabs when it is full). The
    /// double-free check and the bitmap stay exact: the bit is cleared here,
    /// under masked interrupts. When the slab has no object handed out any
    /// more and the cache already keeps `MIN_PARTIAL` empty slabs, the list
    /// is drained so that the slab goes back to the page allocator at once.
    #[track_caller]
    #[inline]
    fn free_cpu(&self, s: *mut SlabHeader, addr: usize, idx: usize) {
        let mut d = Discards::NONE;
        {
            let irq = IrqGuard::new();
            let bit = 1u64 << (idx % 64);
            // SAFETY: `s` is a live slab of this cache; its bitmap and `users`
            // change only with interrupts masked (one CPU). No reference to
            // the header outlives this block: `flush` below updates it too.
            let unused = unsafe {
                if (*s).allocated[idx / 64] & bit == 0 {
                    None
                } else {
                    (*s).allocated[idx / 64] &= !bit;
                    (*s).users -= 1;
                    Some((*s).users == 0)
                }
            };
            let Some(unused) = unused else {
                drop(irq);
                debug::report(
                    self,
                    SlabBug::DoubleFree,
                    addr,
                    None,
                    format_args!("Object already free"),
                );
                return;
            };
            // SAFETY: interrupts are masked; the reference ends at once.
            if unsafe { self.this_cpu() }.avail >= self.cpu_limit {
                // Takes the list lock: no per-CPU reference across it.
                self.flush(self.cpu_limit / 2, &mut d);
            }
            {
                // SAFETY: interrupts are masked; the reference ends in this block.
                let c = unsafe { self.this_cpu() };
                // SAFETY: the object is free now and ours to link.
                unsafe { *self.freeptr_slot(addr) = self.encode(c.head, addr) };
                c.head = addr;
                c.avail += 1;
                c.frees += 1;
            }
            if unused && self.empty_len.load(Ordering::Relaxed) >= MIN_PARTIAL {
                self.flush(0, &mut d);
            }
        }
        if !d.head.is_null() {
            self.discard_all(d);
        }
    }

    /// Allocates and formats one slab, then puts it on the empty list.
    fn new_slab(&self, gfp: Gfp) -> Result<(), AllocError> {
        let pa = page_alloc::alloc_pages(gfp - Gfp::__GFP_ZERO, self.order)?;
        let base = page_alloc::page_address(pa) as usize;
        if !base.is_multiple_of(PAGE << self.order) {
            SLABS_ALIGNED.store(false, Ordering::Relaxed);
        }
        page_alloc::set_page_owner(pa, self.order, PageOwner::Slab(self.static_name()));
        for i in 0..(1usize << self.order) {
            page_alloc::set_page_private(
                PhysAddr::new(pa.as_u64() + (i * PAGE) as u64),
                base as u64,
            );
        }
        if self.flags.contains(SlabFlags::POISON) {
            // Like SLUB: a new slab is filled with POISON_INUSE, so padding
            // between objects is recognisable in dumps.
            // SAFETY: fresh pages of our own.
            unsafe { ptr::write_bytes(base as *mut u8, debug::POISON_INUSE, PAGE << self.order) };
        }
        let s = base as *mut SlabHeader;
        // SAFETY: fresh pages of our own.
        unsafe {
            s.write(SlabHeader {
                magic: SLAB_MAGIC,
                objects: self.objects as u16,
                inuse: 0,
                cache: self,
                freelist: 0,
                next: ptr::null_mut(),
                prev: ptr::null_mut(),
                list: ListKind::None,
                order: self.order as u8,
                users: 0,
                allocated: [0; MAX_OBJECTS / 64],
            });
        }
        // SAFETY: `s` points at the header just written at the start of our fresh slab pages;
        // nothing else can reach it yet.
        let slab = unsafe { &mut *s };
        // Chain objects in address order: the first allocation takes the lowest.
        let mut next = 0usize;
        for i in (0..self.objects).rev() {
            let obj = self.obj_addr(slab, i);
            if let Some(ctor) = self.ctor {
                ctor(obj as *mut u8);
            }
            // SAFETY: slot `i` of the slab being set up: nobody else can
            // reach it until the slab is put on the lists.
            unsafe { debug::init_free_object(self, obj) };
            // SAFETY: inside our slab.
            unsafe { *self.freeptr_slot(obj) = self.encode(next, obj) };
            next = obj;
        }
        slab.freelist = self.encode(next, slab.base());
        self.slabs_created.fetch_add(1, Ordering::Relaxed);
        let mut l = self.lists.lock();
        Self::push(&mut l, s, ListKind::Empty);
        self.sync_empty_len(&l);
        Ok(())
    }

    /// The cache name as `&'static str` for page-owner records; caches
    /// outlive their pages, and destroyed caches leave no pages behind.
    fn static_name(&self) -> &'static str {
        // SAFETY: the name lives as long as the cache, and a cache is destroyed only when it holds
        // no slabs, so no page-owner record outlives the string.
        unsafe { core::mem::transmute::<&str, &'static str>(self.name.as_str()) }
    }

    #[track_caller]
    pub(crate) fn free(&self, p: *mut u8) {
        let addr = p as usize;
        let Some(s) = slab_of(addr) else {
            debug::report(
                self,
                SlabBug::NotASlabObject,
                addr,
                None,
                format_args!("Invalid pointer: no slab owns it"),
            );
            return;
        };
        // SAFETY: slab_of checked the magic.
        let slab = unsafe { &mut *s };
        if !ptr::eq(slab.cache, self) {
            // SAFETY: a live slab's cache pointer.
            let other = unsafe { &(*slab.cache).name };
            debug::report(
                self,
                SlabBug::WrongCache,
                addr,
                None,
                format_args!(
                    "Wrong slab cache. {} but object is from {}",
                    self.name, other
                ),
            );
            return;
        }
        self.free_in_slab(s, addr);
    }

    /// Frees `addr`, known to be in slab `s` of this cache.
    #[track_caller]
    pub(crate) fn free_in_slab(&self, s: *mut SlabHeader, addr: usize) {
        // SAFETY: `s` is a live slab of this cache.
        let slab = unsafe { &mut *s };
        let rel = addr.wrapping_sub(slab.base() + self.first_offset);
        let idx = self.index_of(rel);
        if addr < slab.base() + self.first_offset || idx * self.size != rel || idx >= self.objects {
            debug::report(
                self,
                SlabBug::BadOffset,
                addr,
                None,
                format_args!("Invalid object pointer {addr:#x}: not at an object boundary"),
            );
            return;
        }
        if self.cpu_limit != 0 {
            self.free_cpu(s, addr, idx);
            return;
        }
        let mut to_free: Option<*mut SlabHeader> = None;
        let mut redzone_bad = None;
        {
            let mut l = self.lists.lock();
            if slab.allocated[idx / 64] & (1 << (idx % 64)) == 0 {
                drop(l);
                debug::report(
                    self,
                    SlabBug::DoubleFree,
                    addr,
                    None,
                    format_args!("Object already free"),
                );
                return;
            }
            if self
                .flags
                .intersects(SlabFlags::POISON | SlabFlags::RED_ZONE)
            {
                // SAFETY: `addr` is an allocated object of this slab (checked
                // above: boundary and bitmap), freed by its owner, and the
                // list lock is held.
                redzone_bad = unsafe { debug::check_and_poison_on_free(self, addr) };
            }
            let head = self.decode(slab.freelist, slab.base());
            // SAFETY: the object is being freed into its own slab.
            unsafe { *self.freeptr_slot(addr) = self.encode(head, addr) };
            slab.freelist = self.encode(addr, slab.base());
            slab.allocated[idx / 64] &= !(1 << (idx % 64));
            slab.inuse -= 1;
            slab.users -= 1;
            l.active_objs -= 1;
            Self::place(&mut l, s);
            if slab.inuse == 0 && l.empty.len > MIN_PARTIAL {
                Self::unlink(&mut l, s);
                to_free = Some(s);
            }
            self.sync_empty_len(&l);
        }
        // Reported without the list lock: a report allocates (the cache
        // name, the record), possibly from this very cache (kmalloc-16
        // under slab_debug=Z), which would spin on the lock held above.
        if let Some(off) = redzone_bad {
            debug::report(
                self,
                SlabBug::RedzoneOverwritten,
                addr,
                Some(off),
                if off < self.object_size {
                    format_args!("kmalloc Redzone overwritten")
                } else {
                    format_args!("Right Redzone overwritten")
                },
            );
        }
        self.frees.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = to_free {
            self.discard_slab(s);
        }
    }

    fn discard_slab(&self, s: *mut SlabHeader) {
        // SAFETY: an unlinked, empty slab of this cache.
        unsafe { (*s).magic = 0 };
        let pa = page_alloc::virt_to_phys(s as *const u8);
        for i in 0..(1usize << self.order) {
            page_alloc::set_page_private(PhysAddr::new(pa.as_u64() + (i * PAGE) as u64), 0);
        }
        page_alloc::free_pages(pa, self.order);
        self.slabs_freed.fetch_add(1, Ordering::Relaxed);
    }

    /// Releases empty slabs down to `keep`; returns pages released.
    pub(crate) fn release_empty(&self, keep: usize) -> usize {
        let mut pages = 0;
        loop {
            let s = {
                let mut l = self.lists.lock();
                if l.empty.len <= keep || l.empty.head.is_null() {
                    break;
                }
                let s = l.empty.head;
                Self::unlink(&mut l, s);
                self.sync_empty_len(&l);
                s
            };
            self.discard_slab(s);
            pages += 1 << self.order;
        }
        pages
    }

    pub(crate) fn info(&self) -> SlabInfo {
        // Copy the numbers under the lock; allocate (the name) outside it:
        // the allocation may come from this very cache.
        let mut info = self.counts();
        info.name = self.name.clone();
        info
    }

    /// The slabinfo numbers without the name: never allocates, so OOM
    /// reports can use it.
    fn counts(&self) -> SlabInfo {
        let l = self.lists.lock();
        let num_slabs = l.partial.len + l.full.len + l.empty.len;
        SlabInfo {
            name: String::new(),
            // Objects in per-CPU arrays are free (the list split still
            // shows their slabs where they sit until the arrays drain).
            active_objs: l.active_objs - self.cpu_avail(),
            num_objs: num_slabs * self.objects,
            objsize: self.size,
            objperslab: self.objects,
            pagesperslab: 1 << self.order,
            active_slabs: l.partial.len + l.full.len,
            num_slabs,
            partial_slabs: l.partial.len,
            full_slabs: l.full.len,
            empty_slabs: l.empty.len,
            reclaimable: self.flags.contains(SlabFlags::RECLAIM_ACCOUNT),
        }
    }
}

/// Linux's `should_failslab`: never __GFP_NOFAIL, and not allocations that
/// may enter direct reclaim when `ignore-gfp-wait` is set.
fn should_failslab(gfp: Gfp, size: usize) -> bool {
    use crate::mm::fault_inject::{FAILSLAB, should_fail};
    if gfp.contains(Gfp::__GFP_NOFAIL) {
        return false;
    }
    if FAILSLAB.ignore_gfp_reclaim() && gfp.contains(Gfp::__GFP_DIRECT_RECLAIM) {
        return false;
    }
    should_fail(&FAILSLAB, size)
}

/// The slab holding `addr`, through the page's private word.
pub(crate) fn slab_of(addr: usize) -> Option<*mut SlabHeader> {
    let pa = page_alloc::virt_to_phys(addr as *const u8);
    let base = page_alloc::page_private(pa)?;
    // Slab addresses are direct-map addresses; small values are other tags.
    if base < 0x1_0000 {
        return None;
    }
    let s = base as *mut SlabHeader;
    // SAFETY: page_private only holds slab base addresses.
    if unsafe { (*s).magic } != SLAB_MAGIC {
        return None;
    }
    Some(s)
}

/// slabinfo rows of every cache.
pub fn slabinfo() -> alloc::vec::Vec<SlabInfo> {
    let mut out = alloc::vec::Vec::new();
    for i in 0..MAX_CACHES {
        let counts = {
            let reg = CACHES.lock();
            let p = reg.0[i];
            // SAFETY: registered caches are alive while registered.
            (!p.is_null()).then(|| unsafe { ((*p).counts(), (*p).name.clone()) })
        };
        if let Some((mut info, name)) = counts {
            info.name = name;
            out.push(info);
        }
    }
    out
}

/// [`slabinfo`] that reports failure as a value (`try_reserve`).
pub fn try_slabinfo() -> Result<alloc::vec::Vec<SlabInfo>, crate::mm::page_alloc::AllocError> {
    use crate::mm::global_alloc::try_string;
    let nomem = || crate::mm::page_alloc::AllocError {
        gfp: super::kmalloc::global_gfp(),
        order: 0,
    };
    let mut out = alloc::vec::Vec::new();
    for i in 0..MAX_CACHES {
        let counts = {
            let reg = CACHES.lock();
            let p = reg.0[i];
            // SAFETY: registered caches are alive while registered.
            (!p.is_null()).then(|| unsafe { ((*p).counts(), try_string(&(*p).name)) })
        };
        if let Some((mut info, name)) = counts {
            info.name = name?;
            out.try_reserve(1).map_err(|_| nomem())?;
            out.push(info);
        }
    }
    Ok(out)
}

/// Prints /proc/slabinfo, version 2.1 columns. Allocates nothing, so the
/// out-of-memory report can call it. That report may come from an
/// allocation made under the cache registry's lock (one CPU: a held lock is
/// ours), so the registry is only tried, never waited for.
pub fn show_slabinfo() {
    struct Console;
    impl fmt::Write for Console {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            crate::print!("{s}");
            Ok(())
        }
    }
    let _ = slabinfo_header(&mut Console);
    match CACHES.try_lock() {
        Some(reg) => {
            let _ = slabinfo_rows(&mut Console, &reg);
        }
        None => crate::println!("(slab cache registry busy: rows skipped)"),
    }
}

/// Writes /proc/slabinfo (version 2.1 columns) to `w`: [`show_slabinfo`]
/// with a destination, so the text can be checked. `w` is called with the
/// cache registry locked (interrupts masked).
pub fn write_slabinfo(w: &mut dyn fmt::Write) -> fmt::Result {
    slabinfo_header(w)?;
    slabinfo_rows(w, &CACHES.lock())
}

/// The slabinfo v2.1 header lines.
pub fn slabinfo_header(w: &mut dyn fmt::Write) -> fmt::Result {
    writeln!(w, "slabinfo - version: 2.1")?;
    writeln!(
        w,
        "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>"
    )
}

fn slabinfo_rows(w: &mut dyn fmt::Write, reg: &Registry) -> fmt::Result {
    for &p in reg.0.iter().filter(|p| !p.is_null()) {
        // SAFETY: registered caches are alive while registered.
        let c = unsafe { &*p };
        slabinfo_row(w, &c.name, &c.counts())?;
    }
    Ok(())
}

/// One slabinfo v2.1 line for cache `name` (tunables and shared counts are
/// SLAB's; SLUB, and kreclaim, print zeros).
pub fn slabinfo_row(w: &mut dyn fmt::Write, name: &str, s: &SlabInfo) -> fmt::Result {
    writeln!(
        w,
        "{:<17} {:>6} {:>6} {:>6} {:>4} {:>4} : tunables {:>4} {:>4} {:>4} : slabdata {:>6} {:>6} {:>6}",
        name,
        s.active_objs,
        s.num_objs,
        s.objsize,
        s.objperslab,
        s.pagesperslab,
        0,
        0,
        0,
        s.active_slabs,
        s.num_slabs,
        0
    )
}
