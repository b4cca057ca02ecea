//! Kernel threads and the scheduler.
//!
//! Round-robin over a per-CPU run queue, preemptive on the timer tick by
//! default (10 ms slices, `preempt_disable` regions respected) or cooperative
//! (`sched=coop`: a task runs until it blocks, sleeps or yields), so that
//! experiments can be replayed deterministically. The idle task halts the CPU
//! and notices when every task is blocked (see [`deadlock`]).
//!
//! Per-CPU state lives in [`PerCpu`]; there is one CPU today, and everything
//! reaches its state through [`this_cpu`] so that a second one can be added.

#![deny(missing_docs)]

pub mod deadlock;
mod flags;
pub mod wait;
pub mod waitlist;

pub use flags::TaskFlags;

use crate::mm::fallible::{try_arc, try_box, try_string};
use crate::platform::{self, IrqGuard, KernelStack};
use crate::sync::lockdep::TaskLockState;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
use core::time::Duration;

/// Default kernel stack size for spawned tasks.
pub const STACK_SIZE: usize = 64 * 1024;
/// Ticks in a time slice under preemptive scheduling.
pub const TIME_SLICE_TICKS: u32 = 10;

/// A task's number; 0 is the boot task ("main").
pub type TaskId = u32;

/// A task's scheduling state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TaskState {
    /// On a CPU now.
    Running = 0,
    /// On the run queue.
    Ready = 1,
    /// Waiting for a lock, a wait queue or a completion.
    Blocked = 2,
    /// Waiting for a deadline (possibly also for an event).
    Sleeping = 3,
    /// Finished; waiting to be reaped.
    Dead = 4,
}

impl TaskState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Running,
            1 => Self::Ready,
            2 => Self::Blocked,
            3 => Self::Sleeping,
            _ => Self::Dead,
        }
    }
}

/// Scheduling policy, chosen with `sched=` on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedMode {
    /// Round-robin, preempted on the timer tick.
    Preemptive,
    /// A task runs until it blocks, sleeps or yields.
    Cooperative,
}

/// The parts a memstall's time is split into (`mm::memstall::StallPart`).
pub(crate) const MEMSTALL_PARTS: usize = 4;

/// Linux's `current->in_memstall`, with the nanoseconds of each part of the
/// memstall in progress (`mm::memstall`), added to the totals when it ends.
///
/// Only the owning task writes it, through [`current`] (entering and
/// leaving its memstall, timing its own waits), and only it reads it: no
/// other task or CPU looks, so relaxed atomics suffice (they are here so
/// that `Task` stays `Sync` without another unsafe claim).
pub(crate) struct Memstall {
    active: AtomicBool,
    part_ns: [AtomicU64; MEMSTALL_PARTS],
}

impl Memstall {
    const fn new() -> Self {
        Self {
            active: AtomicBool::new(false),
            part_ns: [const { AtomicU64::new(0) }; MEMSTALL_PARTS],
        }
    }

    /// Whether the task is in a memstall.
    pub(crate) fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Enters (`true`) or leaves (`false`) the memstall.
    pub(crate) fn set_active(&self, on: bool) {
        self.active.store(on, Ordering::Relaxed);
    }

    /// Adds `ns` to part `part` of the memstall in progress.
    pub(crate) fn add(&self, part: usize, ns: u64) {
        self.part_ns[part].fetch_add(ns, Ordering::Relaxed);
    }

    /// Part `part` of the memstall in progress so far.
    pub(crate) fn get(&self, part: usize) -> u64 {
        self.part_ns[part].load(Ordering::Relaxed)
    }

    /// Part `part` so far, resetting it to 0 (the memstall ends).
    pub(crate) fn take(&self, part: usize) -> u64 {
        self.part_ns[part].swap(0, Ordering::Relaxed)
    }
}

/// A kernel thread.
pub struct Task {
    id: TaskId,
    name: String,
    flags: AtomicU32,
    /// Open memalloc scopes, innermost last (serial numbers), to catch
    /// out-of-order restores.
    memalloc_scopes: spin::Mutex<ScopeStack>,
    state: AtomicU8,
    /// Part of a reported deadlock: never runs again, joins fail.
    deadlocked: AtomicBool,
    /// Saved stack pointer while not running.
    context: UnsafeCell<usize>,
    stack: spin::Mutex<Option<KernelStack>>,
    entry: spin::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    lockdep: UnsafeCell<TaskLockState>,
    /// What the task is blocked on, for the deadlock detector.
    pub(crate) blocked_on: spin::Mutex<Option<deadlock::BlockedOn>>,
    /// Bumped at every wake-up, so a stale deadline never wakes a later wait.
    wait_gen: AtomicU64,
    /// Deadline (ns) of the current timed wait, 0 if none.
    timer_deadline: AtomicU64,
    /// Generation the deadline belongs to.
    timer_gen: AtomicU64,
    /// Intrusive wait-list link (see [`waitlist::WaitList`]).
    pub(crate) wait_next: AtomicPtr<Task>,
    pub(crate) wait_queued: AtomicBool,
    pub(crate) wait_tag: AtomicU8,
    /// Set when a timed wait ended by its deadline.
    timed_out: AtomicBool,
    exited: crate::sync::Completion,
    switches: AtomicU64,
    /// Pages this task freed while reclaiming (Linux's reclaim_state).
    reclaimed: AtomicU64,
    /// The innermost shrinker callback running on this task (an address
    /// owned by `mm::shrinker`), 0 if none.
    shrinker_call: AtomicUsize,
    /// Bytes charged to this task for the OOM killer's choice (see
    /// `mm::oom_kill::OomCharge`).
    oom_footprint: AtomicU64,
    /// Linux's `current->in_memstall` and the parts of the memstall in
    /// progress (see `mm::memstall`).
    memstall: Memstall,
    /// Chosen by the OOM killer (`tsk_is_oom_victim`).
    oom_victim: AtomicBool,
    /// A fatal signal is pending: the task should stop and exit.
    fatal_signal: AtomicBool,
    /// A thread the platform schedules ([`Task::new_foreign`]): it blocks by
    /// waiting in place for its wake-up, not on kreclaim's run queue.
    foreign: bool,
    /// Some CPU runs on this task's stack (Linux's `on_cpu`): set when a CPU
    /// picks the task, cleared by that CPU once it has switched away, so no
    /// other CPU resumes the task before its context is saved.
    on_cpu: AtomicBool,
    /// The CPU it last ran on (where a wake-up queues it by default).
    last_cpu: AtomicUsize,
    /// The only CPU it may run on, `usize::MAX` for any ([`spawn_on`]).
    affinity: AtomicUsize,
    /// A CPU's idle task: never queued, never counted as blocked.
    idle: bool,
    /// The CPUs it has run on, one bit each.
    cpus_ran: AtomicU32,
    /// A "waits for itself" report of this task is being written
    /// (`deadlock::park_forever`): a nested hit only prints.
    pub(crate) park_reporting: AtomicBool,
}

// SAFETY: `context` and `lockdep` are only touched by the task itself or by
// the scheduler with interrupts masked while the task is switched out.
unsafe impl Sync for Task {}
// SAFETY: moving a Task to another task's stack is fine for the same reason sharing it is:
// `context` and `lockdep` are only touched by the task itself or by the scheduler with interrupts
// masked.
unsafe impl Send for Task {}

impl Task {
    fn new(id: TaskId, name: String) -> Self {
        Self {
            id,
            name,
            state: AtomicU8::new(TaskState::Ready as u8),
            ..Self::early()
        }
    }

    const fn early() -> Self {
        Self {
            id: 0,
            name: String::new(),
            flags: AtomicU32::new(0),
            memalloc_scopes: spin::Mutex::new(ScopeStack::new()),
            state: AtomicU8::new(TaskState::Running as u8),
            deadlocked: AtomicBool::new(false),
            context: UnsafeCell::new(0),
            stack: spin::Mutex::new(None),
            entry: spin::Mutex::new(None),
            lockdep: UnsafeCell::new(TaskLockState::new()),
            blocked_on: spin::Mutex::new(None),
            wait_gen: AtomicU64::new(0),
            timer_deadline: AtomicU64::new(0),
            timer_gen: AtomicU64::new(0),
            wait_next: AtomicPtr::new(core::ptr::null_mut()),
            wait_queued: AtomicBool::new(false),
            wait_tag: AtomicU8::new(0),
            timed_out: AtomicBool::new(false),
            exited: crate::sync::Completion::new_internal(),
            switches: AtomicU64::new(0),
            reclaimed: AtomicU64::new(0),
            shrinker_call: AtomicUsize::new(0),
            oom_footprint: AtomicU64::new(0),
            memstall: Memstall::new(),
            oom_victim: AtomicBool::new(false),
            fatal_signal: AtomicBool::new(false),
            foreign: false,
            on_cpu: AtomicBool::new(false),
            last_cpu: AtomicUsize::new(0),
            affinity: AtomicUsize::new(usize::MAX),
            idle: false,
            cpus_ran: AtomicU32::new(0),
            park_reporting: AtomicBool::new(false),
        }
    }

