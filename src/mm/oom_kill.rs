//! The OOM killer (Linux's `mm/oom_kill.c`).
//!
//! Linux does not let small allocations fail: a GFP_KERNEL allocation of
//! order <= 3 (PAGE_ALLOC_COSTLY_ORDER) without __GFP_NORETRY or
//! __GFP_RETRY_MAYFAIL retries for as long as reclaim or the OOM killer
//! makes progress. When reclaim has given up, `out_of_memory` picks the
//! task with the largest footprint, marks it a victim (a fatal signal),
//! and the allocation retries while the victim exits and frees what it
//! holds. Allocations without __GFP_FS never kill: reclaim could not call
//! into the filesystem, so Linux counts that as progress and retries.
//!
//! **Deviations:** Linux's badness is a process's RSS, swap and page
//! tables; kreclaim has no address spaces, so a task's footprint is what
//! it charges with [`OomCharge`] (the workload charges its file buffers).
//! Linux panics when nothing is killable; kreclaim fails the allocation
//! with the report instead. `oom=fail` on the command line keeps the
//! allocation failing where the killer would run, for experiments.

use crate::mm::gfp::Gfp;
use crate::task::{self, Task, TaskFlags};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

/// What the page allocator does when reclaim has given up on an
/// allocation Linux would not let fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OomPolicy {
    /// Linux's behaviour (the default): run the OOM killer and retry.
    Kill,
    /// Fail the allocation (kreclaim's behaviour before it had a killer).
    Fail,
}

impl OomPolicy {
    /// The `oom=` command-line value.
    pub fn name(self) -> &'static str {
        match self {
            OomPolicy::Kill => "kill",
            OomPolicy::Fail => "fail",
        }
    }

    /// Parses an `oom=` value.
    pub fn by_name(s: &str) -> Option<Self> {
        match s {
            "kill" => Some(OomPolicy::Kill),
            "fail" => Some(OomPolicy::Fail),
            _ => None,
        }
    }
}

static POLICY: AtomicU8 = AtomicU8::new(0);
static KILLS: AtomicU64 = AtomicU64::new(0);
/// Linux's `oom_lock`: one OOM invocation at a time.
static OOM_LOCK: AtomicBool = AtomicBool::new(false);
/// When the last victim was chosen.
static LAST_KILL_NS: AtomicU64 = AtomicU64::new(0);
/// How long a victim may take to exit before another may be chosen
/// (Linux's oom_reaper tries for about a second).
const OOM_REAP_NS: u64 = 1_000_000_000;

/// Sets the policy (`oom=`).
pub fn set_policy(p: OomPolicy) {
    POLICY.store(
        match p {
            OomPolicy::Kill => 0,
            OomPolicy::Fail => 1,
        },
        Ordering::Relaxed,
    );
}

/// The policy in force.
pub fn policy() -> OomPolicy {
    match POLICY.load(Ordering::Relaxed) {
        0 => OomPolicy::Kill,
        _ => OomPolicy::Fail,
    }
}

/// Tasks the OOM killer has killed since boot.
pub fn kills() -> u64 {
    KILLS.load(Ordering::Relaxed)
}

/// Bytes charged to the task that created it, until dropped: what the OOM
/// killer weighs when it picks a victim (a task's "RSS" in kreclaim).
#[must_use = "the charge ends when the guard is dropped"]
pub struct OomCharge {
    task: Option<Arc<Task>>,
    bytes: u64,
}

impl OomCharge {
    /// Charges `bytes` to the current task (nothing before tasks run).
    pub fn new(bytes: u64) -> Self {
        let task = task::current_arc();
        if let Some(t) = &task {
            t.oom_charge(bytes);
        }
        Self { task, bytes }
    }

    /// The bytes charged.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Charges `bytes` more, as a process's RSS grows page by page while
    /// it faults its memory in (the killer sees each page as it comes).
    pub fn add(&mut self, bytes: u64) {
        if let Some(t) = &self.task {
            t.oom_charge(bytes);
        }
        self.bytes += bytes;
    }
}

impl Drop for OomCharge {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.oom_uncharge(self.bytes);
        }
    }
}

/// Releases [`OOM_LOCK`] on drop.
struct OomLockGuard;

impl Drop for OomLockGuard {
    fn drop(&mut self) {
        OOM_LOCK.store(false, Ordering::Release);
    }
}

/// Linux's `out_of_memory`, called by the page allocator when reclaim has
/// given up on an allocation of `order` that may invoke the killer.
/// `show_mem` prints the memory state in the report (the page allocator
/// passes its own, so that this module does not depend on it).
/// Returns whether the caller should retry (progress): a victim was
/// killed or is still exiting, the OOM lock was busy, or the allocation
/// cannot enter the filesystem.
pub(crate) fn out_of_memory(gfp: Gfp, order: u32, show_mem: fn()) -> bool {
    if policy() == OomPolicy::Fail || !task::started() {
        return false;
    }
    // "The OOM killer does not compensate for IO-less reclaim."
    if !gfp.contains(Gfp::__GFP_FS) {
        return true;
    }
    if OOM_LOCK.swap(true, Ordering::AcqRel) {
        // Someone else is killing: give them a tick, then retry.
        task::sleep(core::time::Duration::from_millis(1));
        return true;
    }
    let _lock = OomLockGuard;
    // oom_evaluate_task: a victim that has not exited yet aborts the
    // selection; the caller waits for it rather than killing another.
    // A victim that could not exit within OOM_REAP_NS is skipped, as
    // Linux's oom_reaper sets MMF_OOM_SKIP on one it could not reap.
    let now = crate::time::now_ns();
    let reaped = now.saturating_sub(LAST_KILL_NS.load(Ordering::Relaxed)) > OOM_REAP_NS;
    let mut pending = false;
    let mut chosen: Option<(Arc<Task>, u64)> = None;
    task::for_each_task(|t| {
        if t.state() == task::TaskState::Dead {
            return;
        }
        if t.is_oom_victim() {
            pending |= !reaped && !t.is_deadlocked();
            return;
        }
        if t.flags().contains(TaskFlags::PF_KTHREAD) || t.is_deadlocked() {
            return;
        }
        let fp = t.oom_footprint();
        if fp > 0 && chosen.as_ref().is_none_or(|(_, b)| fp > *b) {
            chosen = Some((t.clone(), fp));
        }
    });
    if pending {
        task::sleep(core::time::Duration::from_millis(1));
        return true;
    }
    // Nothing charged, nothing to kill: the allocation fails and
    // warn_alloc reports it (Linux would panic here).
    let Some((victim, footprint)) = chosen else {
        return false;
    };
    crate::println!(
        "{} invoked oom-killer: gfp_mask={:#x}({gfp}), order={order}",
        task::current().name(),
        gfp.bits()
    );
    show_mem();
    if victim.mark_oom_victim() {
        KILLS.fetch_add(1, Ordering::Relaxed);
        LAST_KILL_NS.store(now, Ordering::Relaxed);
    }
    crate::println!(
        "Out of memory: Killed task {} ({}) footprint:{}kB",
        victim.id(),
        victim.name(),
        footprint / 1024
    );
    // A victim throttled in direct reclaim must see its signal.
    crate::mm::vmscan::wake_throttled_tasks();
    true
}
