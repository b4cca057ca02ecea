//! Reclaim on real page allocation: a cache with a shrinker under `mem=`
//! small enough to force reclaim — direct reclaim, kswapd, NOFS scopes
//! (also through the global allocator), no recursion, safe unregistration.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use core::time::Duration;
use kreclaim::harness::{OrFail, TestFailure, TestResult, wait_for};
use kreclaim::mm::gfp::{GFP_KERNEL, GFP_NOWAIT, Gfp};
use kreclaim::mm::memstall;
use kreclaim::mm::oom_kill::{self, OomCharge, OomPolicy};
use kreclaim::mm::page_alloc::{self, alloc_pages, free_pages, nr_free_pages, watermarks};
use kreclaim::mm::scope::MemallocScope;
use kreclaim::mm::shrinker::*;
use kreclaim::mm::slab::kmalloc::KVec;
use kreclaim::mm::slab::{KmemCache, SlabFlags};
use kreclaim::mm::vmscan;
use kreclaim::sync::{Mutex, SpinLock};
use kreclaim::task;
use kreclaim::{kassert, kassert_eq, lock_class};

kreclaim::kernel_tests!(
    cmdline = "mem=32M";
    direct_reclaim_shrinks_the_cache_and_allocations_keep_succeeding,
    kswapd_reclaims_to_the_high_watermark,
    nofs_scope_makes_the_shrinker_stop_and_kswapd_does_the_work,
    reclaim_decisions_are_logged_at_debug_and_trace,
    a_shrinker_that_allocates_does_not_recurse_into_reclaim,
    unregistering_while_another_task_reclaims_is_safe,
    a_failed_case_gives_its_memory_back,
    kswapd_blocks_until_woken,
    kswapd_gives_up_after_16_runs_without_progress,
    direct_reclaim_below_half_the_min_reserve_waits_for_kswapd,
    oom_killer_kills_the_largest_footprint_and_the_allocation_succeeds,
    oom_fail_keeps_small_allocations_failing,
    nofs_allocation_retries_without_invoking_the_killer,
    direct_reclaim_does_not_yield_between_priorities,
    direct_reclaim_without_progress_throttles_and_efficient_reclaim_wakes,
    each_task_in_a_memstall_has_its_own_parts,
);

const OBJ: usize = 1024;
const MAX_LIVE: usize = 40_000;
/// More tasks than ever scan one pool at once (main, kswapd, a worker).
const MAX_SCANNERS: usize = 8;

/// A cache of 1 KiB objects whose live objects a shrinker may free.
struct Pool {
    cache: KmemCache,
    live: SpinLock<KVec<usize>>,
    needs_fs: bool,
    allocate_in_scan: bool,
    scans: AtomicU64,
    freed: AtomicU64,
    stops: AtomicU64,
    /// STOPs returned to the task named "main" (its own direct reclaim).
    stops_for_main: AtomicU64,
    /// Tasks inside `scan_objects` now (task id + 1, 0 = free slot). Per
    /// task: kswapd scanning while main scans is concurrency, not recursion.
    in_scan: [AtomicU32; MAX_SCANNERS],
    /// Times a task entered `scan_objects` while already inside it.
    recursions: AtomicU32,
    /// Scans in which a GFP_KERNEL allocation, with memory truly exhausted,
    /// failed at once instead of entering reclaim again.
    failed_without_reclaim: AtomicU64,
    grabbed: Mutex<KVec<page_alloc::PhysAddr>>,
}

impl Pool {
    /// A set-up failure fails the case (it does not panic the kernel).
    fn new(
        name: &'static str,
        needs_fs: bool,
        allocate_in_scan: bool,
    ) -> Result<Arc<Pool>, TestFailure> {
        let cache = KmemCache::create(name, OBJ, 8, SlabFlags::RECLAIM_ACCOUNT, None)
            .or_fail("create the pool's cache")?;
        let live = KVec::with_capacity(MAX_LIVE, GFP_KERNEL).or_fail("allocate the live table")?;
        let grabbed = KVec::with_capacity(if allocate_in_scan { 8192 } else { 0 }, GFP_KERNEL)
            .or_fail("allocate the grab table")?;
        Ok(Arc::new(Pool {
            cache,
            live: SpinLock::new(live, lock_class!("pool_live")),
            needs_fs,
            allocate_in_scan,
            scans: AtomicU64::new(0),
            freed: AtomicU64::new(0),
            stops: AtomicU64::new(0),
            stops_for_main: AtomicU64::new(0),
            in_scan: [const { AtomicU32::new(0) }; MAX_SCANNERS],
            recursions: AtomicU32::new(0),
            failed_without_reclaim: AtomicU64::new(0),
            grabbed: Mutex::new(grabbed, lock_class!("pool_grabbed")),
        }))
    }

    /// Allocates one object with `gfp` and keeps it live.
    fn grow(&self, gfp: Gfp) -> Result<(), &'static str> {
        let p = self.cache.alloc(gfp).map_err(|_| "allocation failed")?;
        let mut l = self.live.lock();
        if l.len() == l.capacity() {
            drop(l);
            // SAFETY: `p` was just allocated from this cache and never
            // published: nothing else uses it.
            unsafe { self.cache.free(p) };
            return Err("live table full: the shrinker is not freeing");
        }
        l.push(p.as_ptr() as usize, GFP_NOWAIT)
            .map_err(|_| "push")?;
        Ok(())
    }

    fn count(&self) -> usize {
        self.live.lock().len()
    }

    fn free_all(&self) {
        loop {
            let p = self.live.lock().pop();
            match p {
                // SAFETY: `p` came from this cache and was popped off the
                // live list: nobody else holds it.
                Some(p) => unsafe {
                    self.cache
                        .free(core::ptr::NonNull::new(p as *mut u8).unwrap())
                },
                None => break,
            }
        }
        self.cache.shrink();
    }

    /// Notes that the current task entered `scan_objects`: `None` if it was
    /// already inside (a recursion, counted), else the slot it holds until
    /// the returned entry drops.
    fn enter_scan(&self) -> Option<ScanEntry<'_>> {
        let me = task::current().id() + 1;
        if self.in_scan.iter().any(|s| s.load(Ordering::SeqCst) == me) {
            self.recursions.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        let slot = self.in_scan.iter().find(|s| {
            s.compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        Some(ScanEntry(slot))
    }
}

/// A task's stay inside `scan_objects`; frees its slot when dropped.
struct ScanEntry<'a>(Option<&'a AtomicU32>);