    /// A task record for a thread that the platform, not kreclaim,
    /// schedules (see [`set_current_task_hook`]): its own flags, memalloc
    /// scopes and lockdep state. It never runs on kreclaim's scheduler.
    pub fn new_foreign(name: &str) -> Arc<Task> {
        let mut t = Task::new(NEXT_ID.fetch_add(1, Ordering::Relaxed), String::from(name));
        t.foreign = true;
        t.set_state(TaskState::Running);
        Arc::new(t)
    }

    /// The task's number.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The task's name ("boot" for the boot task).
    pub fn name(&self) -> &str {
        if self.name.is_empty() {
            "boot"
        } else {
            &self.name
        }
    }

    /// The current scheduling state.
    pub fn state(&self) -> TaskState {
        TaskState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, s: TaskState) {
        self.state.store(s as u8, Ordering::Release);
    }

    /// Blocked or Sleeping -> Ready, atomically: true if this call did it.
    fn try_set_ready(&self) -> bool {
        let mut s = self.state.load(Ordering::Acquire);
        while s == TaskState::Blocked as u8 || s == TaskState::Sleeping as u8 {
            match self.state.compare_exchange_weak(
                s,
                TaskState::Ready as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
        false
    }

    /// The PF_* flags.
    pub fn flags(&self) -> TaskFlags {
        TaskFlags::from_bits_retain(self.flags.load(Ordering::Relaxed))
    }

    /// Sets the flags in `f` (others unchanged).
    pub fn set_flags(&self, f: TaskFlags) {
        let old = self.flags.fetch_or(f.bits(), Ordering::Relaxed);
        if f.contains(TaskFlags::PF_MEMALLOC) && old & TaskFlags::PF_MEMALLOC.bits() == 0 {
            MEMALLOC_TASKS.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Clears the flags in `f` (others unchanged).
    pub fn clear_flags(&self, f: TaskFlags) {
        let old = self.flags.fetch_and(!f.bits(), Ordering::Relaxed);
        if f.contains(TaskFlags::PF_MEMALLOC) && old & TaskFlags::PF_MEMALLOC.bits() != 0 {
            MEMALLOC_TASKS.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Opens a memalloc scope; returns its place in the nesting.
    pub(crate) fn memalloc_scope_open(&self) -> ScopeToken {
        self.memalloc_scopes.lock().push()
    }

    /// Closes the scope of `t`, saying whether it was the innermost one.
    pub(crate) fn memalloc_scope_close(&self, t: ScopeToken) -> ScopeClose {
        self.memalloc_scopes.lock().close(t)
    }

    /// The task's lockdep state.
    ///
    /// # Safety
    /// Only the task itself (with interrupts masked), or a reader that knows
    /// the task is not running, may use the returned reference.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn lockdep_state(&self) -> &mut TaskLockState {
        // SAFETY: the caller is the task itself with interrupts masked, or knows the task is not
        // running (this fn's contract), so no other reference to the state is in use.
        unsafe { &mut *self.lockdep.get() }
    }

    /// Whether the task is in a reported deadlock (it never runs again).
    pub fn is_deadlocked(&self) -> bool {
        self.deadlocked.load(Ordering::Acquire)
    }

    /// Pages freed by this task under PF_MEMALLOC, ever.
    pub fn reclaimed(&self) -> u64 {
        self.reclaimed.load(Ordering::Relaxed)
    }

    pub(crate) fn add_reclaimed(&self, pages: u64) {
        self.reclaimed.fetch_add(pages, Ordering::Relaxed);
    }

    /// The innermost shrinker call in progress on this task (see
    /// `mm::shrinker`), 0 if none.
    pub(crate) fn shrinker_call(&self) -> usize {
        self.shrinker_call.load(Ordering::Relaxed)
    }

    pub(crate) fn set_shrinker_call(&self, v: usize) {
        self.shrinker_call.store(v, Ordering::Relaxed);
    }

    /// The task's memstall state (see [`Memstall`]).
    pub(crate) fn memstall(&self) -> &Memstall {
        &self.memstall
    }

    /// Bytes charged to this task (its OOM badness).
    pub fn oom_footprint(&self) -> u64 {
        self.oom_footprint.load(Ordering::Relaxed)
    }

    pub(crate) fn oom_charge(&self, bytes: u64) {
        self.oom_footprint.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn oom_uncharge(&self, bytes: u64) {
        let _ = self
            .oom_footprint
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            });
    }

    /// Whether the OOM killer chose this task.
    pub fn is_oom_victim(&self) -> bool {
        self.oom_victim.load(Ordering::Acquire)
    }

    /// Marks the task as the OOM killer's victim and sends it a fatal
    /// signal; false if it already was a victim.
    pub(crate) fn mark_oom_victim(&self) -> bool {
        self.send_fatal_signal();
        !self.oom_victim.swap(true, Ordering::AcqRel)
    }

    /// Asks the task to stop and exit (Linux's SIGKILL): long-running
    /// work checks [`fatal_signal_pending`] and returns.
    pub fn send_fatal_signal(&self) {
        self.fatal_signal.store(true, Ordering::Release);
    }

    /// Whether a fatal signal is pending for this task.
    pub fn has_fatal_signal(&self) -> bool {
        self.fatal_signal.load(Ordering::Acquire)
    }

    /// Context switches into this task so far.
    pub fn switches(&self) -> u64 {
        self.switches.load(Ordering::Relaxed)
    }

    /// The CPU the task last ran on.
    pub fn last_cpu(&self) -> usize {
        self.last_cpu.load(Ordering::Relaxed)
    }

    /// The CPUs the task has run on, one bit per CPU number.
    pub fn cpus_ran(&self) -> u32 {
        self.cpus_ran.load(Ordering::Relaxed)
    }

    /// The CPU the task is bound to ([`spawn_on`]), if any.
    pub fn affinity(&self) -> Option<usize> {
        let a = self.affinity.load(Ordering::Relaxed);
        (a != usize::MAX).then_some(a)
    }

    /// Whether this is a CPU's idle task.
    pub fn is_idle(&self) -> bool {
        self.idle
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task '{}' (id {}, {:?})",
            self.name(),
            self.id,
            self.state()
        )
    }
}

/// Slots for the outermost open memalloc scopes of a task; deeper ones are
/// tracked through the parent serial each scope's token carries.
const SCOPE_SLOTS: usize = 32;
/// Scopes deeper than the slots that were closed out of order.
const SCOPE_DEEP_HOLES: usize = 8;

/// Where a memalloc scope sits in its task's nesting; kept in the scope's
/// token (`MemallocFlags`) and handed back on restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScopeToken {
    pub(crate) serial: u32,
    /// The innermost scope open when this one was opened (0: none).
    parent: u32,
    /// Nesting position: 0 for the outermost.
    depth: u32,
}

/// How a restore matched the task's open scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScopeClose {
    /// The innermost open scope: LIFO order.
    InOrder,
    /// An open scope with scope `innermost` still open inside it.
    OutOfOrder { innermost: u32 },
    /// Not open: restored before.
    NotOpen,
}

/// A task's open memalloc scopes, without allocating and at any depth: the
/// outermost [`SCOPE_SLOTS`] by position, deeper ones as a chain through the
/// tokens' parent serials, so correct nesting is never misreported. A scope
/// closed out of order leaves a hole that is skipped when the scopes inside
/// it close.
pub(crate) struct ScopeStack {
    /// Serials by position; 0 marks a hole.
    slots: [u32; SCOPE_SLOTS],
    /// Positions in use, holes included.
    depth: usize,
    /// The innermost open scope (0: none).
    top: u32,
    next: u32,
    /// Deep scopes closed out of order: (serial, parent), 0 = free.
    deep_holes: [(u32, u32); SCOPE_DEEP_HOLES],
}

impl ScopeStack {
    const fn new() -> Self {
        Self {
            slots: [0; SCOPE_SLOTS],
            depth: 0,
            top: 0,
            next: 1,
            deep_holes: [(0, 0); SCOPE_DEEP_HOLES],
        }
    }

    fn push(&mut self) -> ScopeToken {
        let serial = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        let t = ScopeToken {
            serial,
            parent: self.top,
            depth: self.depth as u32,
        };
        if self.depth < SCOPE_SLOTS {
            self.slots[self.depth] = serial;
        }
        self.depth += 1;
        self.top = serial;
        t
    }

