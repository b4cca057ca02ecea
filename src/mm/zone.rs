//! The zone: the buddy free lists over the mem_map, its lock, and its
//! watermarks (`mm/page_alloc.c`: `__free_one_page`, `__rmqueue_smallest`,
//! `expand`, `__setup_per_zone_wmarks`, `__zone_watermark_ok`).
//!
//! kreclaim has one zone, "Normal", spanning every usable page. Free blocks
//! of order `o` (2^o pages, aligned to 2^o pages) sit on `free_area[o]`, an
//! intrusive doubly-linked list threaded through the [`Page`]s by mem_map
//! index, so a buddy is taken off its list in O(1) when it merges.

use super::page::{NIL, PAGE_SHIFT, Page, PageFlags, PageOwner};
use crate::sync::SpinLock;
use crate::sync::lockdep::{self, Acquire, LockdepMap};
use core::cell::UnsafeCell;
use core::panic::Location;
use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

/// Largest block order (Linux's MAX_PAGE_ORDER): blocks of up to 4 MiB.
pub const MAX_ORDER: u32 = 10;
/// Number of block orders (0..=MAX_ORDER).
pub const NR_ORDERS: usize = MAX_ORDER as usize + 1;
/// Pages in a largest block.
pub const MAX_ORDER_NR_PAGES: u64 = 1 << MAX_ORDER;
/// Orders above this are "costly" (Linux's PAGE_ALLOC_COSTLY_ORDER).
pub const PAGE_ALLOC_COSTLY_ORDER: u32 = 3;
/// Linux's default `vm.watermark_scale_factor` (in 1/10000 of memory).
pub const WATERMARK_SCALE_FACTOR: u64 = 10;

/// Which watermark an allocation is checked against, plus how it may dip
/// below it (mm/internal.h `ALLOC_*`, same values).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct AllocFlags(pub u32);

impl AllocFlags {
    /// Check against the min watermark.
    pub const WMARK_MIN: AllocFlags = AllocFlags(0);
    /// Check against the low watermark.
    pub const WMARK_LOW: AllocFlags = AllocFlags(1);
    /// Check against the high watermark.
    pub const WMARK_HIGH: AllocFlags = AllocFlags(2);
    /// Ignore the watermarks entirely (PF_MEMALLOC, __GFP_MEMALLOC).
    pub const NO_WATERMARKS: AllocFlags = AllocFlags(0x04);
    /// An OOM victim: may use half of what is left of the min reserve.
    pub const OOM: AllocFlags = AllocFlags(0x08);
    const WMARK_MASK: u32 = 0x03;
    /// The caller cannot sleep (no __GFP_DIRECT_RECLAIM, no __GFP_NOMEMALLOC).
    pub const NON_BLOCK: AllocFlags = AllocFlags(0x10);
    /// __GFP_HIGH: may use half the min reserve.
    pub const MIN_RESERVE: AllocFlags = AllocFlags(0x20);
    /// Wake kswapd (__GFP_KSWAPD_RECLAIM).
    pub const KSWAPD: AllocFlags = AllocFlags(0x800);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: AllocFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The watermark index (0 min, 1 low, 2 high).
    pub const fn wmark(self) -> usize {
        (self.0 & Self::WMARK_MASK) as usize
    }
}

impl core::ops::BitOr for AllocFlags {
    type Output = AllocFlags;
    fn bitor(self, rhs: AllocFlags) -> AllocFlags {
        AllocFlags(self.0 | rhs.0)
    }
}

impl core::ops::BitAnd for AllocFlags {
    type Output = AllocFlags;
    fn bitand(self, rhs: AllocFlags) -> AllocFlags {
        AllocFlags(self.0 & rhs.0)
    }
}

/// The zone's three watermarks, in pages.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Watermarks {
    /// Below it only reserve users allocate; in pages.
    pub min: u64,
    /// Below it allocations wake kswapd; in pages.
    pub low: u64,
    /// kswapd reclaims until free pages reach it; in pages.
    pub high: u64,
}

