//! The page allocator: a buddy allocator over every usable page of RAM, one
//! zone ("Normal"), Linux's watermarks and Linux's slow path
//! (`mm/page_alloc.c`).
//!
//! `alloc_pages(gfp, order)`:
//! 1. applies the task's scoped constraints (`current_gfp_context`), calls
//!    `might_alloc` when it may block, consults fault injection
//!    (`fail_page_alloc`, never for `__GFP_NOFAIL`);
//! 2. fast path: the LOW watermark on NR_FREE_PAGES, then this CPU's per-CPU
//!    list for orders <= 3, else the buddy lists;
//! 3. `__alloc_pages_slowpath` in Linux's order: wake kswapd; retry at MIN
//!    with the __GFP_HIGH / non-blocking reserves; PF_MEMALLOC or
//!    __GFP_MEMALLOC (without __GFP_NOMEMALLOC) ignore the watermarks; no
//!    __GFP_DIRECT_RECLAIM -> fail; PF_MEMALLOC -> fail (reclaim never
//!    recurses into reclaim); direct reclaim; __GFP_NORETRY -> fail; costly
//!    order (> 3) without __GFP_RETRY_MAYFAIL -> fail; retry while reclaim
//!    makes progress, giving up after MAX_RECLAIM_RETRIES rounds without;
//!    the OOM stage; __GFP_NOFAIL loops; else fail with a report.
//!
//! Deviations from Linux, and why:
//! - No OOM killer (there are no processes to kill). Where Linux would kill,
//!   or (for !__GFP_FS) pretend progress and loop, kreclaim fails the
//!   allocation with a report, so GFP_KERNEL and GFP_NOFS allocations of
//!   order <= 3 are not "too small to fail". __GFP_NOFAIL still gets the
//!   reserves Linux grants it at that point, and loops.
//! - `should_reclaim_retry` counts rounds without progress only. Linux also
//!   stops early when free + reclaimable LRU pages could not meet MIN; here
//!   reclaimable memory sits behind shrinkers whose counts the allocator
//!   does not see, so that estimate would always say "give up".
//! - No migrate types, compaction or highatomic reserve; one zone.
//! - Per-CPU page lists follow Linux 6.6 (see `zone_pcp_update`,
//!   `rmqueue_pcplist`, `free_unref_page`); the slow path also drains them
//!   once before its OOM stage, not only after reclaim made progress.
//! - Every allocated block is marked (HEAD + order) so `free_pages` detects
//!   double frees, frees of a tail page and frees with the wrong order, and
//!   refuses them (Linux's `free_pages` trusts its caller).

use super::fault_inject::{self, FAIL_PAGE_ALLOC};
use super::fs_reclaim;
use super::gfp::Gfp;
use super::oom_kill;
use super::page::{NIL, Page, PageFlags};
use super::scope::{MemallocScope, current_gfp_context};
use super::vmscan;
use super::zone::{
    AllocFlags, FreeLists, MAX_ORDER_NR_PAGES, NR_ORDERS, PCP_MAX_CPUS, PerCpuPages, WMARK_LOGGED,
    ZONE, Zone, compute_watermarks, default_min_free_kbytes, zone_watermark_fast,
};
use crate::bootinfo::{MemoryMap, Region, RegionKind};
use crate::sync::SpinLock;
use crate::task::{self, TaskFlags};
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

pub use super::gfp::AllocError;
pub use super::page::{PAGE_SHIFT, PAGE_SIZE, PageOwner, PhysAddr, page_address, virt_to_phys};
pub use super::vmscan::MAX_RECLAIM_RETRIES;
pub use super::zone::{
    MAX_ORDER, NR_PCP_LISTS, PAGE_ALLOC_COSTLY_ORDER, WATERMARK_SCALE_FACTOR, Watermarks,
    nr_free_pages, watermark_ok, watermarks, zone_batchsize, zone_highsize, zone_watermark_ok,
};

static INIT_STARTED: AtomicBool = AtomicBool::new(false);
static READY: AtomicBool = AtomicBool::new(false);

/// The (only) zone.
pub fn zone() -> &'static Zone {
    &ZONE
}

// ---------------------------------------------------------------------------
// Initialisation

/// Why [`init`] could not bring the allocator up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitError {
    /// `init` already ran.
    AlreadyInitialised,
    /// The (capped) memory map holds no usable RAM.
    NoMemory,
    /// No usable region can hold the mem_map of `pages` pages.
    NoRoomForMemMap {
        /// Page frames the mem_map must describe.
        pages: u64,
    },
    /// More page frames than the free-list links can index.
    TooMuchMemory,
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyInitialised => f.write_str("the page allocator is already initialised"),
            Self::NoMemory => f.write_str("no usable RAM for the page allocator"),
            Self::NoRoomForMemMap { pages } => {
                write!(f, "no usable region can hold the mem_map ({pages} pages)")
            }
            Self::TooMuchMemory => f.write_str("too many page frames for the page allocator"),
        }
    }
}

/// The RAM regions of `map`, trimmed to page boundaries.
fn ram_regions(map: &MemoryMap) -> MemoryMap {
    let mut out = MemoryMap::new();
    for r in map.regions().iter().filter(|r| r.kind == RegionKind::Ram) {
        let start = r.start.next_multiple_of(PAGE_SIZE as u64);
        let end = r.end & !(PAGE_SIZE as u64 - 1);
        if end > start {
            out.push(Region {
                start,
                end,
                kind: RegionKind::Ram,
            });
        }
    }
    out
}

/// `mem=`: keeps the lowest `cap` bytes (rounded down to pages) of the RAM
/// regions in `map`, dropping the rest.
///
/// Deviation: Linux's x86 `mem=` removes RAM above the physical address
/// `cap`, so holes and the kernel image count against it; kreclaim caps the
/// amount of RAM handed to the page allocator, which makes experiments
/// independent of where the firmware puts holes.
pub fn cap_memory_map(map: &MemoryMap, cap: u64) -> MemoryMap {
    let mut left = cap & !(PAGE_SIZE as u64 - 1);
    let mut out = MemoryMap::new();
    for r in ram_regions(map).regions() {
        if left == 0 {
            break;
        }
        let take = r.len().min(left);
        out.push(Region {
            end: r.start + take,
            ..*r
        });
        left -= take;
    }
    out
}

/// The smallest `mem=` accepted: below it the kernel cannot run its threads.
pub const MEM_MIN: u64 = 4 << 20;

/// Brings the allocator up over `usable` RAM, capped to `mem_cap` bytes
/// (`mem=`), with `min_free_kbytes` (`min_free_kbytes=`, default Linux's
/// formula). The mem_map is carved out of that RAM. Call once, early.
pub fn init(
    usable: &MemoryMap,
    mem_cap: Option<u64>,
    min_free_kbytes: Option<u64>,
) -> Result<(), InitError> {
    if INIT_STARTED.swap(true, Ordering::AcqRel) {
        return Err(InitError::AlreadyInitialised);
    }
    let mut map = match mem_cap {
        Some(cap) => cap_memory_map(usable, cap),
        None => ram_regions(usable),
    };
    let regions = map.regions();
    let (Some(first), Some(last)) = (regions.first(), regions.last()) else {
        return Err(InitError::NoMemory);
    };
    let start_pfn = (first.start >> PAGE_SHIFT) & !(MAX_ORDER_NR_PAGES - 1);
    let spanned = (last.end >> PAGE_SHIFT) - start_pfn;
    if spanned >= NIL as u64 {
        return Err(InitError::TooMuchMemory);
    }
    let memmap_bytes = spanned * core::mem::size_of::<Page>() as u64;
    let memmap_pages = memmap_bytes.div_ceil(PAGE_SIZE as u64);
    let Some(home) = regions
        .iter()
        .find(|r| r.len() >= memmap_pages * PAGE_SIZE as u64)
        .map(|r| r.start)
    else {
        return Err(InitError::NoRoomForMemMap {
            pages: memmap_pages,
        });
    };
    map.carve(home, home + memmap_pages * PAGE_SIZE as u64);

    let mem_map = page_address(PhysAddr::new(home)) as *mut Page;
    for i in 0..spanned as usize {
        // SAFETY: the mem_map pages are ours alone: usable RAM, direct
        // mapped, and removed from what the buddy allocator will manage.
        unsafe { mem_map.add(i).write(Page::reserved()) };
    }

    let mut managed = 0;
    {
        let mut z = ZONE.lock.lock();
        z.mem_map = mem_map;
        z.start_pfn = start_pfn;
        z.spanned = spanned;
        for i in 0..memmap_pages {
            let idx = (home >> PAGE_SHIFT) - start_pfn + i;
            z.page(idx).set_owner_locked(PageOwner::Other("mem_map"));
        }
        for r in map.regions() {
            let (mut pfn, end) = (r.start >> PAGE_SHIFT, r.end >> PAGE_SHIFT);
            while pfn < end {
                // The largest aligned block that starts here and fits.
                let mut order = (pfn.trailing_zeros()).min(MAX_ORDER);
                while pfn + (1 << order) > end {
                    order -= 1;
                }
                z.free_one(pfn - start_pfn, order);
                managed += 1u64 << order;
                pfn += 1 << order;
            }
        }
        publish(&z);
    }
    ZONE.start_pfn.store(start_pfn, Ordering::Relaxed);
    ZONE.spanned.store(spanned, Ordering::Relaxed);
    ZONE.managed.store(managed as usize, Ordering::Relaxed);
    ZONE.memmap_pages
        .store(memmap_pages as usize, Ordering::Relaxed);
    ZONE.mem_map.store(mem_map, Ordering::Release);
    let mfk = min_free_kbytes.unwrap_or_else(|| default_min_free_kbytes(managed));
    set_min_free_kbytes(mfk);
    READY.store(true, Ordering::Release);

    let w = watermarks();
    log::info!(
        "page_alloc: zone {}: {} MiB managed ({} pages{}), mem_map {} KiB; watermarks min {} low {} \
         high {} pages (min_free_kbytes={})",
        ZONE.name,
        (managed << PAGE_SHIFT) >> 20,
        managed,
        if mem_cap.is_some() {
            ", capped by mem="
        } else {
            ""
        },
        (memmap_pages << PAGE_SHIFT) >> 10,
        w.min,
        w.low,
        w.high,
        mfk
    );
    Ok(())
}

