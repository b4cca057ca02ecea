//! kreclaim as a host program's `#[global_allocator]`.
//!
//! [`KreclaimGlobal`] initialises itself on first use: the first allocation
//! takes an arena from the system allocator and brings the page allocator and
//! kmalloc up over it ([`crate::init`]); the allocations made *during* that
//! bring-up (the slab caches' own metadata) are served by the system
//! allocator, as the kernel serves them from its early heap. Afterwards every
//! request goes to kreclaim's `KernelAllocator` (kmalloc under
//! `current_gfp_context`), except requests the page allocator cannot serve by
//! design: more than one order-10 block (4 MiB). Those go to the system
//! allocator, as Linux sends them to vmalloc (`kvmalloc`); they are counted
//! ([`fallbacks`]). `dealloc` tells the two apart by address (inside the
//! arena or not). `realloc` keeps the block when the new size still fits its
//! slab object (`ksize`), like Linux's `krealloc`.

use crate::{Config, Host};
use kreclaim::mm::global_alloc::KernelAllocator;
use kreclaim::mm::slab::kmalloc;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

/// Largest request kreclaim serves (one MAX_ORDER block).
pub const MAX_KRECLAIM_ALLOC: usize = 4 << 20;

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

static FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// Allocations the system allocator served because they were larger than
/// [`MAX_KRECLAIM_ALLOC`] (or came before bring-up finished).
pub fn fallbacks() -> u64 {
    FALLBACKS.load(Ordering::Relaxed)
}

/// A lazily initialised kreclaim global allocator over an arena of
/// `arena_bytes`; `enabled = false` makes it a pass-through to the system
/// allocator (so one binary can compare both).
pub struct KreclaimGlobal {
    arena_bytes: usize,
    state: AtomicU8,
    enabled: AtomicBool,
    arena_start: AtomicUsize,
    arena_end: AtomicUsize,
    kernel: KernelAllocator,
}

impl KreclaimGlobal {
    pub const fn new(arena_bytes: usize, enabled: bool) -> Self {
        Self {
            arena_bytes,
            state: AtomicU8::new(UNINIT),
            enabled: AtomicBool::new(enabled),
            arena_start: AtomicUsize::new(0),
            arena_end: AtomicUsize::new(0),
            kernel: KernelAllocator::new(),
        }
    }

    /// Routes new allocations to kreclaim (`true`) or the system allocator.
    /// Blocks already handed out are freed by whoever made them.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    fn in_arena(&self, p: *mut u8) -> bool {
        let p = p as usize;
        p >= self.arena_start.load(Ordering::Relaxed) && p < self.arena_end.load(Ordering::Relaxed)
    }

    /// Whether kreclaim serves allocations now, bringing it up on first use.
    fn ready(&self) -> bool {
        match self.state.load(Ordering::Acquire) {
            READY => return true,
            BUSY | FAILED => return false,
            _ => {}
        }
        if self
            .state
            .compare_exchange(UNINIT, BUSY, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return self.state.load(Ordering::Acquire) == READY;
        }
        // Allocations made by the bring-up itself see BUSY: system allocator.
        let r = crate::init(Config {
            arena_bytes: self.arena_bytes,
            lockdep: false,
            ..Config::default()
        });
        match r {
            Ok(Host { arena, .. }) => {
                self.arena_start.store(arena.start, Ordering::Relaxed);
                self.arena_end
                    .store(arena.start + arena.len, Ordering::Relaxed);
                self.state.store(READY, Ordering::Release);
                true
            }
            Err(_) => {
                self.state.store(FAILED, Ordering::Release);
                false
            }
        }
    }

    fn use_kreclaim(&self, layout: Layout) -> bool {
        if !self.enabled.load(Ordering::Relaxed) {
            return false;
        }
        if layout.size() > MAX_KRECLAIM_ALLOC || layout.align() > MAX_KRECLAIM_ALLOC {
            FALLBACKS.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.ready()
    }
}

// SAFETY: both backends return exclusive memory fitting the layout, or null;
// every block is freed by the backend that made it (told apart by address).
unsafe impl GlobalAlloc for KreclaimGlobal {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.use_kreclaim(layout) {
            // SAFETY: GlobalAlloc::alloc's contract (a non-zero size) is the
            // caller's, passed on unchanged.
            unsafe { self.kernel.alloc(layout) }
        } else {
            // SAFETY: GlobalAlloc::alloc's contract (a non-zero size) is the
            // caller's, passed on unchanged.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.in_arena(ptr) {
            // SAFETY: allocated by kreclaim with this layout.
            unsafe { self.kernel.dealloc(ptr, layout) }
        } else {
            // SAFETY: allocated by the system allocator with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if self.in_arena(ptr) {
            // krealloc: the object already has room.
            if new_size <= kmalloc::ksize(ptr) && new_size <= MAX_KRECLAIM_ALLOC {
                return ptr;
            }
        } else if !self.enabled.load(Ordering::Relaxed) || new_size > MAX_KRECLAIM_ALLOC {
            // SAFETY: a system block, staying with the system allocator.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller guarantees a valid non-zero new size for `layout.align()`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_layout` has the caller's non-zero `new_size`, so it
        // meets alloc's contract.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller size and distinct.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
