//! The page allocator on real RAM: buddy allocator, watermarks, slow path,
//! fault injection, bad-free detection, statistics, kernel stacks.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use core::time::Duration;
use kreclaim::config::{CmdlineError, Config};
use kreclaim::harness::TestResult;
use kreclaim::mm::fault_inject::{FAIL_PAGE_ALLOC, FaultAttr, FaultSpec, should_fail};
use kreclaim::mm::gfp::{GFP_ATOMIC, GFP_KERNEL, GFP_NOFS, GFP_NOIO, GFP_NOWAIT, Gfp};
use kreclaim::mm::page::PageFlags;
use kreclaim::mm::page_alloc::{
    self, AllocError, AllocStats, BadFreeKind, MAX_ORDER, MAX_RECLAIM_RETRIES, PAGE_SIZE,
    PageOwner, PhysAddr, alloc_pages, free_pages, nr_free_pages, watermarks,
};
use kreclaim::mm::scope::MemallocScope;
use kreclaim::mm::zone::{AllocFlags, compute_watermarks, default_min_free_kbytes, watermark_ok};
use kreclaim::task;
use kreclaim::{kassert, kassert_eq};

// Exact free-page counts, taken while nothing else allocates: one CPU.
// The page allocator on four CPUs at once is tortured in the smp kernel.
kreclaim::qemu_cpus!(1);

kreclaim::kernel_tests!(
    watermarks_follow_linux_formulas,
    default_min_free_kbytes_is_clamped_like_linux,
    set_min_free_kbytes_recomputes_watermarks,
    watermark_check_reserves_arithmetic,
    every_page_allocates_and_buddies_merge_back,
    high_order_needs_a_free_block_of_that_order,
    zeroed_pages_are_zero,
    atomic_dips_below_min_nowait_does_not,
    gfp_memalloc_ignores_watermarks_unless_nomemalloc,
    pf_memalloc_takes_reserves_but_never_reclaims,
    noretry_fails_under_pressure_where_nofail_waits_and_succeeds,
    costly_order_fails_after_one_reclaim_round,
    retry_mayfail_gives_up_after_16_rounds_without_progress,
    stalls_failures_and_wakeups_are_counted,
    oom_report_runs_registered_reporters_unless_nowarn,
    failure_reports_are_rate_limited_to_one_per_10_s,
    scoped_gfp_context_is_applied_at_entry,
    double_free_and_wrong_order_free_are_detected,
    fault_injection_fails_next_allocation_then_stops,
    fault_injection_interval_probability_space_times,
    fault_injection_spares_nofail_and_can_ignore_reclaim,
    fail_page_alloc_counts_space_in_pages_and_has_a_min_order,
    order_above_max_order_fails,
    page_owner_follows_blocks,
    kernel_stacks_come_from_the_page_allocator,
    alloc_error_names_order_and_mode,
    cmdline_keys_parse_and_reject_with_key_names,
    sleeping_allocation_in_atomic_context_is_reported_at_the_caller_and_does_not_sleep,
    pcp_batch_high_and_vmstat_threshold_follow_linux_6_6,
    order0_free_goes_to_the_pcp_list_and_comes_back_hot,
    above_high_a_batch_goes_back_to_the_buddy_lists,
    drain_all_pages_returns_everything_and_buddies_merge_back,
    double_free_of_a_block_on_a_pcp_list_is_detected,
    slow_path_drains_pcp_lists_before_failing,
    vmstat_deltas_fold_into_the_global_counters,
    a_held_pcp_lock_sends_allocations_and_frees_to_the_zone,
);

const NOWARN: Gfp = Gfp::__GFP_NOWARN;

/// Blocks held by a test, freed when it ends (also when a check fails).
struct Held(Vec<(PhysAddr, u32)>);

impl Held {
    fn new() -> Self {
        Held(Vec::new())
    }
    fn push(&mut self, p: PhysAddr, order: u32) {
        self.0.push((p, order));
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for (p, o) in self.0.drain(..) {
            free_pages(p, o);
        }
    }
}

/// Takes order-0 pages, ignoring watermarks (PF_MEMALLOC), until only
/// `target` pages are free.
fn fill_to(target: u64) -> Held {
    let _noreclaim = MemallocScope::noreclaim();
    let mut h = Held(Vec::with_capacity(nr_free_pages() as usize + 16));
    while nr_free_pages() > target {
        match alloc_pages(GFP_NOWAIT | NOWARN, 0) {
            Ok(p) => h.push(p, 0),
            Err(_) => break,
        }
    }
    h
}

fn snap() -> AllocStats {
    page_alloc::stats().snapshot()
}

fn fail(msg: alloc::string::String) -> kreclaim::harness::TestFailure {
    kreclaim::harness::TestFailure::new(msg)
}

fn watermarks_follow_linux_formulas() -> TestResult {
    let managed = page_alloc::managed_pages();
    kassert!(managed > 16 * 1024, "only {managed} pages managed");
    // calculate_min_free_kbytes + __setup_per_zone_wmarks, by hand.
    let lowmem_kb = managed * 4;
    let mut r = 0u64;
    while (r + 1) * (r + 1) <= lowmem_kb * 16 {
        r += 1;
    }
    let min_kb = r.clamp(128, 262_144);
    kassert_eq!(page_alloc::min_free_kbytes(), min_kb);
    let min = min_kb / 4;
    let tmp = core::cmp::max(min / 4, managed * 10 / 10_000);
    let w = watermarks();
    kassert_eq!(w.min, min);
    kassert_eq!(w.low, min + tmp);
    kassert_eq!(w.high, min + 2 * tmp);
    Ok(())
}

fn default_min_free_kbytes_is_clamped_like_linux() -> TestResult {
    // int_sqrt(lowmem_kB * 16): 1 GiB -> 4096, 16 MiB -> 512.
    kassert_eq!(default_min_free_kbytes(1 << 18), 4096);
    kassert_eq!(default_min_free_kbytes(1 << 12), 512);
    // 256 KiB -> 64, clamped up to 128; 4 TiB -> 262144 (the cap).
    kassert_eq!(default_min_free_kbytes(64), 128);
    kassert_eq!(default_min_free_kbytes(1 << 30), 262_144);
    // A large machine where the scale factor term wins over min/4.
    let w = compute_watermarks(1 << 20, 4096);
    kassert_eq!(w.min, 1024);
    kassert_eq!(w.low, 1024 + 1048);
    kassert_eq!(w.high, 1024 + 2 * 1048);
    Ok(())
}

fn set_min_free_kbytes_recomputes_watermarks() -> TestResult {
    let old = page_alloc::min_free_kbytes();
    page_alloc::set_min_free_kbytes(8192);
    let w = watermarks();
    page_alloc::set_min_free_kbytes(old);
    kassert_eq!(w.min, 2048);
    kassert_eq!(w.low, 2048 + 512);
    kassert_eq!(w.high, 2048 + 1024);
    kassert_eq!(page_alloc::min_free_kbytes(), old);
    Ok(())
}

fn watermark_check_reserves_arithmetic() -> TestResult {
    let any = |_| true;
    let min = AllocFlags::WMARK_MIN;
    // Plain: free must exceed the mark.
    kassert!(!watermark_ok(400, 0, 400, min, any));
    kassert!(watermark_ok(401, 0, 400, min, any));
    // __GFP_HIGH (blocking): half the mark.
    let high = page_alloc::gfp_to_alloc_flags(GFP_KERNEL | Gfp::__GFP_HIGH);
    kassert!(!watermark_ok(200, 0, 400, high, any));
    kassert!(watermark_ok(201, 0, 400, high, any));
    // GFP_ATOMIC: 3/8 of the mark.
    let atomic = page_alloc::gfp_to_alloc_flags(GFP_ATOMIC);
    kassert!(!watermark_ok(150, 0, 400, atomic, any));
    kassert!(watermark_ok(151, 0, 400, atomic, any));
    // GFP_NOWAIT is non-blocking without __GFP_HIGH: no discount.
    let nowait = page_alloc::gfp_to_alloc_flags(GFP_NOWAIT);
    kassert!(!watermark_ok(400, 0, 400, nowait, any));
    // Order 3 cannot count the 7 pages it would leave unusable.
    kassert!(!watermark_ok(407, 3, 400, min, any));
    kassert!(watermark_ok(408, 3, 400, min, any));
    kassert!(!watermark_ok(408, 3, 400, min, |_| false));
    Ok(())
}

