//! Rust's global allocator for the kernel: the early heap until kmalloc is
//! up, kmalloc afterwards — with `current_gfp_context(GFP_KERNEL)`, so a NOFS
//! scope reaches allocations made deep in library code (a `Vec` push inside
//! a transaction allocates GFP_NOFS), and GFP_ATOMIC where sleeping is not
//! allowed (interrupts masked, preemption disabled).
//!
//! Rust's `alloc` cannot carry GFP flags and treats failure as fatal, so
//! code on reclaim paths and in NOFS sections uses [`KBox`]/[`KVec`] or
//! kmalloc directly; the global allocator is for everything else.
//!
//! [`KBox`]: crate::mm::slab::kmalloc::KBox
//! [`KVec`]: crate::mm::slab::kmalloc::KVec

use super::early_heap::EarlyHeap;
use super::slab::kmalloc;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

pub struct KernelAllocator {
    early: EarlyHeap,
}

impl Default for KernelAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl KernelAllocator {
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
