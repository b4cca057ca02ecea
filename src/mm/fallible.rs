//! Fallible constructors over Rust's global allocator.
//!
//! Rust's `alloc` cannot carry GFP flags and treats failure as fatal (a
//! `Box::new`, `Arc::new`, `format!` or `Vec::push` that finds no memory
//! aborts the kernel), so code that runs after boot uses `KBox`/`KVec`,
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
//! Everything here goes through the global allocator and names nothing
//! above it, so the task and lockdep code may use it without depending on
//! kmalloc (`global_alloc::KernelAllocator` consults [`take_preload`]).

use super::gfp::{AllocError, Gfp};
use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// The flags of the global allocator's most recent failure (what a failed
/// constructor below reports: the global allocator chose them).
static FAILED_GFP: AtomicU32 = AtomicU32::new(0);

/// Called by the global allocator when it returns null, with the flags it
/// allocated with.
pub fn note_global_failure(gfp: Gfp) {
    FAILED_GFP.store(gfp.bits(), Ordering::Relaxed);
}

/// The error a failed global allocation reports: the flags of the global
/// allocator's most recent failure, order 0.
pub fn global_alloc_error() -> AllocError {
    AllocError {
        gfp: Gfp::from_bits_retain(FAILED_GFP.load(Ordering::Relaxed)),
        order: 0,
    }
}

/// Whether a block is preloaded, and for which CPU: its number + 1, 0 for
/// none (the allocator's fast check). Only that CPU's next allocation may
/// take it: on SMP another CPU's allocation of a fitting size must not.
static PRELOADED: AtomicUsize = AtomicUsize::new(0);
/// The preloaded block (address, size, alignment). Checked and taken under
/// one lock, so an allocation never gets a block smaller than it asked for
/// even where several threads share the allocator (host builds).
static PRELOAD: spin::Mutex<Option<(usize, usize, usize)>> = spin::Mutex::new(None);
/// Held across [`Preload::run`]: one preload at a time.
static PRELOADER: spin::Mutex<()> = spin::Mutex::new(());

/// Hands out the preloaded block if it fits `layout` (the global
/// allocator's first check; see [`try_arc`]).
pub fn take_preload(layout: Layout) -> Option<*mut u8> {
    let owner = PRELOADED.load(Ordering::Acquire);
    if owner == 0 {
        return None;
    }
    // The preloading CPU has interrupts masked until it is done, so the
    // caller on that CPU is the preloader itself.
    let here = crate::platform::without_interrupts(crate::platform::cpu_id);
    if owner != here + 1 {
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
    fn new(layout: Layout) -> Result<Self, AllocError> {
        let layout = Layout::from_size_align(layout.size().max(1), layout.align())
            .map_err(|_| global_alloc_error())?;
        // SAFETY: a non-zero-sized layout.
        let block =
            NonNull::new(unsafe { alloc::alloc::alloc(layout) }).ok_or_else(global_alloc_error)?;
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
            PRELOADED.store(crate::platform::cpu_id() + 1, Ordering::Release);
            let r = f();
            PRELOADED.store(0, Ordering::Release);
            (r, PRELOAD.lock().take())
        });
        if let Some((p, _, _)) = left {
            // SAFETY: the block allocated in `new` with this layout, which
            // nothing took.
            unsafe { alloc::alloc::dealloc(p as *mut u8, self.layout) };
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
/// the global allocator's `global_gfp`, as every global allocation).
pub fn try_arc<T>(value: T) -> Result<Arc<T>, AllocError> {
    try_arc_or_return(value).map_err(|(_, e)| e)
}

/// [`try_arc`] that gives the value back on failure, so the caller can
/// try again.
pub fn try_arc_or_return<T>(value: T) -> Result<Arc<T>, (T, AllocError)> {
    match Preload::new(arc_layout::<T>()) {
        Ok(p) => Ok(p.run(|| Arc::new(value))),
        Err(e) => Err((value, e)),
    }
}

/// `Arc::new_cyclic` that reports failure as a value. `f` runs with
/// interrupts masked: it must not sleep (a struct literal is fine).
pub fn try_arc_cyclic<T>(f: impl FnOnce(&Weak<T>) -> T) -> Result<Arc<T>, AllocError> {
    Ok(Preload::new(arc_layout::<T>())?.run(|| Arc::new_cyclic(f)))
}

/// Runs `f` with a block of `layout` allocated first and handed to the next
/// allocation the global allocator sees on this CPU: the preload
/// [`try_arc`] uses (Linux's `radix_tree_preload`). `f` gets the block's
/// address, runs with interrupts masked and must not sleep; allocations on
/// other CPUs meanwhile never take the block. If `f` did not take it, it is
/// freed. `Err` if the block could not be allocated.
pub fn with_preloaded<R>(
    layout: Layout,
    f: impl FnOnce(NonNull<u8>) -> R,
) -> Result<R, AllocError> {
    let p = Preload::new(layout)?;
    let block = p.block;
    Ok(p.run(|| f(block)))
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
        return Err(global_alloc_error());
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
        return Err(global_alloc_error());
    }
    Ok(s)
}

/// `slice.to_vec()` that reports failure as a value (for `Copy` elements,
/// whose copies allocate nothing more).
pub fn try_to_vec<T: Copy>(slice: &[T]) -> Result<Vec<T>, AllocError> {
    let mut v = Vec::new();
    v.try_reserve_exact(slice.len())
        .map_err(|_| global_alloc_error())?;
    v.extend_from_slice(slice);
    Ok(v)
}

/// `String::from(s)` that reports failure as a value.
pub fn try_string(s: &str) -> Result<String, AllocError> {
    let mut out = String::new();
    out.try_reserve_exact(s.len())
        .map_err(|_| global_alloc_error())?;
    out.push_str(s);
    Ok(out)
}