fn every_page_allocates_and_buddies_merge_back() -> TestResult {
    // The Vec comes from kmalloc (pages), so size it before measuring.
    let mut pages = Vec::with_capacity(nr_free_pages() as usize + 1024);
    // Pages on per-CPU lists are free but not in NR_FREE_PAGES: count from
    // a drained state, as Linux's tests do.
    page_alloc::drain_all_pages();
    let before = page_alloc::free_per_order();
    let n0 = nr_free_pages();
    {
        let _noreclaim = MemallocScope::noreclaim();
        while let Ok(p) = alloc_pages(GFP_NOWAIT | NOWARN, 0) {
            pages.push(p);
        }
    }
    let all_taken = nr_free_pages();
    let per_order_empty = page_alloc::free_per_order();
    let owners_ok = pages
        .iter()
        .take(64)
        .all(|p| page_alloc::page_owner(*p) == Some(PageOwner::Kernel));
    // Free in an order that merges late: even pfns first, then odd ones.
    for p in pages.iter().filter(|p| p.pfn() % 2 == 0) {
        free_pages(*p, 0);
    }
    let halfway = page_alloc::free_per_order();
    for p in pages.iter().filter(|p| p.pfn() % 2 == 1) {
        free_pages(*p, 0);
    }
    page_alloc::drain_all_pages();
    let after_drain = (nr_free_pages(), page_alloc::free_per_order());
    // Only now may the test allocate again (the heap is kmalloc).
    let mut sorted = pages.clone();
    sorted.sort();
    sorted.dedup();
    let distinct = sorted.len();
    drop(sorted);
    kassert_eq!(pages.len() as u64, n0, "pages taken vs free at the start");
    kassert_eq!(all_taken, 0);
    kassert_eq!(per_order_empty, [0; MAX_ORDER as usize + 1]);
    kassert_eq!(distinct, pages.len(), "a page was handed out twice");
    kassert!(owners_ok, "fresh pages are owned by the kernel");
    kassert!(
        halfway[1..].iter().all(|&n| n == 0),
        "no buddies can merge while every odd page is held: {halfway:?}"
    );
    kassert_eq!(after_drain.0, n0);
    kassert_eq!(after_drain.1, before, "buddies merged back");
    kassert!(before[MAX_ORDER as usize] > 0, "{before:?}");
    Ok(())
}

fn high_order_needs_a_free_block_of_that_order() -> TestResult {
    // Exact page counts: every block passes through the per-CPU lists.
    let _pcp = page_alloc::zone_pcp_disable();
    let w = watermarks();
    // Rust's heap is kmalloc: size `kept` before memory runs out.
    let mut kept = Held(Vec::with_capacity(nr_free_pages() as usize + 16));
    let mut h = fill_to(0);
    // Give back even pages only: their odd buddies stay held, so nothing
    // merges and plenty of memory is free, but all of it in order-0 blocks.
    let mut freed = 0;
    for (p, o) in h.0.drain(..) {
        if p.pfn() % 2 == 0 && freed < w.high * 2 {
            free_pages(p, o);
            freed += 1;
        } else {
            kept.push(p, o);
        }
    }
    let per_order = page_alloc::free_per_order();
    kassert!(nr_free_pages() > w.high, "{} free", nr_free_pages());
    kassert!(per_order[1..].iter().all(|&n| n == 0), "{per_order:?}");
    kassert!(page_alloc::zone_watermark_ok(
        0,
        w.low,
        AllocFlags::WMARK_LOW
    ));
    kassert!(!page_alloc::zone_watermark_ok(
        1,
        w.low,
        AllocFlags::WMARK_LOW
    ));
    kassert!(alloc_pages(GFP_NOWAIT | NOWARN, 1).is_err());
    let p = alloc_pages(GFP_NOWAIT | NOWARN, 0).map_err(|e| fail(alloc::format!("{e}")))?;
    kept.push(p, 0);
    Ok(())
}

fn zeroed_pages_are_zero() -> TestResult {
    let mut dirty = Vec::new();
    for _ in 0..64 {
        let p = alloc_pages(GFP_KERNEL, 0).map_err(|e| fail(alloc::format!("{e}")))?;
        // SAFETY: our page, direct mapped.
        unsafe { core::ptr::write_bytes(page_alloc::page_address(p), 0xa5, PAGE_SIZE) };
        dirty.push(p);
    }
    for p in &dirty {
        free_pages(*p, 0);
    }
    let mut h = Held::new();
    let mut reused = 0;
    for _ in 0..64 {
        let p = alloc_pages(GFP_KERNEL | Gfp::__GFP_ZERO, 0)
            .map_err(|e| fail(alloc::format!("{e}")))?;
        h.push(p, 0);
        reused += dirty.contains(&p) as u32;
        // SAFETY: our page, direct mapped.
        let bytes = unsafe { core::slice::from_raw_parts(page_alloc::page_address(p), PAGE_SIZE) };
        kassert!(bytes.iter().all(|&b| b == 0), "page {p} is not zeroed");
    }
    kassert!(
        reused > 0,
        "no dirtied page came back: the test proves nothing"
    );
    // A zeroed order-2 block is zero throughout.
    let p = alloc_pages(GFP_KERNEL, 2).map_err(|e| fail(alloc::format!("{e}")))?;
    // SAFETY: our block.
    unsafe { core::ptr::write_bytes(page_alloc::page_address(p), 0x5a, 4 * PAGE_SIZE) };
    free_pages(p, 2);
    let q =
        alloc_pages(GFP_KERNEL | Gfp::__GFP_ZERO, 2).map_err(|e| fail(alloc::format!("{e}")))?;
    h.push(q, 2);
    // SAFETY: our block.
    let bytes = unsafe { core::slice::from_raw_parts(page_alloc::page_address(q), 4 * PAGE_SIZE) };
    kassert_eq!(q, p, "the same block came back");
    kassert!(bytes.iter().all(|&b| b == 0), "order-2 block not zeroed");
    Ok(())
}

fn atomic_dips_below_min_nowait_does_not() -> TestResult {
    // Exact page counts: every block passes through the per-CPU lists.
    let _pcp = page_alloc::zone_pcp_disable();
    let w = watermarks();
    let mut h = fill_to(w.min + 1);
    kassert_eq!(nr_free_pages(), w.min + 1);
    // Just above MIN, GFP_NOWAIT still gets a page...
    let p = alloc_pages(GFP_NOWAIT | NOWARN, 0).map_err(|e| fail(alloc::format!("{e}")))?;
    h.push(p, 0);
    kassert_eq!(nr_free_pages(), w.min);
    // ...at MIN it fails, and GFP_ATOMIC (__GFP_HIGH, non-blocking) goes on.
    kassert!(alloc_pages(GFP_NOWAIT | NOWARN, 0).is_err());
    let p = alloc_pages(GFP_ATOMIC | NOWARN, 0).map_err(|e| fail(alloc::format!("{e}")))?;
    h.push(p, 0);
    // GFP_ATOMIC may go down to 3/8 of MIN, no further.
    let m = w.min as i64;
    let m = m - m / 2;
    let atomic_floor = (m - m / 4) as u64;
    let mut h2 = fill_to(atomic_floor + 1);
    kassert_eq!(nr_free_pages(), atomic_floor + 1);
    let p = alloc_pages(GFP_ATOMIC | NOWARN, 0).map_err(|e| fail(alloc::format!("{e}")))?;
    h2.push(p, 0);
    kassert!(alloc_pages(GFP_ATOMIC | NOWARN, 0).is_err());
    kassert!(alloc_pages(GFP_NOWAIT | NOWARN, 0).is_err());
    Ok(())
}

