//! kmalloc: size-class caches 8..8192 (with 96 and 192, as Linux), larger
//! requests straight from the page allocator; `kfree`, `ksize`; the fallible
//! [`KBox`] and [`KVec`] that take GFP flags; and the `GlobalAlloc` adapter
//! that routes Rust's `alloc` to kmalloc under `current_gfp_context`.

use super::cache::{CacheInner, CreateError, KmemCache, SlabFlags, kfree_slab, slab_of};
use crate::mm::gfp::Gfp;
use crate::mm::page_alloc::{self, AllocError, PageOwner};
use core::alloc::Layout;
use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, Ordering};

/// kmalloc size classes.
pub const KMALLOC_SIZES: [usize; 13] = [
    8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192,
];
const NAMES: [&str; 13] = [
    "kmalloc-8",
    "kmalloc-16",
    "kmalloc-32",
    "kmalloc-64",
    "kmalloc-96",
    "kmalloc-128",
    "kmalloc-192",
    "kmalloc-256",
    "kmalloc-512",
    "kmalloc-1k",
    "kmalloc-2k",
    "kmalloc-4k",
    "kmalloc-8k",
];
/// Largest kmalloc served from a slab.
pub const KMALLOC_MAX_CACHE_SIZE: usize = 8192;
/// `ZERO_SIZE_PTR`: what kmalloc(0) returns; kfree accepts it.
pub const ZERO_SIZE_PTR: *mut u8 = 16 as *mut u8;
/// Page-private tag of a large kmalloc: `LARGE_TAG + order` (never a slab address).
const LARGE_TAG: u64 = 0x100;

static CACHES: spin::Once<[KmemCache; 13]> = spin::Once::new();

/// The class caches of sizes 1..=192 by `(size + 7) / 8` (Linux's
/// `kmalloc_size_index` and `kmalloc_caches` in one table, so kmalloc
/// reaches the cache in one load); slot 0 (size 0) and the slots past 24
/// stay null. Null until [`kmalloc_init`]: kmalloc then takes its general
/// path.
// With the other fast-path data (`arch::x86_64::hot_data_range`).
#[unsafe(link_section = ".data.kreclaim_hot")]
static SMALL_CLASS: [AtomicPtr<CacheInner>; 32] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; 32];
/// Where [`SMALL_CLASS`] is (a layout check: with the other fast-path data).
pub(crate) fn small_class_table() -> usize {
    &raw const SMALL_CLASS as usize
}

/// The class caches by index into [`KMALLOC_SIZES`] (the power-of-two
/// classes above 192 are looked up here); the slots past 12 stay null.
// With the other fast-path data (`arch::x86_64::hot_data_range`).
#[unsafe(link_section = ".data.kreclaim_hot")]
static CLASS: [AtomicPtr<CacheInner>; 16] = [const { AtomicPtr::new(core::ptr::null_mut()) }; 16];

/// Alignment of a size class: its largest power-of-two divisor, capped at
/// 512 so that the slab header does not cost the large classes a whole
/// object (kreclaim keeps slab metadata on the slab; see `slab`). Requests
/// for stricter alignment go to the page allocator.
fn class_align(size: usize) -> usize {
    1 << size.trailing_zeros().min(9)
}

/// Why [`kmalloc_init`] could not bring kmalloc up: the cache that could not
/// be created (a kmalloc size class or `slab_sheaf`) and why. Before kmalloc
/// is up, the caches' descriptors and per-CPU sheaf slots come from the
/// early heap, so `NoMemory` here usually means an early heap too small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmallocInitError(pub CreateError);

impl fmt::Display for KmallocInitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kmalloc_init: {}", self.0)?;
        if matches!(self.0, CreateError::NoMemory { .. }) {
            write!(
                f,
                " (before kmalloc is up this memory comes from the early heap: give it more)"
            )?;
        }
        Ok(())
    }
}

