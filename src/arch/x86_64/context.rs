//! Kernel-thread context switch and the virtual area holding task stacks.
//!
//! A saved context is the stack pointer after pushing RFLAGS and the
//! callee-saved registers; switching swaps stacks and pops them back.
//! Task stacks live at [`STACK_AREA`], one [`SLOT`] each: an unmapped guard
//! page, then the stack pages. Physical memory comes from the frame source
//! (the early heap until the page allocator takes over).

use super::paging;
use crate::platform::KernelStack;
use core::alloc::Layout;

core::arch::global_asm!(
    r#"
    .section .text.context, "ax"
    .global kreclaim_switch_context
kreclaim_switch_context:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    pushfq
    mov [rdi], rsp
    mov rsp, rsi
    popfq
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

    .global kreclaim_task_trampoline
kreclaim_task_trampoline:
    mov rdi, r12
    xor ebp, ebp
    call r12
    ud2
"#
);

unsafe extern "C" {
    fn kreclaim_switch_context(prev: *mut usize, next: usize);
    fn kreclaim_task_trampoline();
}

/// # Safety
/// See [`crate::platform::Platform::switch_context`].
pub unsafe fn switch_context(prev: *mut usize, next: usize) {
    // SAFETY: the caller guarantees `next` is a context from init_context or an earlier save and
    // that interrupts are masked (this fn's contract), which is all the assembly switch needs.
    unsafe { kreclaim_switch_context(prev, next) }
}

/// Lays out a fresh stack: RFLAGS (IF clear), six callee-saved registers with
/// r12 = `entry`, and the trampoline as return address.
///
/// # Safety
/// `stack_top` must be the top of a mapped, writable stack of at least 80
/// bytes (e.g. from [`alloc_stack`]) that nothing runs on or refers to.
pub unsafe fn init_context(stack_top: usize, entry: extern "C" fn() -> !) -> usize {
    let top = stack_top & !15;
    let words: [usize; 10] = [
        0x2,                                            // RFLAGS: interrupts masked
        0,                                              // r15
        0,                                              // r14
        0,                                              // r13
        entry as usize,                                 // r12
        0,                                              // rbx
        0,                                              // rbp
        kreclaim_task_trampoline as *const () as usize, // return address
        0,                                              // padding: keeps the call aligned
        0,
    ];
    let base = top - words.len() * 8;
    for (i, w) in words.iter().enumerate() {
        // SAFETY: `base + i * 8` lies in the 80 bytes below the 16-aligned
        // `top`, inside the unused, writable stack the caller guarantees.
        unsafe { ((base + i * 8) as *mut usize).write(*w) };
    }
    base
}

/// Start of the task-stack area (PML4 slot 288, away from the direct map).
pub const STACK_AREA: u64 = 0xffff_9000_0000_0000;
/// Virtual span per stack: guard page + up to 63 pages of stack.
pub const SLOT: u64 = 256 * 1024;
const MAX_SLOTS: usize = 4096;
const PAGE: usize = 4096;

/// Physical pages behind task stacks: `pages` contiguous frames. The
/// allocator is called outside the area lock, with interrupts as the caller
/// of [`alloc_stack`] had them, so it may sleep.
pub type FrameAlloc = fn(pages: usize) -> Option<u64>;
/// Returns `pages` frames starting at physical `pa` that a [`FrameAlloc`] gave.
pub type FrameFree = fn(pa: u64, pages: usize);

fn early_frames(pages: usize) -> Option<u64> {
    let l = Layout::from_size_align(pages * PAGE, PAGE).ok()?;
    let p = super::early_heap().alloc(l)?;
    Some(paging::virt_to_phys(p.as_ptr() as u64))
}

fn early_free(pa: u64, pages: usize) {
    let l = Layout::from_size_align(pages * PAGE, PAGE).unwrap();
    // The early heap is reached through the direct map.
    if let Some(p) = core::ptr::NonNull::new(paging::phys_to_virt(pa)) {
        // SAFETY: allocated by early_frames with this layout.
        unsafe { super::early_heap().dealloc(p, l) };
    }
}

/// Which stack slots are taken: one bit per slot, fixed size, so that
/// freeing a stack never allocates. `free_stack` runs in
/// `finish_task_switch` with interrupts masked, where an allocation is
/// GFP_ATOMIC and may fail (fault injection, a low reserve).
///
/// SMP: a freed slot stays taken ("dirty") until every CPU has flushed its
/// TLB since the unmap, so no CPU can reach a new stack in the slot through
/// a stale translation of the old one (see `smp::tlb_bump`).
struct SlotMap {
    used: [u64; MAX_SLOTS / 64],
    /// Freed slots waiting for TLB flushes (their `used` bit stays set).
    dirty: [u64; MAX_SLOTS / 64],
    /// The TLB generation the newest dirty slot needs.
    dirty_gen: u64,
}