fn gfp_memalloc_ignores_watermarks_unless_nomemalloc() -> TestResult {
    // Exact page counts: every block passes through the per-CPU lists.
    let _pcp = page_alloc::zone_pcp_disable();
    let w = watermarks();
    let mut h = fill_to(w.min / 4);
    kassert!(alloc_pages(GFP_ATOMIC | NOWARN, 0).is_err());
    let p = alloc_pages(GFP_NOWAIT | Gfp::__GFP_MEMALLOC | NOWARN, 0)
        .map_err(|e| fail(alloc::format!("__GFP_MEMALLOC: {e}")))?;
    h.push(p, 0);
    kassert!(
        alloc_pages(
            GFP_NOWAIT | Gfp::__GFP_MEMALLOC | Gfp::__GFP_NOMEMALLOC | NOWARN,
            0
        )
        .is_err(),
        "__GFP_NOMEMALLOC overrides __GFP_MEMALLOC"
    );
    Ok(())
}

fn pf_memalloc_takes_reserves_but_never_reclaims() -> TestResult {
    // Exact page counts: every block passes through the per-CPU lists.
    let _pcp = page_alloc::zone_pcp_disable();
    let mut h = fill_to(0);
    // Without PF_MEMALLOC a sleeping allocation enters direct reclaim once
    // (__GFP_NORETRY)...
    let s0 = snap();
    kassert!(alloc_pages(GFP_KERNEL | Gfp::__GFP_NORETRY | NOWARN, 0).is_err());
    kassert_eq!(snap().alloc_stalls - s0.alloc_stalls, 1);
    // ...inside reclaim (PF_MEMALLOC) it never does, even with every retry
    // flag: reclaim must not recurse into reclaim.
    let s1 = snap();
    {
        let _noreclaim = MemallocScope::noreclaim();
        kassert!(alloc_pages(GFP_KERNEL | Gfp::__GFP_RETRY_MAYFAIL | NOWARN, 0).is_err());
    }
    kassert_eq!(snap().alloc_stalls, s1.alloc_stalls);
    // PF_MEMALLOC takes the reserves when there are some.
    let p = h.0.pop().unwrap();
    free_pages(p.0, p.1);
    kassert!(alloc_pages(GFP_KERNEL | Gfp::__GFP_NORETRY | NOWARN, 0).is_err());
    {
        let _noreclaim = MemallocScope::noreclaim();
        let q = alloc_pages(GFP_KERNEL | NOWARN, 0).map_err(|e| fail(alloc::format!("{e}")))?;
        h.push(q, 0);
    }
    Ok(())
}

fn noretry_fails_under_pressure_where_nofail_waits_and_succeeds() -> TestResult {
    // Exact page counts: every block passes through the per-CPU lists.
    let _pcp = page_alloc::zone_pcp_disable();
    // The vmscan stub reclaims nothing: another task frees memory later.
    // (Reclaim's last step flushes the slab caches' sheaves, which can free
    // slab pages: flushed before, and no allocation in between frees any.)
    let stash: Arc<spin::Mutex<Vec<PhysAddr>>> = Arc::new(spin::Mutex::new(Vec::with_capacity(64)));
    let go = Arc::new(AtomicBool::new(false));
    let (s, g) = (stash.clone(), go.clone());
    let freer = task::spawn("freer", move || {
        while !g.load(Ordering::Acquire) {
            task::sleep(Duration::from_millis(1));
        }
        task::sleep(Duration::from_millis(30));
        for p in s.lock().drain(..) {
            free_pages(p, 0);
        }
    })
    .map_err(|e| fail(alloc::format!("spawn: {e:?}")))?;
    kreclaim::mm::slab::flush_all_sheaves();
    let mut h = fill_to(0);
    kassert_eq!(nr_free_pages(), 0);
    for _ in 0..64 {
        let (p, _) = h.0.pop().unwrap();
        stash.lock().push(p);
    }
    let s0 = snap();
    let e = alloc_pages(GFP_KERNEL | Gfp::__GFP_NORETRY | NOWARN, 0);
    kassert!(e.is_err(), "__GFP_NORETRY got a page with nothing free");
    kassert_eq!(
        snap().alloc_stalls - s0.alloc_stalls,
        1,
        "one reclaim round"
    );
    // The clock starts before the freer may start its 30 ms.
    let t0 = kreclaim::time::now_ns();
    go.store(true, Ordering::Release);
    let s1 = snap();
    let p = alloc_pages(GFP_KERNEL | Gfp::__GFP_NOFAIL | NOWARN, 0);
    let waited = kreclaim::time::now_ns() - t0;
    let s2 = snap();
    let joined = freer.join();
    let p = p.map_err(|e| fail(alloc::format!("__GFP_NOFAIL returned Err: {e}")))?;
    h.push(p, 0);
    kassert!(joined.is_ok());
    kassert!(
        waited >= 30_000_000,
        "NOFAIL returned after {waited} ns, before memory was freed"
    );
    kassert!(s2.nofail_retries > s1.nofail_retries);
    kassert!(s2.alloc_stalls > s1.alloc_stalls + MAX_RECLAIM_RETRIES as u64);
    Ok(())
}

fn costly_order_fails_after_one_reclaim_round() -> TestResult {
    // Exact page counts: every block passes through the per-CPU lists.
    let _pcp = page_alloc::zone_pcp_disable();
    let _h = fill_to(0);
    let s0 = snap();
    kassert!(alloc_pages(GFP_KERNEL | NOWARN, 4).is_err());
    kassert_eq!(
        snap().alloc_stalls - s0.alloc_stalls,
        1,
        "order 4 without __GFP_RETRY_MAYFAIL"
    );
    // Order 3 is not costly: it retries.
    let s1 = snap();
    kassert!(alloc_pages(GFP_KERNEL | NOWARN, 3).is_err());
    kassert_eq!(
        snap().alloc_stalls - s1.alloc_stalls,
        MAX_RECLAIM_RETRIES as u64 + 1
    );
    Ok(())
}

fn retry_mayfail_gives_up_after_16_rounds_without_progress() -> TestResult {
    // Exact page counts: every block passes through the per-CPU lists.
    let _pcp = page_alloc::zone_pcp_disable();
    let _h = fill_to(0);
    let s0 = snap();
    let e = alloc_pages(GFP_KERNEL | Gfp::__GFP_RETRY_MAYFAIL | NOWARN, 4);
    kassert!(e.is_err());
    // One round, then MAX_RECLAIM_RETRIES more without progress.
    kassert_eq!(
        snap().alloc_stalls - s0.alloc_stalls,
        MAX_RECLAIM_RETRIES as u64 + 1
    );
    Ok(())
}