    fn close(&mut self, t: ScopeToken) -> ScopeClose {
        let d = t.depth as usize;
        if t.serial == self.top && d + 1 == self.depth {
            self.depth -= 1;
            self.top = t.parent;
            self.settle();
            return ScopeClose::InOrder;
        }
        let open = if d >= self.depth {
            false
        } else if d < SCOPE_SLOTS {
            self.slots[d] == t.serial
        } else {
            // Deep and not innermost: open scopes are never newer than the
            // innermost one; past that, only a recorded hole says "closed".
            t.serial < self.top && !self.deep_holes.iter().any(|h| h.0 == t.serial)
        };
        if !open {
            return ScopeClose::NotOpen;
        }
        if d < SCOPE_SLOTS {
            self.slots[d] = 0;
        } else {
            // Forget the oldest hole if all are taken (misuse on misuse).
            let i = self
                .deep_holes
                .iter()
                .position(|h| h.0 == 0)
                .unwrap_or_else(|| {
                    self.deep_holes.copy_within(1.., 0);
                    SCOPE_DEEP_HOLES - 1
                });
            self.deep_holes[i] = (t.serial, t.parent);
        }
        ScopeClose::OutOfOrder {
            innermost: self.top,
        }
    }

    /// After the innermost scope closed: drop the positions below it whose
    /// scopes were closed out of order, and find the new innermost.
    fn settle(&mut self) {
        while self.depth > 0 {
            let d = self.depth - 1;
            if d < SCOPE_SLOTS {
                if self.slots[d] != 0 {
                    self.top = self.slots[d];
                    return;
                }
            } else {
                let Some(h) = self.deep_holes.iter_mut().find(|h| h.0 == self.top) else {
                    return;
                };
                self.top = h.1;
                *h = (0, 0);
            }
            self.depth -= 1;
        }
        self.top = 0;
    }
}

/// Per-CPU scheduler state: one per possible CPU ([`platform::NR_CPUS`]),
/// reached through [`this_cpu`] with the platform's CPU number.
///
/// Only its own CPU changes `current`, `curr`, `prev`, `preempt_count` and
/// `slice_end`, with interrupts masked; other CPUs read `current`/`idle`
/// (to find an idle CPU) and take `run_queue`'s lock to queue a woken task
/// or steal one.
pub struct PerCpu {
    /// This CPU's number.
    pub cpu_id: usize,
    current: AtomicPtr<Task>,
    idle: AtomicPtr<Task>,
    preempt_count: AtomicUsize,
    /// When the running task's slice ends (ns).
    slice_end: AtomicU64,
    run_queue: spin::Mutex<VecDeque<Arc<Task>>>,
    /// The running task's reference (none for the idle task), moved to the
    /// run queue when it is preempted: `schedule` needs no task-table look-up.
    curr: spin::Mutex<Option<Arc<Task>>>,
    /// The task this CPU just switched away from; the next task clears its
    /// `on_cpu` once the switch is complete (`finish_task_switch`).
    prev: AtomicPtr<Task>,
    /// A dead task whose stack is freed once we are off it.
    to_reap: spin::Mutex<Option<Arc<Task>>>,
    /// The CPU runs its scheduler (its idle task exists and it takes tasks).
    online: AtomicBool,
    /// Switches into tasks other than the idle task on this CPU.
    switches: AtomicU64,
}

impl PerCpu {
    /// This CPU's preempt count, read through [`this_cpu`] (whose guard
    /// keeps the caller here): the allocator's fast path checks it inline.
    #[inline]
    pub fn preempt_count(&self) -> usize {
        self.pc_get()
    }

    /// This CPU's preempt count: the platform's `gs:` word when the kernel's
    /// own layout is installed ([`platform::kernel_gs_layout`]), else the
    /// field. Only for `this_cpu`'s result (the `gs:` word is the running
    /// CPU's).
    #[inline(always)]
    fn pc_get(&self) -> usize {
        if platform::kernel_gs_layout() {
            // SAFETY: the layout is installed.
            unsafe { platform::preempt_count_gs() }
        } else {
            self.preempt_count.load(Ordering::Relaxed)
        }
    }

    /// Sets this CPU's preempt count (see [`PerCpu::pc_get`]).
    #[inline(always)]
    fn pc_set(&self, v: usize) {
        if platform::kernel_gs_layout() {
            // SAFETY: the layout is installed.
            unsafe { platform::set_preempt_count_gs(v) }
        } else {
            self.preempt_count.store(v, Ordering::Relaxed)
        }
    }

    const fn new(cpu_id: usize) -> Self {
        Self {
            cpu_id,
            current: AtomicPtr::new(&EARLY_TASK as *const Task as *mut Task),
            idle: AtomicPtr::new(core::ptr::null_mut()),
            preempt_count: AtomicUsize::new(0),
            slice_end: AtomicU64::new(0),
            run_queue: spin::Mutex::new(VecDeque::new()),
            curr: spin::Mutex::new(None),
            prev: AtomicPtr::new(core::ptr::null_mut()),
            to_reap: spin::Mutex::new(None),
            online: AtomicBool::new(false),
            switches: AtomicU64::new(0),
        }
    }

    /// Whether the CPU runs its idle task with nothing queued.
    fn is_idle(&self) -> bool {
        self.online.load(Ordering::Acquire)
            && self.current.load(Ordering::Acquire) == self.idle.load(Ordering::Acquire)
            && self.run_queue.try_lock().is_some_and(|rq| rq.is_empty())
    }
}

static EARLY_TASK: Task = Task::early();

static CPUS: [PerCpu; platform::NR_CPUS] = {
    let mut cpus = [const { PerCpu::new(0) }; platform::NR_CPUS];
    let mut i = 0;
    while i < platform::NR_CPUS {
        cpus[i].cpu_id = i;
        i += 1;
    }
    cpus
};

/// This CPU's scheduler state. The [`IrqGuard`] is the proof that the caller
/// runs with interrupts masked, so neither the tick nor a switch to another
/// task (or a move to another CPU) happens while it uses the result, which
/// lives no longer than the guard.
#[inline]
pub fn this_cpu(_irq: &IrqGuard) -> &PerCpu {
    &CPUS[platform::cpu_id() % platform::NR_CPUS]
}

/// CPU `n`'s scheduler state.
fn cpu_rq(n: usize) -> &'static PerCpu {
    &CPUS[n % platform::NR_CPUS]
}

/// The running task's pointer. Read with interrupts masked: the task cannot
/// move to another CPU between reading the CPU number and its `current`.
#[inline]
fn current_ptr() -> *mut Task {
    platform::with_irq_guard(|irq| this_cpu(irq).current.load(Ordering::Acquire))
}

static STARTED: AtomicBool = AtomicBool::new(false);

/// Tasks with PF_MEMALLOC set ([`Task::set_flags`] and
/// [`Task::clear_flags`] count them; a task that exits with it set stays
/// counted, which only costs speed).
static MEMALLOC_TASKS: AtomicUsize = AtomicUsize::new(0);

/// Whether some task may have PF_MEMALLOC set. `false` means the running
/// task has not: the `set_flags` call that set its flag counted it before
/// returning, so the task's later reads see the count. One load, for the
/// page allocator's free paths (crediting pages freed to reclaim).
#[inline(always)]
pub fn memalloc_tasks_exist() -> bool {
    MEMALLOC_TASKS.load(Ordering::Relaxed) != 0
}

/// [`might_sleep`]'s answer for fast paths, inline and without reporting:
/// `true` when the caller may sleep (the scheduler has not started, or
/// interrupts are on and the preempt count of the CPU it runs on is 0),
/// `false` when it must ask [`might_sleep`], which checks exactly and
/// reports. Only for callers that know the interrupt flag is native
/// ([`platform::irqs_disabled_native`]). The count is read without masking
/// interrupts: a task whose count is not 0 cannot move, so it reads its
/// own; a task with 0 that moves meanwhile may read another CPU's count,
/// and a count that is not 0 only sends it to `might_sleep`.
#[inline(always)]
pub fn may_sleep_inline() -> bool {
    if !started() {
        return true;
    }
    let Some(cpu) = platform::cpu_id_inline() else {
        return false;
    };
    if platform::kernel_gs_layout() {
        // SAFETY: the layout is installed.
        return !platform::irqs_disabled_native() && unsafe { platform::preempt_count_gs() } == 0;
    }
    !platform::irqs_disabled_native()
        && CPUS[cpu % platform::NR_CPUS]
            .preempt_count
            .load(Ordering::Relaxed)
            == 0
}