impl Drop for ScanEntry<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            slot.store(0, Ordering::SeqCst);
        }
    }
}

/// A case that fails (returns early) still gives its objects back, so the
/// next case starts with the memory free.
impl Drop for Pool {
    fn drop(&mut self) {
        self.free_all();
    }
}

struct PoolShrinker(Arc<Pool>);

impl Shrinker for PoolShrinker {
    fn count_objects(&self, _sc: &ShrinkControl) -> CountObjects {
        match self.0.live.try_lock().map(|l| l.len()) {
            Some(0) => CountObjects::EMPTY,
            Some(n) => CountObjects::new(n as u64),
            None => CountObjects::UNKNOWN,
        }
    }

    fn scan_objects(&self, sc: &mut ShrinkControl) -> ScanObjects {
        // A recursion is counted and goes no further: scanning again would
        // self-deadlock on `grabbed` instead of failing the case.
        let Some(_entry) = self.0.enter_scan() else {
            return ScanObjects::STOP;
        };
        self.scan(sc)
    }
}

impl PoolShrinker {
    fn scan(&self, sc: &mut ShrinkControl) -> ScanObjects {
        let p = &self.0;
        p.scans.fetch_add(1, Ordering::Relaxed);
        if p.needs_fs && !sc.reclaim_fs_allowed() {
            p.stops.fetch_add(1, Ordering::Relaxed);
            if task::current().name() == "main" {
                p.stops_for_main.fetch_add(1, Ordering::Relaxed);
            }
            return ScanObjects::STOP;
        }
        if p.allocate_in_scan {
            // A shrinker that needs memory to free memory (like XFS writing
            // back) runs under PF_MEMALLOC. Take every page, reserves too,
            // then allocate GFP_KERNEL: it must fail at once, not re-enter
            // reclaim (which would call this scan again).
            let mut g = p.grabbed.lock();
            while let Ok(pa) = alloc_pages(GFP_NOWAIT | Gfp::__GFP_MEMALLOC | Gfp::__GFP_NOWARN, 0)
            {
                if let Err((pa, _)) = g.push(pa, GFP_NOWAIT) {
                    free_pages(pa, 0);
                    break;
                }
            }
            let stalls0 = page_alloc::stats().snapshot().alloc_stalls;
            match alloc_pages(GFP_KERNEL | Gfp::__GFP_NOWARN, 0) {
                Ok(pa) => free_pages(pa, 0),
                Err(_) => {
                    if page_alloc::stats().snapshot().alloc_stalls == stalls0 {
                        p.failed_without_reclaim.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            while let Some(pa) = g.pop() {
                free_pages(pa, 0);
            }
        }
        let mut freed = 0;
        for _ in 0..sc.nr_to_scan() {
            let obj = p.live.lock().pop();
            match obj {
                Some(o) => {
                    // SAFETY: `o` came from this cache and was popped off
                    // the live list: nobody else holds it.
                    unsafe { p.cache.free(core::ptr::NonNull::new(o as *mut u8).unwrap()) };
                    freed += 1;
                }
                None => break,
            }
        }
        // nr_scanned stays nr_to_scan, as Linux's shrinkers leave it.
        p.freed.fetch_add(freed, Ordering::Relaxed);
        ScanObjects::freed(freed)
    }
}

/// Dropping the registration (also on a failed case's early return)
/// unregisters the shrinker; declare it after its pool so it drops first.
fn register(pool: &Arc<Pool>, name: &str) -> Result<ShrinkerRegistration, TestFailure> {
    ShrinkerBuilder::new(name)
        .register(PoolShrinker(pool.clone()))
        .or_fail("register the shrinker")
}

/// The stall parts of a window in which every direct reclaim ended:
/// together never more than the stall time.
fn check_stall_parts(parts: &memstall::StallParts, stall_ns: u64) -> TestResult {
    kassert!(
        parts.waits_ns() <= stall_ns,
        "parts {} ns > stall {stall_ns} ns: {parts:?}",
        parts.waits_ns()
    );
    Ok(())
}

/// Objects worth `times` x the managed memory.
fn objects_for(times: u64) -> u64 {
    times * page_alloc::managed_pages() * 4096 / OBJ as u64
}

fn direct_reclaim_shrinks_the_cache_and_allocations_keep_succeeding() -> TestResult {
    let pool = Pool::new("direct_pool", false, false)?;
    let reg = register(&pool, "direct_pool")?;
    let v0 = vmscan::stats().snapshot();
    let a0 = page_alloc::stats().snapshot();
    let p0 = memstall::snapshot();
    let total = objects_for(2);
    for i in 0..total {
        if let Err(e) = pool.grow(GFP_KERNEL) {
            kassert!(false, "allocation {i} of {total}: {e}");
        }
    }
    let v1 = vmscan::stats().snapshot();
    let a1 = page_alloc::stats().snapshot();
    let parts = memstall::snapshot().since(&p0);
    check_stall_parts(&parts, a1.stall_ns - a0.stall_ns)?;
    // No throttle of a kind that did not happen has time, and there is no
    // filesystem here: no lock or device waits either. The scan is the
    // rest, all of the stall when nothing throttled.
    if v1.direct_throttled == v0.direct_throttled {
        kassert_eq!(parts.pfmemalloc_ns, 0, "{parts:?}");
    }
    if v1.noprogress_throttled == v0.noprogress_throttled {
        kassert_eq!(parts.noprogress_ns, 0, "{parts:?}");
    }
    kassert_eq!((parts.lock_ns, parts.io_ns), (0, 0), "{parts:?}");
    kassert!(
        parts.rest_ns(a1.stall_ns - a0.stall_ns) > 0,
        "no scan time in {} ns of stall: {parts:?}",
        a1.stall_ns - a0.stall_ns
    );
    kassert!(
        a1.alloc_stalls > a0.alloc_stalls,
        "no direct reclaim happened"
    );
    kassert!(
        v1.direct_pages > v0.direct_pages,
        "direct reclaim reclaimed no pages: {v1}"
    );
    kassert!(pool.freed.load(Ordering::Relaxed) > 0);
    kassert!(reg.stats().freed.load(Ordering::Relaxed) > 0);
    kassert!((pool.count() as u64) < total, "nothing was reclaimed");
    pool.free_all();
    drop(reg);
    Ok(())
}

fn kswapd_reclaims_to_the_high_watermark() -> TestResult {
    kassert!(vmscan::kswapd_running());
    // On the boot CPU only: the PreemptGuard below keeps kswapd from
    // running only if kswapd runs here.
    let _one = task::BootCpuOnly::new();
    let pool = Pool::new("kswapd_pool", false, false)?;
    let reg = register(&pool, "kswapd_pool")?;
    let w = watermarks();
    let v0 = vmscan::stats().snapshot();
    // Stay in the fast path but fall below LOW: the allocator wakes kswapd.
    {
        let _p = task::PreemptGuard::new(); // kswapd must not run yet
        while nr_free_pages() > w.low - 8 {
            if let Err(e) = pool.grow(GFP_NOWAIT | Gfp::__GFP_NOWARN) {
                kassert!(false, "{e}");
            }
        }
    }
    // Wait for kswapd, not for a time: the bound only ends a broken run
    // (a loaded host can leave the guest little CPU for seconds).
    let mut waited = 0;
    while nr_free_pages() <= w.high && waited < 120_000 {
        task::sleep(Duration::from_millis(10));
        waited += 10;
    }
    let v1 = vmscan::stats().snapshot();
    kassert!(v1.kswapd_runs > v0.kswapd_runs, "kswapd never ran: {v1}");
    kassert!(
        v1.kswapd_pages > v0.kswapd_pages,
        "kswapd reclaimed nothing: {v1}"
    );
    kassert!(
        nr_free_pages() > w.high,
        "free {} <= high {}",
        nr_free_pages(),
        w.high
    );
    pool.free_all();
    drop(reg);
    Ok(())
}

fn nofs_scope_makes_the_shrinker_stop_and_kswapd_does_the_work() -> TestResult {
    // On the boot CPU only: kswapd on another CPU would keep free memory
    // above the min watermark and main would never enter direct reclaim.
    let _one = task::BootCpuOnly::new();
    let pool = Pool::new("nofs_pool", true, false)?;
    let reg = register(&pool, "nofs_pool")?;
    let w = watermarks();
    // Fill memory with FS-dependent objects, down to the MIN watermark.
    {
        let _p = task::PreemptGuard::new();
        while nr_free_pages() > w.min + 4 {
            if pool.grow(GFP_NOWAIT | Gfp::__GFP_NOWARN).is_err() {
                break;
            }
        }
    }
    let stops0 = pool.stops_for_main.load(Ordering::Relaxed);
    let freed0 = pool.freed.load(Ordering::Relaxed);
    // Now allocate through Rust's global allocator inside a NOFS scope:
    // a Vec of boxes, as library code deep in a transaction would.
    let mut boxes: Vec<Box<[u8; 2000]>> = Vec::new();
    {
        let _nofs = MemallocScope::nofs();
        boxes.reserve(2000);
        for i in 0..2000u32 {
            boxes.push(Box::new([i as u8; 2000]));
        }
    }
    kassert_eq!(boxes.len(), 2000);
    kassert!(boxes.iter().enumerate().all(|(i, b)| b[1999] == i as u8));
    let stops = pool.stops_for_main.load(Ordering::Relaxed) - stops0;
    kassert!(stops > 0, "the shrinker never saw a NOFS reclaim from main");
    kassert!(reg.stats().stops.load(Ordering::Relaxed) > 0);
    kassert!(
        pool.freed.load(Ordering::Relaxed) > freed0,
        "nobody with __GFP_FS (kswapd) did the deferred work"
    );
    drop(boxes);
    pool.free_all();
    drop(reg);
    Ok(())
}

fn a_shrinker_that_allocates_does_not_recurse_into_reclaim() -> TestResult {
    let pool = Pool::new("alloc_pool", false, true)?;
    let reg = register(&pool, "alloc_pool")?;
    for _ in 0..objects_for(2) {
        if let Err(e) = pool.grow(GFP_KERNEL) {
            kassert!(false, "{e}");
        }
    }
    kassert!(
        pool.scans.load(Ordering::Relaxed) > 0,
        "reclaim never scanned"
    );
    kassert_eq!(
        pool.recursions.load(Ordering::SeqCst),
        0,
        "scan re-entered itself through reclaim"
    );
    kassert!(
        pool.failed_without_reclaim.load(Ordering::Relaxed) > 0,
        "a GFP_KERNEL allocation inside the shrinker entered reclaim"
    );
    pool.free_all();
    drop(reg);
    Ok(())
}

fn unregistering_while_another_task_reclaims_is_safe() -> TestResult {
    let pool = Pool::new("unreg_pool", false, false)?;
    let reg = register(&pool, "unreg_pool")?;
    let stop = Arc::new(AtomicBool::new(false));
    // Keep the memory full so the other task reclaims continually.
    let other = Pool::new("unreg_other", false, false)?;
    let other_reg = register(&other, "unreg_other")?;
    let (p2, s2, o2) = (pool.clone(), stop.clone(), other.clone());
    let worker = Worker::spawn("reclaimer", stop.clone(), move || {
        while !s2.load(Ordering::Relaxed) {
            if o2.grow(GFP_KERNEL).is_err() {
                break;
            }
            let _ = &p2;
        }
    })?;
    for _ in 0..objects_for(1) / 2 {
        let _ = pool.grow(GFP_KERNEL);
    }
    task::sleep(Duration::from_millis(50));
    let calls_before = reg.stats().calls.load(Ordering::Relaxed);
    drop(reg); // waits for any scan of unreg_pool in flight
    let scans_after_drop = pool.scans.load(Ordering::Relaxed);
    task::sleep(Duration::from_millis(100));
    kassert_eq!(
        pool.scans.load(Ordering::Relaxed),
        scans_after_drop,
        "scanned after unregistration"
    );
    kassert!(worker.stop_and_join().is_ok());
    kassert!(calls_before > 0 || other_reg.stats().calls.load(Ordering::Relaxed) > 0);
    pool.free_all();
    other.free_all();
    drop(other_reg);
    Ok(())
}

// ---------------------------------------------------------------------------
// Logging of reclaim decisions (`loglevel=debug` / `trace`)

/// Records the log observer saw, by kind.
static LOG_SHRINK_TRACE: AtomicU32 = AtomicU32::new(0);
static LOG_SHRINK_STOP: AtomicU32 = AtomicU32::new(0);
static LOG_DIRECT: AtomicU32 = AtomicU32::new(0);
static LOG_WMARK: AtomicU32 = AtomicU32::new(0);
static LOG_KSWAPD_WAKE: AtomicU32 = AtomicU32::new(0);
static LOG_KSWAPD_SLEEP: AtomicU32 = AtomicU32::new(0);
static LOG_ANY: AtomicU32 = AtomicU32::new(0);

/// A record's text, formatted without allocating (it is logged from
/// reclaim); long lines are cut.
struct LineBuf {
    buf: [u8; 256],
    len: usize,
}

impl core::fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

fn observe(r: &log::Record) {
    use core::fmt::Write;
    let mut line = LineBuf {
        buf: [0; 256],
        len: 0,
    };
    let _ = write!(line, "{}", r.args());
    let text = core::str::from_utf8(&line.buf[..line.len]).unwrap_or("");
    let (target, level) = (r.target(), r.level());
    let bump = |c: &AtomicU32| {
        c.fetch_add(1, Ordering::Relaxed);
    };
    bump(&LOG_ANY);
    if target.ends_with("mm::shrinker") && text.starts_with("shrink_slab: 'log_pool'") {
        if level == log::Level::Debug && text.contains("SHRINK_STOP") {
            bump(&LOG_SHRINK_STOP);
        } else if level == log::Level::Trace && text.contains("freed") {
            bump(&LOG_SHRINK_TRACE);
        }
    }
    if target.ends_with("mm::vmscan") && level == log::Level::Debug {
        if text.starts_with("direct reclaim: 'main'") {
            bump(&LOG_DIRECT);
        } else if text.starts_with("kswapd0: wake") {
            bump(&LOG_KSWAPD_WAKE);
        } else if text.starts_with("kswapd0: sleep") {
            bump(&LOG_KSWAPD_SLEEP);
        }
    }
    if target.ends_with("mm::page_alloc")
        && level == log::Level::Debug
        && text.contains("below the low watermark")
    {
        bump(&LOG_WMARK);
    }
}

/// Restores the log level and removes the observer, even when a check fails.
struct LogGuard(log::LevelFilter);

impl Drop for LogGuard {
    fn drop(&mut self) {
        kreclaim::console::set_log_observer(None);
        kreclaim::console::set_log_level(self.0);
    }
}

fn reclaim_decisions_are_logged_at_debug_and_trace() -> TestResult {
    use kreclaim::console::{set_log_level, set_log_observer};
    use log::LevelFilter;
    let _restore = LogGuard(log::max_level());
    // On the boot CPU only: kswapd on another CPU could keep free memory
    // above the min watermark, and direct reclaim would never be logged.
    let _one = task::BootCpuOnly::new();
    let pool = Pool::new("log_pool", true, false)?;
    let reg = register(&pool, "log_pool")?;
    for _ in 0..64 {
        if let Err(e) = pool.grow(GFP_KERNEL) {
            kassert!(false, "{e}");
        }
    }
    set_log_observer(Some(observe));

    // At info, no reclaim decision reaches the logger.
    set_log_level(LevelFilter::Info);
    LOG_ANY.store(0, Ordering::Relaxed);
    reg.shrink(kreclaim::mm::gfp::GFP_NOFS, 0);
    kassert_eq!(
        LOG_ANY.load(Ordering::Relaxed),
        0,
        "a record at loglevel=info"
    );

    // trace: every do_shrink_slab call; debug: a refusal (SHRINK_STOP).
    set_log_level(LevelFilter::Trace);
    reg.shrink(kreclaim::mm::gfp::GFP_NOFS, 0);
    kassert!(
        LOG_SHRINK_STOP.load(Ordering::Relaxed) > 0,
        "no debug record of the shrinker's SHRINK_STOP"
    );
    reg.shrink(GFP_KERNEL, 0);
    kassert!(
        LOG_SHRINK_TRACE.load(Ordering::Relaxed) > 0,
        "no trace record of a do_shrink_slab call"
    );

    // debug: the zone falls below LOW, direct reclaim runs, kswapd wakes
    // and goes back to sleep. Allocate until direct reclaim was logged.
    set_log_level(LevelFilter::Debug);
    let total = objects_for(2);
    let mut i = 0;
    while LOG_DIRECT.load(Ordering::Relaxed) == 0 && i < total {
        if let Err(e) = pool.grow(GFP_KERNEL) {
            kassert!(false, "allocation {i} of {total}: {e}");
        }
        i += 1;
    }
    kassert!(
        LOG_DIRECT.load(Ordering::Relaxed) > 0,
        "no debug record of direct reclaim after {total} allocations"
    );
    kassert!(
        LOG_WMARK.load(Ordering::Relaxed) > 0,
        "no debug record of the fall below the low watermark"
    );
    pool.free_all();
    // kswapd was woken by the slow path; wait until it logged going back
    // to sleep (a generous bound: a loaded machine only takes longer).
    let mut waited_ms = 0u32;
    while LOG_KSWAPD_SLEEP.load(Ordering::Relaxed) == 0 && waited_ms < 60_000 {
        task::sleep(Duration::from_millis(10));
        waited_ms += 10;
    }
    kassert!(
        LOG_KSWAPD_WAKE.load(Ordering::Relaxed) > 0,
        "no kswapd wake record"
    );
    kassert!(
        LOG_KSWAPD_SLEEP.load(Ordering::Relaxed) > 0,
        "no kswapd sleep record"
    );
    drop(reg);
    Ok(())
}

/// A helper task that is told to stop and joined when dropped, so a case
/// that fails early leaves no task allocating into the next case.
struct Worker {
    stop: Arc<AtomicBool>,
    task: Option<task::JoinHandle>,
}

impl Worker {
    fn spawn(
        name: &str,
        stop: Arc<AtomicBool>,
        f: impl FnOnce() + Send + 'static,
    ) -> Result<Worker, TestFailure> {
        let task = Some(task::spawn(name, f).or_fail("spawn the worker")?);
        Ok(Worker { stop, task })
    }

    fn stop_and_join(mut self) -> Result<(), task::JoinError> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.take().map_or(Ok(()), |t| t.join())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.join();
        }
    }
}

/// A case that fails with its pool full (as the recursion case once did,
/// with 26,816 objects live) must leave the memory free for the next case:
/// the pool gives its objects back when it drops, not only at the end of a
/// passing case.
fn a_failed_case_gives_its_memory_back() -> TestResult {
    fn fill_then_fail() -> TestResult {
        let pool = Pool::new("failing_pool", false, false)?;
        let _reg = register(&pool, "failing_pool")?;
        // Three quarters of memory: above the watermarks, no reclaim needed.
        for i in 0..objects_for(3) / 4 {
            pool.grow(GFP_KERNEL)
                .map_err(|e| TestFailure::new(alloc::format!("allocation {i}: {e}")))?;
        }
        kassert!(false, "fails on purpose with {} objects live", pool.count());
        Ok(())
    }
    let free0 = nr_free_pages();
    let r = fill_then_fail();
    kassert!(
        r.as_ref().is_err_and(|e| e.message.contains("on purpose")),
        "{r:?}"
    );
    let managed = page_alloc::managed_pages();
    kassert!(
        nr_free_pages() + managed / 8 >= free0,
        "the failed case kept memory: {} pages free, {free0} before",
        nr_free_pages()
    );
    Ok(())
}

fn kswapd_state() -> Option<task::TaskState> {
    task::list()
        .into_iter()
        .find(|(_, name, _, _)| name == "kswapd0")
        .map(|(_, _, state, _)| state)
}

/// Linux's kswapd sleeps until woken (kswapd_try_to_sleep); it does not
/// poll. A polling kswapd sleeps with a timeout and is never `Blocked`.
fn kswapd_blocks_until_woken() -> TestResult {
    kassert!(vmscan::kswapd_running());
    wait_for("kswapd0 to block on its wait queue", || {
        kswapd_state() == Some(task::TaskState::Blocked)
    })
}

/// Pages held until dropped.
struct HeldPages(Vec<page_alloc::PhysAddr>);

impl HeldPages {
    /// An empty list with room for every managed page, so that filling
    /// memory never allocates for the list itself.
    fn for_all_memory() -> Result<Self, TestFailure> {
        let mut v = Vec::new();
        v.try_reserve(page_alloc::managed_pages() as usize)
            .map_err(|_| TestFailure::new("reserve the page list".into()))?;
        Ok(Self(v))
    }
}

impl Drop for HeldPages {
    fn drop(&mut self) {
        for p in self.0.drain(..) {
            free_pages(p, 0);
        }
    }
}

/// `kswapd_failures`: balance_pgdat runs that reclaim nothing are counted;
/// after MAX_RECLAIM_RETRIES (16) kswapd is hopeless and wakeups are
/// ignored, until reclaim makes progress again.
fn kswapd_gives_up_after_16_runs_without_progress() -> TestResult {
    // kswapd and everything else on the boot CPU: the runs are counted one
    // wake-up at a time, with nothing else reclaiming in between.
    let _one = task::BootCpuOnly::new();
    // From a kswapd with no failures: a direct reclaim pass that makes
    // progress resets them (earlier cases may leave a few, e.g. while a
    // reclaimer without progress was throttled).
    let stash = MainPages::new();
    stash.fill(64)?;
    let reg = ShrinkerBuilder::new("main-pages")
        .register(MainShrinker(stash.clone()))
        .or_fail("register")?;
    let got = direct_reclaim_pass();
    drop(reg);
    stash.drain();
    kassert!(got > 0, "the resetting pass reclaimed nothing");
    let w = watermarks();
    let mut held = HeldPages::for_all_memory()?;
    // Below LOW with nothing a shrinker could free.
    while nr_free_pages() > w.low - 8 {
        match alloc_pages(GFP_NOWAIT, 0) {
            Ok(p) => held.0.push(p),
            Err(_) => break,
        }
    }
    let v0 = vmscan::stats().snapshot();
    let mut last = v0;
    for _ in 0..(page_alloc::MAX_RECLAIM_RETRIES + 4) {
        vmscan::wakeup_kswapd(0);
        wait_for("kswapd to run or to ignore the wakeup", || {
            let v = vmscan::stats().snapshot();
            (v.kswapd_failures > last.kswapd_failures
                || v.kswapd_hopeless > last.kswapd_hopeless
                || v.kswapd_pages > last.kswapd_pages)
                && kswapd_state() == Some(task::TaskState::Blocked)
        })?;
        last = vmscan::stats().snapshot();
    }
    let v1 = vmscan::stats().snapshot();
    kassert!(vmscan::kswapd_hopeless(), "{v1}");
    kassert!(
        v1.kswapd_failures - v0.kswapd_failures >= u64::from(page_alloc::MAX_RECLAIM_RETRIES),
        "{v1}"
    );
    kassert!(v1.kswapd_hopeless > v0.kswapd_hopeless, "{v1}");
    // Direct reclaim that makes progress makes kswapd useful again.
    drop(held);
    let pool = Pool::new("hopeless_pool", false, false)?;
    let reg = register(&pool, "hopeless_pool")?;
    for _ in 0..256 {
        pool.grow(GFP_KERNEL)
            .map_err(|e| TestFailure::new(e.into()))?;
    }
    let got = {
        let _noreclaim = MemallocScope::noreclaim();
        vmscan::try_to_free_pages(GFP_KERNEL, 0)
    };
    pool.free_all();
    drop(reg);
    kassert!(got > 0, "direct reclaim freed nothing");
    kassert!(!vmscan::kswapd_hopeless());
    Ok(())
}

/// throttle_direct_reclaim: a user task entering direct reclaim with free
/// memory below half the min watermark waits on pfmemalloc_wait until
/// kswapd has brought it back, then goes on and gets its page.
fn direct_reclaim_below_half_the_min_reserve_waits_for_kswapd() -> TestResult {
    // On the boot CPU only: the PreemptGuard below keeps kswapd from
    // running only if kswapd runs here.
    let _one = task::BootCpuOnly::new();
    let pool = Pool::new("throttle_pool", false, false)?;
    let reg = register(&pool, "throttle_pool")?;
    let w = watermarks();
    // Reclaimable objects, then the reserves drained by PF_MEMALLOC
    // allocations (no watermarks) down to a quarter of MIN.
    let mut held = HeldPages::for_all_memory()?;
    {
        let _p = task::PreemptGuard::new(); // kswapd must not run yet
        while nr_free_pages() > w.low + 64 {
            pool.grow(GFP_NOWAIT | Gfp::__GFP_NOWARN)
                .map_err(|e| TestFailure::new(e.into()))?;
        }
        let _memalloc = MemallocScope::noreclaim();
        while nr_free_pages() > w.min / 4 {
            match alloc_pages(GFP_NOWAIT, 0) {
                Ok(p) => held.0.push(p),
                Err(_) => break,
            }
        }
    }
    kassert!(
        nr_free_pages() <= w.min / 2,
        "free {} min {}",
        nr_free_pages(),
        w.min
    );
    let v0 = vmscan::stats().snapshot();
    let a0 = page_alloc::stats().snapshot();
    let p0 = memstall::snapshot();
    let got = Arc::new(AtomicBool::new(false));
    let g = got.clone();
    let user = task::spawn("user", move || {
        if let Ok(p) = alloc_pages(GFP_KERNEL, 0) {
            free_pages(p, 0);
            g.store(true, Ordering::SeqCst);
        }
    })
    .map_err(|e| TestFailure::new(alloc::format!("spawn: {e:?}")))?;
    let joined = user.join();
    let v1 = vmscan::stats().snapshot();
    let stall_ns = page_alloc::stats().snapshot().stall_ns - a0.stall_ns;
    let parts = memstall::snapshot().since(&p0);
    drop(held);
    pool.free_all();
    drop(reg);
    kassert!(joined.is_ok());
    kassert!(got.load(Ordering::SeqCst), "the throttled task got no page");
    kassert!(
        v1.direct_throttled > v0.direct_throttled,
        "not throttled: {v1}"
    );
    kassert!(
        v1.kswapd_pages > v0.kswapd_pages,
        "kswapd did not reclaim: {v1}"
    );
    // The wait on pfmemalloc_wait is a part of the user's stall time.
    kassert!(
        parts.pfmemalloc_ns > 0,
        "no pfmemalloc_wait time: {parts:?}"
    );
    check_stall_parts(&parts, stall_ns)?;
    Ok(())
}

/// A task standing for a user process: holds `pages` pages and charges
/// them, until the OOM killer chooses it; then frees them and exits.
fn hog(name: &str, pages: usize, ready: Arc<AtomicU32>) -> Result<task::JoinHandle, TestFailure> {
    task::spawn(name, move || {
        let mut held = HeldPages(Vec::new());
        if held.0.try_reserve(pages).is_err() {
            return;
        }
        for _ in 0..pages {
            match alloc_pages(GFP_KERNEL, 0) {
                Ok(p) => held.0.push(p),
                Err(_) => return,
            }
        }
        let _charge = OomCharge::new((pages * 4096) as u64);
        ready.fetch_add(1, Ordering::SeqCst);
        while !task::fatal_signal_pending() {
            task::sleep(Duration::from_millis(1));
        }
        // Exit cleanly: `held` and the charge go.
    })
    .map_err(|e| TestFailure::new(alloc::format!("spawn {name}: {e:?}")))
}

/// Memory exhausted with nothing a shrinker could free, and two charged
/// tasks: 256 pages and 16 pages. Returns the pages main holds.
fn exhaust_with_hogs() -> Result<(HeldPages, task::JoinHandle, task::JoinHandle), TestFailure> {
    let ready = Arc::new(AtomicU32::new(0));
    let big = hog("big-hog", 256, ready.clone())?;
    let small = hog("small-hog", 16, ready.clone())?;
    wait_for("both hogs to hold their pages", || {
        ready.load(Ordering::SeqCst) == 2
    })?;
    let mut held = HeldPages::for_all_memory()?;
    // Twice, draining the per-CPU lists in between: on SMP the hogs ran on
    // other CPUs, whose lists this CPU's allocations do not take from.
    for _ in 0..2 {
        while let Ok(p) = alloc_pages(GFP_NOWAIT, 0) {
            held.0.push(p);
        }
        kreclaim::mm::page_alloc::drain_all_pages();
    }
    while let Ok(p) = alloc_pages(GFP_NOWAIT, 0) {
        held.0.push(p);
    }
    Ok((held, big, small))
}

/// Too small to fail: a GFP_KERNEL order-0 allocation that reclaim cannot
/// satisfy runs the OOM killer, which kills the task with the largest
/// footprint; the victim exits, and the allocation succeeds.
fn oom_killer_kills_the_largest_footprint_and_the_allocation_succeeds() -> TestResult {
    kassert_eq!(
        oom_kill::policy(),
        OomPolicy::Kill,
        "the default is Linux's"
    );
    let kills0 = oom_kill::kills();
    let (held, big, small) = exhaust_with_hogs()?;
    let r = alloc_pages(GFP_KERNEL, 0);
    let big_killed = big.task().is_oom_victim();
    let small_killed = small.task().is_oom_victim();
    if let Ok(p) = r {
        free_pages(p, 0);
    }
    drop(held);
    // Let the small hog go too.
    if !small_killed {
        small.task().send_fatal_signal();
    }
    kassert!(big.join().is_ok() && small.join().is_ok());
    kassert!(r.is_ok(), "the allocation failed: {r:?}");
    kassert!(big_killed, "the largest footprint was not chosen");
    kassert!(!small_killed, "the smaller task was killed too");
    kassert_eq!(oom_kill::kills(), kills0 + 1);
    Ok(())
}

/// `oom=fail`: the same allocation fails and nobody is killed.
fn oom_fail_keeps_small_allocations_failing() -> TestResult {
    let kills0 = oom_kill::kills();
    oom_kill::set_policy(OomPolicy::Fail);
    let (held, big, small) = exhaust_with_hogs()?;
    let r = alloc_pages(GFP_KERNEL | Gfp::__GFP_NOWARN, 0);
    oom_kill::set_policy(OomPolicy::Kill);
    if let Ok(p) = r {
        free_pages(p, 0);
    }
    drop(held);
    big.task().send_fatal_signal();
    small.task().send_fatal_signal();
    kassert!(big.join().is_ok() && small.join().is_ok());
    kassert!(r.is_err(), "oom=fail still allocated");
    kassert_eq!(oom_kill::kills(), kills0);
    Ok(())
}

/// Without __GFP_FS the killer is not invoked (Linux counts it as
/// progress): the allocation keeps retrying reclaim until memory comes
/// back, and nobody is killed.
fn nofs_allocation_retries_without_invoking_the_killer() -> TestResult {
    use kreclaim::mm::gfp::GFP_NOFS;
    let kills0 = oom_kill::kills();
    let got = Arc::new(AtomicBool::new(false));
    let go = Arc::new(AtomicBool::new(false));
    let (g, go2) = (got.clone(), go.clone());
    // Started before memory runs out (a task needs a stack).
    let nofs = task::spawn("nofs-user", move || {
        while !go2.load(Ordering::SeqCst) {
            task::sleep(Duration::from_millis(1));
        }
        if let Ok(p) = alloc_pages(GFP_NOFS, 0) {
            free_pages(p, 0);
            g.store(true, Ordering::SeqCst);
        }
    })
    .map_err(|e| TestFailure::new(alloc::format!("spawn: {e:?}")))?;
    let (held, big, small) = exhaust_with_hogs()?;
    let stalls0 = page_alloc::stats().snapshot().alloc_stalls;
    go.store(true, Ordering::SeqCst);
    // Far more reclaim rounds than MAX_RECLAIM_RETRIES, still no page.
    let waited = wait_for("the NOFS allocation to keep retrying", || {
        page_alloc::stats().snapshot().alloc_stalls
            > stalls0 + 4 * u64::from(page_alloc::MAX_RECLAIM_RETRIES)
    });
    let still_waiting = !nofs.is_finished();
    drop(held);
    let joined = nofs.join();
    big.task().send_fatal_signal();
    small.task().send_fatal_signal();
    kassert!(big.join().is_ok() && small.join().is_ok());
    waited?;
    kassert!(still_waiting, "the NOFS allocation gave up");
    kassert!(joined.is_ok());
    kassert!(got.load(Ordering::SeqCst), "no page once memory came back");
    kassert_eq!(
        oom_kill::kills(),
        kills0,
        "a NOFS allocation invoked the killer"
    );
    Ok(())
}

/// One direct reclaim pass as the allocator's slow path runs it: under
/// PF_MEMALLOC, so that the pages freed count as this task's reclaim.
fn direct_reclaim_pass() -> usize {
    let _memalloc = MemallocScope::noreclaim();
    vmscan::try_to_free_pages(GFP_KERNEL, 0)
}

/// A shrinker whose objects are whole pages, given back only to the task
/// named "main": main's direct reclaim frees one page per object scanned
/// (efficient: no throttle, and it wakes throttled reclaimers); every other
/// task finds nothing to scan (no progress).
struct MainPages {
    pages: SpinLock<Vec<page_alloc::PhysAddr>>,
    scans: AtomicU64,
}

impl MainPages {
    fn new() -> Arc<MainPages> {
        Arc::new(MainPages {
            pages: SpinLock::new(Vec::new(), lock_class!("main_pages")),
            scans: AtomicU64::new(0),
        })
    }