fn stalls_failures_and_wakeups_are_counted() -> TestResult {
    // Exact page counts: every block passes through the per-CPU lists.
    let _pcp = page_alloc::zone_pcp_disable();
    let noretry = GFP_KERNEL | Gfp::__GFP_NORETRY | NOWARN;
    let nowait = GFP_NOWAIT | NOWARN;
    let f0 = (
        page_alloc::stats().failures_for(noretry),
        page_alloc::stats().failures_for(nowait),
    );
    let s0 = snap();
    {
        let _h = fill_to(0);
        kassert!(alloc_pages(noretry, 0).is_err());
        kassert!(alloc_pages(nowait, 0).is_err());
    }
    let s1 = snap();
    kassert_eq!(s1.failures - s0.failures, 2);
    kassert_eq!(s1.alloc_stalls - s0.alloc_stalls, 1);
    kassert!(s1.stall_ns > s0.stall_ns, "stall time not measured");
    kassert!(s1.kswapd_wakeups >= s0.kswapd_wakeups + 2);
    kassert_eq!(page_alloc::stats().failures_for(noretry), f0.0 + 1);
    kassert_eq!(page_alloc::stats().failures_for(nowait), f0.1 + 1);
    let p = alloc_pages(GFP_KERNEL, 0).map_err(|e| fail(alloc::format!("{e}")))?;
    free_pages(p, 0);
    let s2 = snap();
    kassert_eq!(s2.allocations - s1.allocations, 1);
    kassert_eq!(s2.frees - s1.frees, 1);
    let text = alloc::format!("{}", page_alloc::stats());
    kassert!(text.contains("allocation stalls"), "{text}");
    kassert!(
        text.contains("GFP_KERNEL|__GFP_NOWARN|__GFP_NORETRY"),
        "{text}"
    );
    Ok(())
}

static REPORTS: AtomicU32 = AtomicU32::new(0);

fn count_report() {
    REPORTS.fetch_add(1, Ordering::SeqCst);
}

fn oom_report_runs_registered_reporters_unless_nowarn() -> TestResult {
    // Exact page counts: every block passes through the per-CPU lists.
    let _pcp = page_alloc::zone_pcp_disable();
    page_alloc::reset_warn_ratelimit();
    kassert!(page_alloc::register_oom_reporter(count_report).is_ok());
    kassert!(page_alloc::register_oom_reporter(count_report).is_ok());
    let r0 = REPORTS.load(Ordering::SeqCst);
    let (quiet, loud) = {
        let _h = fill_to(0);
        kassert!(alloc_pages(GFP_KERNEL | Gfp::__GFP_NORETRY | NOWARN, 0).is_err());
        let quiet = REPORTS.load(Ordering::SeqCst);
        kassert!(alloc_pages(GFP_KERNEL | Gfp::__GFP_NORETRY, 0).is_err());
        (quiet, REPORTS.load(Ordering::SeqCst))
    };
    let removed = page_alloc::unregister_oom_reporter(count_report);
    kassert_eq!(quiet, r0, "__GFP_NOWARN must not report");
    kassert_eq!(loud, r0 + 1, "one report per failure, reporter once");
    kassert!(removed);
    kassert!(!page_alloc::unregister_oom_reporter(count_report));
    Ok(())
}

fn failure_reports_are_rate_limited_to_one_per_10_s() -> TestResult {
    // Exact page counts: every block passes through the per-CPU lists.
    let _pcp = page_alloc::zone_pcp_disable();
    // Linux's warn_alloc: DEFINE_RATELIMIT_STATE(nopage_rs, 10*HZ, 1).
    kassert!(page_alloc::register_oom_reporter(count_report).is_ok());
    page_alloc::reset_warn_ratelimit();
    let r0 = REPORTS.load(Ordering::SeqCst);
    let s0 = snap();
    {
        let _h = fill_to(0);
        for _ in 0..3 {
            kassert!(alloc_pages(GFP_KERNEL | Gfp::__GFP_NORETRY, 0).is_err());
        }
    }
    let s1 = snap();
    page_alloc::unregister_oom_reporter(count_report);
    kassert_eq!(REPORTS.load(Ordering::SeqCst), r0 + 1, "one report in 10 s");
    kassert_eq!(s1.reports_suppressed - s0.reports_suppressed, 2);
    Ok(())
}

fn scoped_gfp_context_is_applied_at_entry() -> TestResult {
    // Exact page counts: every block passes through the per-CPU lists.
    let _pcp = page_alloc::zone_pcp_disable();
    let _h = fill_to(0);
    let extra = Gfp::__GFP_NORETRY | NOWARN;
    let nofs = {
        let _s = MemallocScope::nofs();
        alloc_pages(GFP_KERNEL | extra, 0)
    };
    let noio = {
        let _s = MemallocScope::noio();
        alloc_pages(GFP_KERNEL | extra, 0)
    };
    kassert_eq!(
        nofs,
        Err(AllocError {
            gfp: GFP_NOFS | extra,
            order: 0
        })
    );
    kassert_eq!(
        noio,
        Err(AllocError {
            gfp: GFP_NOIO | extra,
            order: 0
        })
    );
    Ok(())
}

fn double_free_and_wrong_order_free_are_detected() -> TestResult {
    // Exact page counts: every block passes through the per-CPU lists.
    let _pcp = page_alloc::zone_pcp_disable();
    let before = page_alloc::free_per_order();
    let n0 = nr_free_pages();
    let s0 = snap();
    let p = alloc_pages(GFP_KERNEL, 2).map_err(|e| fail(alloc::format!("{e}")))?;
    let tail = PhysAddr::new(p.as_u64() + PAGE_SIZE as u64);
    let last = || page_alloc::last_bad_free().map(|b| (b.pfn, b.order, b.kind));

    free_pages(p, 1);
    kassert_eq!(
        last(),
        Some((p.pfn(), 1, BadFreeKind::WrongOrder { allocated_order: 2 }))
    );
    kassert_eq!(
        nr_free_pages(),
        n0 - 4,
        "a wrong-order free changed nothing"
    );
    free_pages(tail, 0);
    kassert_eq!(
        last(),
        Some((
            tail.pfn(),
            0,
            BadFreeKind::NotHead {
                block_pfn: p.pfn(),
                block_order: 2
            }
        ))
    );
    free_pages(p, 2);
    kassert_eq!(nr_free_pages(), n0);
    free_pages(p, 2);
    kassert!(
        matches!(last(), Some((pfn, 2, BadFreeKind::DoubleFree { .. })) if pfn == p.pfn()),
        "{:?}",
        last()
    );
    free_pages(tail, 0);
    kassert!(
        matches!(last(), Some((pfn, 0, BadFreeKind::DoubleFree { .. })) if pfn == tail.pfn()),
        "{:?}",
        last()
    );
    free_pages(PhysAddr::new(0), 0);
    kassert_eq!(last(), Some((0, 0, BadFreeKind::NotManaged)));
    free_pages(PhysAddr::new(p.as_u64() + 8), 0);
    kassert_eq!(last().map(|l| l.2), Some(BadFreeKind::BadArgument));
    kassert_eq!(snap().bad_frees - s0.bad_frees, 6);
    kassert_eq!(nr_free_pages(), n0, "bad frees changed the free count");
    kassert_eq!(page_alloc::free_per_order(), before);
    // Still usable.
    let q = alloc_pages(GFP_KERNEL, 2).map_err(|e| fail(alloc::format!("{e}")))?;
    kassert_eq!(nr_free_pages(), n0 - 4);
    free_pages(q, 2);
    kassert_eq!(page_alloc::free_per_order(), before);
    Ok(())
}

fn fault_injection_fails_next_allocation_then_stops() -> TestResult {
    let s0 = snap();
    FAIL_PAGE_ALLOC.configure(100, 1, 1);
    let first = alloc_pages(GFP_KERNEL, 0);
    let second = alloc_pages(GFP_KERNEL | NOWARN, 0);
    FAIL_PAGE_ALLOC.disable();
    let s1 = snap();
    if let Ok(p) = first {
        free_pages(p, 0);
    }
    let second = second.map_err(|e| fail(alloc::format!("second allocation: {e}")))?;
    free_pages(second, 0);
    kassert_eq!(
        first,
        Err(AllocError {
            gfp: GFP_KERNEL,
            order: 0
        })
    );
    kassert_eq!(s1.injected_failures - s0.injected_failures, 1);
    kassert_eq!(s1.failures - s0.failures, 1);
    kassert_eq!(FAIL_PAGE_ALLOC.times_left(), 0);
    // Probability 0 never fails.
    FAIL_PAGE_ALLOC.configure(0, 1, -1);
    let mut failed = 0;
    for _ in 0..500 {
        match alloc_pages(GFP_KERNEL | NOWARN, 0) {
            Ok(p) => free_pages(p, 0),
            Err(_) => failed += 1,
        }
    }
    FAIL_PAGE_ALLOC.disable();
    kassert_eq!(failed, 0);
    Ok(())
}