/// `int_sqrt`: the largest r with r * r <= x.
pub const fn int_sqrt(x: u64) -> u64 {
    if x < 2 {
        return x;
    }
    // Newton's method from an over-estimate converges downwards.
    let mut r = x;
    let mut y = x.div_ceil(2);
    while y < r {
        r = y;
        y = (r + x / r) / 2;
    }
    r
}

/// Linux's `calculate_min_free_kbytes` default for `managed_pages` of
/// lowmem: int_sqrt(lowmem_kbytes * 16), clamped to [128, 262144].
pub const fn default_min_free_kbytes(managed_pages: u64) -> u64 {
    let lowmem_kbytes = managed_pages * (1 << (PAGE_SHIFT - 10));
    let v = int_sqrt(lowmem_kbytes * 16);
    if v < 128 {
        128
    } else if v > 262_144 {
        262_144
    } else {
        v
    }
}

/// Linux's `__setup_per_zone_wmarks` for a single zone: MIN from
/// min_free_kbytes; tmp = max(min/4, managed * watermark_scale_factor /
/// 10000); LOW = MIN + tmp; HIGH = LOW + tmp.
pub const fn compute_watermarks(managed_pages: u64, min_free_kbytes: u64) -> Watermarks {
    let min = min_free_kbytes >> (PAGE_SHIFT - 10);
    let scaled = managed_pages * WATERMARK_SCALE_FACTOR / 10_000;
    let tmp = if min / 4 > scaled { min / 4 } else { scaled };
    Watermarks {
        min,
        low: min + tmp,
        high: min + 2 * tmp,
    }
}

/// `__zone_watermark_ok`: may an allocation of `order` with `alloc_flags`
/// take pages when `free_pages` are free and the mark is `mark`?
/// `has_block(o)` says whether a free block of order `o` exists.
///
/// (1 << order) - 1 free pages are unusable for the request (Linux's
/// `__zone_watermark_unusable_free`); __GFP_HIGH takes min/2 off the mark,
/// and a non-blocking __GFP_HIGH caller a further quarter of the rest, so
/// GFP_ATOMIC needs 3/8 of it; an OOM victim (ALLOC_OOM) takes half of
/// what is left. ALLOC_NO_WATERMARKS is handled by the caller.
pub fn watermark_ok(
    free_pages: u64,
    order: u32,
    mark: u64,
    alloc_flags: AllocFlags,
    has_block: impl Fn(u32) -> bool,
) -> bool {
    let free = free_pages as i64 - ((1i64 << order) - 1);
    let mut min = mark as i64;
    if alloc_flags.contains(AllocFlags::MIN_RESERVE) {
        min -= min / 2;
        if alloc_flags.contains(AllocFlags::NON_BLOCK) {
            min -= min / 4;
        }
    }
    if alloc_flags.contains(AllocFlags::OOM) {
        min -= min / 2;
    }
    if free <= min {
        return false;
    }
    order == 0 || (order..=MAX_ORDER).any(has_block)
}

/// One free list.
#[derive(Clone, Copy)]
pub(crate) struct FreeArea {
    pub head: u32,
    pub nr_free: u64,
}

/// Everything the zone lock protects.
pub(crate) struct FreeLists {
    pub area: [FreeArea; NR_ORDERS],
    /// NR_FREE_PAGES.
    pub nr_free: u64,
    /// Bit `o` set while `area[o]` is not empty (mirrored for the lockless
    /// watermark check, like Linux's racy read of `free_area[o].nr_free`).
    pub free_orders: u32,
    pub mem_map: *const Page,
    pub start_pfn: u64,
    pub spanned: u64,
}

// SAFETY: `mem_map` points at the zone's static metadata array, only used
// under the lock (or through atomics).
unsafe impl Send for FreeLists {}

impl FreeLists {
    const fn empty() -> Self {
        Self {
            area: [FreeArea {
                head: NIL,
                nr_free: 0,
            }; NR_ORDERS],
            nr_free: 0,
            free_orders: 0,
            mem_map: core::ptr::null(),
            start_pfn: 0,
            spanned: 0,
        }
    }