    /// Takes pages from the page allocator until `n` are held.
    fn fill(&self, n: usize) -> TestResult {
        while self.pages.lock().len() < n {
            let pa = alloc_pages(GFP_KERNEL, 0).or_fail("allocate a page for the stash")?;
            let mut p = self.pages.lock();
            if let Err(e) = p.try_reserve(1) {
                drop(p);
                free_pages(pa, 0);
                return Err(e).or_fail("grow the stash");
            }
            p.push(pa);
        }
        Ok(())
    }

    fn drain(&self) {
        while let Some(pa) = self.pages.lock().pop() {
            free_pages(pa, 0);
        }
    }
}

/// The shrinker of a [`MainPages`] stash.
struct MainShrinker(Arc<MainPages>);

impl Shrinker for MainShrinker {
    fn count_objects(&self, _sc: &ShrinkControl) -> CountObjects {
        if task::current().name() != "main" {
            return CountObjects::EMPTY;
        }
        CountObjects::new(self.0.pages.lock().len() as u64)
    }
    fn scan_objects(&self, sc: &mut ShrinkControl) -> ScanObjects {
        self.0.scans.fetch_add(1, Ordering::Relaxed);
        if task::current().name() != "main" {
            return ScanObjects::STOP;
        }
        let mut freed = 0;
        while freed < sc.nr_to_scan() {
            let Some(pa) = self.0.pages.lock().pop() else {
                break;
            };
            free_pages(pa, 0);
            freed += 1;
        }
        ScanObjects::freed(freed)
    }
}

fn direct_reclaim_does_not_yield_between_priorities() -> TestResult {
    // Linux's do_try_to_free_pages goes from priority 12 to 0 without
    // giving the CPU away (cond_resched only yields a used-up time slice).
    // With preemption off, another runnable task gets the CPU during one
    // direct reclaim pass only if reclaim yields. Both tasks on the boot
    // CPU: on another CPU the helper would run beside reclaim. The
    // shrinker makes progress: a pass that reclaims nothing by priority 1
    // sleeps (consider_reclaim_throttle, the next case).
    let _one = task::BootCpuOnly::new();
    let stash = MainPages::new();
    stash.fill(64)?;
    let reg = ShrinkerBuilder::new("main-pages")
        .register(MainShrinker(stash.clone()))
        .or_fail("register")?;
    let (stop, runs) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let (s2, r2) = (stop.clone(), runs.clone());
    let helper = task::spawn("yielder", move || {
        while !s2.load(Ordering::Acquire) {
            r2.fetch_add(1, Ordering::Relaxed);
            task::yield_now();
        }
    })
    .or_fail("spawn the helper")?;
    task::yield_now(); // let it start
    let before = runs.load(Ordering::Relaxed);
    let got = {
        let _p = task::PreemptGuard::new();
        direct_reclaim_pass()
    };
    let ran = runs.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Release);
    let _ = helper.join();
    drop(reg);
    stash.drain();
    kassert!(got > 0, "the pass reclaimed nothing");
    kassert!(
        stash.scans.load(Ordering::Relaxed) > 0,
        "the shrinker was never scanned"
    );
    kassert_eq!(
        ran,
        0,
        "another task ran {ran} times inside one direct reclaim pass"
    );
    Ok(())
}