/// [`init`] over the platform's page-frame source,
/// [`Platform::usable_memory`](crate::platform::Platform::usable_memory)
/// ([`InitError::NoMemory`] without a platform): how a kernel brings the
/// allocator up without building a memory map itself.
pub fn init_from_platform(
    mem_cap: Option<u64>,
    min_free_kbytes: Option<u64>,
) -> Result<(), InitError> {
    let usable = crate::platform::get()
        .map(|p| p.usable_memory())
        .unwrap_or_default();
    init(&usable, mem_cap, min_free_kbytes)
}

/// Whether [`init`] has finished.
pub fn is_ready() -> bool {
    READY.load(Ordering::Acquire)
}

// ---------------------------------------------------------------------------
// Zone information

/// Pages handed to the buddy allocator.
pub fn managed_pages() -> u64 {
    ZONE.managed.load(Ordering::Relaxed) as u64
}

/// Pages the mem_map takes (out of the RAM given to [`init`]).
pub fn memmap_pages() -> u64 {
    ZONE.memmap_pages.load(Ordering::Relaxed) as u64
}

/// The `min_free_kbytes` the watermarks were computed from.
pub fn min_free_kbytes() -> u64 {
    ZONE.min_free_kbytes.load(Ordering::Relaxed)
}

/// Sets `vm.min_free_kbytes` and recomputes the watermarks (Linux's sysctl
/// handler calling `setup_per_zone_wmarks`).
pub fn set_min_free_kbytes(kbytes: u64) {
    ZONE.min_free_kbytes.store(kbytes, Ordering::Relaxed);
    ZONE.set_watermarks(compute_watermarks(managed_pages(), kbytes));
    zone_pcp_update();
}

/// Mirrors the locked free count and non-empty orders for lockless readers.
fn publish(z: &FreeLists) {
    ZONE.free.store(z.nr_free, Ordering::Relaxed);
    ZONE.free_orders.store(z.free_orders, Ordering::Relaxed);
}

/// Number of free blocks of each order.
pub fn free_per_order() -> [u64; NR_ORDERS] {
    let z = ZONE.lock.lock();
    core::array::from_fn(|o| z.area[o].nr_free)
}

/// The metadata of page frame `pfn`, if the allocator spans it.
#[inline]
pub fn pfn_to_page(pfn: u64) -> Option<&'static Page> {
    ZONE.pfn_to_page(pfn)
}

/// The frame number of `page`, or `None` if it is not in the mem_map.
pub fn page_to_pfn(page: &Page) -> Option<u64> {
    ZONE.page_to_pfn(page)
}

// ---------------------------------------------------------------------------
// Statistics

const FAIL_SLOTS: usize = 16;
const SLOT_USED: u32 = 1 << 31;

/// Page-allocator counters (all since boot).
pub struct PageAllocStats {
    failures: AtomicU64,
    injected_failures: AtomicU64,
    alloc_stalls: AtomicU64,
    stall_ns: AtomicU64,
    reclaimed_pages: AtomicU64,
    kswapd_wakeups: AtomicU64,
    nofail_retries: AtomicU64,
    bad_frees: AtomicU64,
    reports_suppressed: AtomicU64,
    /// (gfp bits | SLOT_USED, count) of failed allocations.
    failures_by_gfp: [(AtomicU32, AtomicU64); FAIL_SLOTS],
    failures_other_gfp: AtomicU64,
}

/// A copy of [`PageAllocStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Successful allocations.
    pub allocations: u64,
    /// Pages blocks returned with `free_pages`.
    pub frees: u64,
    /// Failed allocations (injected ones included).
    pub failures: u64,
    /// Of which fault injection caused.
    pub injected_failures: u64,
    /// Entries into direct reclaim from the slow path (Linux's allocstall).
    pub alloc_stalls: u64,
    /// Time spent in those.
    pub stall_ns: u64,
    /// Pages direct reclaim reported freed.
    pub reclaimed_pages: u64,
    /// Times an allocation woke kswapd.
    pub kswapd_wakeups: u64,
    /// Rounds a __GFP_NOFAIL allocation slept and retried.
    pub nofail_retries: u64,
    /// Rejected `free_pages` calls.
    pub bad_frees: u64,
    /// Failure reports dropped by the rate limit.
    pub reports_suppressed: u64,
}

static STATS: PageAllocStats = PageAllocStats {
    failures: AtomicU64::new(0),
    injected_failures: AtomicU64::new(0),
    alloc_stalls: AtomicU64::new(0),
    stall_ns: AtomicU64::new(0),
    reclaimed_pages: AtomicU64::new(0),
    kswapd_wakeups: AtomicU64::new(0),
    nofail_retries: AtomicU64::new(0),
    bad_frees: AtomicU64::new(0),
    reports_suppressed: AtomicU64::new(0),
    failures_by_gfp: [const { (AtomicU32::new(0), AtomicU64::new(0)) }; FAIL_SLOTS],
    failures_other_gfp: AtomicU64::new(0),
};

/// The page allocator's counters.
pub fn stats() -> &'static PageAllocStats {
    &STATS
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl PageAllocStats {
    /// Copies the counters.
    pub fn snapshot(&self) -> AllocStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AllocStats {
            allocations: vm_stat_read(VmStatItem::Allocations),
            frees: vm_stat_read(VmStatItem::Frees),
            failures: r(&self.failures),
            injected_failures: r(&self.injected_failures),
            alloc_stalls: r(&self.alloc_stalls),
            stall_ns: r(&self.stall_ns),
            reclaimed_pages: r(&self.reclaimed_pages),
            kswapd_wakeups: r(&self.kswapd_wakeups),
            nofail_retries: r(&self.nofail_retries),
            bad_frees: r(&self.bad_frees),
            reports_suppressed: r(&self.reports_suppressed),
        }
    }

    /// Failed allocations whose (effective) mask was exactly `gfp`.
    pub fn failures_for(&self, gfp: Gfp) -> u64 {
        let key = gfp.bits() | SLOT_USED;
        self.failures_by_gfp
            .iter()
            .find(|(k, _)| k.load(Ordering::Acquire) == key)
            .map_or(0, |(_, n)| n.load(Ordering::Relaxed))
    }

    /// Calls `f(gfp, failures)` for every mask that failed.
    pub fn for_each_failure(&self, mut f: impl FnMut(Gfp, u64)) {
        for (k, n) in &self.failures_by_gfp {
            let k = k.load(Ordering::Acquire);
            if k & SLOT_USED != 0 {
                f(
                    Gfp::from_bits_retain(k & !SLOT_USED),
                    n.load(Ordering::Relaxed),
                );
            }
        }
    }

    fn count_failure(&self, gfp: Gfp) {
        bump(&self.failures);
        let key = gfp.bits() | SLOT_USED;
        for (k, n) in &self.failures_by_gfp {
            match k.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    bump(n);
                    return;
                }
                Err(cur) if cur == key => {
                    bump(n);
                    return;
                }
                Err(_) => {}
            }
        }
        bump(&self.failures_other_gfp);
    }
}