    #[inline]
    pub fn page(&self, idx: u64) -> &Page {
        debug_assert!(idx < self.spanned);
        // SAFETY: idx < spanned, and the mem_map lives for ever.
        unsafe { &*self.mem_map.add(idx as usize) }
    }

    /// The mem_map index of `pfn`, if the zone spans it.
    #[inline]
    pub fn index(&self, pfn: u64) -> Option<u64> {
        let i = pfn.checked_sub(self.start_pfn)?;
        (i < self.spanned).then_some(i)
    }

    pub fn has_block(&self, order: u32) -> bool {
        self.area[order as usize].nr_free > 0
    }

    fn list_add(&mut self, idx: u64, order: u32) {
        let area = &mut self.area[order as usize];
        let head = area.head;
        area.head = idx as u32;
        area.nr_free += 1;
        self.free_orders |= 1 << order;
        let p = self.page(idx);
        p.set_next(head);
        p.set_prev(NIL);
        p.set_flags(PageFlags::BUDDY);
        p.set_order(order);
        p.set_owner_locked(PageOwner::Free);
        if head != NIL {
            self.page(head as u64).set_prev(idx as u32);
        }
    }

    /// Unlinks the free block at `idx` (O(1): the links are in the page).
    fn list_del(&mut self, idx: u64, order: u32) {
        let p = self.page(idx);
        let (next, prev) = (p.next(), p.prev());
        p.set_next(NIL);
        p.set_prev(NIL);
        p.set_flags(PageFlags::empty());
        if prev != NIL {
            self.page(prev as u64).set_next(next);
        } else {
            self.area[order as usize].head = next;
        }
        if next != NIL {
            self.page(next as u64).set_prev(prev);
        }
        self.area[order as usize].nr_free -= 1;
        if self.area[order as usize].nr_free == 0 {
            self.free_orders &= !(1 << order);
        }
    }

    /// `__free_one_page`: merges the block with its free buddies as far as
    /// they go, then puts the result on its free list.
    pub fn free_one(&mut self, mut idx: u64, mut order: u32) {
        self.nr_free += 1 << order;
        self.page(idx).set_flags(PageFlags::empty());
        // start_pfn is MAX_ORDER aligned, so buddies pair up by index too.
        while order < MAX_ORDER {
            let buddy = idx ^ (1 << order);
            if buddy >= self.spanned {
                break;
            }
            let b = self.page(buddy);
            if !b.flags().contains(PageFlags::BUDDY) || b.order() != order {
                break;
            }
            self.list_del(buddy, order);
            idx &= buddy;
            order += 1;
        }
        self.list_add(idx, order);
    }

    /// `__rmqueue_smallest` + `expand`: takes the first block of the
    /// smallest order that fits and returns the unused halves to the lists.
    /// The block comes back as an allocated HEAD owned by the kernel.
    pub fn rmqueue(&mut self, order: u32) -> Option<u64> {
        let idx = self.rmqueue_smallest(order)?;
        let p = self.page(idx);
        p.set_flags(PageFlags::HEAD);
        p.set_order(order);
        p.set_owner_locked(PageOwner::Kernel);
        p.set_private(0);
        p.set_slab_cache(core::ptr::null_mut());
        Some(idx)
    }

    /// `__rmqueue_smallest` + `expand` without marking the block: its first
    /// page is left flagless, owner Free.
    fn rmqueue_smallest(&mut self, order: u32) -> Option<u64> {
        let found = (order..=MAX_ORDER).find(|&o| self.area[o as usize].head != NIL)?;
        let idx = self.area[found as usize].head as u64;
        self.list_del(idx, found);
        let mut high = found;
        while high > order {
            high -= 1;
            self.list_add(idx + (1 << high), high);
        }
        self.nr_free -= 1 << order;
        Some(idx)
    }

