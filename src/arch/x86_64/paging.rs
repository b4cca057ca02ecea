//! The kernel's own page tables, replacing the boot stub's identity GiB:
//!
//! - the kernel image stays identity mapped at 1 MiB with 4 KiB pages: text
//!   read-only + executable, rodata read-only + NX, data/bss writable + NX;
//!   the guard page under every static stack is left unmapped;
//! - all RAM is reachable through a direct map at [`PHYS_OFFSET`] (2 MiB pages,
//!   writable, NX);
//! - nothing else: address 0 and every other low address fault.
//!
//! Table frames come from a pool inside the image, so paging needs no
//! allocator; [`map_page`] / [`unmap_page`] manage further 4 KiB mappings.

use super::stacks;
use crate::bootinfo::{MemoryMap, RegionKind};

/// Virtual address of physical address 0 in the direct map.
pub const PHYS_OFFSET: u64 = 0xffff_8000_0000_0000;

/// Page-table entry bit: the mapping is valid.
pub const PRESENT: u64 = 1;
/// Page-table entry bit: writable.
pub const WRITABLE: u64 = 1 << 1;
/// Page-table entry bit: a large page (2 MiB / 1 GiB).
pub const HUGE: u64 = 1 << 7;
/// Page-table entry bit: kept in the TLB across CR3 switches.
pub const GLOBAL: u64 = 1 << 8;
/// Page-table entry bit: not executable.
pub const NO_EXECUTE: u64 = 1 << 63;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

const POOL_TABLES: usize = 96;

#[repr(C, align(4096))]
struct Table([u64; 512]);

static mut POOL: [Table; POOL_TABLES] = [const { Table([0; 512]) }; POOL_TABLES];
static POOL_NEXT: spin::Mutex<usize> = spin::Mutex::new(0);
static ROOT: spin::Mutex<u64> = spin::Mutex::new(0);
static NX: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

unsafe extern "C" {
    static __kernel_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __kernel_end: u8;
}

/// The physical range the kernel image occupies.
pub fn kernel_image() -> (u64, u64) {
    (
        &raw const __kernel_start as u64,
        &raw const __kernel_end as u64,
    )
}

/// Direct-map address of physical address `pa`.
#[inline]
pub fn phys_to_virt(pa: u64) -> *mut u8 {
    (PHYS_OFFSET + pa) as *mut u8
}

/// Physical address behind a direct-map or kernel-image virtual address.
#[inline]
pub fn virt_to_phys(va: u64) -> u64 {
    if va >= PHYS_OFFSET {
        va - PHYS_OFFSET
    } else {
        va
    }
}

fn alloc_table() -> u64 {
    let mut next = POOL_NEXT.lock();
    assert!(*next < POOL_TABLES, "page-table pool exhausted");
    // SAFETY: each pool slot is handed out once; the pool is identity mapped.
    let t = unsafe { (&raw mut POOL[*next]) as u64 };
    *next += 1;
    t
}

/// Tables are in the identity-mapped image, so a table's physical address is
/// also a valid pointer to it.
fn table(pa: u64) -> *mut u64 {
    pa as *mut u64
}

/// Returns the entry for `va` at `level` (4 = PML4 .. 1 = PT), creating the
/// intermediate tables on the way down.
fn walk_create(root: u64, va: u64, level: u32) -> *mut u64 {
    let mut t = root;
    for l in (level + 1..=4).rev() {
        let idx = ((va >> (12 + 9 * (l - 1))) & 511) as usize;
        // SAFETY: `t` is a live page table from the pool.
        let e = unsafe { table(t).add(idx) };
        // SAFETY: `e` points at entry `idx` (< 512) of the live page table `t`.
        let v = unsafe { *e };
        if v & PRESENT == 0 {
            let n = alloc_table();
            // SAFETY: `e` points at entry `idx` of the live page table `t`, and `n` is a fresh
            // zeroed table from the pool.
            unsafe { *e = n | PRESENT | WRITABLE };
            t = n;
        } else {
            assert!(v & HUGE == 0, "walk through a huge page at {va:#x}");
            t = v & ADDR_MASK;
        }
    }
    let idx = ((va >> (12 + 9 * (level - 1))) & 511) as usize;
    // SAFETY: `t` is a live page table.
    unsafe { table(t).add(idx) }
}