fn fault_injection_interval_probability_space_times() -> TestResult {
    let a = FaultAttr::new("test");
    kassert!(!should_fail(&a, 4096), "a new attr is disabled");
    // Every 3rd call fails.
    a.configure(100, 3, -1);
    let pattern: Vec<bool> = (0..6).map(|_| should_fail(&a, 4096)).collect();
    kassert_eq!(pattern, [false, false, true, false, false, true]);
    // times caps the failures.
    a.configure(100, 1, 5);
    let n = (0..100).filter(|_| should_fail(&a, 4096)).count();
    kassert_eq!(n, 5);
    // 50% fails about half, and the same sequence after reconfiguring.
    a.configure(50, 1, -1);
    let run1: Vec<bool> = (0..1000).map(|_| should_fail(&a, 4096)).collect();
    a.configure(50, 1, -1);
    let run2: Vec<bool> = (0..1000).map(|_| should_fail(&a, 4096)).collect();
    let n = run1.iter().filter(|&&f| f).count();
    kassert!((350..=650).contains(&n), "{n} of 1000 failed at 50%");
    kassert_eq!(run1, run2, "the sequence is reproducible");
    // The first `space` bytes pass.
    a.configure(100, 1, -1);
    a.set_space(3 * 4096);
    let pattern: Vec<bool> = (0..3).map(|_| should_fail(&a, 4096)).collect();
    kassert_eq!(pattern, [false, false, true]);
    // The command-line syntax.
    let s = FaultSpec::parse("10,25,8192,-1").ok_or_else(|| fail("parse".into()))?;
    kassert_eq!(
        s,
        FaultSpec {
            interval: 10,
            probability: 25,
            space: 8192,
            times: -1
        }
    );
    a.apply_spec(s);
    kassert!(alloc::format!("{a}").contains("probability 25%, interval 10"));
    kassert!(FaultSpec::parse("1,2,3").is_none());
    kassert!(FaultSpec::parse("1,2,3,4,5").is_none());
    kassert!(FaultSpec::parse("1,101,0,1").is_none());
    kassert!(FaultSpec::parse("1,x,0,1").is_none());
    Ok(())
}

fn fault_injection_spares_nofail_and_can_ignore_reclaim() -> TestResult {
    FAIL_PAGE_ALLOC.configure(100, 1, -1);
    let nofail = alloc_pages(GFP_KERNEL | Gfp::__GFP_NOFAIL, 0);
    let kernel = alloc_pages(GFP_KERNEL | NOWARN, 0);
    FAIL_PAGE_ALLOC.set_ignore_gfp_reclaim(true);
    let kernel_ignored = alloc_pages(GFP_KERNEL | NOWARN, 0);
    let nowait = alloc_pages(GFP_NOWAIT | NOWARN, 0);
    FAIL_PAGE_ALLOC.set_ignore_gfp_reclaim(false);
    FAIL_PAGE_ALLOC.disable();
    let mut h = Held::new();
    for r in [nofail, kernel, kernel_ignored, nowait].iter().flatten() {
        h.push(*r, 0);
    }
    kassert!(nofail.is_ok(), "__GFP_NOFAIL is never failed on purpose");
    kassert!(kernel.is_err());
    kassert!(
        kernel_ignored.is_ok(),
        "ignore_gfp_reclaim spares GFP_KERNEL"
    );
    kassert!(nowait.is_err(), "...but not GFP_NOWAIT");
    Ok(())
}

/// Linux's `should_fail_alloc_page`: `space` is counted in pages (an
/// order-n request is 2^n), and requests below `min-order` never fail.
fn fail_page_alloc_counts_space_in_pages_and_has_a_min_order() -> TestResult {
    let mut h = Held::new();
    FAIL_PAGE_ALLOC.configure(100, 1, -1);
    FAIL_PAGE_ALLOC.set_space(3);
    // An order-1 request is 2 pages: 3 > 2, it passes and 1 page of space
    // is left; an order-0 request (1 page) then fails (1 > 1 is false).
    let first = alloc_pages(GFP_KERNEL | NOWARN, 1);
    let second = alloc_pages(GFP_KERNEL | NOWARN, 0);
    FAIL_PAGE_ALLOC.set_min_order(1);
    let small = alloc_pages(GFP_KERNEL | NOWARN, 0);
    let big = alloc_pages(GFP_KERNEL | NOWARN, 1);
    FAIL_PAGE_ALLOC.set_min_order(0);
    FAIL_PAGE_ALLOC.disable();
    if let Ok(p) = first {
        h.push(p, 1);
    }
    for r in [second, small].iter().flatten() {
        h.push(*r, 0);
    }
    if let Ok(p) = big {
        h.push(p, 1);
    }
    kassert!(first.is_ok(), "2 of 3 pages of space: passes");
    kassert!(
        second.is_err(),
        "1 page of space left is not more than 1 page"
    );
    kassert!(small.is_ok(), "order 0 is below min-order 1");
    kassert!(big.is_err(), "order 1 is not below min-order 1");
    Ok(())
}

fn order_above_max_order_fails() -> TestResult {
    let s0 = snap();
    let e = alloc_pages(GFP_KERNEL | NOWARN, MAX_ORDER + 1);
    kassert_eq!(
        e,
        Err(AllocError {
            gfp: GFP_KERNEL | NOWARN,
            order: MAX_ORDER + 1
        })
    );
    kassert_eq!(snap().failures - s0.failures, 1);
    let p = alloc_pages(GFP_KERNEL, MAX_ORDER).map_err(|e| fail(alloc::format!("{e}")))?;
    free_pages(p, MAX_ORDER);
    Ok(())
}

fn page_owner_follows_blocks() -> TestResult {
    let p = alloc_pages(GFP_KERNEL, 1).map_err(|e| fail(alloc::format!("{e}")))?;
    let tail = PhysAddr::new(p.as_u64() + PAGE_SIZE as u64);
    let kernel = (page_alloc::page_owner(p), page_alloc::page_owner(tail));
    let block = page_alloc::page_block(tail);
    page_alloc::set_page_owner(p, 1, PageOwner::Slab("test-cache"));
    let slab = page_alloc::page_owner(tail);
    let page = page_alloc::pfn_to_page(p.pfn());
    let flags = page.map(|pg| pg.flags());
    let back = page.and_then(page_alloc::page_to_pfn);
    free_pages(p, 1);
    kassert_eq!(kernel, (Some(PageOwner::Kernel), Some(PageOwner::Kernel)));
    kassert_eq!(block, Some((p, 1)));
    kassert_eq!(slab, Some(PageOwner::Slab("test-cache")));
    kassert_eq!(flags, Some(PageFlags::HEAD | PageFlags::SLAB));
    kassert_eq!(back, Some(p.pfn()));
    kassert_eq!(page_alloc::page_owner(p), Some(PageOwner::Free));
    kassert_eq!(page_alloc::page_block(p), None);
    kassert!(
        !page_alloc::pfn_to_page(p.pfn())
            .unwrap()
            .flags()
            .contains(PageFlags::SLAB)
    );
    kassert_eq!(
        page_alloc::page_owner(PhysAddr::new(0)),
        Some(PageOwner::Reserved)
    );
    kassert_eq!(alloc::format!("{}", PageOwner::Slab("x")), "slab 'x'");
    Ok(())
}