impl SlotMap {
    /// Takes the lowest free slot.
    fn take(&mut self) -> Option<u32> {
        let (i, w) = self
            .used
            .iter_mut()
            .enumerate()
            .find(|(_, w)| **w != u64::MAX)?;
        let bit = w.trailing_ones();
        *w |= 1 << bit;
        Some(i as u32 * 64 + bit)
    }

    /// Parks a slot freed after unmapping until TLB generation `generation`.
    fn put_dirty(&mut self, slot: u32, generation: u64) {
        self.dirty[slot as usize / 64] |= 1 << (slot % 64);
        self.dirty_gen = self.dirty_gen.max(generation);
    }

    fn has_dirty(&self) -> bool {
        self.dirty.iter().any(|w| *w != 0)
    }

    /// Frees the dirty slots once every CPU flushed for them.
    fn recycle(&mut self) {
        if self.has_dirty() && super::smp::tlb_all_flushed(self.dirty_gen) {
            for (u, d) in self.used.iter_mut().zip(self.dirty.iter_mut()) {
                *u &= !*d;
                *d = 0;
            }
        }
    }

    /// Gives a slot back.
    fn put(&mut self, slot: u32) {
        let (i, bit) = (slot as usize / 64, slot % 64);
        debug_assert!(
            self.used[i] & (1 << bit) != 0,
            "stack slot {slot} freed twice"
        );
        self.used[i] &= !(1 << bit);
    }
}

struct StackArea {
    slots: SlotMap,
    alloc: FrameAlloc,
    free: FrameFree,
}

static AREA: spin::Mutex<StackArea> = spin::Mutex::new(StackArea {
    slots: SlotMap {
        used: [0; MAX_SLOTS / 64],
        dirty: [0; MAX_SLOTS / 64],
        dirty_gen: 0,
    },
    alloc: early_frames,
    free: early_free,
});

/// Switches where stack pages come from (the page allocator, once it runs).
/// Stacks allocated before keep their original source via the cookie.
pub fn set_frame_source(alloc: FrameAlloc, free: FrameFree) {
    crate::platform::without_interrupts(|| {
        let mut a = AREA.lock();
        a.alloc = alloc;
        a.free = free;
    });
}

/// cookie = slot | pages << 16 | (1 << 40 if early-heap frames)
pub fn alloc_stack(bytes: usize) -> Option<KernelStack> {
    let pages = bytes.div_ceil(PAGE);
    if pages == 0 || (pages + 1) as u64 * PAGE as u64 > SLOT {
        return None;
    }
    let take = || {
        crate::platform::without_interrupts(|| {
            let mut a = AREA.lock();
            a.slots.recycle();
            let slot = a.slots.take();
            let wait = (slot.is_none() && a.slots.has_dirty()).then_some(a.slots.dirty_gen);
            (slot.map(|s| (s, a.alloc)), wait)
        })
    };
    let (slot, alloc) = match take() {
        (Some(s), _) => s,
        // Every free slot waits for TLB flushes: ask the CPUs for them.
        (None, Some(generation)) if super::smp::tlb_wait(generation) => take().0?,
        _ => return None,
    };
    let early = core::ptr::eq(alloc as *const (), early_frames as *const ());
    // Outside the lock and with interrupts as the caller had them: the page
    // allocator may sleep in direct reclaim.
    let Some(pa) = alloc(pages) else {
        crate::platform::without_interrupts(|| AREA.lock().slots.put(slot));
        return None;
    };
    let base = STACK_AREA + slot as u64 * SLOT;
    let bottom = base + PAGE as u64;
    crate::platform::without_interrupts(|| {
        for i in 0..pages as u64 {
            paging::map_page(bottom + i * PAGE as u64, pa + i * PAGE as u64);
        }
    });
    Some(KernelStack {
        bottom: bottom as usize,
        top: (bottom + (pages * PAGE) as u64) as usize,
        cookie: slot as usize | pages << 16 | (early as usize) << 40,
    })
}

/// Unmaps a stack from [`alloc_stack`] and frees its frames.
pub fn free_stack(stack: KernelStack) {
    let slot = (stack.cookie & 0xffff) as u32;
    let pages = (stack.cookie >> 16) & 0xff_ffff;
    let early = stack.cookie >> 40 != 0;
    crate::platform::without_interrupts(|| {
        let mut a = AREA.lock();
        let (pa, _) = paging::translate(stack.bottom as u64).expect("stack not mapped");
        for i in 0..pages {
            paging::unmap_page((stack.bottom + i * PAGE) as u64);
        }
        let generation = super::smp::tlb_bump();
        if early {
            early_free(pa, pages);
        } else {
            (a.free)(pa, pages);
        }
        a.slots.put_dirty(slot, generation);
    });
}

/// Whether `addr` is in the guard page of a task-stack slot.
pub fn in_stack_guard(addr: u64) -> bool {
    addr >= STACK_AREA
        && addr < STACK_AREA + MAX_SLOTS as u64 * SLOT
        && (addr - STACK_AREA) % SLOT < PAGE as u64
}