static MODE: AtomicU8 = AtomicU8::new(0);
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// Every live task, for the deadlock detector and reports.
static TASKS: spin::Mutex<Vec<Arc<Task>>> = spin::Mutex::new(Vec::new());

/// Names the running task for platforms that schedule threads themselves
/// (a hobby OS with its own scheduler, the host build): per-task state —
/// PF_* flags and memalloc scopes, the lockdep held-lock stack — then
/// follows their threads. kreclaim's own scheduler leaves it unset.
/// `None` falls back to this CPU's current task (e.g. while the platform
/// is still creating the thread's task).
pub type CurrentTaskHook = fn() -> Option<&'static Task>;

static CURRENT_HOOK: crate::sync::Hook<CurrentTaskHook> = crate::sync::Hook::new();

/// Installs the platform's [`CurrentTaskHook`] (make tasks for its threads
/// with [`Task::new_foreign`]).
pub fn set_current_task_hook(hook: CurrentTaskHook) {
    CURRENT_HOOK.set(Some(hook));
}

/// The running task: the platform's hook if one is installed, else this
/// CPU's current task. Before [`init`] this is a placeholder boot task, so
/// the scoped allocation API works from the first instruction.
#[inline]
pub fn current() -> &'static Task {
    if let Some(hook) = CURRENT_HOOK.get()
        && let Some(t) = hook()
    {
        return t;
    }
    // SAFETY: `current` always points at a live task: the static early task
    // or a task kept alive by TASKS while it runs.
    unsafe { &*current_ptr() }
}

/// [`current`] for a caller that has interrupts masked (the guard says so):
/// the platform's hook if installed, else this CPU's current task read
/// directly (no second interrupt mask).
#[inline(always)]
pub fn current_irqs_masked(irq: &IrqGuard) -> &'static Task {
    if let Some(hook) = CURRENT_HOOK.get()
        && let Some(t) = hook()
    {
        return t;
    }
    // SAFETY: as in `current`: a live task, and interrupts are masked, so
    // this CPU's `current` is the caller's.
    unsafe { &*this_cpu(irq).current.load(Ordering::Acquire) }
}

/// The running task as a shared reference.
pub fn current_arc() -> Option<Arc<Task>> {
    let p = current_ptr();
    platform::without_interrupts(|| TASKS.lock().iter().find(|t| Arc::as_ptr(t) == p).cloned())
}

/// Whether [`init`] ran (tasks can block and switch).
#[inline]
pub fn started() -> bool {
    STARTED.load(Ordering::Acquire)
}

/// The current scheduling mode.
pub fn mode() -> SchedMode {
    if MODE.load(Ordering::Relaxed) == 1 {
        SchedMode::Cooperative
    } else {
        SchedMode::Preemptive
    }
}

/// Changes the scheduling mode at run time.
pub fn set_mode(m: SchedMode) {
    MODE.store(
        match m {
            SchedMode::Preemptive => 0,
            SchedMode::Cooperative => 1,
        },
        Ordering::Relaxed,
    );
}

/// Turns the boot context into task 0 ("main") and creates the idle tasks:
/// one with a stack of its own for this (the boot) CPU, and for every other
/// CPU the platform has online a record its boot stack becomes when it
/// enters [`run_idle`]. The platform must call [`on_tick`] from every CPU's
/// timer interrupt.
pub fn init(mode: SchedMode) {
    set_mode(mode);
    let main = Arc::new(Task::new(0, String::from("main")));
    main.set_state(TaskState::Running);
    main.flags
        .store(EARLY_TASK.flags.load(Ordering::Relaxed), Ordering::Relaxed);
    // The boot task stays on the boot CPU: boot code and the test harness
    // read CPU 0's state from it.
    main.affinity.store(0, Ordering::Relaxed);
    main.on_cpu.store(true, Ordering::Relaxed);
    main.cpus_ran.store(1, Ordering::Relaxed);
    let idle = new_task("idle", Box::new(idle_loop), true).expect("cannot create the idle task");
    let aps: Vec<Arc<Task>> = (1..platform::nr_cpus().min(platform::NR_CPUS))
        .map(|cpu| {
            let mut t = Task::new(
                NEXT_ID.fetch_add(1, Ordering::Relaxed),
                alloc::format!("idle/{cpu}"),
            );
            t.idle = true;
            t.affinity = AtomicUsize::new(cpu);
            Arc::new(t)
        })
        .collect();
    platform::with_irq_guard(|irq| {
        let mut tasks = TASKS.lock();
        tasks.push(main.clone());
        tasks.push(idle.clone());
        tasks.extend(aps.iter().cloned());
        let cpu = this_cpu(irq);
        cpu.idle
            .store(Arc::as_ptr(&idle) as *mut Task, Ordering::Release);
        cpu.current
            .store(Arc::as_ptr(&main) as *mut Task, Ordering::Release);
        *cpu.curr.lock() = Some(main.clone());
        for (n, t) in aps.iter().enumerate() {
            cpu_rq(n + 1)
                .idle
                .store(Arc::as_ptr(t) as *mut Task, Ordering::Release);
        }
        cpu.online.store(true, Ordering::Release);
        let need = tasks.len() + 1;
        let _ = reserve_run_queues(need);
    });
    STARTED.store(true, Ordering::Release);
}

/// Whether this CPU (an application processor) may enter [`run_idle`]:
/// the scheduler runs and made an idle task for it.
pub fn ap_ready() -> bool {
    started()
        && platform::with_irq_guard(|irq| {
            let cpu = this_cpu(irq);
            !cpu.idle.load(Ordering::Acquire).is_null() && !cpu.online.load(Ordering::Acquire)
        })
}

/// Makes the calling context (an application processor's boot stack) this
/// CPU's idle task and runs the idle loop: from here on the CPU runs tasks,
/// takes woken and stolen ones, and halts when it has none. Call once per
/// CPU, after [`ap_ready`] said yes; never returns.
pub fn run_idle() -> ! {
    let p = platform::get().expect("run_idle without a platform");
    let _ = p.irq_save();
    platform::with_irq_guard(|irq| {
        let cpu = this_cpu(irq);
        let idle = cpu.idle.load(Ordering::Acquire);
        assert!(!idle.is_null(), "run_idle on a CPU without an idle task");
        // SAFETY: idle tasks stay in TASKS for good.
        let t = unsafe { &*idle };
        t.on_cpu.store(true, Ordering::Relaxed);
        t.set_state(TaskState::Running);
        t.last_cpu.store(cpu.cpu_id, Ordering::Relaxed);
        t.cpus_ran.fetch_or(1 << cpu.cpu_id, Ordering::Relaxed);
        cpu.current.store(idle, Ordering::Release);
        cpu.pc_set(0);
        {
            let tasks = TASKS.lock();
            let need = tasks.len() + 1;
            let mut rq = cpu.run_queue.lock();
            if rq.capacity() < need {
                let len = rq.len();
                let _ = rq.try_reserve(need - len);
            }
        }
        cpu.online.store(true, Ordering::Release);
    });
    p.irq_restore(true);
    idle_loop();
    unreachable!("the idle loop returned");
}

/// Gives every CPU's run queue room for `need` tasks, so that queueing a
/// task (a wake-up, a preemption, a steal) never allocates. Called with the
/// task table locked (task table before run queues).
fn reserve_run_queues(need: usize) -> Result<(), SpawnError> {
    for cpu in CPUS.iter() {
        if cpu.idle.load(Ordering::Acquire).is_null() {
            continue;
        }
        let mut rq = cpu.run_queue.lock();
        if rq.capacity() < need {
            let len = rq.len();
            rq.try_reserve(need - len)
                .map_err(|_| SpawnError::NoMemory)?;
        }
    }
    Ok(())
}

/// CPUs whose scheduler runs (the boot CPU and every AP that entered
/// [`run_idle`]).
pub fn online_cpus() -> usize {
    CPUS.iter()
        .filter(|c| c.online.load(Ordering::Acquire))
        .count()
}

/// Whether CPU `cpu` runs its scheduler.
pub fn cpu_online(cpu: usize) -> bool {
    CPUS.get(cpu)
        .is_some_and(|c| c.online.load(Ordering::Acquire))
}

/// Switches into tasks other than the idle task on CPU `cpu` since boot.
pub fn cpu_task_switches(cpu: usize) -> u64 {
    CPUS.get(cpu)
        .map_or(0, |c| c.switches.load(Ordering::Relaxed))
}

/// Tasks CPU `cpu` took from another CPU's run queue since boot.
pub fn cpu_steals(cpu: usize) -> u64 {
    CPU_STEALS.get(cpu).map_or(0, |c| c.load(Ordering::Relaxed))
}