fn kernel_stacks_come_from_the_page_allocator() -> TestResult {
    // Exact page counts: every block passes through the per-CPU lists.
    let _pcp = page_alloc::zone_pcp_disable();
    // `join` returns once the task's stack is freed, on any CPU.
    task::spawn("warm", || {}).unwrap().join().unwrap();
    let free0 = nr_free_pages();
    let seen = Arc::new(spin::Mutex::new(None));
    let s = seen.clone();
    task::spawn("stack-probe", move || {
        let local = 0u8;
        let va = core::hint::black_box(&local) as *const u8 as u64;
        let pa = kreclaim::arch::x86_64::paging::translate(va).map(|(pa, _)| pa);
        let owner = pa.and_then(|pa| page_alloc::page_owner(PhysAddr::new(pa)));
        *s.lock() = Some((nr_free_pages(), owner));
    })
    .unwrap()
    .join()
    .unwrap();
    for _ in 0..50 {
        task::spawn("short", || {}).unwrap().join().unwrap();
    }
    let seen = *seen.lock();
    let stack_pages = (task::STACK_SIZE / PAGE_SIZE) as u64;
    kassert_eq!(
        seen,
        Some((free0 - stack_pages, Some(PageOwner::Stack))),
        "while the task ran"
    );
    kassert_eq!(nr_free_pages(), free0, "stacks went back to the allocator");
    Ok(())
}

fn alloc_error_names_order_and_mode() -> TestResult {
    let e = AllocError {
        gfp: GFP_NOFS | Gfp::__GFP_ZERO,
        order: 3,
    };
    kassert_eq!(
        alloc::format!("{e}"),
        "page allocation failure: order:3, mode:GFP_NOFS|__GFP_ZERO"
    );
    Ok(())
}

fn cmdline_keys_parse_and_reject_with_key_names() -> TestResult {
    let c = Config::parse(
        "mem=64M min_free_kbytes=2048 fail_page_alloc=1,100,0,1 failslab=10,50,4096,-1 \
         fail_page_alloc_min_order=1 oom=fail",
    )
    .map_err(|e| fail(alloc::format!("{e}")))?;
    kassert_eq!(c.mem, Some(64 << 20));
    kassert_eq!(c.min_free_kbytes, Some(2048));
    kassert_eq!(
        c.fail_page_alloc,
        Some(FaultSpec {
            interval: 1,
            probability: 100,
            space: 0,
            times: 1
        })
    );
    kassert_eq!(
        c.failslab,
        Some(FaultSpec {
            interval: 10,
            probability: 50,
            space: 4096,
            times: -1
        })
    );
    let shown = alloc::format!("{c}");
    kassert!(
        shown.contains("mem=65536K") && shown.contains("failslab=10,50,4096,-1"),
        "{shown}"
    );
    kassert_eq!(Config::default().mem, None);
    kassert_eq!(Config::default().fail_page_alloc, None);
    kassert_eq!(c.fail_page_alloc_min_order, Some(1));
    kassert_eq!(c.oom, kreclaim::mm::oom_kill::OomPolicy::Fail);
    kassert_eq!(
        Config::default().oom,
        kreclaim::mm::oom_kill::OomPolicy::Kill
    );
    kassert!(
        shown.contains("fail_page_alloc_min_order=1") && shown.contains("oom=fail"),
        "{shown}"
    );
    for (token, key) in [
        ("mem=bad", "mem"),
        ("mem=64Q", "mem"),
        ("mem=1M", "mem"),
        ("mem=", "mem"),
        ("min_free_kbytes=-1", "min_free_kbytes"),
        ("min_free_kbytes=1k", "min_free_kbytes"),
        ("min_free_kbytes=4294967296", "min_free_kbytes"),
        ("fail_page_alloc=1,2,3", "fail_page_alloc"),
        ("fail_page_alloc=1,200,0,1", "fail_page_alloc"),
        ("failslab=a,b,c,d", "failslab"),
        ("fail_page_alloc_min_order=11", "fail_page_alloc_min_order"),
        ("fail_page_alloc_min_order=-1", "fail_page_alloc_min_order"),
        ("oom=panic", "oom"),
    ] {
        let e = Config::parse(token).unwrap_err();
        kassert!(
            matches!(&e, CmdlineError::BadValue { key: k, .. } if *k == key),
            "{token}: {e:?}"
        );
        let msg = alloc::format!("{e}");
        kassert!(msg.contains(token) && msg.contains(key), "{msg}");
    }
    Ok(())
}

/// Where the last "sleeping function called from invalid context" report
/// pointed, as (file, line).
fn last_invalid_sleep() -> Result<(&'static str, u32), kreclaim::harness::TestFailure> {
    let at = task::last_invalid_context_sleep()
        .ok_or_else(|| fail(alloc::string::String::from("no report recorded")))?;
    Ok((at.file(), at.line()))
}

fn sleeping_allocation_in_atomic_context_is_reported_at_the_caller_and_does_not_sleep() -> TestResult
{
    // Exact page counts: every block passes through the per-CPU lists.
    let _pcp = page_alloc::zone_pcp_disable();
    use kreclaim::mm::slab::kmalloc::{kfree, kmalloc};
    use kreclaim::platform::IrqGuard;
    let n = task::invalid_context_sleeps();
    // Preemption disabled: reported at the caller's line, and served.
    let (r, line) = {
        let _p = task::PreemptGuard::new();
        (alloc_pages(GFP_KERNEL, 0), line!())
    };
    let pa = r.map_err(|e| fail(alloc::format!("{e}")))?;
    free_pages(pa, 0);
    kassert_eq!(task::invalid_context_sleeps(), n + 1);
    kassert_eq!(last_invalid_sleep()?, (file!(), line));
    // Interrupts masked, through kmalloc: a slab class and a large one.
    for size in [64, 1 << 20] {
        let before = task::invalid_context_sleeps();
        let (r, line) = {
            let _irq = IrqGuard::new();
            (kmalloc(size, GFP_KERNEL), line!())
        };
        let p = r.map_err(|e| fail(alloc::format!("kmalloc({size}): {e}")))?;
        kfree(p.as_ptr());
        kassert_eq!(
            task::invalid_context_sleeps(),
            before + 1,
            "kmalloc({size})"
        );
        kassert_eq!(last_invalid_sleep()?, (file!(), line), "kmalloc({size})");
    }
    // Under pressure it fails like an atomic allocation instead of entering
    // direct reclaim, which would sleep.
    let h = fill_to(0);
    let stalls = snap().alloc_stalls;
    let before = task::invalid_context_sleeps();
    let r = {
        let _p = task::PreemptGuard::new();
        alloc_pages(GFP_KERNEL | NOWARN, 0)
    };
    let after = snap();
    drop(h);
    kassert!(r.is_err(), "{r:?}");
    kassert_eq!(after.alloc_stalls, stalls, "entered direct reclaim");
    kassert_eq!(task::invalid_context_sleeps(), before + 1);
    // Allowed contexts are not reported.
    let before = task::invalid_context_sleeps();
    let pa = alloc_pages(GFP_KERNEL, 0).map_err(|e| fail(alloc::format!("{e}")))?;
    free_pages(pa, 0);
    kassert_eq!(task::invalid_context_sleeps(), before);
    Ok(())
}

/// The running CPU (the test task runs on the boot CPU; APs run no tasks).
fn cpu() -> usize {
    kreclaim::platform::cpu_id()
}

