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
use crate::mm::memstall::{StallPart, StallTimer};
use crate::mm::scope::{MemallocScope, current_gfp_context};
use crate::mm::shrinker::shrink_slab_counted;
use crate::mm::zone;
use crate::sync::WaitQueue;
use crate::task::{self, TaskFlags};
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use core::time::Duration;

/// `DEF_PRIORITY`: reclaim starts by scanning 1/4096 of each cache.
pub const DEF_PRIORITY: u32 = 12;
/// `SWAP_CLUSTER_MAX`: direct reclaim stops once this many pages are back.
pub const SWAP_CLUSTER_MAX: u64 = 32;
/// `MAX_RECLAIM_RETRIES` (mm/internal.h): rounds without progress before
/// the allocator's slow path gives up, and failed kswapd runs before
/// kswapd is hopeless.
pub const MAX_RECLAIM_RETRIES: u32 = 16;

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
    /// balance_pgdat runs that reclaimed nothing (Linux's
    /// `kswapd_failures`; reset when any reclaim makes progress).
    pub kswapd_failures: AtomicU64,
    /// Wakeups ignored because kswapd was hopeless (failures reached
    /// MAX_RECLAIM_RETRIES): direct reclaim is left to do the work.
    pub kswapd_hopeless: AtomicU64,
    /// Direct reclaimers throttled on pfmemalloc_wait
    /// (`pgscan_direct_throttle`).
    pub direct_throttled: AtomicU64,
    /// Direct reclaim passes that slept on the no-progress queue
    /// (`reclaim_throttle(VMSCAN_THROTTLE_NOPROGRESS)`, the
    /// `mm_vmscan_throttled` tracepoint).
    pub noprogress_throttled: AtomicU64,
    /// Tasks woken from the no-progress queue by efficient reclaim.
    pub noprogress_woken: AtomicU64,
}

static STATS: ReclaimStats = ReclaimStats {
    direct_runs: AtomicU64::new(0),
    direct_pages: AtomicU64::new(0),
    kswapd_wakeups: AtomicU64::new(0),
    kswapd_runs: AtomicU64::new(0),
    kswapd_pages: AtomicU64::new(0),
    slab_objects_freed: AtomicU64::new(0),
    kswapd_failures: AtomicU64::new(0),
    kswapd_hopeless: AtomicU64::new(0),
    direct_throttled: AtomicU64::new(0),
    noprogress_throttled: AtomicU64::new(0),
    noprogress_woken: AtomicU64::new(0),
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
    /// See [`ReclaimStats::kswapd_failures`].
    pub kswapd_failures: u64,
    /// See [`ReclaimStats::kswapd_hopeless`].
    pub kswapd_hopeless: u64,
    /// See [`ReclaimStats::direct_throttled`].
    pub direct_throttled: u64,
    /// See [`ReclaimStats::noprogress_throttled`].
    pub noprogress_throttled: u64,
    /// See [`ReclaimStats::noprogress_woken`].
    pub noprogress_woken: u64,
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
            kswapd_failures: self.kswapd_failures.load(Ordering::Relaxed),
            kswapd_hopeless: self.kswapd_hopeless.load(Ordering::Relaxed),
            direct_throttled: self.direct_throttled.load(Ordering::Relaxed),
            noprogress_throttled: self.noprogress_throttled.load(Ordering::Relaxed),
            noprogress_woken: self.noprogress_woken.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Display for ReclaimSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "direct reclaim: {} runs, {} pages, {} throttled, {} without progress; kswapd: {} wakeups, {} runs, {} pages, \
             {} failed runs, {} wakeups while hopeless; shrinkers freed {} objects",
            self.direct_runs,
            self.direct_pages,
            self.direct_throttled,
            self.noprogress_throttled,
            self.kswapd_wakeups,
            self.kswapd_runs,
            self.kswapd_pages,
            self.kswapd_failures,
            self.kswapd_hopeless,
            self.slab_objects_freed
        )
    }
}

fn above_wmark(mark: u64) -> bool {
    zone::nr_free_pages() > mark
}

