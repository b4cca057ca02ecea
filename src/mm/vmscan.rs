//! Reclaim (`mm/vmscan.c`): direct reclaim from the allocation slow path and
//! the background kswapd thread.
//!
//! kreclaim has no page cache LRU: every reclaimable page belongs to a slab
//! cache (inodes, buffers, test caches) and is reclaimed through the
//! shrinkers, so `shrink_node` reduces to `shrink_slab` at each priority.
//! Pages count as reclaimed when they are freed by the reclaiming task
//! (Linux's `current->reclaim_state`): the page allocator credits every free
//! made under PF_MEMALLOC to the freeing task.

use crate::mm::gfp::{GFP_KERNEL, Gfp};
use crate::mm::page_alloc;
use crate::mm::scope::{MemallocScope, current_gfp_context};
use crate::mm::shrinker::shrink_slab;
use crate::sync::WaitQueue;
use crate::task::{self, TaskFlags};
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use core::time::Duration;

/// `DEF_PRIORITY`: reclaim starts by scanning 1/4096 of each cache.
pub const DEF_PRIORITY: u32 = 12;
/// `SWAP_CLUSTER_MAX`: direct reclaim stops once this many pages are back.
pub const SWAP_CLUSTER_MAX: u64 = 32;

/// Reclaim statistics (like /proc/vmstat's allocstall, pgsteal_*).
#[derive(Default)]
pub struct ReclaimStats {
    /// Direct reclaim passes (stalls and time are counted by the page
    /// allocator: `page_alloc::stats()`).
    pub direct_runs: AtomicU64,
    /// Pages reclaimed by direct reclaim (`pgsteal_direct`).
    pub direct_pages: AtomicU64,
    /// Requests to wake kswapd.
    pub kswapd_wakeups: AtomicU64,
    /// balance_pgdat runs.
    pub kswapd_runs: AtomicU64,
    /// Pages reclaimed by kswapd (`pgsteal_kswapd`).
    pub kswapd_pages: AtomicU64,
    /// Objects freed by shrinkers on behalf of reclaim.
    pub slab_objects_freed: AtomicU64,
}

static STATS: ReclaimStats = ReclaimStats {
    direct_runs: AtomicU64::new(0),
    direct_pages: AtomicU64::new(0),
    kswapd_wakeups: AtomicU64::new(0),
    kswapd_runs: AtomicU64::new(0),
    kswapd_pages: AtomicU64::new(0),
    slab_objects_freed: AtomicU64::new(0),
};

/// The global reclaim counters.
pub fn stats() -> &'static ReclaimStats {
    &STATS
}

/// A copy of the counters, for reports and comparisons.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReclaimSnapshot {
    /// Direct reclaim passes.
    pub direct_runs: u64,
    /// Pages freed by direct reclaim.
    pub direct_pages: u64,
    /// Times kswapd was woken.
    pub kswapd_wakeups: u64,
    /// kswapd balancing passes.
    pub kswapd_runs: u64,
    /// Pages freed by kswapd.
    pub kswapd_pages: u64,
    /// Slab objects shrinkers freed.
    pub slab_objects_freed: u64,
}

impl ReclaimStats {
    /// Copies the counters.
    pub fn snapshot(&self) -> ReclaimSnapshot {
        ReclaimSnapshot {
            direct_runs: self.direct_runs.load(Ordering::Relaxed),
            direct_pages: self.direct_pages.load(Ordering::Relaxed),
            kswapd_wakeups: self.kswapd_wakeups.load(Ordering::Relaxed),
            kswapd_runs: self.kswapd_runs.load(Ordering::Relaxed),
            kswapd_pages: self.kswapd_pages.load(Ordering::Relaxed),
            slab_objects_freed: self.slab_objects_freed.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Display for ReclaimSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "direct reclaim: {} runs, {} pages; kswapd: {} wakeups, {} runs, {} pages; \
             shrinkers freed {} objects",
            self.direct_runs,
            self.direct_pages,
            self.kswapd_wakeups,
            self.kswapd_runs,
            self.kswapd_pages,
            self.slab_objects_freed
        )
    }
}

fn above_wmark(mark: u64) -> bool {
    page_alloc::nr_free_pages() > mark
}

/// Credits `pages` freed by the current task to its reclaim (called by the
/// page allocator for every free made under PF_MEMALLOC).
pub fn note_pages_freed(pages: u64) {
    let t = task::current();
    if t.flags().contains(TaskFlags::PF_MEMALLOC) {
        t.add_reclaimed(pages);
    }
}

/// One reclaim pass: shrink_slab at falling priority until `target` pages
/// came back or priority 0 was tried. Returns pages reclaimed.
fn do_try_to_free_pages(gfp: Gfp, target: u64, stop_when_balanced: bool) -> u64 {
    let t = task::current();
    let start = t.reclaimed();
    let mut priority = DEF_PRIORITY;
    loop {
        let freed = shrink_slab(gfp, priority);
        STATS.slab_objects_freed.fetch_add(freed, Ordering::Relaxed);
        let got = t.reclaimed() - start;
        if got >= target || (stop_when_balanced && above_wmark(page_alloc::watermarks().high)) {
            return got;
        }
        if priority == 0 {
            // Last: the objects cached in every cache's sheaves go back to
            // their slabs and empty slabs to the page allocator (Linux
            // drains per-CPU caches before it declares OOM). The pages
            // freed count as reclaimed: this runs under PF_MEMALLOC.
            crate::mm::slab::flush_all_sheaves();
            return t.reclaimed() - start;
        }
        priority -= 1;
        task::yield_now();
    }
}