/// Reschedule IPIs sent since boot (wake-ups and spawns placed on another CPU).
pub fn resched_ipis() -> u64 {
    RESCHED_IPIS.load(Ordering::Relaxed)
}

/// Marks this CPU as gone (it halts for good, e.g. after a fatal fault on
/// an application processor): no task is placed on it any more, and other
/// CPUs steal what its run queue holds.
pub fn cpu_dying() {
    platform::with_irq_guard(|irq| this_cpu(irq).online.store(false, Ordering::Release));
}

/// Whether unbound tasks are kept on the boot CPU ([`set_boot_cpu_only`]).
static BOOT_CPU_ONLY: AtomicBool = AtomicBool::new(false);

/// Keeps every unbound task on the boot CPU (or lets them spread again):
/// wake-ups and spawns queue there, nobody steals, and a task preempted on
/// another CPU moves there. Tasks bound with [`spawn_on`] stay where they
/// are bound. For experiments and tests that model one CPU's interleavings
/// with preemption (`sched=coop` does the same without preemption).
pub fn set_boot_cpu_only(on: bool) {
    BOOT_CPU_ONLY.store(on, Ordering::Release);
}

/// Whether [`set_boot_cpu_only`] is in force.
pub fn boot_cpu_only() -> bool {
    BOOT_CPU_ONLY.load(Ordering::Acquire)
}

/// RAII [`set_boot_cpu_only`]: on from `new` until the guard drops, which
/// restores the previous setting.
#[must_use = "the setting is restored as soon as the guard is dropped"]
pub struct BootCpuOnly(bool);

impl BootCpuOnly {
    /// Keeps unbound tasks on the boot CPU until the guard drops.
    pub fn new() -> Self {
        let was = boot_cpu_only();
        set_boot_cpu_only(true);
        Self(was)
    }
}

impl Default for BootCpuOnly {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for BootCpuOnly {
    fn drop(&mut self) {
        set_boot_cpu_only(self.0);
    }
}

static CPU_STEALS: [AtomicU64; platform::NR_CPUS] =
    [const { AtomicU64::new(0) }; platform::NR_CPUS];
static RESCHED_IPIS: AtomicU64 = AtomicU64::new(0);

/// Why [`spawn`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnError {
    /// No memory for the task or its stack.
    NoMemory,
    /// The scheduler is not running.
    NotStarted,
    /// [`spawn_on`] named a CPU that does not run the scheduler.
    NoSuchCpu,
}

fn new_task(name: &str, f: Box<dyn FnOnce() + Send>, idle: bool) -> Result<Arc<Task>, SpawnError> {
    let p = platform::get().ok_or(SpawnError::NotStarted)?;
    let stack = p
        .alloc_kernel_stack(STACK_SIZE)
        .ok_or(SpawnError::NoMemory)?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let name = try_string(name).map_err(|_| SpawnError::NoMemory)?;
    let mut task = Task::new(id, name);
    task.idle = idle;
    let t = try_arc(task).map_err(|_| SpawnError::NoMemory)?;
    // SAFETY: `stack` was just allocated by the platform and nothing runs on
    // it yet; `t` is not shared yet, so nobody else reads its context slot.
    unsafe { *t.context.get() = p.init_context(stack.top, task_start) };
    *t.stack.lock() = Some(stack);
    *t.entry.lock() = Some(f);
    Ok(t)
}

/// A spawned task; [`JoinHandle::join`] waits for it to finish.
pub struct JoinHandle {
    task: Arc<Task>,
}

/// Why [`JoinHandle::join`] did not see the task finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// The task is part of a reported deadlock and will never finish.
    Deadlocked,
    /// The timeout passed first.
    TimedOut,
}

impl JoinHandle {
    /// The task being joined.
    pub fn task(&self) -> &Arc<Task> {
        &self.task
    }

    /// Waits for the task to finish: its function returned and its CPU
    /// reaped it (stack freed, out of the task table), wherever it ran.
    pub fn join(self) -> Result<(), JoinError> {
        self.task.exited.wait();
        if self.task.state() == TaskState::Dead {
            Ok(())
        } else {
            Err(JoinError::Deadlocked)
        }
    }

    /// Waits at most `timeout` for the task to finish (as [`Self::join`]).
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), JoinError> {
        if !self.task.exited.wait_timeout(timeout) {
            return Err(JoinError::TimedOut);
        }
        // Let the next waiter see it too.
        self.task.exited.complete_all();
        if self.task.state() == TaskState::Dead {
            Ok(())
        } else {
            Err(JoinError::Deadlocked)
        }
    }

    /// Whether the task has exited and was reaped (`join` would return at once).
    pub fn is_finished(&self) -> bool {
        self.task.state() == TaskState::Dead && self.task.exited.is_done()
    }
}

/// Starts a kernel thread running `f` on whichever CPU suits: an idle one
/// if there is one, else the least loaded (CPU 0 under `sched=coop`).
pub fn spawn<F: FnOnce() + Send + 'static>(name: &str, f: F) -> Result<JoinHandle, SpawnError> {
    spawn_inner(name, None, false, f)
}

/// Starts a kernel thread bound to CPU `cpu`: it runs there and nowhere else
/// (Linux's `kthread_create_on_cpu`). Under `sched=coop` every task runs on
/// CPU 0, so `cpu` must be 0 there. `Err(NoSuchCpu)` if `cpu` does not run
/// the scheduler.
pub fn spawn_on<F: FnOnce() + Send + 'static>(
    cpu: usize,
    name: &str,
    f: F,
) -> Result<JoinHandle, SpawnError> {
    if !cpu_online(cpu) || (mode() == SchedMode::Cooperative && cpu != 0) {
        return Err(SpawnError::NoSuchCpu);
    }
    spawn_inner(name, Some(cpu), true, f)
}

/// Starts a kernel thread queued on CPU `cpu` but free to move: load
/// balancing may hand it to another CPU (tests of stealing use it).
pub fn spawn_queued_on<F: FnOnce() + Send + 'static>(
    cpu: usize,
    name: &str,
    f: F,
) -> Result<JoinHandle, SpawnError> {
    if !cpu_online(cpu) {
        return Err(SpawnError::NoSuchCpu);
    }
    spawn_inner(name, Some(cpu), false, f)
}

fn spawn_inner<F: FnOnce() + Send + 'static>(
    name: &str,
    cpu: Option<usize>,
    bind: bool,
    f: F,
) -> Result<JoinHandle, SpawnError> {
    if !started() {
        return Err(SpawnError::NotStarted);
    }
    let t = new_task(name, try_box(f).map_err(|_| SpawnError::NoMemory)?, false)?;
    if bind && let Some(c) = cpu {
        t.affinity.store(c, Ordering::Relaxed);
    }
    platform::with_irq_guard(|_irq| {
        let mut tasks = TASKS.lock();
        // Reserve so that queueing in the scheduler never allocates; a
        // failed reservation fails the spawn before anything changed.
        tasks.try_reserve(1).map_err(|_| SpawnError::NoMemory)?;
        reserve_run_queues(tasks.len() + 1)?;
        tasks.push(t.clone());
        Ok(())
    })?;
    platform::with_irq_guard(|_irq| {
        let target = match cpu {
            Some(c) if mode() == SchedMode::Preemptive => c,
            _ => select_cpu(&t, true),
        };
        enqueue(t.clone(), target);
    });
    Ok(JoinHandle { task: t })
}

/// Where a task that becomes runnable goes (Linux's `select_task_rq`):
/// CPU 0 under `sched=coop`; its bound CPU; else the CPU it last ran on if
/// that one idles, else any idle CPU, else (wake-up) the last CPU or
/// (new task) the CPU with the shortest run queue.
fn select_cpu(t: &Task, fresh: bool) -> usize {
    if let Some(c) = t.affinity() {
        return c;
    }
    if mode() == SchedMode::Cooperative || boot_cpu_only() {
        return 0;
    }
    let last = t.last_cpu();
    if !fresh && cpu_rq(last).is_idle() {
        return last;
    }
    if let Some(c) = CPUS.iter().find(|c| c.is_idle()) {
        return c.cpu_id;
    }
    if !fresh && cpu_online(last) {
        return last;
    }
    CPUS.iter()
        .filter(|c| c.online.load(Ordering::Acquire))
        .min_by_key(|c| c.run_queue.try_lock().map_or(usize::MAX, |rq| rq.len()))
        .map_or(0, |c| c.cpu_id)
}

/// Queues a runnable task on CPU `cpu` and, if that is another CPU, sends
/// it a reschedule IPI so that an idle CPU picks the task up at once.
/// Interrupts masked.
fn enqueue(t: Arc<Task>, cpu: usize) {
    cpu_rq(cpu).run_queue.lock().push_back(t);
    if cpu != platform::cpu_id()
        && let Some(p) = platform::get()
    {
        RESCHED_IPIS.fetch_add(1, Ordering::Relaxed);
        p.send_reschedule(cpu);
    }
}