fn pcp_batch_high_and_vmstat_threshold_follow_linux_6_6() -> TestResult {
    // zone_batchsize by hand: min(managed >> 10, 256) / 4, at least 1, then
    // rounddown_pow_of_two(b + b/2) - 1; the caller takes max(1, ...).
    kassert_eq!(page_alloc::zone_batchsize(1 << 18), 63); // 1 GiB: 64 -> 96 -> 64 - 1
    kassert_eq!(page_alloc::zone_batchsize(32 << 10), 7); // 128 MiB: 8 -> 12 -> 8 - 1
    kassert_eq!(page_alloc::zone_batchsize(4048), 0); // 16 MiB: 0 -> 1 -> 1 - 1
    kassert_eq!(page_alloc::zone_batchsize(1 << 30), 63); // capped at 1 MiB
    // zone_highsize: low watermark / CPUs, at least 4 * batch.
    kassert_eq!(page_alloc::zone_highsize(1000, 63, 2), 500);
    kassert_eq!(page_alloc::zone_highsize(1000, 63, 8), 252);
    // calculate_normal_threshold: 2 * fls(cpus) * (1 + fls(MiB / 128)).
    kassert_eq!(page_alloc::vm_stat_threshold(1 << 18, 2), 20); // 4 * (1 + 4)
    kassert_eq!(page_alloc::vm_stat_threshold(1 << 18, 1), 10);
    kassert_eq!(page_alloc::vm_stat_threshold(1 << 30, 16), 125); // capped

    let managed = page_alloc::managed_pages();
    let cpus = kreclaim::platform::nr_cpus() as u64;
    let mut b = core::cmp::min(managed >> 10, 256) / 4;
    b = b.max(1);
    let x = b + b / 2;
    let mut pow = 1;
    while pow * 2 <= x {
        pow *= 2;
    }
    let batch = (pow - 1).max(1);
    let high = core::cmp::max(watermarks().low / cpus, 4 * batch);
    kassert_eq!(page_alloc::pcp_batch_high(), (batch as u32, high as u32));
    // min_free_kbytes changes recompute high (setup_per_zone_wmarks ->
    // zone_pcp_update).
    let old = page_alloc::min_free_kbytes();
    page_alloc::set_min_free_kbytes(old * 4);
    let high4 = page_alloc::pcp_batch_high().1 as u64;
    page_alloc::set_min_free_kbytes(old);
    kassert_eq!(
        high4,
        core::cmp::max(watermarks_for(old * 4).low / cpus, 4 * batch)
    );
    kassert_eq!(page_alloc::pcp_batch_high(), (batch as u32, high as u32));
    Ok(())
}

fn watermarks_for(min_free_kbytes: u64) -> page_alloc::Watermarks {
    compute_watermarks(page_alloc::managed_pages(), min_free_kbytes)
}

fn order0_free_goes_to_the_pcp_list_and_comes_back_hot() -> TestResult {
    let (batch, _) = page_alloc::pcp_batch_high();
    page_alloc::drain_all_pages();
    let n0 = nr_free_pages();
    let p = alloc_pages(GFP_KERNEL, 0).map_err(|e| fail(alloc::format!("{e}")))?;
    // rmqueue_bulk took a whole batch off the buddy lists.
    let n1 = nr_free_pages();
    let on_pcp = page_alloc::pcp_count(cpu());
    free_pages(p, 0);
    let n2 = nr_free_pages();
    let on_pcp2 = page_alloc::pcp_count(cpu());
    let flags = page_alloc::pfn_to_page(p.pfn()).map(|pg| pg.flags());
    let owner = page_alloc::page_owner(p);
    let q = alloc_pages(GFP_KERNEL, 0).map_err(|e| fail(alloc::format!("{e}")))?;
    let owner_q = page_alloc::page_owner(q);
    free_pages(q, 0);
    kassert_eq!(n0 - n1, batch as u64, "one refill of batch pages");
    kassert_eq!(on_pcp, batch as u64 - 1);
    kassert_eq!(
        n2,
        n1,
        "the free went to the per-CPU list, not the buddy lists"
    );
    kassert_eq!(on_pcp2, on_pcp + 1);
    kassert_eq!(flags, Some(PageFlags::PCP));
    kassert_eq!(owner, Some(PageOwner::Free));
    kassert_eq!(q, p, "LIFO: the cache-hot page comes back first");
    kassert_eq!(owner_q, Some(PageOwner::Kernel));
    Ok(())
}

fn above_high_a_batch_goes_back_to_the_buddy_lists() -> TestResult {
    let (batch, high) = page_alloc::pcp_batch_high();
    let mut pages = Vec::with_capacity(high as usize + 1);
    for _ in 0..high {
        pages.push(alloc_pages(GFP_KERNEL, 0).map_err(|e| fail(alloc::format!("{e}")))?);
    }
    page_alloc::drain_all_pages();
    let n0 = nr_free_pages();
    let mut stayed = true;
    for (i, p) in pages.iter().take(high as usize - 1).enumerate() {
        free_pages(*p, 0);
        stayed &= page_alloc::pcp_count(cpu()) == i as u64 + 1 && nr_free_pages() == n0;
    }
    free_pages(pages[high as usize - 1], 0);
    let after = (nr_free_pages(), page_alloc::pcp_count(cpu()));
    page_alloc::drain_all_pages();
    drop(pages);
    kassert!(stayed, "below high every free stays on the list");
    // count reached high: nr_pcp_free = clamp(batch << 0, batch, high - batch).
    kassert_eq!(after.0, n0 + batch as u64, "one batch went back");
    kassert_eq!(after.1, (high - batch) as u64);
    Ok(())
}

fn drain_all_pages_returns_everything_and_buddies_merge_back() -> TestResult {
    let mut blocks = Vec::with_capacity(256);
    page_alloc::drain_all_pages();
    let before = page_alloc::free_per_order();
    let n0 = nr_free_pages();
    for i in 0..200u32 {
        let order = i % 4;
        blocks.push((
            alloc_pages(GFP_KERNEL, order).map_err(|e| fail(alloc::format!("{e}")))?,
            order,
        ));
    }
    // Order 0 last: a high-order free after an overflow flushes the lists
    // (Linux 6.6's free_high), so end with blocks that stay.
    blocks.sort_by_key(|&(_, o)| core::cmp::Reverse(o));
    for (p, o) in blocks.drain(..) {
        free_pages(p, o);
    }
    let on_lists = page_alloc::nr_pcp_pages();
    let missing = n0 - nr_free_pages();
    page_alloc::drain_all_pages();
    kassert!(on_lists > 0, "nothing stayed on a per-CPU list");
    kassert_eq!(
        missing,
        on_lists,
        "free pages are in the buddy or on a pcp list"
    );
    kassert_eq!(page_alloc::nr_pcp_pages(), 0);
    kassert_eq!(nr_free_pages(), n0);
    kassert_eq!(page_alloc::free_per_order(), before, "buddies merged back");
    Ok(())
}

fn double_free_of_a_block_on_a_pcp_list_is_detected() -> TestResult {
    let last = || page_alloc::last_bad_free().map(|b| (b.pfn, b.order, b.kind));
    for order in [0u32, 2] {
        let p = alloc_pages(GFP_KERNEL, order).map_err(|e| fail(alloc::format!("{e}")))?;
        let tail = PhysAddr::new(p.as_u64() + ((PAGE_SIZE as u64) << order) - PAGE_SIZE as u64);
        free_pages(p, order);
        let (n, on_pcp, bad0) = (
            nr_free_pages(),
            page_alloc::pcp_count(cpu()),
            snap().bad_frees,
        );
        let on_list = page_alloc::pfn_to_page(p.pfn()).map(|pg| pg.flags());
        free_pages(p, order);
        let again = last();
        free_pages(tail, 0);
        let inner = last();
        let unchanged = (nr_free_pages(), page_alloc::pcp_count(cpu()));
        let bad = snap().bad_frees - bad0;
        // The list is intact: the block comes back once, hot.
        let q = alloc_pages(GFP_KERNEL, order).map_err(|e| fail(alloc::format!("{e}")))?;
        free_pages(q, order);
        kassert_eq!(on_list, Some(PageFlags::PCP), "order {order}");
        let df = BadFreeKind::DoubleFree {
            block_pfn: p.pfn(),
            block_order: order,
        };
        kassert_eq!(again, Some((p.pfn(), order, df)));
        kassert_eq!(inner, Some((tail.pfn(), 0, df)));
        kassert_eq!(bad, 2);
        kassert_eq!(unchanged, (n, on_pcp), "the bad frees changed nothing");
        kassert_eq!(q, p);
    }
    Ok(())
}