/// Credits `pages` freed by the current task to its reclaim (called by the
/// page allocator for every free made under PF_MEMALLOC).
#[inline]
pub fn note_pages_freed(pages: u64) {
    // No task has PF_MEMALLOC: not this one either (one load, no
    // `task::current`; the page allocator's free fast path calls this).
    if !task::memalloc_tasks_exist() {
        return;
    }
    let t = task::current();
    if t.flags().contains(TaskFlags::PF_MEMALLOC) {
        t.add_reclaimed(pages);
    }
}

/// [`note_pages_freed`] with interrupts masked (the page allocator's
/// per-CPU free path): the running task read through this CPU's data
/// ([`task::current_irqs_masked`]), not through [`task::current`], which
/// masks them again.
#[inline(always)]
pub fn note_pages_freed_irqs_masked(irq: &crate::platform::IrqGuard, pages: u64) {
    if !task::memalloc_tasks_exist() {
        return;
    }
    let t = task::current_irqs_masked(irq);
    if t.flags().contains(TaskFlags::PF_MEMALLOC) {
        t.add_reclaimed(pages);
    }
}

/// Empties the per-CPU caches in front of the allocators (the slab's
/// sheaves), registered by the slab layer at init: vmscan sits below it.
static PERCPU_DRAIN: crate::sync::Hook<fn() -> usize> = crate::sync::Hook::new();

/// Registers the function reclaim calls, as a last resort, to give back what
/// per-CPU caches hold (`slab::flush_all_sheaves`).
pub fn set_percpu_drain(f: fn() -> usize) {
    PERCPU_DRAIN.set(Some(f));
}

/// Runs the registered per-CPU drain, if any (Linux drains per-CPU caches
/// before it declares OOM). The pages it frees count as reclaimed when the
/// caller runs under PF_MEMALLOC.
fn drain_percpu_caches() {
    if let Some(f) = PERCPU_DRAIN.get() {
        f();
    }
}

/// One reclaim pass: shrink_slab at falling priority until `target` pages
/// came back or priority 0 was tried. Returns pages reclaimed.
fn do_try_to_free_pages(gfp: Gfp, target: u64, stop_when_balanced: bool) -> u64 {
    let t = task::current();
    let start = t.reclaimed();
    let mut priority = DEF_PRIORITY;
    let mut scanned = 0;
    loop {
        let pass = shrink_slab_counted(gfp, priority);
        STATS
            .slab_objects_freed
            .fetch_add(pass.freed, Ordering::Relaxed);
        scanned += pass.scanned;
        let got = t.reclaimed() - start;
        // shrink_zones ends each priority with consider_reclaim_throttle.
        consider_reclaim_throttle(priority, got, scanned);
        if got >= target || (stop_when_balanced && above_wmark(zone::watermarks().high)) {
            return got;
        }
        if priority == 0 {
            // Last: the objects cached in every cache's sheaves go back to
            // their slabs and empty slabs to the page allocator (Linux
            // drains per-CPU caches before it declares OOM). The pages
            // freed count as reclaimed: this runs under PF_MEMALLOC.
            drain_percpu_caches();
            return t.reclaimed() - start;
        }
        // cond_resched(): Linux's do_try_to_free_pages goes straight on to
        // the next priority, giving the CPU up only when the time slice is
        // used. Under the preemptive scheduler the tick does that, so there
        // is no yield here (an unconditional one made "stall time" mostly
        // the run time of the other tasks: about 97% of it under every
        // era). The cooperative scheduler keeps no slices, so a direct
        // reclaimer yields between priorities there, as a non-preemptible
        // kernel's cond_resched does once the tick asks for it: otherwise
        // kswapd could never run during a pass.
        priority -= 1;
        if task::mode() == task::SchedMode::Cooperative {
            task::yield_now();
        }
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
        zone::nr_free_pages(),
        zone::watermarks().min
    );
    throttle_direct_reclaim(gfp);
    let got = do_try_to_free_pages(gfp, SWAP_CLUSTER_MAX, false);
    STATS.direct_pages.fetch_add(got, Ordering::Relaxed);
    if got > 0 {
        // shrink_node: a node where reclaim makes progress is not hopeless.
        KSWAPD_FAILURES.store(0, Ordering::Relaxed);
    }
    log::trace!(
        "direct reclaim: '{}' reclaimed {got} pages, free {}",
        task::current().name(),
        zone::nr_free_pages()
    );
    got as usize
}

