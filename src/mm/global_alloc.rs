//! Rust's global allocator for the kernel: the early heap until kmalloc is
//! up, kmalloc afterwards — with `current_gfp_context(GFP_KERNEL)`, so a NOFS
//! scope reaches allocations made deep in library code (a `Vec` push inside
//! a transaction allocates GFP_NOFS), and GFP_ATOMIC where sleeping is not
//! allowed (interrupts masked, preemption disabled).
//!
//! Rust's `alloc` cannot carry GFP flags and treats failure as fatal (a
//! `Box::new`, `Arc::new`, `format!` or `Vec::push` that finds no memory
//! aborts the kernel), so code that runs after boot uses [`KBox`]/[`KVec`],
//! kmalloc, `try_reserve`, or the fallible constructors below: [`try_box`],
//! [`try_arc`], [`try_arc_cyclic`], [`try_format`], [`TryString`] and
//! [`try_to_vec`]. Only boot-time set-up may use the infallible forms.
//!
//! Stable Rust has no fallible `Arc` constructor, so [`try_arc`] does what
//! Linux's `radix_tree_preload` does: it allocates the block first (where
//! failure is a value), then, with interrupts masked on this one CPU, hands
//! it to the very next allocation the global allocator sees, which is
//! `Arc::new`'s.
//!
//! [`KBox`]: crate::mm::slab::kmalloc::KBox
//! [`KVec`]: crate::mm::slab::kmalloc::KVec

use super::early_heap::EarlyHeap;
use super::page_alloc::AllocError;
use super::slab::kmalloc;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The `#[global_allocator]`: the early heap, then kmalloc (see the module documentation).
pub struct KernelAllocator {
    early: EarlyHeap,
}

impl Default for KernelAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl KernelAllocator {
    /// An allocator serving from the (still empty) early heap.
    pub const fn new() -> Self {
        Self {
            early: EarlyHeap::empty(),
        }
    }

    /// The early heap behind the allocator before kmalloc exists.
    pub fn early(&self) -> &EarlyHeap {
        &self.early
    }
}

// SAFETY: both backends return suitably aligned, exclusive memory or null.
unsafe impl GlobalAlloc for KernelAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(p) = take_preload(layout) {
            return p;
        }
        if kmalloc::kmalloc_ready() {
            let gfp = kmalloc::global_gfp();
            match kmalloc::kmalloc_aligned(layout.size().max(1), layout.align(), gfp) {
                Ok(p) => return p.as_ptr(),
                Err(_) => return core::ptr::null_mut(),
            }
        }
        self.early
            .alloc(layout)
            .map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.early.contains(ptr) {
            if let Some(p) = NonNull::new(ptr) {
                // SAFETY: allocated from the early heap with this layout.
                unsafe { self.early.dealloc(p, layout) };
            }
        } else {
            kmalloc::kfree(ptr);
        }
    }
}

/// Whether a block is preloaded (the allocator's fast check).
static PRELOADED: AtomicUsize = AtomicUsize::new(0);
/// The preloaded block (address, size, alignment). Checked and taken under
/// one lock, so an allocation never gets a block smaller than it asked for
/// even where several threads share the allocator (host builds).
static PRELOAD: spin::Mutex<Option<(usize, usize, usize)>> = spin::Mutex::new(None);
/// Held across [`Preload::run`]: one preload at a time.
static PRELOADER: spin::Mutex<()> = spin::Mutex::new(());

/// Hands out the preloaded block if it fits `layout`.
fn take_preload(layout: Layout) -> Option<*mut u8> {
    if PRELOADED.load(Ordering::Acquire) == 0 {
        return None;
    }
    let mut slot = PRELOAD.try_lock()?;
    match *slot {
        Some((p, size, align)) if layout.size() <= size && layout.align() <= align => {
            *slot = None;
            PRELOADED.store(0, Ordering::Release);
            Some(p as *mut u8)
        }
        _ => None,
    }
}

/// A block allocated for the next allocation the global allocator sees
/// (see [`Preload::run`]).
struct Preload {
    block: NonNull<u8>,
    layout: Layout,
}

impl Preload {
    fn new(layout: Layout, gfp: crate::mm::gfp::Gfp) -> Result<Self, AllocError> {
        let block = kmalloc::kmalloc_aligned(layout.size().max(1), layout.align(), gfp)?;
        Ok(Self { block, layout })
    }