/// Restores `min_free_kbytes` when dropped.
struct MinFreeKbytes(u64);

impl Drop for MinFreeKbytes {
    fn drop(&mut self) {
        page_alloc::set_min_free_kbytes(self.0);
    }
}

fn slow_path_drains_pcp_lists_before_failing() -> TestResult {
    // Small watermarks, so that a full per-CPU list is above MIN with
    // __GFP_HIGH (MIN / 2).
    let _restore = MinFreeKbytes(page_alloc::min_free_kbytes());
    page_alloc::set_min_free_kbytes(128);
    let (_, high) = page_alloc::pcp_batch_high();
    let k = high as u64 - 1;
    let min = watermarks().min;
    kassert!(k > min - min / 2, "high {high} vs min {min}");
    let mut h = Held(Vec::with_capacity(
        (nr_free_pages() + page_alloc::nr_pcp_pages()) as usize + 1024,
    ));
    // Blocks of other orders may sit on the lists from earlier tests.
    page_alloc::drain_all_pages();
    {
        let _noreclaim = MemallocScope::noreclaim();
        while let Ok(p) = alloc_pages(GFP_NOWAIT | NOWARN, 0) {
            h.push(p, 0);
        }
    }
    // Everything is taken; give back k pages: they stay on this CPU's list.
    for _ in 0..k {
        let (p, o) = h.0.pop().unwrap();
        free_pages(p, o);
    }
    let (free, on_pcp) = (nr_free_pages(), page_alloc::nr_pcp_pages());
    let nowait = alloc_pages(GFP_NOWAIT | NOWARN, 0);
    let on_pcp_after_nowait = page_alloc::nr_pcp_pages();
    let s0 = snap();
    let kernel = alloc_pages(GFP_KERNEL | Gfp::__GFP_HIGH | NOWARN, 0);
    let s1 = snap();
    let total_after = nr_free_pages() + page_alloc::nr_pcp_pages();
    if let Ok(p) = kernel {
        h.push(p, 0);
    }
    kassert_eq!((free, on_pcp), (0, k));
    kassert!(
        nowait.is_err(),
        "no reclaim, no drain: NR_FREE_PAGES is 0, so the watermark fails"
    );
    kassert_eq!(on_pcp_after_nowait, k);
    kassert!(kernel.is_ok(), "the slow path drained and then succeeded");
    kassert!(
        s1.alloc_stalls > s0.alloc_stalls,
        "it went through direct reclaim"
    );
    kassert_eq!(s1.failures, s0.failures);
    kassert_eq!(total_after, k - 1);
    Ok(())
}

fn vmstat_deltas_fold_into_the_global_counters() -> TestResult {
    let t = page_alloc::vm_stat_threshold_now() as u64;
    let cpus = kreclaim::platform::nr_cpus();
    kassert_eq!(
        t,
        page_alloc::vm_stat_threshold(page_alloc::managed_pages(), cpus) as u64
    );
    // Other CPUs keep their deltas (nothing allocates there meanwhile:
    // every unbound task stays on this CPU); only this one folds.
    task::set_boot_cpu_only(true);
    let r = vmstat_on_this_cpu(t, cpus);
    task::set_boot_cpu_only(false);
    r
}

fn vmstat_on_this_cpu(t: u64, cpus: usize) -> TestResult {
    use page_alloc::VmStatItem::{Allocations, Frees};
    page_alloc::refresh_cpu_vm_stats();
    let (a0, f0) = (
        page_alloc::vm_stat_read(Allocations),
        page_alloc::vm_stat_read(Frees),
    );
    let g0 = page_alloc::vm_stat_global(Allocations);
    if cpus == 1 {
        kassert_eq!(g0, a0, "refresh_cpu_vm_stats folded this CPU's delta");
    }
    // Up to the threshold the global counter does not move...
    let mut moved_early = false;
    for _ in 0..t {
        let p = alloc_pages(GFP_KERNEL, 0).map_err(|e| fail(alloc::format!("{e}")))?;
        free_pages(p, 0);
        moved_early |= page_alloc::vm_stat_global(Allocations) != g0;
    }
    let exact = (
        page_alloc::vm_stat_read(Allocations),
        page_alloc::vm_stat_read(Frees),
    );
    // ...one more event crosses it and folds the whole delta.
    let p = alloc_pages(GFP_KERNEL, 0).map_err(|e| fail(alloc::format!("{e}")))?;
    let g1 = page_alloc::vm_stat_global(Allocations);
    free_pages(p, 0);
    kassert!(
        !moved_early,
        "the global counter moved before the threshold"
    );
    kassert_eq!(exact, (a0 + t, f0 + t), "reads add every CPU's delta");
    kassert_eq!(g1, g0 + t + 1);
    kassert_eq!(snap().allocations, page_alloc::vm_stat_read(Allocations));
    Ok(())
}

/// `pcp_spin_trylock`'s fallback: while this CPU's `pcp->lock` is held (as
/// a drain from another CPU holds it), an order-0 allocation and its free
/// do not touch the list: they go to the buddy lists under the zone lock,
/// and succeed. Checked on the fast path (lockdep off) and on the general
/// path (lockdep on, which annotates the lock).
fn a_held_pcp_lock_sends_allocations_and_frees_to_the_zone() -> TestResult {
    use kreclaim::sync::lockdep::{self, LockdepMode};
    let mode = lockdep::mode();
    let mut r = Ok(());
    for m in [LockdepMode::Off, LockdepMode::On] {
        lockdep::set_mode(m);
        r = held_pcp_round(m);
        if r.is_err() {
            break;
        }
    }
    lockdep::set_mode(mode);
    r
}

fn held_pcp_round(m: kreclaim::sync::lockdep::LockdepMode) -> TestResult {
    let cpu = cpu();
    // A block on this CPU's list: the list path would take it back first.
    let warm = alloc_pages(GFP_KERNEL, 0).map_err(|e| fail(alloc::format!("{e}")))?;
    free_pages(warm, 0);
    // Unheld, the next allocation comes off the list (hot, LIFO).
    let (n0, c0) = (nr_free_pages(), page_alloc::pcp_count(cpu));
    let hot = alloc_pages(GFP_ATOMIC, 0).map_err(|e| fail(alloc::format!("{e}")))?;
    let (n1, c1) = (nr_free_pages(), page_alloc::pcp_count(cpu));
    free_pages(hot, 0);
    kassert_eq!(hot, warm, "{m:?}: the list's hot block");
    kassert_eq!((n1, c1), (n0, c0 - 1), "{m:?}: taken off the list");
    let (n0, c0) = (nr_free_pages(), page_alloc::pcp_count(cpu));
    // Held: pcp_count would wait for the lock, so only NR_FREE_PAGES inside.
    let held = page_alloc::with_pcp_held(cpu, || {
        let a = alloc_pages(GFP_ATOMIC | NOWARN, 0);
        let mid = nr_free_pages();
        if let Ok(p) = a {
            free_pages(p, 0);
        }
        (a, mid, nr_free_pages())
    });
    let c1 = page_alloc::pcp_count(cpu);
    let (a, mid, after) = held.ok_or_else(|| fail(alloc::format!("CPU {cpu} has no set")))?;
    let a = a.map_err(|e| fail(alloc::format!("{m:?}: with the list held: {e}")))?;
    kassert!(a != warm, "{m:?}: the held list's block was handed out");
    kassert_eq!(mid, n0 - 1, "{m:?}: one page from the buddy lists");
    kassert_eq!(after, n0, "{m:?}: the free went back to the buddy lists");
    kassert_eq!(c1, c0, "{m:?}: the list was not touched");
    Ok(())
}