/// An idle CPU's load balancing: takes a task from the CPU with the most
/// queued tasks (never one bound to another CPU, never one still switching
/// out). One run-queue lock at a time, so stealers cannot deadlock. Not
/// under `sched=coop`, which keeps every task on CPU 0.
fn steal(cpu: &PerCpu) -> bool {
    if mode() == SchedMode::Cooperative || boot_cpu_only() || !cpu.online.load(Ordering::Acquire) {
        return false;
    }
    let victim = CPUS
        .iter()
        .filter(|c| c.cpu_id != cpu.cpu_id)
        .max_by_key(|c| c.run_queue.try_lock().map_or(0, |rq| rq.len()));
    let Some(victim) = victim else { return false };
    let task = {
        let Some(mut rq) = victim.run_queue.try_lock() else {
            return false;
        };
        let i = rq
            .iter()
            .rposition(|t| t.affinity().is_none() && !t.on_cpu.load(Ordering::Acquire));
        match i {
            Some(i) => rq.remove(i),
            None => None,
        }
    };
    let Some(task) = task else { return false };
    cpu.run_queue.lock().push_back(task);
    CPU_STEALS[cpu.cpu_id].fetch_add(1, Ordering::Relaxed);
    true
}

extern "C" fn task_start() -> ! {
    // A fresh task starts with interrupts masked (see `init_context`), and
    // preemptible.
    platform::with_irq_guard(|irq| {
        finish_task_switch(irq);
        this_cpu(irq).pc_set(0);
    });
    let f = current().entry.lock().take();
    // SAFETY: a fresh task starts with interrupts masked; let them in.
    if let Some(p) = platform::get() {
        p.irq_restore(true);
    }
    if let Some(f) = f {
        f();
    }
    exit_current()
}

/// Ends the current task (also what returning from its function does).
pub fn exit_current() -> ! {
    let t = current();
    crate::sync::lockdep::task_exit_check(t);
    let _irq = platform::IrqGuard::new();
    t.set_state(TaskState::Dead);
    // Joiners are woken once the task is reaped (`finish_task_switch`).
    schedule();
    unreachable!("a dead task was scheduled again");
}

fn idle_loop() {
    let p = platform::get().unwrap();
    loop {
        let me = platform::with_irq_guard(|irq| this_cpu(irq).cpu_id);
        if me == 0 {
            deadlock::idle_check();
        }
        p.idle_poll();
        let _ = p.irq_save();
        // Interrupts are masked from here on; the guard's restore of that
        // state changes nothing.
        let work = platform::with_irq_guard(|irq| {
            let cpu = this_cpu(irq);
            !cpu.run_queue.lock().is_empty() || steal(cpu)
        });
        if work {
            p.irq_restore(true);
        } else {
            // Enables interrupts and halts: a wake-up's reschedule IPI (or
            // the tick) ends the halt, none is lost in between.
            p.wait_for_interrupt();
        }
        yield_now();
    }
}

/// Picks the next task and switches to it. Interrupts must be masked; the
/// current task's state says whether it goes back on the run queue.
///
/// SMP: the next task is one this CPU's run queue holds whose `on_cpu` is
/// clear (a task woken while still switching out on another CPU waits in
/// the queue until that CPU is off its stack); this CPU marks it `on_cpu`
/// and, after the switch, the next task clears the previous one's.
fn schedule() {
    // Callers have interrupts masked already; the guard proves it to
    // `this_cpu`, and dropping it (after the switch back) restores "masked".
    let irq = IrqGuard::new();
    let cpu = this_cpu(&irq);
    let prev_ptr = cpu.current.load(Ordering::Acquire);
    // SAFETY: the running task is alive.
    let prev = unsafe { &*prev_ptr };
    let idle_ptr = cpu.idle.load(Ordering::Acquire);
    let me = cpu.curr.lock().take();
    let mut dead = None;
    let mut migrate = None;
    // Stale entries taken off the queue, dropped after its lock.
    let mut stale: [Option<Arc<Task>>; 8] = Default::default();
    let next = {
        let mut rq = cpu.run_queue.lock();
        match prev.state() {
            TaskState::Running => {
                prev.set_state(TaskState::Ready);
                if let Some(me) = me {
                    if cpu.cpu_id != 0
                        && prev.affinity().is_none()
                        && (boot_cpu_only() || mode() == SchedMode::Cooperative)
                    {
                        // Moves to the boot CPU (see `set_boot_cpu_only`).
                        migrate = Some(me);
                    } else {
                        rq.push_back(me);
                    }
                }
            }
            TaskState::Dead => dead = me,
            _ => drop(me),
        }
        pick_next(&mut rq, prev_ptr, &mut stale)
    };
    drop(stale);
    if let Some(m) = migrate {
        enqueue(m, 0);
    }
    let next_ptr = match &next {
        Some(t) => Arc::as_ptr(t) as *mut Task,
        None => idle_ptr,
    };
    if next_ptr != prev_ptr
        && let Some(hook) = SWITCH_HOOK.get()
    {
        hook(prev);
    }
    // SAFETY: tasks on the run queue and the idle task are alive (TASKS).
    let next_task = unsafe { &*next_ptr };
    next_task.set_state(TaskState::Running);
    cpu.slice_end.store(
        crate::time::now_ns() + TIME_SLICE_TICKS as u64 * 1_000_000,
        Ordering::Relaxed,
    );
    *cpu.curr.lock() = next;
    if next_ptr == prev_ptr {
        return;
    }
    if dead.is_some() {
        *cpu.to_reap.lock() = dead;
    }
    // Claimed above for a queued task; the idle task is this CPU's alone.
    next_task.on_cpu.store(true, Ordering::Relaxed);
    next_task.switches.fetch_add(1, Ordering::Relaxed);
    next_task.last_cpu.store(cpu.cpu_id, Ordering::Relaxed);
    next_task
        .cpus_ran
        .fetch_or(1 << cpu.cpu_id, Ordering::Relaxed);
    if !next_task.idle {
        cpu.switches.fetch_add(1, Ordering::Relaxed);
    }
    cpu.prev.store(prev_ptr, Ordering::Relaxed);
    cpu.current.store(next_ptr, Ordering::Release);
    // The preempt count belongs to the task: it comes back with it, on
    // whichever CPU it resumes.
    let preempt = cpu.pc_get();
    let p = platform::get().unwrap();
    // SAFETY: interrupts are masked; both contexts belong to live tasks;
    // `next` is off every other CPU (`on_cpu` was clear or it is the idle task).
    unsafe { p.switch_context(prev.context.get(), *next_task.context.get()) };
    // Back on `prev`, maybe on another CPU: `cpu` is stale from here on.
    finish_task_switch(&irq);
    this_cpu(&irq).pc_set(preempt);
}

/// Test hook run by [`schedule`] on the switching CPU, interrupts masked and
/// no run-queue lock held, with the task being switched out: after the next
/// task was chosen and before the outgoing one's context is saved (it is
/// still `on_cpu`). See [`set_switch_hook`].
static SWITCH_HOOK: crate::sync::Hook<fn(&Task)> = crate::sync::Hook::new();

/// Installs (or with `None` removes) a function that `schedule` calls with
/// each task it switches out, while that task's registers are not saved
/// yet: tests use it to hold a task in that window and check that no other
/// CPU runs it meanwhile (the `on_cpu` handshake). It runs with interrupts
/// masked and must not block.
pub fn set_switch_hook(f: Option<fn(&Task)>) {
    SWITCH_HOOK.set(f);
}

/// Times a CPU found a queued task still on another CPU's stack (`on_cpu`)
/// and left it for later.
static ON_CPU_SKIPS: AtomicU64 = AtomicU64::new(0);

/// How many times a CPU about to run a queued task found it still switching
/// out on another CPU (`on_cpu` set) and left it in the queue.
pub fn on_cpu_skips() -> u64 {
    ON_CPU_SKIPS.load(Ordering::Relaxed)
}