impl fmt::Display for AllocStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "allocations {}, frees {}, failures {} (injected {}), allocation stalls {} ({}.{:03} ms), \
             reclaimed {} pages, kswapd wakeups {}, __GFP_NOFAIL retries {}, bad frees {}",
            self.allocations,
            self.frees,
            self.failures,
            self.injected_failures,
            self.alloc_stalls,
            self.stall_ns / 1_000_000,
            (self.stall_ns / 1000) % 1000,
            self.reclaimed_pages,
            self.kswapd_wakeups,
            self.nofail_retries,
            self.bad_frees
        )
    }
}

impl fmt::Display for PageAllocStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.snapshot())?;
        let mut first = true;
        let mut res = Ok(());
        self.for_each_failure(|gfp, n| {
            let sep = if core::mem::replace(&mut first, false) {
                "\nfailures by mode: "
            } else {
                ", "
            };
            res = res.and_then(|_| write!(f, "{sep}{gfp}: {n}"));
        });
        res?;
        let other = self.failures_other_gfp.load(Ordering::Relaxed);
        if other != 0 {
            write!(f, ", other modes: {other}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// vmstat: per-CPU deltas folded into global counters

/// The page allocator's per-CPU counted statistics (Linux's PGALLOC and
/// PGFREE, counted here per call rather than per page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmStatItem {
    /// Successful allocations.
    Allocations = 0,
    /// Successful frees.
    Frees = 1,
}

const NR_VM_STAT_ITEMS: usize = 2;

/// Linux's `vm_zone_stat` + `per_cpu_zonestat.vm_stat_diff` + the zone's
/// `stat_threshold`: a CPU adds to its own delta with interrupts masked and
/// folds it into the global counter only when it exceeds the threshold, so
/// the hot paths touch no shared cache line.
struct VmStat {
    global: [AtomicU64; NR_VM_STAT_ITEMS],
    /// A cache line per CPU: each CPU writes its own on every event.
    diff: [crate::mm::zone::CacheAligned<[AtomicU32; NR_VM_STAT_ITEMS]>; PCP_MAX_CPUS],
    threshold: AtomicU32,
}

static VMSTAT: VmStat = VmStat {
    global: [const { AtomicU64::new(0) }; NR_VM_STAT_ITEMS],
    diff: [const { crate::mm::zone::CacheAligned([const { AtomicU32::new(0) }; NR_VM_STAT_ITEMS]) };
        PCP_MAX_CPUS],
    threshold: AtomicU32::new(0),
};

/// `fls`: the 1-based index of the highest set bit, 0 for 0.
const fn fls(x: u64) -> u32 {
    64 - x.leading_zeros()
}

/// `calculate_normal_threshold` (mm/vmstat.c): 2 * fls(CPUs) * (1 +
/// fls(memory in 128 MiB units)), at most 125.
pub const fn vm_stat_threshold(managed_pages: u64, nr_cpus: usize) -> u32 {
    let mem = managed_pages >> (27 - PAGE_SHIFT);
    let t = 2 * fls(nr_cpus as u64) * (1 + fls(mem));
    if t > 125 { 125 } else { t }
}

/// The current per-CPU delta threshold.
pub fn vm_stat_threshold_now() -> u32 {
    VMSTAT.threshold.load(Ordering::Relaxed)
}

/// `__count_vm_event` with interrupts already masked on CPU `cpu`.
#[inline]
fn __count_vm_event(cpu: usize, item: VmStatItem) {
    let i = item as usize;
    match VMSTAT.diff.get(cpu) {
        Some(d) => {
            // Only this CPU writes its delta, with interrupts masked: a
            // load and a store, no atomic read-modify-write.
            let x = d[i].load(Ordering::Relaxed) + 1;
            if x > VMSTAT.threshold.load(Ordering::Relaxed) {
                VMSTAT.global[i].fetch_add(x as u64, Ordering::Relaxed);
                d[i].store(0, Ordering::Relaxed);
            } else {
                d[i].store(x, Ordering::Relaxed);
            }
        }
        None => {
            VMSTAT.global[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `count_vm_event`: masks interrupts around [`__count_vm_event`].
fn count_vm_event(item: VmStatItem) {
    let _irq = crate::platform::IrqGuard::new();
    __count_vm_event(crate::platform::cpu_id(), item);
}

/// The global counter alone (Linux's `zone_page_state`): behind by up to the
/// threshold per CPU.
pub fn vm_stat_global(item: VmStatItem) -> u64 {
    VMSTAT.global[item as usize].load(Ordering::Relaxed)
}

/// The exact count (Linux's `zone_page_state_snapshot`): the global counter
/// plus every CPU's delta.
pub fn vm_stat_read(item: VmStatItem) -> u64 {
    let i = item as usize;
    VMSTAT.diff.iter().fold(vm_stat_global(item), |acc, d| {
        acc + d[i].load(Ordering::Relaxed) as u64
    })
}

/// `refresh_cpu_vm_stats` for the running CPU: folds its deltas into the
/// global counters.
pub fn refresh_cpu_vm_stats() {
    let _irq = crate::platform::IrqGuard::new();
    if let Some(d) = VMSTAT.diff.get(crate::platform::cpu_id()) {
        for (i, c) in d.iter().enumerate() {
            let x = c.load(Ordering::Relaxed);
            if x != 0 {
                VMSTAT.global[i].fetch_add(x as u64, Ordering::Relaxed);
                c.store(0, Ordering::Relaxed);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Per-CPU page lists

/// `zone_pcp_update`: recomputes every CPU's batch and high marks from the
/// zone's size, low watermark and the CPUs online (Linux 6.6's
/// `zone_set_pageset_high_and_batch`), and the vmstat threshold (Linux's
/// `refresh_zone_stat_thresholds`). Called at init and when
/// `min_free_kbytes` changes, as Linux's `setup_per_zone_wmarks` does.
pub fn zone_pcp_update() {
    let cpus = crate::platform::nr_cpus();
    // zone_set_pageset_high_and_batch: max(1, zone_batchsize()).
    let mut batch = zone_batchsize(managed_pages()).max(1);
    let mut high = zone_highsize(watermarks().low, batch, cpus);
    if PCP_DISABLED.load(Ordering::Acquire) > 0 {
        // zone_pcp_disable: every block passes straight through.
        (batch, high) = (1, 0);
    }
    for pcp in &ZONE.pcp {
        let _irq = crate::platform::IrqGuard::new();
        let mut p = pcp.lock();
        p.batch = batch;
        p.high = high;
    }
    VMSTAT
        .threshold
        .store(vm_stat_threshold(managed_pages(), cpus), Ordering::Relaxed);
}

/// Nesting depth of [`zone_pcp_disable`].
static PCP_DISABLED: AtomicU32 = AtomicU32::new(0);

/// `zone_pcp_disable`: sets every CPU's high mark to 0 and batch to 1 and
/// drains, so that until the guard drops (`zone_pcp_enable`) each block an
/// allocation takes or a free returns moves to or from the buddy lists at
/// once and NR_FREE_PAGES is exact. Linux uses it around memory offlining
/// and `alloc_contig_range`; tests that count single pages use it too.
pub fn zone_pcp_disable() -> PcpDisabled {
    PCP_DISABLED.fetch_add(1, Ordering::AcqRel);
    zone_pcp_update();
    drain_all_pages();
    PcpDisabled(())
}

/// Re-enables the per-CPU lists when dropped (see [`zone_pcp_disable`]).
#[must_use = "the per-CPU lists come back as soon as the guard is dropped"]
pub struct PcpDisabled(());

impl Drop for PcpDisabled {
    fn drop(&mut self) {
        PCP_DISABLED.fetch_sub(1, Ordering::AcqRel);
        zone_pcp_update();
    }
}

/// The per-CPU lists' `(batch, high)` marks (the same on every CPU).
pub fn pcp_batch_high() -> (u32, u32) {
    let _irq = crate::platform::IrqGuard::new();
    let p = ZONE.pcp[0].lock();
    (p.batch, p.high)
}

/// Pages on CPU `cpu`'s lists (0 for a CPU without a set).
pub fn pcp_count(cpu: usize) -> u64 {
    let _irq = crate::platform::IrqGuard::new();
    ZONE.pcp.get(cpu).map_or(0, |p| p.lock().count as u64)
}

/// Runs `f` while holding CPU `cpu`'s `pcp->lock` (as a drain from another
/// CPU would), with interrupts masked: that CPU's allocations and frees
/// meanwhile find the lock taken and use the zone (`pcp_spin_trylock`'s
/// fallback). For tests. `f` must not sleep, nor drain that CPU's lists
/// (it would wait for itself). `None` for a CPU without a set.
pub fn with_pcp_held<R>(cpu: usize, f: impl FnOnce() -> R) -> Option<R> {
    let lock = ZONE.pcp.get(cpu)?;
    let _irq = crate::platform::IrqGuard::new();
    let _held = lock.lock();
    Some(f())
}

/// Pages on every CPU's lists (Linux's `free_pcp`): free, but not counted
/// in [`nr_free_pages`].
pub fn nr_pcp_pages() -> u64 {
    (0..PCP_MAX_CPUS).map(pcp_count).sum()
}

/// `drain_pages_zone`: returns everything on `cpu`'s lists to the buddy
/// lists, under that CPU's `pcp->lock` (so it may run on any CPU).
fn drain_pages(cpu: usize) {
    let Some(lock) = ZONE.pcp.get(cpu) else {
        return;
    };
    let _irq = crate::platform::IrqGuard::new();
    let mut pcp = lock.lock();
    if pcp.count > 0 {
        let n = pcp.count;
        let mut z = ZONE.lock.lock();
        z.free_pcppages_bulk(&mut pcp, n, 0);
        publish(&z);
    }
}

/// `drain_local_pages`: empties the running CPU's lists.
pub fn drain_local_pages() {
    let _irq = crate::platform::IrqGuard::new();
    drain_pages(crate::platform::cpu_id());
}

/// `drain_all_pages`: empties every CPU's lists into the buddy lists, where
/// the blocks merge with their buddies again. Direct reclaim calls it before
/// retrying, the slow path before its OOM stage; tests that compare exact
/// free counts call it as Linux's do.
pub fn drain_all_pages() {
    if !is_ready() {
        return;
    }
    for cpu in 0..PCP_MAX_CPUS {
        drain_pages(cpu);
    }
}

/// `rmqueue_pcplist`: a block of `order` (<= 3) from the running CPU's
/// list, refilled with `batch` blocks (`batch >> order`, at least 2) from
/// the buddy lists when empty. `None` when the list cannot be had (its
/// `pcp->lock` is held: a drain from another CPU; no set for this CPU) or
/// the buddy lists are empty.
///
/// Linux's `pcp_spin_trylock`: interrupts are masked first (one `pushf;
/// cli`, no lock, no atomic), so the CPU number read next stays this
/// task's CPU and nothing else on this CPU runs until the lock is let go;
/// the lock itself is one exchange, held against drains from other CPUs.
/// `fast` (only with lockdep off): no guard and no lockdep call. vmstat
/// counts into this CPU's delta.
#[inline(always)]
fn rmqueue_pcplist(order: u32, fast: bool) -> Option<u64> {
    let _irq = crate::platform::IrqGuard::new();
    let cpu = crate::platform::cpu_id();
    let lock = ZONE.pcp.get(cpu)?;
    if fast {
        if !lock.try_acquire() {
            return None;
        }
        // SAFETY: taken just above, released below.
        let idx = rmqueue_pcplist_locked(unsafe { lock.pcp_mut() }, order);
        lock.release();
        pcp_alloc_done(cpu, idx?)
    } else {
        let mut pcp = lock.try_lock()?;
        let idx = rmqueue_pcplist_locked(&mut pcp, order);
        drop(pcp);
        pcp_alloc_done(cpu, idx?)
    }
}

/// The list work of [`rmqueue_pcplist`], under the lock.
#[inline(always)]
fn rmqueue_pcplist_locked(pcp: &mut PerCpuPages, order: u32) -> Option<u32> {
    pcp.free_factor >>= 1;
    let list = order as usize;
    if pcp.lists[list].is_empty() {
        pcp_refill(pcp, order);
    }
    let idx = pcp.lists[list].pop_head()?;
    pcp.count -= 1 << order;
    Some(idx)
}

/// Marks the block at mem_map index `idx`, taken off a list, allocated and
/// counts it (interrupts still masked on `cpu`); returns its pfn.
#[inline(always)]
fn pcp_alloc_done(cpu: usize, idx: u32) -> Option<u64> {
    let p = super::zone::pcp_page(idx);
    p.set_private(0);
    p.set_slab_cache(core::ptr::null_mut());
    p.set_owner_unnamed(PageOwner::Kernel);
    p.set_flags(PageFlags::HEAD);
    __count_vm_event(cpu, VmStatItem::Allocations);
    Some(ZONE.start_pfn.load(Ordering::Relaxed) + idx as u64)
}

/// `rmqueue_bulk` for an empty list of `order`: `batch` pages' worth of
/// blocks from the buddy lists, under the zone lock.
#[cold]
#[inline(never)]
fn pcp_refill(pcp: &mut PerCpuPages, order: u32) {
    let list = order as usize;
    let mut batch = pcp.batch;
    if batch > 1 {
        batch = (batch >> order).max(2);
    }
    let mut z = ZONE.lock.lock();
    let got = z.rmqueue_bulk(order, batch, &mut pcp.lists[list]);
    publish(&z);
    drop(z);
    pcp.count += got << order;
}

/// `rmqueue`: orders up to PAGE_ALLOC_COSTLY_ORDER from the per-CPU lists,
/// the rest (and whatever the lists cannot give) from the buddy lists.
fn rmqueue(order: u32) -> Option<u64> {
    if order <= PAGE_ALLOC_COSTLY_ORDER
        && let Some(pfn) = rmqueue_pcplist(order, false)
    {
        return Some(pfn);
    }
    let mut z = ZONE.lock.lock();
    let idx = z.rmqueue(order)?;
    publish(&z);
    let pfn = z.start_pfn + idx;
    drop(z);
    count_vm_event(VmStatItem::Allocations);
    Some(pfn)
}

/// `free_unref_page` + `free_unref_page_commit`: puts an allocated block of
/// `order` (<= 3) at the head of the running CPU's list (the next
/// allocation gets this cache-hot block back); when the list holds `high`
/// pages, returns `nr_pcp_free` of them to the buddy lists. Returns false
/// when the block is not a well-formed allocation (the zone path checks
/// and reports it) or the list cannot be had. Locking as in
/// [`rmqueue_pcplist`] (`fast`: lockdep is off). A free by a task under
/// PF_MEMALLOC is credited to its reclaim here, while interrupts are
/// masked anyway (the running task is then one load away).
#[inline(always)]
fn free_unref_page(pfn: u64, order: u32, fast: bool) -> bool {
    let Some(p) = ZONE.pfn_to_page(pfn) else {
        return false;
    };
    let f = p.flags();
    if !f.contains(PageFlags::HEAD) || p.order() != order {
        return false;
    }
    let irq = crate::platform::IrqGuard::new();
    let cpu = crate::platform::cpu_id();
    let Some(lock) = ZONE.pcp.get(cpu) else {
        return false;
    };
    let done = if fast {
        if !lock.try_acquire() {
            return false;
        }
        // SAFETY: taken just above, released below.
        let done = free_unref_page_locked(unsafe { lock.pcp_mut() }, p, f, pfn, order);
        lock.release();
        done
    } else {
        let Some(mut pcp) = lock.try_lock() else {
            return false;
        };
        free_unref_page_locked(&mut pcp, p, f, pfn, order)
    };
    if done {
        __count_vm_event(cpu, VmStatItem::Frees);
        vmscan::note_pages_freed_irqs_masked(&irq, 1 << order);
    }
    done
}

/// The list work of [`free_unref_page`], under the lock: claims the page
/// (whose flags were `f`), links it, flushes a batch above `high`.
#[inline(always)]
fn free_unref_page_locked(
    pcp: &mut PerCpuPages,
    p: &Page,
    f: PageFlags,
    pfn: u64,
    order: u32,
) -> bool {
    // Claim the block: a racing second free of it sees PCP, not HEAD.
    if !p.claim(f, PageFlags::PCP) {
        return false;
    }
    p.set_private(0);
    p.set_slab_cache(core::ptr::null_mut());
    p.set_owner_unnamed(PageOwner::Free);
    let pindex = order as usize;
    let idx = (pfn - ZONE.start_pfn.load(Ordering::Relaxed)) as u32;
    pcp.lists[pindex].push_head(idx);
    pcp.count += 1 << order;
    // Linux 6.6: a high-order free after frees overflowed flushes the set.
    let free_high = pcp.free_factor != 0 && order > 0 && order <= PAGE_ALLOC_COSTLY_ORDER;
    let high = pcp.nr_pcp_high(free_high);
    if pcp.count >= high {
        pcp_flush_high(pcp, high, free_high, pindex);
    }
    true
}

/// `free_pcppages_bulk` for a list set that reached `high`: `nr_pcp_free`
/// pages back to the buddy lists, under the zone lock.
#[cold]
#[inline(never)]
fn pcp_flush_high(pcp: &mut PerCpuPages, high: u32, free_high: bool, pindex: usize) {
    let n = pcp.nr_pcp_free(high, free_high);
    let mut z = ZONE.lock.lock();
    z.free_pcppages_bulk(pcp, n, pindex);
    publish(&z);
}

// ---------------------------------------------------------------------------
// Allocation

/// `gfp_to_alloc_flags`: the slow path's watermark (MIN) and reserves.
pub fn gfp_to_alloc_flags(gfp: Gfp) -> AllocFlags {
    let mut f = AllocFlags::WMARK_MIN;
    if gfp.contains(Gfp::__GFP_HIGH) {
        f = f | AllocFlags::MIN_RESERVE;
    }
    if gfp.contains(Gfp::__GFP_KSWAPD_RECLAIM) {
        f = f | AllocFlags::KSWAPD;
    }
    if !gfp.contains(Gfp::__GFP_DIRECT_RECLAIM) && !gfp.contains(Gfp::__GFP_NOMEMALLOC) {
        f = f | AllocFlags::NON_BLOCK;
    }
    f
}

/// `__gfp_pfmemalloc_flags`: may this allocation ignore the watermarks?
/// (Linux also refuses PF_MEMALLOC's grant in interrupt context; kreclaim
/// cannot tell interrupt context apart, see docs/memory.md.)
fn gfp_pfmemalloc_flags(gfp: Gfp) -> Option<AllocFlags> {
    if gfp.contains(Gfp::__GFP_NOMEMALLOC) {
        return None;
    }
    if gfp.contains(Gfp::__GFP_MEMALLOC) || task::current().flags().contains(TaskFlags::PF_MEMALLOC)
    {
        return Some(AllocFlags::NO_WATERMARKS);
    }
    // oom_reserves_allowed: the victim may dip into the reserves to exit.
    if task::started() && task::current().is_oom_victim() {
        return Some(AllocFlags::WMARK_MIN | AllocFlags::OOM);
    }
    None
}

/// Takes a block off the free lists if the watermark in `alloc_flags`
/// allows; returns its pfn.
/// The check is on NR_FREE_PAGES, which leaves out the blocks on per-CPU
/// lists (Linux counts them as allocated too): a refill may then take
/// `batch` blocks below the mark, as in Linux.
fn get_page_from_freelist(order: u32, alloc_flags: AllocFlags) -> Option<u64> {
    if !alloc_flags.contains(AllocFlags::NO_WATERMARKS) {
        let mark = ZONE.wmark[alloc_flags.wmark()].load(Ordering::Relaxed);
        if !zone_watermark_fast(order, mark, alloc_flags) {
            return None;
        }
    }
    rmqueue(order)
}

/// `should_fail_alloc_page`: below `min-order`, `__GFP_NOFAIL` and (if
/// asked) sleeping allocations never fail; the size is counted in pages.
fn should_fail_alloc_page(gfp: Gfp, order: u32) -> bool {
    if order < FAIL_PAGE_ALLOC.min_order() {
        return false;
    }
    if gfp.contains(Gfp::__GFP_NOFAIL) {
        return false;
    }
    if FAIL_PAGE_ALLOC.ignore_gfp_reclaim() && gfp.contains(Gfp::__GFP_DIRECT_RECLAIM) {
        return false;
    }
    fault_inject::should_fail(&FAIL_PAGE_ALLOC, 1 << order)
}

/// Allocates 2^`order` physically contiguous pages. The block is owned by
/// [`PageOwner::Kernel`] until [`set_page_owner`] says otherwise.
///
/// Never panics on failure; `__GFP_NOFAIL` (with __GFP_DIRECT_RECLAIM)
/// never returns `Err`.
///
/// The fast path (orders up to PAGE_ALLOC_COSTLY_ORDER): one load says
/// lockdep is off, `fail_page_alloc` is not armed and the interrupt flag is
/// native (`platform::PAGE_ALLOC_FAST`); a
/// sleeping allocation checks inline that it may sleep
/// ([`task::may_sleep_inline`]); the LOW watermark; then this CPU's list.
/// The task's scoped constraints (`current_gfp_context`) are applied only
/// on the general path: they remove __GFP_FS, __GFP_IO and __GFP_MOVABLE,
/// which matter to reclaim and reports, not to taking a listed block.
/// Anything else (and any refusal) takes [`alloc_pages_general`].
#[track_caller]
#[inline]
pub fn alloc_pages(gfp: Gfp, order: u32) -> Result<PhysAddr, AllocError> {
    if crate::platform::PAGE_ALLOC_FAST.load(Ordering::Relaxed)
        && order <= PAGE_ALLOC_COSTLY_ORDER
        && (!gfp.allows_blocking() || task::may_sleep_inline())
        && zone_watermark_fast(
            order,
            ZONE.wmark[AllocFlags::WMARK_LOW.wmark()].load(Ordering::Relaxed),
            AllocFlags::WMARK_LOW,
        )
        && let Some(pfn) = rmqueue_pcplist(order, true)
    {
        let pa = PhysAddr::from_pfn(pfn);
        if gfp.contains(Gfp::__GFP_ZERO) {
            // SAFETY: the block is ours and direct mapped.
            unsafe { core::ptr::write_bytes(page_address(pa), 0, PAGE_SIZE << order) };
        }
        return Ok(pa);
    }
    alloc_pages_general(gfp, order)
}

/// Turns the page allocator's fast path back on
/// (`platform::PAGE_ALLOC_FAST`) once nothing
/// forbids it: the allocator is ready, lockdep is off, `fail_page_alloc`
/// is not armed, the interrupt flag is native. Whoever forbids it clears
/// the flag (sequentially consistent) after changing its own state; this
/// re-reads that state after setting it, so a concurrent change is not
/// lost (the slab's `refresh_alloc_fast` does the same).
fn refresh_page_alloc_fast() {
    use crate::platform::PAGE_ALLOC_FAST;
    let allowed = || {
        is_ready()
            && crate::platform::irq_flag_native()
            && crate::sync::lockdep::mode() == crate::sync::lockdep::LockdepMode::Off
            && !FAIL_PAGE_ALLOC.armed()
    };
    if PAGE_ALLOC_FAST.load(Ordering::Relaxed) || !allowed() {
        return;
    }
    PAGE_ALLOC_FAST.store(true, Ordering::SeqCst);
    if !allowed() {
        PAGE_ALLOC_FAST.store(false, Ordering::SeqCst);
    }
}

/// [`alloc_pages`] past its fast path: the scoped constraints,
/// `might_alloc`, fault injection, the watermarks, the per-CPU lists and
/// the zone, then the slow path.
#[track_caller]
#[inline(never)]
pub fn alloc_pages_general(gfp: Gfp, order: u32) -> Result<PhysAddr, AllocError> {
    refresh_page_alloc_fast();
    let mut gfp = current_gfp_context(gfp);
    if gfp.allows_blocking() && is_ready() {
        gfp = fs_reclaim::might_alloc_gfp(gfp);
    }
    let err = AllocError { gfp, order };
    if order > MAX_ORDER {
        STATS.count_failure(gfp);
        if !gfp.contains(Gfp::__GFP_NOWARN) {
            crate::println!("{}: {err}: order above MAX_ORDER {MAX_ORDER}", task_name());
        }
        return Err(err);
    }
    if !is_ready() {
        STATS.count_failure(gfp);
        if !gfp.contains(Gfp::__GFP_NOWARN) {
            crate::println!(
                "{}: {err}: the page allocator is not initialised",
                task_name()
            );
        }
        return Err(err);
    }
    if should_fail_alloc_page(gfp, order) {
        STATS.count_failure(gfp);
        bump(&STATS.injected_failures);
        if !gfp.contains(Gfp::__GFP_NOWARN) {
            crate::println!(
                "FAULT_INJECTION: forcing a failure: {}: {err} (injected)",
                task_name()
            );
        }
        return Err(err);
    }
    let pfn = match get_page_from_freelist(order, AllocFlags::WMARK_LOW) {
        Some(pfn) => pfn,
        None => __alloc_pages_slowpath(gfp, order)?,
    };
    let pa = PhysAddr::from_pfn(pfn);
    if gfp.contains(Gfp::__GFP_ZERO) {
        // SAFETY: the block is ours and direct mapped.
        unsafe { core::ptr::write_bytes(page_address(pa), 0, PAGE_SIZE << order) };
    }
    Ok(pa)
}

fn task_name() -> &'static str {
    task::current().name()
}

/// Logs at debug the first fall below LOW (`level` 1) or MIN (2) since
/// kswapd last balanced the zone; one compare when debug is off.
fn log_wmark_crossing(level: u8, order: u32) {
    if log::log_enabled!(log::Level::Debug)
        && WMARK_LOGGED.fetch_max(level, Ordering::Relaxed) < level
    {
        let w = watermarks();
        log::debug!(
            "zone {}: below the {} watermark: free {} pages (min {}, low {}, high {}), \
             order-{order} allocation by '{}'",
            ZONE.name,
            if level >= 2 { "min" } else { "low" },
            nr_free_pages(),
            w.min,
            w.low,
            w.high,
            task_name()
        );
    }
}

fn wake_all_kswapds(order: u32) {
    bump(&STATS.kswapd_wakeups);
    vmscan::wakeup_kswapd(order);
}

/// The slow path, in the order of Linux's `__alloc_pages_slowpath`.
fn __alloc_pages_slowpath(gfp: Gfp, order: u32) -> Result<u64, AllocError> {
    let can_direct_reclaim = gfp.allows_blocking();
    let costly_order = order > PAGE_ALLOC_COSTLY_ORDER;
    let nofail = gfp.contains(Gfp::__GFP_NOFAIL);
    let err = AllocError { gfp, order };
    let mut alloc_flags = gfp_to_alloc_flags(gfp);
    let mut no_progress_loops = 0;
    let mut reported = false;
    let mut drained = false;

    log_wmark_crossing(1, order);
    if alloc_flags.contains(AllocFlags::KSWAPD) {
        wake_all_kswapds(order);
    }
    // The MIN watermark, with the __GFP_HIGH / non-blocking reserves.
    if let Some(pfn) = get_page_from_freelist(order, alloc_flags) {
        return Ok(pfn);
    }
    log_wmark_crossing(2, order);

    'retry: loop {
        // Keep kswapd awake while we loop.
        if alloc_flags.contains(AllocFlags::KSWAPD) {
            wake_all_kswapds(order);
        }
        if let Some(reserve) = gfp_pfmemalloc_flags(gfp) {
            alloc_flags = reserve | (alloc_flags & AllocFlags::KSWAPD);
        }
        if let Some(pfn) = get_page_from_freelist(order, alloc_flags) {
            return Ok(pfn);
        }
        'attempt: {
            if !can_direct_reclaim {
                break 'attempt;
            }
            // Reclaim itself allocating: never recurse into reclaim.
            if task::current().flags().contains(TaskFlags::PF_MEMALLOC) {
                break 'attempt;
            }
            let (page, progress) = __alloc_pages_direct_reclaim(gfp, order, alloc_flags);
            if let Some(pfn) = page {
                return Ok(pfn);
            }
            if gfp.contains(Gfp::__GFP_NORETRY) {
                break 'attempt;
            }
            if costly_order && !gfp.contains(Gfp::__GFP_RETRY_MAYFAIL) {
                break 'attempt;
            }
            if should_reclaim_retry(order, progress, &mut no_progress_loops) {
                // cond_resched(): let whoever frees memory run.
                task::yield_now();
                continue 'retry;
            }
            // kreclaim: before the OOM stage, give back what sits on the
            // per-CPU lists once (Linux drains only after reclaim made
            // progress; here the OOM stage usually fails the allocation).
            if !drained {
                drained = true;
                drain_all_pages();
                if let Some(pfn) = get_page_from_freelist(order, alloc_flags) {
                    return Ok(pfn);
                }
            }
            // Reclaim has failed us: the OOM killer (oom=kill) or not.
            log::debug!(
                "OOM stage: '{}' order-{order} {gfp}: direct reclaim gave up; oom={}",
                task_name(),
                oom_kill::policy().name()
            );
            let (page, oom_progress) = __alloc_pages_may_oom(gfp, order);
            if let Some(pfn) = page {
                return Ok(pfn);
            }
            // Allocations with reserves must not loop endlessly: a victim
            // that still cannot allocate fails.
            if task::current().is_oom_victim()
                && (alloc_flags.contains(AllocFlags::OOM) || gfp.contains(Gfp::__GFP_NOMEMALLOC))
            {
                break 'attempt;
            }
            // Retry as long as the OOM killer is making progress.
            if oom_progress {
                no_progress_loops = 0;
                if !nofail {
                    continue 'retry;
                }
            }
        }
        // nopage:
        if nofail {
            if !can_direct_reclaim {
                // Linux warns and fails too: it cannot sleep to wait.
                crate::println!(
                    "WARNING: {}: __GFP_NOFAIL without __GFP_DIRECT_RECLAIM cannot wait: {err}",
                    task_name()
                );
                STATS.count_failure(gfp);
                return Err(err);
            }
            if !reported {
                reported = true;
                warn_alloc(&err, " (__GFP_NOFAIL: retrying)");
            }
            // __alloc_pages_cpuset_fallback: a share of the min reserve.
            if let Some(pfn) = get_page_from_freelist(order, AllocFlags::MIN_RESERVE) {
                return Ok(pfn);
            }
            bump(&STATS.nofail_retries);
            task::sleep(core::time::Duration::from_millis(1));
            continue;
        }
        STATS.count_failure(gfp);
        warn_alloc(&err, "");
        return Err(err);
    }
}

/// `__alloc_pages_direct_reclaim`: reclaim, then try the free lists if it
/// made progress. Returns the page and the progress.
fn __alloc_pages_direct_reclaim(
    gfp: Gfp,
    order: u32,
    alloc_flags: AllocFlags,
) -> (Option<u64>, usize) {
    let progress = __perform_reclaim(gfp, order);
    if progress == 0 {
        return (None, 0);
    }
    let mut page = get_page_from_freelist(order, alloc_flags);
    // Reclaim freed pages but they may sit on per-CPU lists: drain them and
    // try once more (Linux: `if (!page && !drained) { ...; drain_all_pages(NULL); ... }`).
    if page.is_none() {
        drain_all_pages();
        page = get_page_from_freelist(order, alloc_flags);
    }
    (page, progress)
}

/// `__perform_reclaim`: direct reclaim inside the fs_reclaim annotation and
/// a PF_MEMALLOC scope, so allocations made by reclaim never recurse.
fn __perform_reclaim(gfp: Gfp, order: u32) -> usize {
    task::might_sleep();
    bump(&STATS.alloc_stalls);
    // psi_memstall_enter: the waits inside are counted as the stall's parts
    // (`memstall::snapshot`), added when it ends, after its time.
    let memstall = crate::mm::memstall::MemstallGuard::enter();
    let t0 = crate::time::now_ns();
    fs_reclaim::fs_reclaim_acquire(gfp);
    let noreclaim = MemallocScope::noreclaim();
    let progress = vmscan::try_to_free_pages(gfp, order);
    drop(noreclaim);
    fs_reclaim::fs_reclaim_release(gfp);
    STATS
        .stall_ns
        .fetch_add(crate::time::now_ns().saturating_sub(t0), Ordering::Relaxed);
    memstall.leave();
    STATS
        .reclaimed_pages
        .fetch_add(progress as u64, Ordering::Relaxed);
    progress
}

/// `should_reclaim_retry`, progress-counting only (see the module docs):
/// progress on a non-costly order resets the count; give up after
/// MAX_RECLAIM_RETRIES rounds without.
fn should_reclaim_retry(order: u32, progress: usize, no_progress_loops: &mut u32) -> bool {
    if progress > 0 && order <= PAGE_ALLOC_COSTLY_ORDER {
        *no_progress_loops = 0;
    } else {
        *no_progress_loops += 1;
    }
    *no_progress_loops <= MAX_RECLAIM_RETRIES
}

/// `__alloc_pages_may_oom`: a last try at HIGH (memory freed meanwhile);
/// then, for order <= 3 without __GFP_RETRY_MAYFAIL, the OOM killer
/// (`oom_kill::out_of_memory`), and __GFP_NOFAIL gets the reserves as in
/// Linux. Returns the page and whether this counts as progress (retry).
fn __alloc_pages_may_oom(gfp: Gfp, order: u32) -> (Option<u64>, bool) {
    if let Some(pfn) = get_page_from_freelist(order, AllocFlags::WMARK_HIGH) {
        return (Some(pfn), false);
    }
    if order > PAGE_ALLOC_COSTLY_ORDER || gfp.contains(Gfp::__GFP_RETRY_MAYFAIL) {
        return (None, false);
    }
    let progress = oom_kill::out_of_memory(gfp, order, show_mem);
    if gfp.contains(Gfp::__GFP_NOFAIL) {
        return (
            get_page_from_freelist(order, AllocFlags::NO_WATERMARKS),
            true,
        );
    }
    (None, progress)
}

// ---------------------------------------------------------------------------
// Failure reports

const RATELIMIT_NS: u64 = 10_000_000_000;
const RATELIMIT_BURST: u32 = 1;
static RL_START: AtomicU64 = AtomicU64::new(0);
static RL_COUNT: AtomicU32 = AtomicU32::new(0);
static RL_MISSED: AtomicU64 = AtomicU64::new(0);

/// Linux's `nopage_rs` in `warn_alloc`: one report per 10 s
/// (`DEFINE_RATELIMIT_STATE(nopage_rs, 10*HZ, 1)`); the rest are counted
/// in `reports_suppressed` and summed up in the next report's
/// "callbacks suppressed" line.
fn report_ratelimit() -> bool {
    let now = crate::time::now_ns();
    let start = RL_START.load(Ordering::Relaxed);
    if now.saturating_sub(start) >= RATELIMIT_NS
        && RL_START
            .compare_exchange(start, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    {
        RL_COUNT.store(0, Ordering::Relaxed);
        let missed = RL_MISSED.swap(0, Ordering::Relaxed);
        if missed > 0 {
            crate::println!("warn_alloc: {missed} callbacks suppressed");
        }
    }
    if RL_COUNT.fetch_add(1, Ordering::Relaxed) < RATELIMIT_BURST {
        true
    } else {
        bump(&RL_MISSED);
        bump(&STATS.reports_suppressed);
        false
    }
}

/// Starts a new rate-limit interval for failure reports now, so that the
/// next failure is reported (tests and experiments that look at one
/// particular report).
pub fn reset_warn_ratelimit() {
    RL_START.store(crate::time::now_ns(), Ordering::Relaxed);
    RL_COUNT.store(0, Ordering::Relaxed);
}

/// `warn_alloc` + the OOM report: the failure, the zone, the statistics and
/// every registered reporter. Once per failed allocation, unless
/// __GFP_NOWARN.
fn warn_alloc(err: &AllocError, note: &str) {
    if err.gfp.contains(Gfp::__GFP_NOWARN) || !report_ratelimit() {
        return;
    }
    crate::println!("{}: {err} ({:#x}){note}", task_name(), err.gfp.bits());
    show_mem();
    run_oom_reporters();
}

const MAX_OOM_REPORTERS: usize = 16;
type OomReporterSlots = [Option<fn()>; MAX_OOM_REPORTERS];
/// Registered reporters. Interrupts are masked while the lock is held: an
/// OOM in an interrupt handler runs them too.
static OOM_REPORTERS: spin::Mutex<OomReporterSlots> = spin::Mutex::new([None; MAX_OOM_REPORTERS]);

/// [`register_oom_reporter`] found every slot taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OomReportersFull;

/// Adds `f` to the OOM report (slab caches, shrinkers print their state).
/// It runs in the failing allocation's context, possibly with interrupts
/// masked: it must not allocate or sleep. Registering twice is a no-op.
pub fn register_oom_reporter(f: fn()) -> Result<(), OomReportersFull> {
    let _irq = crate::platform::IrqGuard::new();
    let mut slots = OOM_REPORTERS.lock();
    if slots.iter().flatten().any(|g| core::ptr::fn_addr_eq(*g, f)) {
        return Ok(());
    }
    let free = slots
        .iter_mut()
        .find(|s| s.is_none())
        .ok_or(OomReportersFull)?;
    *free = Some(f);
    Ok(())
}

/// Removes `f`; returns whether it was registered.
pub fn unregister_oom_reporter(f: fn()) -> bool {
    let _irq = crate::platform::IrqGuard::new();
    let mut slots = OOM_REPORTERS.lock();
    match slots
        .iter_mut()
        .find(|s| s.is_some_and(|g| core::ptr::fn_addr_eq(g, f)))
    {
        Some(s) => {
            *s = None;
            true
        }
        None => false,
    }
}

fn run_oom_reporters() {
    // Copied out so that a reporter runs without the lock (it may register
    // or unregister one).
    let slots = {
        let _irq = crate::platform::IrqGuard::new();
        *OOM_REPORTERS.lock()
    };
    for f in slots.into_iter().flatten() {
        f();
    }
}

/// Pages per owner, from a walk over the mem_map.
#[derive(Default)]
struct OwnerCounts {
    kernel: u64,
    stack: u64,
    page_table: u64,
    slab: u64,
    slabs: [(&'static str, u64); 8],
    other: u64,
    free: u64,
    pcp: u64,
}

fn owner_counts() -> OwnerCounts {
    let mut c = OwnerCounts::default();
    let spanned = ZONE.spanned.load(Ordering::Relaxed);
    let mut idx = 0;
    while idx < spanned {
        // Take the lock per chunk, not for the whole walk.
        let z = ZONE.lock.lock();
        let end = (idx + 4096).min(spanned);
        while idx < end {
            let p = z.page(idx);
            let f = p.flags();
            if f.contains(PageFlags::BUDDY) {
                c.free += 1 << p.order();
                idx += 1 << p.order();
            } else if f.contains(PageFlags::PCP) {
                c.pcp += 1 << p.order();
                idx += 1 << p.order();
            } else if f.contains(PageFlags::HEAD) {
                let n = 1u64 << p.order();
                match p.owner_locked() {
                    PageOwner::Kernel => c.kernel += n,
                    PageOwner::Stack => c.stack += n,
                    PageOwner::PageTable => c.page_table += n,
                    PageOwner::Slab(name) => {
                        c.slab += n;
                        if let Some(s) =
                            c.slabs.iter_mut().find(|(s, _)| *s == name || s.is_empty())
                        {
                            *s = (name, s.1 + n);
                        }
                    }
                    _ => c.other += n,
                }
                idx += n;
            } else {
                idx += 1;
            }
        }
    }
    c
}

/// Prints the zone (free blocks per order, watermarks), who holds the
/// allocated pages, and the statistics. Does not allocate.
pub fn show_mem() {
    let w = watermarks();
    let kb = |pages: u64| pages << (PAGE_SHIFT - 10);
    let free = nr_free_pages();
    crate::println!("Mem-Info:");
    crate::println!(
        "{} free:{}kB min:{}kB low:{}kB high:{}kB managed:{}kB memmap:{}kB",
        ZONE.name,
        kb(free),
        kb(w.min),
        kb(w.low),
        kb(w.high),
        kb(managed_pages()),
        kb(memmap_pages())
    );
    crate::println!(
        "{} pages: free {} min {} low {} high {} managed {} (min_free_kbytes={}, \
         watermark_scale_factor={})",
        ZONE.name,
        free,
        w.min,
        w.low,
        w.high,
        managed_pages(),
        min_free_kbytes(),
        WATERMARK_SCALE_FACTOR
    );
    let per_order = free_per_order();
    crate::print!("{}:", ZONE.name);
    let mut total = 0;
    for (o, n) in per_order.iter().enumerate() {
        crate::print!(" {}*{}kB", n, kb(1 << o));
        total += n * kb(1 << o);
    }
    crate::println!(" = {total}kB");
    let c = owner_counts();
    crate::print!(
        "page owners: kernel {}, stack {}, page table {}, slab {}",
        c.kernel,
        c.stack,
        c.page_table,
        c.slab
    );
    for (name, n) in c.slabs.iter().filter(|(s, _)| !s.is_empty()) {
        crate::print!(" ({name} {n})");
    }
    crate::println!(
        ", other {}, free {} pages (+ {} on per-CPU lists)",
        c.other,
        c.free,
        c.pcp
    );
    let (batch, high) = pcp_batch_high();
    crate::println!(
        "{} per-cpu: free_pcp:{}kB local_pcp:{}kB batch {} high {} (vmstat threshold {})",
        ZONE.name,
        kb(nr_pcp_pages()),
        kb(pcp_count(crate::platform::cpu_id())),
        batch,
        high,
        vm_stat_threshold_now()
    );
    crate::println!("page_alloc: {STATS}");
    if FAIL_PAGE_ALLOC.is_enabled() {
        crate::println!("{FAIL_PAGE_ALLOC}");
    }
}

// ---------------------------------------------------------------------------
// Freeing

/// What was wrong with a `free_pages` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadFreeKind {
    /// The address is not page aligned, or the order is above MAX_ORDER.
    BadArgument,
    /// The page is not managed by the allocator (a hole, reserved, absent).
    NotManaged,
    /// The page is already free, inside the free block at `block_pfn`.
    DoubleFree {
        /// First frame of the free block.
        block_pfn: u64,
        /// Order of the free block.
        block_order: u32,
    },
    /// The page lies inside the block allocated at `block_pfn`, not at its
    /// start.
    NotHead {
        /// First frame of the allocated block.
        block_pfn: u64,
        /// Order of the allocated block.
        block_order: u32,
    },
    /// The block was allocated with another order.
    WrongOrder {
        /// The order the block was allocated with.
        allocated_order: u32,
    },
}

/// A rejected `free_pages` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadFree {
    /// The frame passed to `free_pages`.
    pub pfn: u64,
    /// The order passed to `free_pages`.
    pub order: u32,
    /// Why the call was rejected.
    pub kind: BadFreeKind,
}

impl fmt::Display for BadFree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (pfn, order) = (self.pfn, self.order);
        write!(f, "BUG: free_pages(pfn {pfn:#x}, order {order}): ")?;
        match self.kind {
            BadFreeKind::BadArgument => f.write_str("bad address or order"),
            BadFreeKind::NotManaged => f.write_str("not a page of the page allocator"),
            BadFreeKind::DoubleFree {
                block_pfn,
                block_order,
            } => write!(
                f,
                "double free: the page is already free (in the free order-{block_order} block at \
                 pfn {block_pfn:#x})"
            ),
            BadFreeKind::NotHead {
                block_pfn,
                block_order,
            } => write!(
                f,
                "not the start of an allocation: the page is inside the order-{block_order} \
                 block allocated at pfn {block_pfn:#x}"
            ),
            BadFreeKind::WrongOrder { allocated_order } => write!(
                f,
                "wrong order: the block was allocated with order {allocated_order}"
            ),
        }
    }
}

static LAST_BAD_FREE: SpinLock<Option<BadFree>> =
    SpinLock::new(None, crate::lock_class!("page_alloc bad free"));

/// The most recent rejected `free_pages` call.
pub fn last_bad_free() -> Option<BadFree> {
    *LAST_BAD_FREE.lock()
}

fn check_free(z: &super::zone::FreeLists, pfn: u64, order: u32) -> Result<u64, BadFreeKind> {
    let idx = z.index(pfn).ok_or(BadFreeKind::NotManaged)?;
    let p = z.page(idx);
    let f = p.flags();
    if f.contains(PageFlags::HEAD) {
        return if p.order() == order {
            Ok(idx)
        } else {
            Err(BadFreeKind::WrongOrder {
                allocated_order: p.order(),
            })
        };
    }
    match z.block_containing(idx) {
        Some((head, block_order, hf)) if hf.intersects(PageFlags::BUDDY | PageFlags::PCP) => {
            Err(BadFreeKind::DoubleFree {
                block_pfn: z.start_pfn + head,
                block_order,
            })
        }
        Some((head, block_order, _)) => Err(BadFreeKind::NotHead {
            block_pfn: z.start_pfn + head,
            block_order,
        }),
        None => Err(BadFreeKind::NotManaged),
    }
}

/// Frees a block from [`alloc_pages`] with the same order. A double free, a
/// free of a page inside a block, a wrong order or a foreign address is
/// reported and ignored, leaving the allocator intact.
///
/// The fast path (orders up to PAGE_ALLOC_COSTLY_ORDER, lockdep off, see
/// [`alloc_pages`]) puts the block on this CPU's list; anything else takes
/// the general path.
#[inline]
pub fn free_pages(pa: PhysAddr, order: u32) {
    if crate::platform::PAGE_ALLOC_FAST.load(Ordering::Relaxed)
        && order <= PAGE_ALLOC_COSTLY_ORDER
        && pa.as_u64().is_multiple_of(PAGE_SIZE as u64)
        && free_unref_page(pa.pfn(), order, true)
    {
        return;
    }
    free_pages_general(pa, order);
}

/// [`free_pages`] past its fast path: argument checks, the per-CPU lists
/// (with lockdep's view of their lock), the zone (with its reports of bad
/// frees).
#[inline(never)]
fn free_pages_general(pa: PhysAddr, order: u32) {
    let pfn = pa.pfn();
    let result = if order > MAX_ORDER || !pa.as_u64().is_multiple_of(PAGE_SIZE as u64) {
        Err(BadFreeKind::BadArgument)
    } else if order <= PAGE_ALLOC_COSTLY_ORDER && free_unref_page(pfn, order, false) {
        // Credited to reclaim by `free_unref_page`.
        return;
    } else {
        let mut z = ZONE.lock.lock();
        let r = check_free(&z, pfn, order).and_then(|idx| {
            let p = z.page(idx);
            // Claim it against a racing free to a per-CPU list.
            if !p.claim(p.flags(), PageFlags::empty()) {
                return Err(BadFreeKind::DoubleFree {
                    block_pfn: pfn,
                    block_order: order,
                });
            }
            p.set_owner_locked(PageOwner::Free);
            p.set_private(0);
            p.set_slab_cache(core::ptr::null_mut());
            z.free_one(idx, order);
            publish(&z);
            Ok(())
        });
        drop(z);
        if r.is_ok() {
            count_vm_event(VmStatItem::Frees);
        }
        r
    };
    match result {
        Ok(()) => {
            vmscan::note_pages_freed(1 << order);
        }
        Err(kind) => {
            let bad = BadFree { pfn, order, kind };
            bump(&STATS.bad_frees);
            *LAST_BAD_FREE.lock() = Some(bad);
            crate::println!("{bad} (task '{}'); ignored", task_name());
        }
    }
}

// ---------------------------------------------------------------------------
// Owners

/// Records who holds the block allocated at `pa` with `order` (shown in
/// reports). [`PageOwner::Slab`] also sets the page's SLAB flag.
pub fn set_page_owner(pa: PhysAddr, order: u32, owner: PageOwner) {
    let z = ZONE.lock.lock();
    let ok = z.index(pa.pfn()).is_some_and(|idx| {
        let p = z.page(idx);
        let mut f = p.flags();
        if !f.contains(PageFlags::HEAD) || p.order() != order {
            return false;
        }
        f.set(PageFlags::SLAB, matches!(owner, PageOwner::Slab(_)));
        p.set_flags(f);
        p.set_owner_locked(owner);
        true
    });
    drop(z);
    if !ok {
        crate::println!(
            "BUG: set_page_owner({pa}, order {order}, {owner}): not an allocated order-{order} block"
        );
    }
}

/// Sets the page's private word (slab: the slab's address; kmalloc-large:
/// a tag with the order). Cleared when the block is freed.
pub fn set_page_private(pa: PhysAddr, v: u64) {
    if let Some(p) = pfn_to_page(pa.pfn()) {
        p.set_private(v as usize);
    }
}

/// Sets (or, with null, clears) the page's slab cache (see
/// [`crate::mm::page::Page::slab_cache`]). Cleared when the block is freed.
pub fn set_page_slab_cache(pa: PhysAddr, c: *mut ()) {
    if let Some(p) = pfn_to_page(pa.pfn()) {
        p.set_slab_cache(c);
    }
}

/// The page's private word; `None` outside the managed span.
#[inline]
pub fn page_private(pa: PhysAddr) -> Option<u64> {
    pfn_to_page(pa.pfn()).map(|p| p.private() as u64)
}

/// Who holds the page at `pa`: the owner of the allocated block containing
/// it, `Free` inside a free block, `Reserved` for pages never managed;
/// `None` outside the allocator's span.
pub fn page_owner(pa: PhysAddr) -> Option<PageOwner> {
    let z = ZONE.lock.lock();
    let idx = z.index(pa.pfn())?;
    Some(match z.block_containing(idx) {
        Some((_, _, f)) if f.intersects(PageFlags::BUDDY | PageFlags::PCP) => PageOwner::Free,
        Some((head, _, _)) => z.page(head).owner_locked(),
        None => z.page(idx).owner_locked(),
    })
}

/// The allocated block containing `pa`: its first page and order (Linux's
/// `compound_head` for any allocation). `None` if `pa` is not allocated.
pub fn page_block(pa: PhysAddr) -> Option<(PhysAddr, u32)> {
    let z = ZONE.lock.lock();
    let idx = z.index(pa.pfn())?;
    match z.block_containing(idx)? {
        (head, order, f) if f.contains(PageFlags::HEAD) => {
            Some((PhysAddr::from_pfn(z.start_pfn + head), order))
        }
        _ => None,
    }
}