    /// Runs `f` (which makes exactly one allocation through the global
    /// allocator, of at most the preloaded layout) with the block handed to
    /// that allocation. Interrupts stay masked around `f`, so on this one
    /// CPU nothing else can take the block; if `f` did not take it, it is
    /// freed.
    fn run<R>(self, f: impl FnOnce() -> R) -> R {
        let block = (
            self.block.as_ptr() as usize,
            self.layout.size().max(1),
            self.layout.align(),
        );
        let (r, left) = crate::platform::without_interrupts(|| {
            let _one = PRELOADER.lock();
            *PRELOAD.lock() = Some(block);
            PRELOADED.store(1, Ordering::Release);
            let r = f();
            PRELOADED.store(0, Ordering::Release);
            (r, PRELOAD.lock().take())
        });
        if let Some((p, _, _)) = left {
            kmalloc::kfree(p as *mut u8);
        }
        r
    }
}

/// The layout of an `Arc<T>`'s allocation: two counters, then the value
/// (`alloc::sync::ArcInner`, `repr(C)`).
fn arc_layout<T>() -> Layout {
    Layout::new::<[AtomicUsize; 2]>()
        .extend(Layout::new::<T>())
        .map(|(l, _)| l.pad_to_align())
        .unwrap_or(Layout::new::<[AtomicUsize; 2]>())
}

/// `Arc::new` that reports failure as a value (GFP from
/// [`kmalloc::global_gfp`], as every global allocation).
pub fn try_arc<T>(value: T) -> Result<Arc<T>, AllocError> {
    try_arc_or_return(value).map_err(|(_, e)| e)
}

/// [`try_arc`] that gives the value back on failure, so the caller can
/// try again.
pub fn try_arc_or_return<T>(value: T) -> Result<Arc<T>, (T, AllocError)> {
    match Preload::new(arc_layout::<T>(), kmalloc::global_gfp()) {
        Ok(p) => Ok(p.run(|| Arc::new(value))),
        Err(e) => Err((value, e)),
    }
}

/// `Arc::new_cyclic` that reports failure as a value. `f` runs with
/// interrupts masked: it must not sleep (a struct literal is fine).
pub fn try_arc_cyclic<T>(f: impl FnOnce(&Weak<T>) -> T) -> Result<Arc<T>, AllocError> {
    Ok(Preload::new(arc_layout::<T>(), kmalloc::global_gfp())?.run(|| Arc::new_cyclic(f)))
}

/// `Box::new` that reports failure as a value: the block comes from the
/// global allocator's fallible entry point.
pub fn try_box<T>(value: T) -> Result<Box<T>, AllocError> {
    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        return Ok(Box::new(value));
    }
    // SAFETY: a non-zero-sized layout.
    let p = unsafe { alloc::alloc::alloc(layout) }.cast::<T>();
    if p.is_null() {
        return Err(AllocError {
            gfp: kmalloc::global_gfp(),
            order: 0,
        });
    }
    // SAFETY: fresh memory for one T from the global allocator, which is
    // what Box::from_raw expects.
    unsafe {
        p.write(value);
        Ok(Box::from_raw(p))
    }
}

/// A `fmt::Write` into a `String` that grows with `try_reserve`: a failed
/// reservation makes the write return `fmt::Error` and is remembered.
pub struct TryString<'a> {
    out: &'a mut String,
    failed: bool,
}

impl<'a> TryString<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut String) -> Self {
        Self { out, failed: false }
    }

    /// Whether some text was dropped for lack of memory.
    pub fn failed(&self) -> bool {
        self.failed
    }
}

impl fmt::Write for TryString<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.out.try_reserve(s.len()).is_err() {
            self.failed = true;
            return Err(fmt::Error);
        }
        self.out.push_str(s);
        Ok(())
    }
}

/// `format!` that reports failure as a value.
pub fn try_format(args: fmt::Arguments<'_>) -> Result<String, AllocError> {
    let mut s = String::new();
    let mut w = TryString::new(&mut s);
    if fmt::write(&mut w, args).is_err() || w.failed() {
        return Err(AllocError {
            gfp: kmalloc::global_gfp(),
            order: 0,
        });
    }
    Ok(s)
}

/// `slice.to_vec()` that reports failure as a value (for `Copy` elements,
/// whose copies allocate nothing more).
pub fn try_to_vec<T: Copy>(slice: &[T]) -> Result<Vec<T>, AllocError> {
    let mut v = Vec::new();
    v.try_reserve_exact(slice.len()).map_err(|_| AllocError {
        gfp: kmalloc::global_gfp(),
        order: 0,
    })?;
    v.extend_from_slice(slice);
    Ok(v)
}

/// `String::from(s)` that reports failure as a value.
pub fn try_string(s: &str) -> Result<String, AllocError> {
    let mut out = String::new();
    out.try_reserve_exact(s.len()).map_err(|_| AllocError {
        gfp: kmalloc::global_gfp(),
        order: 0,
    })?;
    out.push_str(s);
    Ok(out)
}