/// Creates the kmalloc caches and the `slab_sheaf` cache. Idempotent once
/// it succeeded; after an error nothing of it is left (the caches created
/// before the failing one are destroyed) and it may be called again.
pub fn kmalloc_init() -> Result<(), KmallocInitError> {
    // Reclaim's last resort empties the sheaves (vmscan sits below slab).
    crate::mm::vmscan::set_percpu_drain(super::flush_all_sheaves);
    let caches = CACHES.try_call_once(create_kmalloc_caches)?;
    super::cache::sheaf_cache_init().map_err(KmallocInitError)?;
    // The fast paths' size-class tables point at the caches' inner state.
    for (i, c) in caches.iter().enumerate() {
        let inner = c.inner() as *const CacheInner as *mut CacheInner;
        CLASS[i].store(inner, Ordering::Release);
    }
    for (slot, &i) in SIZE_INDEX.iter().enumerate().skip(1) {
        let inner = caches[i as usize].inner() as *const CacheInner as *mut CacheInner;
        SMALL_CLASS[slot].store(inner, Ordering::Release);
    }
    Ok(())
}

/// The kmalloc size-class caches, all or none: on an error the caches
/// already created are destroyed (dropped) and the error names the cache
/// that failed. [`kmalloc_init`] keeps the result; tests may call this
/// directly (e.g. under `failslab`) to see the error path.
pub fn create_kmalloc_caches() -> Result<[KmemCache; 13], KmallocInitError> {
    let mut failed = None;
    let made: [Option<KmemCache>; 13] = core::array::from_fn(|i| {
        if failed.is_some() {
            return None;
        }
        match KmemCache::create(
            NAMES[i],
            KMALLOC_SIZES[i],
            class_align(KMALLOC_SIZES[i]),
            SlabFlags::KMALLOC,
            None,
        ) {
            Ok(c) => Some(c),
            Err(e) => {
                failed = Some(e);
                None
            }
        }
    });
    if let Some(e) = failed {
        // `made` drops here: KmemCache's drop destroys each created cache.
        return Err(KmallocInitError(e));
    }
    match made {
        [
            Some(a),
            Some(b),
            Some(c),
            Some(d),
            Some(e),
            Some(f),
            Some(g),
            Some(h),
            Some(i),
            Some(j),
            Some(k),
            Some(l),
            Some(m),
        ] => Ok([a, b, c, d, e, f, g, h, i, j, k, l, m]),
        // Not reached: no failure means thirteen caches.
        _ => Err(KmallocInitError(CreateError::NoMemory {
            name: crate::mm::inline_name::InlineName::new("kmalloc"),
        })),
    }
}

/// Whether kmalloc is ready (the global allocator uses the early heap before).
pub fn kmalloc_ready() -> bool {
    CACHES.get().is_some()
}

/// Class index for sizes up to 192 by `(size + 7) / 8` (Linux's
/// `kmalloc_size_index`): 8, 16, 32, 32, 64 x4, 96 x4, 128 x4, 192 x8.
const SIZE_INDEX: [u8; 25] = [
    0, 0, 1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6,
];

/// The class serving `size` bytes at `align`: a table lookup for the
/// 8-byte alignment every class has, a search otherwise.
#[inline]
fn kmalloc_index(size: usize, align: usize) -> Option<usize> {
    if align <= 8 {
        if size <= 192 {
            return Some(SIZE_INDEX[size.div_ceil(8)] as usize);
        }
        if size <= KMALLOC_MAX_CACHE_SIZE {
            // 256 .. 8192: the power-of-two classes from index 7 on.
            return Some(size.next_power_of_two().trailing_zeros() as usize - 1);
        }
        return None;
    }
    KMALLOC_SIZES
        .iter()
        .position(|&s| s >= size && class_align(s) >= align)
}

/// The cache serving `size` bytes at `align`, if a slab serves it.
#[inline]
pub fn kmalloc_slab(size: usize, align: usize) -> Option<&'static KmemCache> {
    let caches = CACHES.get()?;
    // The index is below 13 by construction; `get` rather than `[]` keeps
    // the dev build's bounds check from panicking code on the fast path.
    kmalloc_index(size, align).and_then(|i| caches.get(i))
}

fn order_for(size: usize) -> u32 {
    let pages = size.div_ceil(4096);
    pages.next_power_of_two().trailing_zeros()
}