    /// `rmqueue_bulk`: moves up to `count` blocks of `order` to the tail of
    /// a per-CPU list, marked PCP; returns how many it moved.
    pub fn rmqueue_bulk(&mut self, order: u32, count: u32, list: &mut PcpList) -> u32 {
        let mut i = 0;
        while i < count {
            let Some(idx) = self.rmqueue_smallest(order) else {
                break;
            };
            let p = self.page(idx);
            p.set_order(order);
            p.set_flags(PageFlags::PCP);
            list.push_tail(idx as u32);
            i += 1;
        }
        i
    }

    /// `free_pcppages_bulk`: returns `count` pages (at least; whole blocks)
    /// from `pcp` to the buddy lists, the coldest first (list tails), taking
    /// the lists round-robin from the one after `pindex`.
    pub fn free_pcppages_bulk(&mut self, pcp: &mut PerCpuPages, count: u32, pindex: usize) {
        let mut count = count.min(pcp.count) as i64;
        let mut pindex = pindex.wrapping_sub(1);
        while count > 0 {
            let mut tries = 0;
            loop {
                pindex = pindex.wrapping_add(1);
                if pindex >= NR_PCP_LISTS {
                    pindex = 0;
                }
                if !pcp.lists[pindex].is_empty() {
                    break;
                }
                tries += 1;
                if tries > NR_PCP_LISTS {
                    // count said pages were there but no list holds any.
                    debug_assert!(false, "pcp count {} with empty lists", pcp.count);
                    pcp.count = 0;
                    return;
                }
            }
            let order = pindex as u32;
            while let Some(idx) = pcp.lists[pindex].pop_tail() {
                count -= 1 << order;
                pcp.count -= 1 << order;
                self.free_one(idx as u64, order);
                if count <= 0 {
                    break;
                }
            }
        }
    }

    /// The first page of the free block (BUDDY or PCP) or allocated block
    /// (HEAD) that contains `idx`, with its order, if any. Blocks are
    /// aligned, so the candidates are `idx` rounded down to each order.
    pub fn block_containing(&self, idx: u64) -> Option<(u64, u32, PageFlags)> {
        for o in 0..=MAX_ORDER {
            let head = idx & !((1u64 << o) - 1);
            let p = self.page(head);
            let f = p.flags();
            if f.intersects(PageFlags::BUDDY | PageFlags::HEAD | PageFlags::PCP) && p.order() >= o {
                return (head + (1u64 << p.order()) > idx).then_some((head, p.order(), f));
            }
        }
        None
    }
}

/// A value on cache lines of its own (Linux's `____cacheline_aligned_in_smp`
/// for per-CPU data kept in arrays): one CPU's writes to its entry do not
/// take the line from CPUs using the entries next to it (false sharing).
/// 128 bytes: x86 prefetches lines in pairs ([`crate::platform::PREFETCH_PAIR`]).
#[repr(align(128))]
pub(crate) struct CacheAligned<T>(pub(crate) T);
const _: () = assert!(core::mem::align_of::<CacheAligned<u8>>() >= crate::platform::PREFETCH_PAIR);

impl<T> core::ops::Deref for CacheAligned<T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// CPUs with a per-CPU page set (kreclaim's MAX_CPUS). A CPU numbered
/// above it uses the buddy lists directly.
pub const PCP_MAX_CPUS: usize = 16;
/// One per-CPU list per order 0..=PAGE_ALLOC_COSTLY_ORDER (Linux has one per
/// order and migrate type; kreclaim has no migrate types).
pub const NR_PCP_LISTS: usize = PAGE_ALLOC_COSTLY_ORDER as usize + 1;

/// `zone_batchsize` (Linux 6.6): 0.1% of the zone or 1 MiB, whichever is
/// smaller, divided by 4, at least 1, then `rounddown_pow_of_two(batch +
/// batch / 2) - 1` (the historical "*= 4 below" happens in the high mark).
pub const fn zone_batchsize(managed_pages: u64) -> u32 {
    let cap = (1 << 20) >> PAGE_SHIFT;
    let mut batch = managed_pages >> 10;
    if batch > cap {
        batch = cap;
    }
    batch /= 4;
    if batch < 1 {
        batch = 1;
    }
    let x = batch + batch / 2;
    // rounddown_pow_of_two(x) for x >= 1.
    let pow = 1u64 << (63 - x.leading_zeros());
    (pow - 1) as u32
}