/// Linux's `pgdat->reclaim_wait[VMSCAN_THROTTLE_NOPROGRESS]`: direct
/// reclaimers that made no progress at all by priority 1 sleep here for one
/// tick, or until a reclaim pass elsewhere makes efficient progress.
static RECLAIM_WAIT_NOPROGRESS: WaitQueue = WaitQueue::new("reclaim_wait_noprogress");

/// The no-progress throttle's timeout: Linux's 1 jiffy, here a jiffy at
/// HZ=100, the tick of the other CPUs' timers (a wake-up ends it earlier).
const NOPROGRESS_TIMEOUT: Duration = Duration::from_millis(10);

/// Linux's `consider_reclaim_throttle`, after each priority of a direct
/// reclaim pass with the pass's totals so far. Reclaim better than 12%
/// efficient (`nr_reclaimed > nr_scanned >> 3`) wakes the throttled tasks;
/// a direct reclaimer (not kswapd) that reclaimed nothing by priority 1
/// throttles. kreclaim scans no LRU: `scanned` counts slab objects scanned,
/// `reclaimed` pages freed.
fn consider_reclaim_throttle(priority: u32, reclaimed: u64, scanned: u64) {
    if reclaimed > scanned >> 3 {
        if !RECLAIM_WAIT_NOPROGRESS.is_empty() {
            let n = RECLAIM_WAIT_NOPROGRESS.wake_all();
            STATS
                .noprogress_woken
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        return;
    }
    if task::current().flags().contains(TaskFlags::PF_KSWAPD) {
        return;
    }
    if priority == 1 && reclaimed == 0 {
        reclaim_throttle_noprogress();
    }
}

/// Linux's `reclaim_throttle(pgdat, VMSCAN_THROTTLE_NOPROGRESS)`: sleeps
/// [`NOPROGRESS_TIMEOUT`] (Linux's 1 jiffy) on the no-progress queue, so that a
/// reclaimer on an otherwise idle CPU does not burn its retries while other
/// CPUs free memory. Kernel threads other than kswapd are not throttled
/// (reclaim may need them), nor is anyone once kswapd is hopeless (near
/// OOM), nor a task that may not sleep (preemption off: the scheduler's
/// might_sleep check would object). Linux also skips the sleep unless
/// write-back is pending on at least half the reclaimable pages
/// (`skip_throttle_noprogress`); kreclaim has no write-back, so it keeps
/// the sleep (a stated deviation, see docs/linux-fidelity.md).
fn reclaim_throttle_noprogress() {
    let t = task::current();
    let flags = t.flags();
    if (flags.contains(TaskFlags::PF_KTHREAD) && !flags.contains(TaskFlags::PF_KSWAPD))
        || kswapd_hopeless()
        || task::preempt_count() != 0
    {
        return;
    }
    STATS.noprogress_throttled.fetch_add(1, Ordering::Relaxed);
    log::debug!("direct reclaim: '{}' throttled: no progress", t.name());
    let mut slept = false;
    let _stall = StallTimer::start(StallPart::NoProgress);
    // Only a wake-up ends the wait early: the condition is false until the
    // first wake-up after the task queued itself.
    RECLAIM_WAIT_NOPROGRESS
        .wait_event_timeout(NOPROGRESS_TIMEOUT, || core::mem::replace(&mut slept, true));
}

/// Linux's `pgdat->pfmemalloc_wait`: direct reclaimers throttled until
/// kswapd brings free memory back above half the min reserve.
static PFMEMALLOC_WAIT: WaitQueue = WaitQueue::new("pfmemalloc_wait");

/// Linux's `allow_direct_reclaim`: free memory above half the min
/// watermark (the PF_MEMALLOC reserve), or kswapd hopeless or absent (then
/// nobody would end the throttling). Wakes kswapd when it is not.
fn allow_direct_reclaim() -> bool {
    if !KSWAPD_RUNNING.load(Ordering::Acquire) || kswapd_hopeless() {
        return true;
    }
    let reserve = zone::watermarks().min;
    if reserve == 0 || zone::nr_free_pages() > reserve / 2 {
        return true;
    }
    if !KSWAPD_WANTED.swap(true, Ordering::AcqRel) {
        KSWAPD_WAIT.wake_one();
    }
    false
}

/// Linux's `throttle_direct_reclaim`: a user task (not PF_KTHREAD) that
/// enters direct reclaim with free memory below half the min reserve waits
/// for kswapd instead of draining the reserve further. Without __GFP_FS it
/// may hold a filesystem lock kswapd needs, so it waits at most 1 s.
fn throttle_direct_reclaim(gfp: Gfp) {
    if task::current().flags().contains(TaskFlags::PF_KTHREAD) || allow_direct_reclaim() {
        return;
    }
    STATS.direct_throttled.fetch_add(1, Ordering::Relaxed);
    log::debug!(
        "direct reclaim: '{}' throttled: free {} pages, min {}",
        task::current().name(),
        zone::nr_free_pages(),
        zone::watermarks().min
    );
    // wait_event_killable: an OOM victim stops waiting.
    let go_on = || allow_direct_reclaim() || task::fatal_signal_pending();
    let _stall = StallTimer::start(StallPart::Pfmemalloc);
    if gfp.contains(Gfp::__GFP_FS) {
        PFMEMALLOC_WAIT.wait_event(go_on);
    } else {
        PFMEMALLOC_WAIT.wait_event_timeout(Duration::from_secs(1), go_on);
    }
}

/// Wakes every task throttled in direct reclaim so that it re-checks
/// (the OOM killer, after choosing a victim).
pub(crate) fn wake_throttled_tasks() {
    PFMEMALLOC_WAIT.wake_all();
}

/// Wakes throttled direct reclaimers if they may go on (kswapd, after each
/// round and before sleeping).
fn wake_throttled() {
    if allow_direct_reclaim() {
        PFMEMALLOC_WAIT.wake_all();
    }
}

static KSWAPD_WAIT: WaitQueue = WaitQueue::new("kswapd_wait");
static KSWAPD_WANTED: AtomicBool = AtomicBool::new(false);
static KSWAPD_RUNNING: AtomicBool = AtomicBool::new(false);
static KSWAPD_STOP: AtomicBool = AtomicBool::new(false);
/// The highest order asked for since kswapd last started balancing
/// (Linux's `pgdat->kswapd_order`): balance_pgdat reclaims until a free
/// block of that order is above the high watermark.
static KSWAPD_ORDER: AtomicU32 = AtomicU32::new(0);
/// Linux's `pgdat->kswapd_failures`: consecutive balance_pgdat runs that
/// reclaimed nothing.
static KSWAPD_FAILURES: AtomicU32 = AtomicU32::new(0);

/// Asks kswapd to reclaim up to the high watermark (no-op if not running).
/// Safe from any context: it only sets a flag and wakes a wait queue.
/// A hopeless kswapd (MAX_RECLAIM_RETRIES runs without progress) is not
/// woken: direct reclaim has to make progress first, as in Linux.
pub fn wakeup_kswapd(order: u32) {
    STATS.kswapd_wakeups.fetch_add(1, Ordering::Relaxed);
    if !KSWAPD_RUNNING.load(Ordering::Acquire) {
        return;
    }
    if KSWAPD_FAILURES.load(Ordering::Relaxed) >= MAX_RECLAIM_RETRIES {
        STATS.kswapd_hopeless.fetch_add(1, Ordering::Relaxed);
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
    t.set_flags(TaskFlags::PF_KSWAPD | TaskFlags::PF_KTHREAD);
    let _memalloc = MemallocScope::noreclaim();
    loop {
        // kswapd_try_to_sleep: sleep until woken (no polling); a wakeup
        // that came while balancing runs balance_pgdat again.
        KSWAPD_WAIT.wait_event(|| {
            KSWAPD_WANTED.load(Ordering::Acquire) || KSWAPD_STOP.load(Ordering::Acquire)
        });
        if KSWAPD_STOP.load(Ordering::Acquire) {
            break;
        }
        KSWAPD_WANTED.store(false, Ordering::Release);
        balance_pgdat(KSWAPD_ORDER.swap(0, Ordering::AcqRel));
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
    // kswapd is woken below the low watermark, or for a high order that
    // has no free block (wakeup_kswapd(order)).
    let order = KSWAPD_ORDER.load(Ordering::Relaxed);
    if above_wmark(zone::watermarks().low) && (order == 0 || pgdat_balanced(order)) {
        return 0;
    }
    let _memalloc = MemallocScope::noreclaim();
    balance_pgdat(KSWAPD_ORDER.swap(0, Ordering::AcqRel))
}

/// `pgdat_balanced`: free memory above the high watermark, with a free
/// block of `order` (the zone watermark check at that order).
fn pgdat_balanced(order: u32) -> bool {
    zone::zone_watermark_ok(
        order,
        zone::watermarks().high,
        crate::mm::zone::AllocFlags::WMARK_HIGH,
    )
}

/// Linux's `balance_pgdat`: reclaims until the zone is balanced for
/// `order` at the high watermark. Each round is one `shrink_slab` pass at
/// the current priority (`kswapd_shrink_node`); the priority is lowered
/// only when the pass reclaimed nothing or scanned less than it set out to
/// reclaim (`raise_priority`), and never below 1. A run that reclaimed
/// nothing counts as a kswapd failure. Returns the pages reclaimed.
///
/// **Deviation:** Linux's "scanned" counts LRU pages; kreclaim has only
/// slab caches, so it counts the objects the shrinkers scanned.
fn balance_pgdat(mut order: u32) -> u64 {
    STATS.kswapd_runs.fetch_add(1, Ordering::Relaxed);
    let w = zone::watermarks();
    log::debug!(
        "kswapd0: wake: free {} pages (low {}, high {}), order {order}",
        zone::nr_free_pages(),
        w.low,
        w.high,
    );
    let t = task::current();
    let start = t.reclaimed();
    let mut priority = DEF_PRIORITY;
    let mut balanced;
    loop {
        balanced = pgdat_balanced(order);
        if balanced || KSWAPD_STOP.load(Ordering::Acquire) {
            break;
        }
        let nr_to_reclaim = zone::watermarks().high.max(SWAP_CLUSTER_MAX);
        let before = t.reclaimed();
        // kswapd holds fs_reclaim across its shrinkers, like direct reclaim.
        let pass = {
            let _fs = crate::mm::fs_reclaim::FsReclaimGuard::reclaimer();
            shrink_slab_counted(GFP_KERNEL, priority)
        };
        STATS
            .slab_objects_freed
            .fetch_add(pass.freed, Ordering::Relaxed);
        let reclaimed = t.reclaimed() - before;
        STATS.kswapd_pages.fetch_add(reclaimed, Ordering::Relaxed);
        // kswapd_shrink_node: fragmentation may keep a high order from
        // ever balancing; once twice its size (compact_gap) came back,
        // balance for order 0 only.
        if order > 0 && t.reclaimed() - start >= 2u64 << order {
            order = 0;
        }
        let raise_priority = pass.scanned < nr_to_reclaim;
        if raise_priority || reclaimed == 0 {
            if priority == 1 {
                // Before giving up: what per-CPU caches hold.
                let before = t.reclaimed();
                drain_percpu_caches();
                STATS
                    .kswapd_pages
                    .fetch_add(t.reclaimed() - before, Ordering::Relaxed);
                balanced = pgdat_balanced(order);
                break;
            }
            priority -= 1;
        }
        wake_throttled();
        task::yield_now();
    }
    wake_throttled();
    let total = t.reclaimed() - start;
    if total == 0 && !balanced {
        KSWAPD_FAILURES.fetch_add(1, Ordering::Relaxed);
        STATS.kswapd_failures.fetch_add(1, Ordering::Relaxed);
    } else if total > 0 {
        KSWAPD_FAILURES.store(0, Ordering::Relaxed);
    }
    if balanced {
        zone::note_zone_balanced();
    }
    log::debug!(
        "kswapd0: sleep: free {} pages (high {}), {} at priority {priority}; {total} pages reclaimed",
        zone::nr_free_pages(),
        zone::watermarks().high,
        if balanced { "balanced" } else { "no progress" },
    );
    total
}

/// Whether kswapd has given up (MAX_RECLAIM_RETRIES runs without
/// progress) until some reclaim makes progress again.
pub fn kswapd_hopeless() -> bool {
    KSWAPD_FAILURES.load(Ordering::Relaxed) >= MAX_RECLAIM_RETRIES
}

/// Prints the reclaim counters.
pub fn show_reclaim() {
    crate::println!("reclaim: {}", STATS.snapshot());
}