/// `kmalloc(size, gfp)` with an alignment requirement.
///
/// The common case inline: the 8-byte alignment every class has, a size
/// class found with one load (`SMALL_CLASS`, or `CLASS` by the power of
/// two), its cache's sheaf popped (`CacheInner::kmalloc_alloc`, which
/// returns the object at once). Everything else (the cache's slow path,
/// size 0, stricter or bad alignment, large sizes) returns a pointer that
/// is tested once: the `Result` is built inline, in registers, rather than
/// merged from callees in memory.
#[track_caller]
#[inline]
pub fn kmalloc_aligned(size: usize, align: usize, gfp: Gfp) -> Result<NonNull<u8>, AllocError> {
    match kmalloc_class(size, align) {
        Some(c) => c.kmalloc_alloc(gfp, size),
        None => {
            let mut err = AllocError { gfp, order: 0 };
            match NonNull::new(kmalloc_other_raw(size, align, gfp, &mut err)) {
                Some(p) => Ok(p),
                None => Err(err),
            }
        }
    }
}

/// The cache of the class serving `size` bytes at `align` when the
/// alignment is at most 8 (every class has it) and a class serves the
/// size; `None` sends kmalloc to its general path (size 0 finds no class).
#[inline(always)]
fn kmalloc_class(size: usize, align: usize) -> Option<&'static CacheInner> {
    if !(align.is_power_of_two() && align <= 8) {
        return None;
    }
    let c = if size <= 192 {
        SMALL_CLASS[(size.wrapping_add(7) >> 3) & 31].load(Ordering::Acquire)
    } else if size <= KMALLOC_MAX_CACHE_SIZE {
        // 256 .. 8192: the power-of-two classes from index 7 on.
        CLASS[(size.next_power_of_two().trailing_zeros() as usize).wrapping_sub(1) & 15]
            .load(Ordering::Acquire)
    } else {
        core::ptr::null_mut()
    };
    // SAFETY: null or a kmalloc class's cache, which lives for ever; a
    // transmute rather than `&*` (no dev-build alignment check).
    unsafe { core::mem::transmute::<*mut CacheInner, Option<&'static CacheInner>>(c) }
}

/// [`kmalloc_other`] as a pointer (null on failure, the error in `err`).
#[cold]
#[inline(never)]
#[track_caller]
fn kmalloc_other_raw(size: usize, align: usize, gfp: Gfp, err: &mut AllocError) -> *mut u8 {
    match kmalloc_other(size, align, gfp) {
        Ok(p) => p.as_ptr(),
        Err(e) => {
            *err = e;
            core::ptr::null_mut()
        }
    }
}

/// [`kmalloc_aligned`] for a bad alignment, size 0, a stricter alignment
/// than 8, or a size no class has.
#[track_caller]
fn kmalloc_other(size: usize, align: usize, gfp: Gfp) -> Result<NonNull<u8>, AllocError> {
    if !align.is_power_of_two() {
        // No size class or page block honours it: refuse rather than hand
        // out memory that is not aligned as asked.
        crate::println!(
            "WARNING: kmalloc_aligned(size {size}, align {align}): alignment is not a power of two; refused (caller {})",
            core::panic::Location::caller()
        );
        super::debug::record(super::debug::SlabBug::BadAlign, "kmalloc");
        return Err(AllocError { gfp, order: 0 });
    }
    if size == 0 {
        // SAFETY: a non-null sentinel, never dereferenced.
        return Ok(unsafe { NonNull::new_unchecked(ZERO_SIZE_PTR) });
    }
    if let Some(c) = kmalloc_slab(size, align) {
        return c.alloc_kmalloc(size, gfp);
    }
    kmalloc_large(size, align, gfp)
}

#[track_caller]
fn kmalloc_large(size: usize, align: usize, gfp: Gfp) -> Result<NonNull<u8>, AllocError> {
    let order = order_for(size.max(align));
    let pa = page_alloc::alloc_pages(gfp, order)?;
    page_alloc::set_page_owner(pa, order, PageOwner::Other("kmalloc-large"));
    page_alloc::set_page_private(pa, LARGE_TAG + order as u64);
    // SAFETY: the direct map never yields null.
    Ok(unsafe { NonNull::new_unchecked(page_alloc::page_address(pa)) })
}

/// `kmalloc(size, gfp)`: at least `size` bytes, 8-byte aligned; power-of-two
/// sizes up to 512 are naturally aligned (Linux: all of them; kreclaim caps
/// class alignment at 512). Use [`kmalloc_aligned`] for more.
#[track_caller]
#[inline]
pub fn kmalloc(size: usize, gfp: Gfp) -> Result<NonNull<u8>, AllocError> {
    kmalloc_aligned(size, 1, gfp)
}