/// `zone_highsize` (Linux 6.6, `percpu_pagelist_high_fraction` 0): the
/// zone's low watermark split across the CPUs, so that full pcp lists never
/// start background reclaim early; at least `4 * batch`.
pub const fn zone_highsize(low_wmark: u64, batch: u32, nr_cpus: usize) -> u32 {
    let cpus = if nr_cpus == 0 { 1 } else { nr_cpus as u64 };
    let high = low_wmark / cpus;
    let floor = (batch as u64) << 2;
    (if high > floor { high } else { floor }) as u32
}

/// One per-CPU list: a doubly-linked list threaded through the [`Page`]s
/// (by mem_map index, like the buddy lists). The head is the hottest page.
#[derive(Clone, Copy)]
pub struct PcpList {
    head: u32,
    tail: u32,
}

/// The mem_map entry `idx` (the mem_map lives for ever once set). On the
/// per-CPU fast paths: no check of `idx` (every index on a list was put
/// there from the mem_map), and a relaxed load of the map (set before the
/// first block reached a list; the list's lock orders the two).
#[inline(always)]
pub(crate) fn pcp_page(idx: u32) -> &'static Page {
    let map = ZONE.mem_map.load(Ordering::Relaxed);
    // SAFETY: idx names a page of the zone (it was put on a list from the
    // mem_map), and the mem_map is never freed.
    unsafe { &*map.wrapping_add(idx as usize) }
}

impl PcpList {
    const fn new() -> Self {
        Self {
            head: NIL,
            tail: NIL,
        }
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.head == NIL
    }

    /// `list_add`: the freed page becomes the hottest.
    #[inline(always)]
    pub fn push_head(&mut self, idx: u32) {
        let p = pcp_page(idx);
        p.set_next(self.head);
        p.set_prev(NIL);
        if self.head != NIL {
            pcp_page(self.head).set_prev(idx);
        } else {
            self.tail = idx;
        }
        self.head = idx;
    }

    /// `list_add_tail` (a refill from the buddy lists).
    pub fn push_tail(&mut self, idx: u32) {
        let p = pcp_page(idx);
        p.set_prev(self.tail);
        p.set_next(NIL);
        if self.tail != NIL {
            pcp_page(self.tail).set_next(idx);
        } else {
            self.head = idx;
        }
        self.tail = idx;
    }

    /// Takes the hottest page (allocation).
    #[inline(always)]
    pub fn pop_head(&mut self) -> Option<u32> {
        let idx = self.head;
        if idx == NIL {
            return None;
        }
        let p = pcp_page(idx);
        self.head = p.next();
        if self.head != NIL {
            pcp_page(self.head).set_prev(NIL);
        } else {
            self.tail = NIL;
        }
        p.set_next(NIL);
        Some(idx)
    }

    /// Takes the coldest page (`free_pcppages_bulk`).
    pub fn pop_tail(&mut self) -> Option<u32> {
        let idx = self.tail;
        if idx == NIL {
            return None;
        }
        let p = pcp_page(idx);
        self.tail = p.prev();
        if self.tail != NIL {
            pcp_page(self.tail).set_next(NIL);
        } else {
            self.head = NIL;
        }
        p.set_prev(NIL);
        Some(idx)
    }
}

/// Linux's `struct per_cpu_pages`: one CPU's cache of free blocks of order
/// 0..=3, under its own `pcp->lock` (`PcpLock`: taken with trylock on the
/// fast paths, as Linux 6.x does, so a drain from another CPU never races).
pub struct PerCpuPages {
    /// Pages on the lists (an order-o block counts 2^o).
    pub count: u32,
    /// Above this many pages, frees return a batch to the buddy lists.
    pub high: u32,
    /// Blocks moved at once between the lists and the buddy allocator.
    pub batch: u32,
    /// Linux 6.6's `free_factor`: grows while frees overflow `high`
    /// (bigger batches go back), halves on every allocation.
    pub free_factor: u8,
    /// One list per order.
    pub lists: [PcpList; NR_PCP_LISTS],
}

