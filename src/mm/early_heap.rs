//! The early heap: a `linked_list_allocator` arena for what must be allocated
//! before the page allocator exists (boot parsing, the command line, the
//! test harness). Interrupts are masked while its lock is held, so an
//! interrupt handler can never spin on a lock its own CPU holds.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

/// The early heap (see the module documentation).
pub struct EarlyHeap {
    heap: spin::Mutex<linked_list_allocator::Heap>,
}

impl Default for EarlyHeap {
    fn default() -> Self {
        Self::empty()
    }
}

impl EarlyHeap {
    /// A heap with no memory yet; `init` gives it its arena.
    pub const fn empty() -> Self {
        Self {
            heap: spin::Mutex::new(linked_list_allocator::Heap::empty()),
        }
    }

    /// Hands `[start, start + size)` to the heap.
    ///
    /// # Safety
    /// The range must be valid, writable, unused memory; call once.
    pub unsafe fn init(&self, start: *mut u8, size: usize) {
        crate::platform::without_interrupts(|| {
            // SAFETY: the caller guarantees `[start, start + size)` is valid, writable, unused
            // memory and calls this once (this fn's contract).
            unsafe { self.heap.lock().init(start, size) }
        });
    }

    /// Bytes in use and bytes in total.
    pub fn usage(&self) -> (usize, usize) {
        crate::platform::without_interrupts(|| {
            let h = self.heap.lock();
            (h.used(), h.size())
        })
    }

    /// First-fit allocation; `None` when the arena has no room.
    pub fn alloc(&self, layout: Layout) -> Option<NonNull<u8>> {
        crate::platform::without_interrupts(|| self.heap.lock().allocate_first_fit(layout).ok())
    }

    /// # Safety
    /// `ptr` must come from [`EarlyHeap::alloc`] with the same `layout`.
    pub unsafe fn dealloc(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller guarantees `ptr` came from `alloc` on this heap with the same `layout`
        // (this fn's contract).
        crate::platform::without_interrupts(|| unsafe { self.heap.lock().deallocate(ptr, layout) });
    }

    /// Whether `ptr` lies inside this heap's arena.
    pub fn contains(&self, ptr: *const u8) -> bool {
        crate::platform::without_interrupts(|| {
            let h = self.heap.lock();
            let b = h.bottom() as usize;
            (b..b + h.size()).contains(&(ptr as usize))
        })
    }
}

// SAFETY: all state is behind the mutex; returns null on exhaustion.
unsafe impl GlobalAlloc for EarlyHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        EarlyHeap::alloc(self, layout).map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: GlobalAlloc's contract.
            unsafe { EarlyHeap::dealloc(self, p, layout) }
        }
    }
}