/// The first task on `rq` that may run here now: Ready, and not on another
/// CPU's stack. `on_cpu` is claimed by compare-and-swap, so a task queued
/// twice is still never picked by two CPUs at once. Entries whose task is
/// no longer Ready are stale (a wake-up raced with the task's own
/// `finish_wait`, or the task blocked again or exited before this entry
/// came up): they are taken off into `stale`; a waker queues the task
/// afresh when it is runnable again.
fn pick_next(
    rq: &mut VecDeque<Arc<Task>>,
    prev_ptr: *mut Task,
    stale: &mut [Option<Arc<Task>>; 8],
) -> Option<Arc<Task>> {
    let mut dropped = 0;
    let mut i = 0;
    while i < rq.len() {
        let t = &rq[i];
        let mine = core::ptr::eq(Arc::as_ptr(t), prev_ptr);
        if !mine
            && t.on_cpu
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            ON_CPU_SKIPS.fetch_add(1, Ordering::Relaxed);
            i += 1;
            continue;
        }
        if t.state() == TaskState::Ready {
            return rq.remove(i);
        }
        if !mine {
            t.on_cpu.store(false, Ordering::Release);
        }
        if dropped == stale.len() {
            i += 1;
            continue;
        }
        stale[dropped] = rq.remove(i);
        dropped += 1;
    }
    None
}

/// Runs on the new task after every switch: lets other CPUs take the
/// previous task (its context is saved), frees a dead predecessor's stack
/// and then wakes its joiners.
fn finish_task_switch(irq: &IrqGuard) {
    let cpu = this_cpu(irq);
    let prev = cpu.prev.swap(core::ptr::null_mut(), Ordering::Relaxed);
    if !prev.is_null() {
        // SAFETY: the previous task is alive: in TASKS, or in `to_reap`.
        unsafe { &*prev }.on_cpu.store(false, Ordering::Release);
    }
    let dead = cpu.to_reap.lock().take();
    if let Some(t) = dead {
        if let Some(stack) = t.stack.lock().take() {
            platform::get().unwrap().free_kernel_stack(stack);
        }
        TASKS.lock().retain(|x| !Arc::ptr_eq(x, &t));
        // Only now may `join` return: the task is off its CPU, its stack
        // is back in the page allocator and it left the task table, on one
        // CPU or several alike (woken before the switch, a joiner on another
        // CPU went on while this CPU still held the stack).
        t.exited.complete_all();
    }
}

/// Gives the CPU to the next ready task, if any.
pub fn yield_now() {
    if !started() {
        return;
    }
    let _irq = platform::IrqGuard::new();
    schedule();
}

/// Calls of a sleeping function from a context that may not sleep, since boot.
static INVALID_CONTEXT_SLEEPS: AtomicU64 = AtomicU64::new(0);
/// Where the last one was called from.
static LAST_INVALID_CONTEXT_SLEEP: AtomicPtr<core::panic::Location<'static>> =
    AtomicPtr::new(core::ptr::null_mut());

/// How many times [`might_sleep`] found a sleeping call in atomic context.
pub fn invalid_context_sleeps() -> u64 {
    INVALID_CONTEXT_SLEEPS.load(Ordering::Relaxed)
}