impl PerCpuPages {
    const fn new() -> Self {
        Self {
            count: 0,
            high: 0,
            batch: 1,
            free_factor: 0,
            lists: [const { PcpList::new() }; NR_PCP_LISTS],
        }
    }

    /// `nr_pcp_free` (Linux 6.6): how many pages a free above `high` returns.
    pub fn nr_pcp_free(&mut self, high: u32, free_high: bool) -> u32 {
        let batch = self.batch;
        if free_high {
            return self.count;
        }
        // Check for PCP disabled or boot pageset.
        if high < batch {
            return 1;
        }
        let min_nr_free = batch;
        let max_nr_free = high - batch;
        let b = (batch as u64) << self.free_factor;
        if b < max_nr_free as u64 {
            self.free_factor += 1;
        }
        // The kernel's clamp(): min(max(b, lo), hi).
        b.max(min_nr_free as u64).min(max_nr_free as u64) as u32
    }

    /// `nr_pcp_high` (Linux 6.6): the high mark, or 0 for a free that
    /// flushes everything. (Linux also cuts it to `4 * batch` while the zone
    /// is marked ZONE_RECLAIM_ACTIVE by kswapd; kreclaim has no such mark.)
    pub fn nr_pcp_high(&self, free_high: bool) -> u32 {
        if self.high == 0 || free_high {
            return 0;
        }
        self.high
    }
}

/// Linux's `pcp->lock` as `pcp_spin_trylock` takes it: a flag taken with one
/// atomic exchange, by the owning CPU with interrupts masked (the caller's
/// [`IrqGuard`](crate::platform::IrqGuard), taken before it reads its CPU
/// number, so the CPU cannot change and no interrupt handler or preempting
/// task runs on it while the lock is held). The owner only ever tries it:
/// held means a drain from another CPU (or, with a test hook, a holder on
/// this one), and the caller falls back to the zone lock. Drains and
/// `zone_pcp_update` spin for it ([`PcpLock::lock`]); a holder never
/// blocks, never sleeps and is never preempted, so the wait is short.
/// Lockdep sees it (class `pcp->lock`) only when it is on: the fast paths
/// run only with lockdep off.
pub(crate) struct PcpLock {
    locked: AtomicBool,
    dep_map: LockdepMap,
    pcp: UnsafeCell<PerCpuPages>,
}

// SAFETY: `pcp` is only reached through a `PcpGuard`, which exists only
// while `locked` was set by its exchange: one holder at a time.
unsafe impl Sync for PcpLock {}

impl PcpLock {
    const fn new() -> Self {
        Self {
            locked: AtomicBool::new(false),
            dep_map: LockdepMap::new(crate::lock_class!("pcp->lock")),
            pcp: UnsafeCell::new(PerCpuPages::new()),
        }
    }

    fn addr(&self) -> usize {
        self as *const Self as usize
    }

    /// `pcp_spin_trylock` for the fast paths, which run only with lockdep
    /// off: one exchange, no guard, no lockdep; `true` if taken. The caller
    /// uses the lists through [`PcpLock::pcp_mut`] and lets go with
    /// [`PcpLock::release`].
    #[inline(always)]
    pub(crate) fn try_acquire(&self) -> bool {
        !self.locked.swap(true, Ordering::Acquire)
    }