/// Builds the kernel page tables for `map` and switches to them.
pub fn init(map: &MemoryMap, nx_enabled: bool) {
    let nx = if nx_enabled { NO_EXECUTE } else { 0 };
    NX.store(nx, core::sync::atomic::Ordering::Relaxed);
    let root = alloc_table();
    let (text_end, rodata_end) = (&raw const __text_end as u64, &raw const __rodata_end as u64);
    let (start, end) = kernel_image();
    let guards = stacks::static_stacks().map(|(_, g, _)| g as u64);
    let mut va = start;
    while va < end {
        if !guards.contains(&va) {
            let flags = if va < text_end {
                PRESENT | GLOBAL
            } else if va < rodata_end {
                PRESENT | GLOBAL | nx
            } else {
                PRESENT | GLOBAL | WRITABLE | nx
            };
            // SAFETY: entry pointer into a pool table.
            unsafe { *walk_create(root, va, 1) = va | flags };
        }
        va += 4096;
    }
    const TWO_MIB: u64 = 2 << 20;
    for r in map.regions().iter().filter(|r| r.kind == RegionKind::Ram) {
        let mut pa = r.start & !(TWO_MIB - 1);
        while pa < r.end {
            // SAFETY: entry pointer into a pool table.
            unsafe {
                *walk_create(root, PHYS_OFFSET + pa, 2) =
                    pa | PRESENT | WRITABLE | HUGE | GLOBAL | nx
            };
            pa += TWO_MIB;
        }
    }
    *ROOT.lock() = root;
    // SAFETY: the new tables map the running code, stack and data identically.
    unsafe { core::arch::asm!("mov cr3, {}", in(reg) root, options(nostack)) };
}

/// Page-table entry flags mapping `va`, and the physical address, if mapped.
pub fn translate(va: u64) -> Option<(u64, u64)> {
    let mut t = *ROOT.lock();
    for l in (1..=4u32).rev() {
        let idx = ((va >> (12 + 9 * (l - 1))) & 511) as usize;
        // SAFETY: walking live tables read-only.
        let e = unsafe { *table(t).add(idx) };
        if e & PRESENT == 0 {
            return None;
        }
        if l == 1 || e & HUGE != 0 {
            let page = 1u64 << (12 + 9 * (l - 1));
            return Some((
                (e & ADDR_MASK & !(page - 1)) + (va & (page - 1)),
                e & !ADDR_MASK,
            ));
        }
        t = e & ADDR_MASK;
    }
    None
}

/// Maps the 4 KiB page at `va` to `pa` (writable, NX). `va` must lie outside
/// the direct map's huge pages.
pub fn map_page(va: u64, pa: u64) {
    let nx = NX.load(core::sync::atomic::Ordering::Relaxed);
    map_page_flags(va, pa, PRESENT | WRITABLE | GLOBAL | nx);
}

fn map_page_flags(va: u64, pa: u64, flags: u64) {
    let root = *ROOT.lock();
    // SAFETY: entry pointer into a live table.
    unsafe { *walk_create(root, va, 1) = pa | flags };
    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(va));
}

/// Page-table entry bit: write-through.
const WRITE_THROUGH: u64 = 1 << 3;
/// Page-table entry bit: caching disabled.
const NO_CACHE: u64 = 1 << 4;

/// Maps the device registers at physical `pa` at `va`: writable, uncached,
/// NX (the local APIC).
pub fn map_mmio(va: u64, pa: u64) {
    let nx = NX.load(core::sync::atomic::Ordering::Relaxed);
    map_page_flags(va, pa, PRESENT | WRITABLE | NO_CACHE | WRITE_THROUGH | nx);
}

/// Identity maps the page at physical `pa` writable and executable: the
/// AP start-up trampoline turns paging on while running there (and keeps
/// its few bytes of stack at the page's top). Undo with [`unmap_page`] once
/// no CPU runs there.
pub fn map_identity_exec(pa: u64) {
    map_page_flags(pa, pa, PRESENT | WRITABLE);
}

/// The physical address of the kernel's top-level page table (what CR3
/// holds on every CPU); inside the image, so below 4 GiB.
pub fn root() -> u64 {
    *ROOT.lock()
}

/// Makes `[pa, pa + len)` reachable through the direct map, mapping 4 KiB
/// pages (read-only, NX) where the RAM map left holes, e.g. for firmware
/// tables in reserved memory. Returns the direct-map pointer.
pub fn direct_map_range(pa: u64, len: usize) -> *const u8 {
    let nx = NX.load(core::sync::atomic::Ordering::Relaxed);
    let mut page = pa & !4095;
    while page < pa + len as u64 {
        let va = PHYS_OFFSET + page;
        if translate(va).is_none() {
            map_page_flags(va, page, PRESENT | GLOBAL | nx);
        }
        page += 4096;
    }
    phys_to_virt(pa)
}

/// Unmaps the 4 KiB page at `va` (mapped by [`map_page`]).
pub fn unmap_page(va: u64) {
    let root = *ROOT.lock();
    // SAFETY: entry pointer into a live table.
    unsafe { *walk_create(root, va, 1) = 0 };
    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(va));
}