/// `kzalloc`.
#[track_caller]
pub fn kzalloc(size: usize, gfp: Gfp) -> Result<NonNull<u8>, AllocError> {
    kmalloc(size, gfp | Gfp::__GFP_ZERO)
}

enum Owner {
    Slab(*mut super::cache::SlabHeader),
    Large(u32),
}

fn owner_of(p: *const u8) -> Option<Owner> {
    if let Some(s) = slab_of(p as usize) {
        return Some(Owner::Slab(s));
    }
    let pa = page_alloc::virt_to_phys(p);
    match page_alloc::page_private(pa) {
        Some(tag) if (LARGE_TAG..=LARGE_TAG + 10).contains(&tag) => {
            Some(Owner::Large((tag - LARGE_TAG) as u32))
        }
        _ => None,
    }
}

/// `kfree`: frees memory from kmalloc. NULL and ZERO_SIZE_PTR are ignored;
/// a pointer kmalloc did not hand out is reported, not freed.
#[track_caller]
// Out of line in the kernel, as Linux's: one copy of the fast path rather
// than one in every caller, which in the dev build (`opt-level = 1`) also
// keeps the callers small enough to be inlined into theirs (kmalloc-64
// churn under `bench=mm`: 117 guest instructions a step, 127 inline).
// Inline in hosted builds (release): as a call it cost the host's churn
// benchmark a third more time (docs/host.md).
#[cfg_attr(target_os = "none", inline(never))]
#[cfg_attr(not(target_os = "none"), inline(always))]
pub fn kfree(p: *mut u8) {
    // The common case inline: a slab object, through its cache's fast path
    // (NULL and ZERO_SIZE_PTR are in no slab).
    if !kfree_slab(p as usize) {
        kfree_other(p);
    }
}

/// [`kfree`] of anything but a slab object.
#[cold]
#[inline(never)]
#[track_caller]
fn kfree_other(p: *mut u8) {
    if p.is_null() || p == ZERO_SIZE_PTR {
        return;
    }
    match owner_of(p) {
        Some(Owner::Slab(s)) => {
            // SAFETY: a live slab; its cache outlives its slabs.
            let cache = unsafe { &*(*s).cache };
            cache.free_in_slab(s as usize, p as usize);
        }
        Some(Owner::Large(order)) => {
            let pa = page_alloc::virt_to_phys(p);
            if p as usize & 0xfff != 0 {
                crate::println!("BUG kmalloc-large: kfree({p:p}): not the start of an allocation");
                super::debug::record(super::debug::SlabBug::BadOffset, "kmalloc-large");
                return;
            }
            page_alloc::set_page_private(pa, 0);
            page_alloc::free_pages(pa, order);
        }
        // Memory the page allocator holds free: a block kfree (or a slab's
        // release) already gave back, so this is a second free of it. Linux
        // reports a large kmalloc freed twice as a bad page state.
        None if page_alloc::page_owner(page_alloc::virt_to_phys(p)) == Some(PageOwner::Free) => {
            crate::println!(
                "BUG kfree: double free of {p:p}: the memory is already free (caller {})",
                core::panic::Location::caller()
            );
            super::debug::record(super::debug::SlabBug::DoubleFree, "kmalloc");
        }
        None => {
            crate::println!(
                "BUG kfree: pointer {p:p} was not allocated by kmalloc (caller {})",
                core::panic::Location::caller()
            );
            super::debug::record(super::debug::SlabBug::NotASlabObject, "kmalloc");
        }
    }
}

/// `ksize`: the usable size of a kmalloc allocation (0 for foreign pointers),
/// all of which the caller may then use (with `slab_debug=Z`, the slack after
/// the size asked for is no longer red-zoned, as in SLUB).
pub fn ksize(p: *const u8) -> usize {
    if p.is_null() || p == ZERO_SIZE_PTR {
        return 0;
    }
    match owner_of(p) {
        Some(Owner::Slab(s)) => {
            // SAFETY: a live slab's cache.
            let c = unsafe { &*(*s).cache };
            // The caller may use all of it now: no red zone in the slack.
            c.skip_orig_size_check(p as usize);
            c.object_size
        }
        Some(Owner::Large(order)) => 4096 << order,
        None => 0,
    }
}

/// A `Box` that allocates through kmalloc with explicit GFP flags and
/// reports failure as a value.
pub struct KBox<T> {
    ptr: NonNull<T>,
    _t: PhantomData<T>,
}