    /// The lists, for the holder of a [`PcpLock::try_acquire`].
    ///
    /// # Safety
    /// The caller holds the lock (its `try_acquire` returned `true`, no
    /// `release` since) and uses no other reference to the lists.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn pcp_mut(&self) -> &mut PerCpuPages {
        // SAFETY: the caller holds the lock, so no one else uses `pcp`.
        unsafe { &mut *self.pcp.get() }
    }

    /// Lets go of what [`PcpLock::try_acquire`] took.
    #[inline(always)]
    pub(crate) fn release(&self) {
        self.locked.store(false, Ordering::Release);
    }

    /// `pcp_spin_trylock`: the lock if it is free, else `None` (the caller
    /// uses the zone). No lockdep call unless lockdep is on.
    #[inline(always)]
    #[track_caller]
    pub(crate) fn try_lock(&self) -> Option<PcpGuard<'_>> {
        if self.locked.swap(true, Ordering::Acquire) {
            return None;
        }
        let annotated = lockdep::mode() != lockdep::LockdepMode::Off;
        if annotated {
            lockdep::lock_acquire(
                &self.dep_map,
                self.addr(),
                Acquire::EXCLUSIVE.try_(),
                Location::caller(),
            );
        }
        Some(PcpGuard {
            lock: self,
            annotated,
        })
    }

    /// Spins until the lock is free (drains, `zone_pcp_update`, readers),
    /// with interrupts masked by the caller.
    #[track_caller]
    pub(crate) fn lock(&self) -> PcpGuard<'_> {
        let annotated = lockdep::mode() != lockdep::LockdepMode::Off;
        if annotated {
            lockdep::lock_acquire(
                &self.dep_map,
                self.addr(),
                Acquire::EXCLUSIVE,
                Location::caller(),
            );
        }
        let mut spins = 0u32;
        while self.locked.swap(true, Ordering::Acquire) {
            while self.locked.load(Ordering::Relaxed) {
                crate::platform::spin_relax(&mut spins);
            }
        }
        PcpGuard {
            lock: self,
            annotated,
        }
    }
}

/// A held [`PcpLock`]; dropping it releases the lock.
pub(crate) struct PcpGuard<'a> {
    lock: &'a PcpLock,
    annotated: bool,
}

impl core::ops::Deref for PcpGuard<'_> {
    type Target = PerCpuPages;
    #[inline(always)]
    fn deref(&self) -> &PerCpuPages {
        // SAFETY: the guard holds the lock (see `PcpLock`).
        unsafe { &*self.lock.pcp.get() }
    }
}

impl core::ops::DerefMut for PcpGuard<'_> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut PerCpuPages {
        // SAFETY: the guard holds the lock (see `PcpLock`), and `&mut self`
        // makes this the only reference through it.
        unsafe { &mut *self.lock.pcp.get() }
    }
}

