//! Rust's global allocator for the kernel: the early heap until kmalloc is
//! up, kmalloc afterwards — with `current_gfp_context(GFP_KERNEL)`, so a NOFS
//! scope reaches allocations made deep in library code (a `Vec` push inside
//! a transaction allocates GFP_NOFS), and GFP_ATOMIC where sleeping is not
//! allowed (see [`global_gfp`]).
//!
//! Rust's `alloc` cannot carry GFP flags and treats failure as fatal, so
//! code that runs after boot uses the fallible constructors of
//! [`crate::mm::fallible`], re-exported here ([`try_box`], [`try_arc`],
//! [`try_string`], ...), or [`KBox`]/[`KVec`] and kmalloc.
//!
//! [`KBox`]: crate::mm::slab::kmalloc::KBox
//! [`KVec`]: crate::mm::slab::kmalloc::KVec

use super::early_heap::EarlyHeap;
pub use super::fallible::{
    TryString, try_arc, try_arc_cyclic, try_arc_or_return, try_box, try_format, try_string,
    try_to_vec,
};
use super::fallible::{note_global_failure, take_preload};
use super::gfp::{GFP_ATOMIC, GFP_KERNEL, Gfp};
use super::slab::kmalloc;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

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
            let gfp = global_gfp();
            match kmalloc::kmalloc_aligned(layout.size().max(1), layout.align(), gfp) {
                Ok(p) => return p.as_ptr(),
                Err(e) => {
                    note_global_failure(e.gfp);
                    return core::ptr::null_mut();
                }
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

/// The gfp Rust's global allocator uses: GFP_KERNEL through the task's
/// scope, or GFP_ATOMIC where sleeping is not allowed. Under the
/// framework's scheduler that is decided here (interrupts masked or
/// preemption disabled); without it (before it starts, or in a kernel with
/// a scheduler of its own) the platform says:
/// [`Platform::may_sleep`](crate::platform::Platform::may_sleep).
pub fn global_gfp() -> Gfp {
    let may_sleep = crate::platform::get().is_some_and(|p| {
        if crate::task::started() {
            let was = p.irq_save();
            p.irq_restore(was);
            was && crate::task::preempt_count() == 0
        } else {
            p.may_sleep()
        }
    });
    if may_sleep {
        crate::mm::scope::current_gfp_context(GFP_KERNEL)
    } else {
        GFP_ATOMIC
    }
}