/// The caller named by the last such report.
pub fn last_invalid_context_sleep() -> Option<&'static core::panic::Location<'static>> {
    let p = LAST_INVALID_CONTEXT_SLEEP.load(Ordering::Relaxed);
    // SAFETY: only ever set from a `&'static Location`.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Checks that the caller may sleep (interrupts on, preemption enabled).
/// If not, prints Linux's "BUG: sleeping function called from invalid
/// context" with the caller's location, counts it and returns `false`, and
/// the kernel goes on, as Linux's does; callers that can avoid sleeping (an
/// allocation: no direct reclaim) then do.
#[track_caller]
#[inline]
pub fn might_sleep() -> bool {
    !started() || might_sleep_check()
}

#[track_caller]
fn might_sleep_check() -> bool {
    let irqs_on = platform::get()
        .map(|p| {
            let was = p.irq_save();
            p.irq_restore(was);
            was
        })
        .unwrap_or(true);
    let pc = preempt_count();
    if irqs_on && pc == 0 {
        return true;
    }
    let at = core::panic::Location::caller();
    INVALID_CONTEXT_SLEEPS.fetch_add(1, Ordering::Relaxed);
    LAST_INVALID_CONTEXT_SLEEP.store(
        at as *const core::panic::Location<'static> as *mut _,
        Ordering::Relaxed,
    );
    crate::println!(
        "BUG: sleeping function called from invalid context at {at}\n\
         irqs_disabled(): {}, preempt_count: {pc}, name: {}",
        u8::from(!irqs_on),
        current().name()
    );
    false
}

/// Blocks the current task until [`wake_up`]. The caller has already put the
/// task on some wait list with state `Blocked`, with interrupts masked.
pub(crate) fn block_current_locked() {
    let t = current();
    if t.foreign {
        block_foreign(t);
    } else {
        schedule();
    }
}

/// Blocking for a thread the platform schedules (a host thread): it waits
/// in place, calling [`Platform::wait_for_interrupt`](platform::Platform::wait_for_interrupt)
/// (the host yields the thread), until a waker on another CPU makes it
/// Ready or its deadline passes, then runs on.
fn block_foreign(t: &Task) {
    loop {
        let s = t.state();
        if s == TaskState::Sleeping {
            let d = t.timer_deadline.load(Ordering::Acquire);
            if d != 0 && crate::time::now_ns() >= d && t.try_set_ready() {
                t.timer_deadline.store(0, Ordering::Relaxed);
                t.timed_out.store(true, Ordering::Relaxed);
                t.wait_gen.fetch_add(1, Ordering::Relaxed);
                break;
            }
        } else if s != TaskState::Blocked {
            break;
        }
        match platform::get() {
            Some(p) => p.wait_for_interrupt(),
            None => core::hint::spin_loop(),
        }
    }
    t.set_state(TaskState::Running);
}

/// Marks the current task as about to block; call with interrupts masked,
/// then publish it on a wait list, then [`block_current_locked`].
pub(crate) fn prepare_to_block() {
    current().set_state(TaskState::Blocked);
}

/// As [`prepare_to_block`], with a deadline after which the task is woken
/// anyway (check [`take_timed_out`] afterwards).
pub(crate) fn prepare_to_block_until(deadline_ns: u64) {
    let t = current();
    t.set_state(TaskState::Sleeping);
    t.timed_out.store(false, Ordering::Relaxed);
    let gen_ = t.wait_gen.fetch_add(1, Ordering::Relaxed) + 1;
    t.timer_gen.store(gen_, Ordering::Relaxed);
    t.timer_deadline
        .store(deadline_ns.max(1), Ordering::Release);
}

/// Whether the last timed wait of the current task ended by its deadline.
pub(crate) fn take_timed_out() -> bool {
    current().timed_out.swap(false, Ordering::Relaxed)
}

/// Makes a blocked or sleeping task runnable. Returns whether it was waiting.
///
/// The state moves Blocked/Sleeping -> Ready by compare-and-swap, so of
/// several wakers (on any CPU) and the task's own `finish_wait` exactly
/// one wins, and the task is queued at most once.
pub fn wake_up(t: &Arc<Task>) -> bool {
    if t.is_deadlocked() {
        return false;
    }
    platform::with_irq_guard(|irq| {
        if !t.try_set_ready() {
            return false;
        }
        t.wait_gen.fetch_add(1, Ordering::Relaxed);
        // A foreign task waits in place for the state change (block_foreign).
        if !t.foreign {
            let _ = irq;
            enqueue(t.clone(), select_cpu(t, false));
        }
        true
    })
}

/// The current task stops waiting without sleeping (its condition came
/// true): back to Running, unless a waker already made it Ready and queued
/// it, in which case the scheduler takes that queue entry now (Linux's
/// `finish_wait` with `try_to_wake_up`'s on-runqueue check). Interrupts
/// masked.
pub(crate) fn finish_wait() {
    let t = current();
    let mut s = t.state.load(Ordering::Acquire);
    loop {
        if s != TaskState::Blocked as u8 && s != TaskState::Sleeping as u8 {
            break;
        }
        match t.state.compare_exchange_weak(
            s,
            TaskState::Running as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return,
            Err(now) => s = now,
        }
    }
    if s == TaskState::Ready as u8 {
        if t.foreign || !started() {
            t.set_state(TaskState::Running);
        } else {
            schedule();
        }
    }
}

/// Sleeps for at least `d`.
pub fn sleep(d: Duration) {
    if !started() {
        let until = crate::time::now_ns() + d.as_nanos() as u64;
        while crate::time::now_ns() < until {
            if let Some(p) = platform::get() {
                p.wait_for_interrupt();
            }
        }
        return;
    }
    might_sleep();
    let deadline = crate::time::now_ns() + d.as_nanos() as u64;
    loop {
        {
            let _irq = platform::IrqGuard::new();
            prepare_to_block_until(deadline);
            block_current_locked();
        }
        if crate::time::now_ns() >= deadline {
            break;
        }
    }
    take_timed_out();
}

/// Disables preemption until the matching [`preempt_enable`]: the task
/// stays on this CPU and no other task runs here meanwhile (interrupt
/// handlers still do). With the kernel's own platform
/// ([`platform::kernel_gs_layout`]) the count is a word of the CPU's `gs:`
/// data and this is one `inc` of it, a single instruction that an
/// interrupt on this CPU comes before or after, so no interrupt mask; the
/// slab's fast paths do the same inline. Elsewhere the count is the
/// scheduler's per-CPU field, changed with interrupts masked.
#[inline]
pub fn preempt_disable() {
    if platform::kernel_gs_layout() {
        // SAFETY: the layout is installed.
        unsafe { platform::preempt_count_inc_gs() };
        return;
    }
    platform::with_irq_guard(|irq| this_cpu(irq).preempt_count.fetch_add(1, Ordering::Relaxed));
}

/// Ends a [`preempt_disable`] section (sections nest). It does not call
/// the scheduler: kreclaim preempts only at a tick (or a reschedule IPI to
/// an idle CPU) whose CPU has a count of 0, so a preemption that a section
/// put off waits for the next tick (at most one time slice late), unlike
/// Linux's `preempt_enable`, which reschedules at once when a resched is
/// pending.
#[inline]
pub fn preempt_enable() {
    if platform::kernel_gs_layout() {
        // SAFETY: the layout is installed.
        unsafe { platform::preempt_count_dec_gs() };
        return;
    }
    platform::with_irq_guard(|irq| this_cpu(irq).preempt_count.fetch_sub(1, Ordering::Relaxed));
}

/// Depth of preempt-disabled sections on this CPU (0: preemptible).
pub fn preempt_count() -> usize {
    if platform::kernel_gs_layout() {
        // SAFETY: the layout is installed; a count that is not 0 keeps
        // the task here, and 0 is 0 on whichever CPU it reads.
        return unsafe { platform::preempt_count_gs() };
    }
    platform::with_irq_guard(|irq| this_cpu(irq).preempt_count.load(Ordering::Relaxed))
}

/// Sets this CPU's preempt count (the deadlock detector, parking a task
/// for good with sections open). Interrupts masked.
pub(crate) fn set_preempt_count_irqs_masked(irq: &IrqGuard, v: usize) {
    this_cpu(irq).pc_set(v);
}

/// RAII preempt_disable region.
#[must_use = "preemption is re-enabled as soon as the guard is dropped"]
pub struct PreemptGuard(());

impl PreemptGuard {
    /// Disables preemption until the guard drops.
    pub fn new() -> Self {
        preempt_disable();
        Self(())
    }
}

impl Default for PreemptGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PreemptGuard {
    fn drop(&mut self) {
        preempt_enable();
    }
}

/// The timer interrupt's hook, on every CPU: the boot CPU wakes expired
/// timed waits (for all CPUs); when preemptive, a CPU rotates at the end of
/// its running task's slice; an idle CPU with queued work schedules.
/// Interrupts are masked.
pub fn on_tick() {
    if !started() {
        return;
    }
    // The timer interrupt runs with interrupts masked: the guard only
    // proves it to `this_cpu`.
    let irq = IrqGuard::new();
    let cpu = this_cpu(&irq);
    if !cpu.online.load(Ordering::Acquire) {
        return;
    }
    let now = crate::time::now_ns();
    // Timed waits: deadlines live in the tasks, so arming one never allocates.
    if cpu.cpu_id == 0 {
        let tasks = TASKS.lock();
        for t in tasks.iter() {
            let d = t.timer_deadline.load(Ordering::Acquire);
            if d == 0 || d > now {
                continue;
            }
            t.timer_deadline.store(0, Ordering::Relaxed);
            if t.wait_gen.load(Ordering::Relaxed) == t.timer_gen.load(Ordering::Relaxed)
                && t.state() == TaskState::Sleeping
                && !t.is_deadlocked()
                && t.try_set_ready()
            {
                t.timed_out.store(true, Ordering::Relaxed);
                t.wait_gen.fetch_add(1, Ordering::Relaxed);
                enqueue(t.clone(), select_cpu(t, false));
            }
        }
    }
    let is_idle = cpu.current.load(Ordering::Relaxed) == cpu.idle.load(Ordering::Relaxed);
    if is_idle {
        // Not while pinned either: an idle task runs `call_on_ap` work
        // (bench=smp's loops) through the slab's fast paths, whose pinned
        // stretch an interrupt entry counts here.
        if cpu.pc_get() == 0 && !cpu.run_queue.lock().is_empty() {
            schedule();
        }
        return;
    }
    if mode() == SchedMode::Preemptive
        && cpu.pc_get() == 0
        && now >= cpu.slice_end.load(Ordering::Relaxed)
    {
        schedule();
    }
}

/// The reschedule IPI's hook (a wake-up or spawn queued a task here from
/// another CPU): an idle CPU runs it now (an idle task pinned inside the
/// slab fast path, see `on_tick`, at its next tick). Interrupts are masked.
pub fn on_resched_ipi() {
    if !started() {
        return;
    }
    let irq = IrqGuard::new();
    let cpu = this_cpu(&irq);
    if cpu.online.load(Ordering::Acquire)
        && cpu.current.load(Ordering::Relaxed) == cpu.idle.load(Ordering::Relaxed)
        && cpu.pc_get() == 0
        && !cpu.run_queue.lock().is_empty()
    {
        schedule();
    }
}

/// Whether the current task has a fatal signal pending (the OOM killer
/// chose it, or [`Task::send_fatal_signal`]): long-running work checks
/// this and returns.
pub fn fatal_signal_pending() -> bool {
    started() && current().has_fatal_signal()
}

/// A snapshot of every task: (id, name, state, deadlocked).
pub fn list() -> Vec<(TaskId, String, TaskState, bool)> {
    platform::without_interrupts(|| {
        TASKS
            .lock()
            .iter()
            .map(|t| (t.id, String::from(t.name()), t.state(), t.is_deadlocked()))
            .collect()
    })
}

/// Whether every CPU's run queue is empty (for the idle deadlock check).
pub(crate) fn all_run_queues_empty() -> bool {
    platform::with_irq_guard(|_| CPUS.iter().all(|c| c.run_queue.lock().is_empty()))
}

/// Whether the current task can block on kreclaim's scheduler: it runs, the
/// task is one of its own (no platform hook), and it is not the idle task
/// (which must always be runnable).
pub(crate) fn can_block_current() -> bool {
    started() && CURRENT_HOOK.get().is_none() && !current().idle
}

pub(crate) fn mark_deadlocked(t: &Task) {
    t.deadlocked.store(true, Ordering::Release);
    t.exited.complete_all();
}

/// Tasks in a timed wait whose deadline has not fired yet.
pub(crate) fn pending_timers() -> usize {
    platform::without_interrupts(|| {
        TASKS
            .lock()
            .iter()
            .filter(|t| {
                t.timer_deadline.load(Ordering::Relaxed) != 0 && t.state() == TaskState::Sleeping
            })
            .count()
    })
}

/// Runs `f` on every live task under the task-table lock (no allocation).
pub(crate) fn for_each_task(mut f: impl FnMut(&Arc<Task>)) {
    platform::without_interrupts(|| TASKS.lock().iter().for_each(&mut f))
}

/// The live task with id `id`, under the task-table lock.
pub(crate) fn with_task<R>(id: TaskId, f: impl FnOnce(&Arc<Task>) -> R) -> Option<R> {
    platform::without_interrupts(|| TASKS.lock().iter().find(|t| t.id == id).map(f))
}

/// The live task with id `id`, if it is deadlocked (parked for good). Does
/// not wait for the task table: `None` if it is busy (the caller may hold
/// it). A deadlocked task is never reaped, so the reference stays valid.
pub(crate) fn deadlocked_task(id: TaskId) -> Option<&'static Task> {
    platform::without_interrupts(|| {
        let tasks = TASKS.try_lock()?;
        let t = tasks.iter().find(|t| t.id == id && t.is_deadlocked())?;
        // SAFETY: kept in TASKS for good (a deadlocked task never exits).
        Some(unsafe { &*Arc::as_ptr(t) })
    })
}

/// Records what the current task is about to block on (interrupts masked).
pub(crate) fn set_blocked_on(b: deadlock::BlockedOn) {
    *current().blocked_on.lock() = Some(b);
}

pub(crate) fn set_blocked_on_waitqueue(wq: &crate::sync::WaitQueue) {
    set_blocked_on(deadlock::BlockedOn {
        kind: "wait queue",
        name: wq.name(),
        addr: wq as *const _ as usize,
        target: None,
    });
}

pub(crate) fn clear_blocked_on() {
    *current().blocked_on.lock() = None;
}