impl Drop for PcpGuard<'_> {
    #[inline(always)]
    #[track_caller]
    fn drop(&mut self) {
        if self.annotated {
            lockdep::lock_release(&self.lock.dep_map, self.lock.addr(), Location::caller());
        }
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// A memory zone.
pub struct Zone {
    /// The zone's name ("Normal").
    pub name: &'static str,
    pub(crate) lock: SpinLock<FreeLists>,
    /// Pages handed to the buddy allocator at init.
    pub(crate) managed: AtomicUsize,
    /// Pages the mem_map occupies (carved out of the managed RAM).
    pub(crate) memmap_pages: AtomicUsize,
    /// NR_FREE_PAGES, mirrored from the locked count for lockless readers.
    pub(crate) free: AtomicU64,
    pub(crate) wmark: [AtomicU64; 3],
    pub(crate) min_free_kbytes: AtomicU64,
    pub(crate) mem_map: AtomicPtr<Page>,
    pub(crate) start_pfn: AtomicU64,
    pub(crate) spanned: AtomicU64,
    /// The locked `free_orders`, mirrored for lockless readers.
    pub(crate) free_orders: AtomicU32,
    /// Linux's `zone->per_cpu_pageset`, one per CPU, each under its
    /// `pcp->lock`; a cache line (or more) each.
    pub(crate) pcp: [CacheAligned<PcpLock>; PCP_MAX_CPUS],
}

impl Zone {
    pub(crate) const fn new(name: &'static str) -> Self {
        Self {
            name,
            lock: SpinLock::new(FreeLists::empty(), crate::lock_class!("zone->lock")),
            managed: AtomicUsize::new(0),
            memmap_pages: AtomicUsize::new(0),
            free: AtomicU64::new(0),
            wmark: [const { AtomicU64::new(0) }; 3],
            min_free_kbytes: AtomicU64::new(0),
            mem_map: AtomicPtr::new(core::ptr::null_mut()),
            start_pfn: AtomicU64::new(0),
            spanned: AtomicU64::new(0),
            free_orders: AtomicU32::new(0),
            pcp: [const { CacheAligned(PcpLock::new()) }; PCP_MAX_CPUS],
        }
    }

    /// The current watermarks.
    pub fn watermarks(&self) -> Watermarks {
        Watermarks {
            min: self.wmark[0].load(Ordering::Relaxed),
            low: self.wmark[1].load(Ordering::Relaxed),
            high: self.wmark[2].load(Ordering::Relaxed),
        }
    }

    pub(crate) fn set_watermarks(&self, w: Watermarks) {
        self.wmark[0].store(w.min, Ordering::Relaxed);
        self.wmark[1].store(w.low, Ordering::Relaxed);
        self.wmark[2].store(w.high, Ordering::Relaxed);
    }

    /// The metadata of `pfn`, if the zone spans it.
    #[inline]
    pub fn pfn_to_page(&self, pfn: u64) -> Option<&'static Page> {
        let map = self.mem_map.load(Ordering::Acquire);
        let i = pfn.checked_sub(self.start_pfn.load(Ordering::Relaxed))?;
        if map.is_null() || i >= self.spanned.load(Ordering::Relaxed) {
            return None;
        }
        // SAFETY: inside the mem_map, which lives for ever.
        Some(unsafe { &*map.add(i as usize) })
    }

    /// The pfn whose metadata `page` is.
    pub fn page_to_pfn(&self, page: &Page) -> Option<u64> {
        let map = self.mem_map.load(Ordering::Acquire) as usize;
        let a = page as *const Page as usize;
        let sz = core::mem::size_of::<Page>();
        if map == 0 || a < map || !(a - map).is_multiple_of(sz) {
            return None;
        }
        let i = ((a - map) / sz) as u64;
        (i < self.spanned.load(Ordering::Relaxed))
            .then(|| self.start_pfn.load(Ordering::Relaxed) + i)
    }
}

/// The (only) zone. It lives here, below both the page allocator and
/// reclaim, so that vmscan reads the zone without depending on page_alloc.
pub(crate) static ZONE: Zone = Zone::new("Normal");

/// `zone_watermark_ok` on the zone as it is now.
pub fn zone_watermark_ok(order: u32, mark: u64, alloc_flags: AllocFlags) -> bool {
    let z = ZONE.lock.lock();
    watermark_ok(z.nr_free, order, mark, alloc_flags, |o| z.has_block(o))
}

/// `zone_watermark_fast`: the same check without the zone lock, on the
/// mirrored free count and non-empty orders (Linux reads them racily too).
pub(crate) fn zone_watermark_fast(order: u32, mark: u64, alloc_flags: AllocFlags) -> bool {
    let free = ZONE.free.load(Ordering::Relaxed);
    if order == 0 && free > mark {
        return true;
    }
    let orders = ZONE.free_orders.load(Ordering::Relaxed);
    watermark_ok(free, order, mark, alloc_flags, |o| orders & (1 << o) != 0)
}

/// Free pages now (NR_FREE_PAGES).
pub fn nr_free_pages() -> u64 {
    ZONE.free.load(Ordering::Relaxed)
}

/// The zone's min/low/high watermarks, in pages.
pub fn watermarks() -> Watermarks {
    ZONE.watermarks()
}

/// The lowest watermark the zone was last logged below (0: none, 1: LOW,
/// 2: MIN), so that debug logging shows crossings, not every slow path.
pub(crate) static WMARK_LOGGED: AtomicU8 = AtomicU8::new(0);

/// kswapd balanced the zone: the next fall below a watermark is logged.
pub(crate) fn note_zone_balanced() {
    WMARK_LOGGED.store(0, Ordering::Relaxed);
}