fn direct_reclaim_without_progress_throttles_and_efficient_reclaim_wakes() -> TestResult {
    // Linux's consider_reclaim_throttle: a direct reclaimer that reclaimed
    // nothing by priority 1 sleeps on reclaim_wait[NOPROGRESS] (1 jiffy at
    // most); a pass elsewhere that reclaims better than 12% wakes it.
    let stash = MainPages::new();
    stash.fill(64)?;
    let reg = ShrinkerBuilder::new("main-pages")
        .register(MainShrinker(stash.clone()))
        .or_fail("register")?;
    // A pass with progress: kswapd is not hopeless afterwards (a hopeless
    // kswapd means near OOM, where Linux does not throttle).
    let got = direct_reclaim_pass();
    kassert!(
        got > 0,
        "'{}': {} scans, {} pages left",
        task::current().name(),
        stash.scans.load(Ordering::Relaxed),
        stash.pages.lock().len()
    );
    kassert!(!vmscan::kswapd_hopeless());
    let s0 = vmscan::stats().snapshot();
    let (stop, passes) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let (s2, p2) = (stop.clone(), passes.clone());
    // Not main: the shrinker gives it nothing, every pass is without
    // progress.
    // Its passes are memstalls, as the allocator's are; main's are not:
    // only the helper's throttle counts.
    let p0 = memstall::snapshot();
    let helper = task::spawn("noprogress", move || {
        while !s2.load(Ordering::Acquire) {
            let _stall = memstall::MemstallGuard::enter();
            let _ = direct_reclaim_pass();
            p2.fetch_add(1, Ordering::Relaxed);
        }
    })
    .or_fail("spawn the helper")?;
    let res = wait_for("the helper's pass to throttle", || {
        vmscan::stats().snapshot().noprogress_throttled > s0.noprogress_throttled
    })
    .and_then(|()| {
        // Efficient passes of main's own until one finds the helper asleep.
        let mut fill = Ok(());
        let r = wait_for("efficient reclaim to wake the throttled helper", || {
            fill = stash.fill(64);
            if fill.is_err() {
                return true;
            }
            let _ = direct_reclaim_pass();
            vmscan::stats().snapshot().noprogress_woken > s0.noprogress_woken
        });
        fill.and(r)
    });
    stop.store(true, Ordering::Release);
    helper.join().or_fail("join the helper")?;
    drop(reg);
    stash.drain();
    res?;
    kassert!(passes.load(Ordering::Relaxed) > 0);
    let parts = memstall::snapshot().since(&p0);
    kassert!(parts.noprogress_ns > 0, "no throttle time: {parts:?}");
    Ok(())
}