// SAFETY: owns its T.
unsafe impl<T: Send> Send for KBox<T> {}
// SAFETY: owns its T.
unsafe impl<T: Sync> Sync for KBox<T> {}

impl<T> KBox<T> {
    /// Moves `value` into kmalloc memory; fails instead of aborting.
    #[track_caller]
    pub fn new(value: T, gfp: Gfp) -> Result<Self, AllocError> {
        let l = Layout::new::<T>();
        let p = if l.size() == 0 {
            NonNull::dangling()
        } else {
            kmalloc_aligned(l.size(), l.align(), gfp)?.cast::<T>()
        };
        // SAFETY: fresh memory for one T.
        unsafe { p.as_ptr().write(value) };
        Ok(Self {
            ptr: p,
            _t: PhantomData,
        })
    }
}

impl<T> Deref for KBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: initialised and owned.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for KBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: initialised and owned.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for KBox<T> {
    fn drop(&mut self) {
        // SAFETY: we own the value.
        unsafe { core::ptr::drop_in_place(self.ptr.as_ptr()) };
        if core::mem::size_of::<T>() != 0 {
            kfree(self.ptr.as_ptr().cast());
        }
    }
}

/// A growable array whose every allocation takes GFP flags and can fail.
pub struct KVec<T> {
    ptr: NonNull<T>,
    len: usize,
    cap: usize,
}

// SAFETY: owns its elements.
unsafe impl<T: Send> Send for KVec<T> {}
// SAFETY: owns its elements.
unsafe impl<T: Sync> Sync for KVec<T> {}

impl<T> Default for KVec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> KVec<T> {
    /// An empty vector; allocates nothing.
    pub const fn new() -> Self {
        Self {
            ptr: NonNull::dangling(),
            len: 0,
            cap: 0,
        }
    }

    /// An empty vector with room for `n` elements.
    #[track_caller]
    pub fn with_capacity(n: usize, gfp: Gfp) -> Result<Self, AllocError> {
        let mut v = Self::new();
        v.reserve(n, gfp)?;
        Ok(v)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements it can hold without growing.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Makes room for `additional` more elements.
    #[track_caller]
    pub fn reserve(&mut self, additional: usize, gfp: Gfp) -> Result<(), AllocError> {
        let need = self
            .len
            .checked_add(additional)
            .ok_or(AllocError { gfp, order: 0 })?;
        if need <= self.cap || core::mem::size_of::<T>() == 0 {
            if core::mem::size_of::<T>() == 0 {
                self.cap = usize::MAX;
            }
            return Ok(());
        }
        let new_cap = need.max(self.cap * 2).max(4);
        let l = Layout::array::<T>(new_cap).map_err(|_| AllocError { gfp, order: 0 })?;
        let p = kmalloc_aligned(l.size(), l.align(), gfp)?.cast::<T>();
        // SAFETY: both regions are valid for `len` elements and distinct.
        unsafe { core::ptr::copy_nonoverlapping(self.ptr.as_ptr(), p.as_ptr(), self.len) };
        if self.cap != 0 {
            kfree(self.ptr.as_ptr().cast());
        }
        self.ptr = p;
        self.cap = new_cap;
        Ok(())
    }

    /// Appends `value`, or gives it back with the error.
    #[track_caller]
    pub fn push(&mut self, value: T, gfp: Gfp) -> Result<(), (T, AllocError)> {
        if self.len == self.cap
            && let Err(e) = self.reserve(1, gfp)
        {
            return Err((value, e));
        }
        // SAFETY: capacity checked above.
        unsafe { self.ptr.as_ptr().add(self.len).write(value) };
        self.len += 1;
        Ok(())
    }

    /// Removes and returns the last element.
    pub fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: the element at `len` was initialised.
        Some(unsafe { self.ptr.as_ptr().add(self.len).read() })
    }
}

impl<T> Deref for KVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` initialised elements.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for KVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: `len` initialised elements.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for KVec<T> {
    fn drop(&mut self) {
        // SAFETY: drop the initialised elements, then the buffer.
        unsafe {
            core::ptr::drop_in_place(core::ptr::slice_from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.len,
            ))
        };
        if self.cap != 0 && core::mem::size_of::<T>() != 0 {
            kfree(self.ptr.as_ptr().cast());
        }
    }
}