/// Direct reclaim (`try_to_free_pages`): called by the allocator's slow
/// path inside fs_reclaim and PF_MEMALLOC. Returns pages reclaimed.
pub fn try_to_free_pages(gfp: Gfp, order: u32) -> usize {
    let _ = order;
    let gfp = current_gfp_context(gfp);
    STATS.direct_runs.fetch_add(1, Ordering::Relaxed);
    log::debug!(
        "direct reclaim: '{}' order-{order} {gfp}: free {} pages (min {})",
        task::current().name(),
        page_alloc::nr_free_pages(),
        page_alloc::watermarks().min
    );
    let got = do_try_to_free_pages(gfp, SWAP_CLUSTER_MAX, false);
    STATS.direct_pages.fetch_add(got, Ordering::Relaxed);
    log::trace!(
        "direct reclaim: '{}' reclaimed {got} pages, free {}",
        task::current().name(),
        page_alloc::nr_free_pages()
    );
    got as usize
}

static KSWAPD_WAIT: WaitQueue = WaitQueue::new("kswapd_wait");
static KSWAPD_WANTED: AtomicBool = AtomicBool::new(false);
static KSWAPD_RUNNING: AtomicBool = AtomicBool::new(false);
static KSWAPD_STOP: AtomicBool = AtomicBool::new(false);
static KSWAPD_ORDER: AtomicU32 = AtomicU32::new(0);

/// Asks kswapd to reclaim up to the high watermark (no-op if not running).
/// Safe from any context: it only sets a flag and wakes a wait queue.
pub fn wakeup_kswapd(order: u32) {
    STATS.kswapd_wakeups.fetch_add(1, Ordering::Relaxed);
    if !KSWAPD_RUNNING.load(Ordering::Acquire) {
        return;
    }
    KSWAPD_ORDER.fetch_max(order, Ordering::Relaxed);
    if !KSWAPD_WANTED.swap(true, Ordering::AcqRel) {
        KSWAPD_WAIT.wake_one();
    }
}

/// Starts the kswapd thread.
pub fn kswapd_run() -> Result<(), task::SpawnError> {
    if KSWAPD_RUNNING.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    KSWAPD_STOP.store(false, Ordering::Release);
    match task::spawn("kswapd0", kswapd) {
        Ok(_) => Ok(()),
        Err(e) => {
            KSWAPD_RUNNING.store(false, Ordering::Release);
            Err(e)
        }
    }
}

/// Whether [`kswapd_run`] started kswapd.
pub fn kswapd_running() -> bool {
    KSWAPD_RUNNING.load(Ordering::Acquire)
}

fn kswapd() {
    let t = task::current();
    // kswapd reclaims: it never recurses into reclaim and may use reserves.
    t.set_flags(TaskFlags::PF_KSWAPD);
    let _memalloc = MemallocScope::noreclaim();
    loop {
        KSWAPD_WAIT.wait_event_timeout(Duration::from_millis(100), || {
            KSWAPD_WANTED.load(Ordering::Acquire) || KSWAPD_STOP.load(Ordering::Acquire)
        });
        if KSWAPD_STOP.load(Ordering::Acquire) {
            break;
        }
        if !KSWAPD_WANTED.swap(false, Ordering::AcqRel) && above_wmark(page_alloc::watermarks().low)
        {
            continue;
        }
        balance_pgdat();
    }
    KSWAPD_RUNNING.store(false, Ordering::Release);
}

/// kswapd's balance step, for a kernel that runs background reclaim on its
/// own scheduler (or none) instead of [`kswapd_run`]'s thread: call it from
/// a thread or idle loop that may sleep, periodically or after
/// [`wakeup_kswapd`]. Below the low watermark it reclaims like kswapd (as
/// PF_MEMALLOC, so it never recurses into reclaim) up to the high
/// watermark; otherwise it does nothing. Returns the pages reclaimed.
pub fn kswapd_balance() -> u64 {
    if above_wmark(page_alloc::watermarks().low) {
        return 0;
    }
    let _memalloc = MemallocScope::noreclaim();
    let before = STATS.kswapd_pages.load(Ordering::Relaxed);
    balance_pgdat();
    STATS.kswapd_pages.load(Ordering::Relaxed) - before
}

/// Reclaims until free memory is above the high watermark or a whole pass
/// makes no progress.
fn balance_pgdat() {
    STATS.kswapd_runs.fetch_add(1, Ordering::Relaxed);
    log::debug!(
        "kswapd0: wake: free {} pages (low {}, high {}), order {}",
        page_alloc::nr_free_pages(),
        page_alloc::watermarks().low,
        page_alloc::watermarks().high,
        KSWAPD_ORDER.load(Ordering::Relaxed)
    );
    let pages0 = STATS.kswapd_pages.load(Ordering::Relaxed);
    KSWAPD_ORDER.store(0, Ordering::Relaxed);
    while !above_wmark(page_alloc::watermarks().high) {
        // kswapd holds fs_reclaim across its shrinkers, like direct reclaim.
        let got = {
            let _fs = crate::mm::fs_reclaim::FsReclaimGuard::reclaimer();
            do_try_to_free_pages(GFP_KERNEL, u64::MAX, true)
        };
        STATS.kswapd_pages.fetch_add(got, Ordering::Relaxed);
        if got == 0 {
            break;
        }
    }
    let balanced = above_wmark(page_alloc::watermarks().high);
    if balanced {
        page_alloc::note_zone_balanced();
    }
    log::debug!(
        "kswapd0: sleep: free {} pages (high {}), {}; {} pages reclaimed",
        page_alloc::nr_free_pages(),
        page_alloc::watermarks().high,
        if balanced { "balanced" } else { "no progress" },
        STATS.kswapd_pages.load(Ordering::Relaxed) - pages0
    );
}

/// Prints the reclaim counters.
pub fn show_reclaim() {
    crate::println!("reclaim: {}", STATS.snapshot());
}