/// More tasks in a memstall at once than the old global table had slots.
const MEMSTALL_TASKS: usize = 130;

/// Many tasks in a memstall at once, each with its own parts: the
/// throttled ones (odd) have pfmemalloc time and no device time, the others
/// the reverse, so no task's wait shows in another's parts; all are
/// counted in the totals. A task that ends inside a memstall leaves
/// nothing to a task that starts after it.
fn each_task_in_a_memstall_has_its_own_parts() -> TestResult {
    let p0 = memstall::snapshot();
    let entered = Arc::new(AtomicU32::new(0));
    let timed = Arc::new(AtomicU32::new(0));
    let abort = Arc::new(AtomicBool::new(false));
    let bad: Arc<SpinLock<Option<(usize, memstall::StallParts)>>> =
        Arc::new(SpinLock::new(None, lock_class!("memstall_bad")));
    let pf_sum = Arc::new(AtomicU64::new(0));
    let n = MEMSTALL_TASKS as u32;
    // All wait for all at each step, so every task is in its memstall while
    // the others time their waits and read their parts.
    let barrier = move |c: &AtomicU32, abort: &AtomicBool| {
        c.fetch_add(1, Ordering::AcqRel);
        while c.load(Ordering::Acquire) < n && !abort.load(Ordering::Acquire) {
            task::yield_now();
        }
    };
    let mut handles = Vec::new();
    let mut spawned = Ok(());
    for i in 0..MEMSTALL_TASKS {
        let (entered, timed, abort, bad, pf_sum) = (
            entered.clone(),
            timed.clone(),
            abort.clone(),
            bad.clone(),
            pf_sum.clone(),
        );
        let r = task::spawn("memstall", move || {
            let stall = memstall::MemstallGuard::enter();
            barrier(&entered, &abort);
            let throttled = i % 2 == 1;
            {
                let _t = memstall::StallTimer::start(if throttled {
                    memstall::StallPart::Pfmemalloc
                } else {
                    memstall::StallPart::Io
                });
                task::sleep(Duration::from_millis(1));
            }
            barrier(&timed, &abort);
            let parts = memstall::current_parts();
            let own = if throttled {
                parts.pfmemalloc_ns > 0 && parts.io_ns == 0
            } else {
                parts.pfmemalloc_ns == 0 && parts.io_ns > 0
            };
            if !own || parts.noprogress_ns != 0 || parts.lock_ns != 0 {
                bad.lock().get_or_insert((i, parts));
            }
            pf_sum.fetch_add(parts.pfmemalloc_ns, Ordering::Relaxed);
            stall.leave();
            if memstall::in_memstall() {
                bad.lock().get_or_insert((i, memstall::current_parts()));
            }
        });
        match r {
            Ok(h) => handles.push(h),
            Err(e) => {
                spawned = Err(e);
                break;
            }
        }
    }
    if spawned.is_err() {
        abort.store(true, Ordering::Release);
    }
    for h in handles {
        h.join().or_fail("join a memstall task")?;
    }
    spawned.or_fail("spawn the memstall tasks")?;
    if let Some((i, parts)) = *bad.lock() {
        kassert!(false, "task {i} of {MEMSTALL_TASKS} had parts {parts:?}");
    }
    let parts = memstall::snapshot().since(&p0);
    let pf = pf_sum.load(Ordering::Relaxed);
    kassert!(pf > 0);
    kassert!(
        parts.pfmemalloc_ns >= pf,
        "totals {parts:?}, the tasks' {pf}"
    );

    // A task that ends inside a memstall, with parts, and one after it.
    let ended = task::spawn("memstall_ends", || {
        core::mem::forget(memstall::MemstallGuard::enter());
        let _t = memstall::StallTimer::start(memstall::StallPart::Lock);
        task::sleep(Duration::from_millis(1));
    })
    .or_fail("spawn the task that ends in a memstall")?;
    ended
        .join()
        .or_fail("join the task that ends in a memstall")?;
    let after = Arc::new(SpinLock::new(None, lock_class!("memstall_after")));
    let a2 = after.clone();
    let p1 = memstall::snapshot();
    task::spawn("memstall_after", move || {
        {
            let _t = memstall::StallTimer::start(memstall::StallPart::Lock);
            task::sleep(Duration::from_millis(1));
        }
        *a2.lock() = Some((memstall::in_memstall(), memstall::current_parts()));
    })
    .or_fail("spawn the task after it")?
    .join()
    .or_fail("join the task after it")?;
    let got = *after.lock();
    kassert_eq!(got, Some((false, memstall::StallParts::default())));
    kassert!(!memstall::in_memstall());
    kassert_eq!(memstall::snapshot().since(&p1).lock_ns, 0);
    Ok(())
}
