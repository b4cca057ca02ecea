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
    /// Chosen by the OOM killer (`tsk_is_oom_victim`).
    oom_victim: AtomicBool,
    /// A fatal signal is pending: the task should stop and exit.
    fatal_signal: AtomicBool,
    /// A thread the platform schedules ([`Task::new_foreign`]): it blocks by
    /// waiting in place for its wake-up, not on kreclaim's run queue.
    foreign: bool,
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
            oom_victim: AtomicBool::new(false),
            fatal_signal: AtomicBool::new(false),
            foreign: false,
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
        self.flags.fetch_or(f.bits(), Ordering::Relaxed);
    }

    /// Clears the flags in `f` (others unchanged).
    pub fn clear_flags(&self, f: TaskFlags) {
        self.flags.fetch_and(!f.bits(), Ordering::Relaxed);
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

/// Per-CPU scheduler state.
pub struct PerCpu {
    /// This CPU's number.
    pub cpu_id: usize,
    current: AtomicPtr<Task>,
    idle: AtomicPtr<Task>,
    preempt_count: AtomicUsize,
    slice_left: AtomicU32,
    run_queue: spin::Mutex<VecDeque<Arc<Task>>>,
    /// A dead task whose stack is freed once we are off it.
    to_reap: spin::Mutex<Option<Arc<Task>>>,
}

impl PerCpu {
    /// This CPU's preempt count, read through [`this_cpu`] (whose guard
    /// keeps the caller here): the allocator's fast path checks it inline.
    #[inline]
    pub fn preempt_count(&self) -> usize {
        self.preempt_count.load(Ordering::Relaxed)
    }
}

static EARLY_TASK: Task = Task::early();

static CPUS: [PerCpu; 1] = [PerCpu {
    cpu_id: 0,
    current: AtomicPtr::new(&EARLY_TASK as *const Task as *mut Task),
    idle: AtomicPtr::new(core::ptr::null_mut()),
    preempt_count: AtomicUsize::new(0),
    slice_left: AtomicU32::new(TIME_SLICE_TICKS),
    run_queue: spin::Mutex::new(VecDeque::new()),
    to_reap: spin::Mutex::new(None),
}];

/// This CPU's scheduler state. The [`IrqGuard`] is the proof that the caller
/// runs with interrupts masked, so neither the tick nor a switch to another
/// task (or, with several CPUs, a move to another CPU) happens while it uses
/// the result, which lives no longer than the guard.
#[inline]
pub fn this_cpu(_irq: &IrqGuard) -> &PerCpu {
    &CPUS[0]
}

/// The running task's pointer. Needs no guard: whenever and wherever a task
/// reads it, the value is that task itself (a switch away and back restores
/// it before the task runs again).
#[inline]
fn current_ptr() -> *mut Task {
    CPUS[0].current.load(Ordering::Acquire)
}

static STARTED: AtomicBool = AtomicBool::new(false);
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

/// Turns the boot context into task 0 ("main") and creates the idle task.
/// The platform must call [`on_tick`] from its timer interrupt.
pub fn init(mode: SchedMode) {
    set_mode(mode);
    let main = Arc::new(Task::new(0, String::from("main")));
    main.set_state(TaskState::Running);
    main.flags
        .store(EARLY_TASK.flags.load(Ordering::Relaxed), Ordering::Relaxed);
    let idle = new_task("idle", Box::new(idle_loop)).expect("cannot create the idle task");
    platform::with_irq_guard(|irq| {
        let mut tasks = TASKS.lock();
        tasks.push(main.clone());
        tasks.push(idle.clone());
        this_cpu(irq)
            .idle
            .store(Arc::as_ptr(&idle) as *mut Task, Ordering::Release);
        this_cpu(irq)
            .current
            .store(Arc::as_ptr(&main) as *mut Task, Ordering::Release);
    });
    STARTED.store(true, Ordering::Release);
}

/// Why [`spawn`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnError {
    /// No memory for the task or its stack.
    NoMemory,
    /// The scheduler is not running.
    NotStarted,
}

fn new_task(name: &str, f: Box<dyn FnOnce() + Send>) -> Result<Arc<Task>, SpawnError> {
    let p = platform::get().ok_or(SpawnError::NotStarted)?;
    let stack = p
        .alloc_kernel_stack(STACK_SIZE)
        .ok_or(SpawnError::NoMemory)?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let name = try_string(name).map_err(|_| SpawnError::NoMemory)?;
    let t = try_arc(Task::new(id, name)).map_err(|_| SpawnError::NoMemory)?;
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

    /// Waits for the task to finish.
    pub fn join(self) -> Result<(), JoinError> {
        self.task.exited.wait();
        if self.task.state() == TaskState::Dead {
            Ok(())
        } else {
            Err(JoinError::Deadlocked)
        }
    }

    /// Waits at most `timeout` for the task to finish.
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

    /// Whether the task has exited.
    pub fn is_finished(&self) -> bool {
        self.task.state() == TaskState::Dead
    }
}

/// Starts a kernel thread running `f`.
pub fn spawn<F: FnOnce() + Send + 'static>(name: &str, f: F) -> Result<JoinHandle, SpawnError> {
    if !started() {
        return Err(SpawnError::NotStarted);
    }
    let t = new_task(name, try_box(f).map_err(|_| SpawnError::NoMemory)?)?;
    platform::with_irq_guard(|irq| {
        let mut tasks = TASKS.lock();
        let mut rq = this_cpu(irq).run_queue.lock();
        // Reserve so that requeueing in the scheduler never allocates; a
        // failed reservation fails the spawn before anything changed.
        let need = tasks.len() + 1;
        let len = rq.len();
        tasks.try_reserve(1).map_err(|_| SpawnError::NoMemory)?;
        if rq.capacity() < need {
            rq.try_reserve(need - len)
                .map_err(|_| SpawnError::NoMemory)?;
        }
        tasks.push(t.clone());
        rq.push_back(t.clone());
        Ok(())
    })?;
    Ok(JoinHandle { task: t })
}

extern "C" fn task_start() -> ! {
    // A fresh task starts with interrupts masked (see `init_context`).
    platform::with_irq_guard(finish_task_switch);
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
    t.exited.complete_all();
    schedule();
    unreachable!("a dead task was scheduled again");
}

fn idle_loop() {
    loop {
        deadlock::idle_check();
        let p = platform::get().unwrap();
        let _ = p.irq_save();
        // Interrupts are masked from here on; the guard's restore of that
        // state changes nothing.
        let empty = platform::with_irq_guard(|irq| this_cpu(irq).run_queue.lock().is_empty());
        if empty {
            p.wait_for_interrupt(); // enables interrupts and halts
        } else {
            p.irq_restore(true);
        }
        yield_now();
    }
}

/// Picks the next task and switches to it. Interrupts must be masked; the
/// current task's state says whether it goes back on the run queue.
fn schedule() {
    // Callers have interrupts masked already; the guard proves it to
    // `this_cpu`, and dropping it (after the switch back) restores "masked".
    let irq = IrqGuard::new();
    let cpu = this_cpu(&irq);
    let prev_ptr = cpu.current.load(Ordering::Acquire);
    // SAFETY: the running task is alive.
    let prev = unsafe { &*prev_ptr };
    let idle_ptr = cpu.idle.load(Ordering::Acquire);
    let next = {
        let mut rq = cpu.run_queue.lock();
        if prev.state() == TaskState::Running {
            prev.set_state(TaskState::Ready);
            if prev_ptr != idle_ptr
                && let Some(me) = find_arc(prev_ptr)
            {
                rq.push_back(me);
            }
        }
        rq.pop_front()
    };
    let next_ptr = match &next {
        Some(t) => Arc::as_ptr(t) as *mut Task,
        None => idle_ptr,
    };
    drop(next);
    // SAFETY: tasks on the run queue and the idle task are alive (TASKS).
    let next = unsafe { &*next_ptr };
    next.set_state(TaskState::Running);
    cpu.slice_left.store(TIME_SLICE_TICKS, Ordering::Relaxed);
    if next_ptr == prev_ptr {
        return;
    }
    if prev.state() == TaskState::Dead {
        *cpu.to_reap.lock() = find_arc(prev_ptr);
    }
    next.switches.fetch_add(1, Ordering::Relaxed);
    cpu.current.store(next_ptr, Ordering::Release);
    let p = platform::get().unwrap();
    // SAFETY: interrupts are masked; both contexts belong to live tasks.
    unsafe { p.switch_context(prev.context.get(), *next.context.get()) };
    finish_task_switch(&irq);
}

/// Runs on the new task after every switch: frees a dead predecessor's stack.
fn finish_task_switch(irq: &IrqGuard) {
    let dead = this_cpu(irq).to_reap.lock().take();
    if let Some(t) = dead {
        if let Some(stack) = t.stack.lock().take() {
            platform::get().unwrap().free_kernel_stack(stack);
        }
        let mut tasks = TASKS.lock();
        tasks.retain(|x| !Arc::ptr_eq(x, &t));
    }
}

fn find_arc(p: *const Task) -> Option<Arc<Task>> {
    TASKS.lock().iter().find(|t| Arc::as_ptr(t) == p).cloned()
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
    let pc = platform::with_irq_guard(|irq| this_cpu(irq).preempt_count.load(Ordering::Relaxed));
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
            this_cpu(irq).run_queue.lock().push_back(t.clone());
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

/// Disables preemption until the matching [`preempt_enable`].
#[inline]
pub fn preempt_disable() {
    platform::with_irq_guard(|irq| this_cpu(irq).preempt_count.fetch_add(1, Ordering::Relaxed));
}

/// Ends a [`preempt_disable`] section (sections nest).
#[inline]
pub fn preempt_enable() {
    platform::with_irq_guard(|irq| this_cpu(irq).preempt_count.fetch_sub(1, Ordering::Relaxed));
}

/// Depth of preempt-disabled sections on this CPU (0: preemptible).
pub fn preempt_count() -> usize {
    platform::with_irq_guard(|irq| this_cpu(irq).preempt_count.load(Ordering::Relaxed))
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

/// The timer interrupt's hook: wakes expired timed waits and, when
/// preemptive, rotates the CPU at the end of a slice. Interrupts are masked.
pub fn on_tick() {
    if !started() {
        return;
    }
    // The timer interrupt runs with interrupts masked: the guard only
    // proves it to `this_cpu`.
    let irq = IrqGuard::new();
    let now = crate::time::now_ns();
    // Timed waits: deadlines live in the tasks, so arming one never allocates.
    {
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
                this_cpu(&irq).run_queue.lock().push_back(t.clone());
            }
        }
    }
    let cpu = this_cpu(&irq);
    let is_idle = cpu.current.load(Ordering::Relaxed) == cpu.idle.load(Ordering::Relaxed);
    if is_idle {
        if !cpu.run_queue.lock().is_empty() {
            schedule();
        }
        return;
    }
    if mode() == SchedMode::Preemptive && cpu.preempt_count.load(Ordering::Relaxed) == 0 {
        let left = cpu.slice_left.load(Ordering::Relaxed).saturating_sub(1);
        cpu.slice_left.store(left, Ordering::Relaxed);
        if left == 0 {
            schedule();
        }
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

pub(crate) fn idle_task_ptr() -> *const Task {
    platform::with_irq_guard(|irq| this_cpu(irq).idle.load(Ordering::Relaxed))
}

/// Whether the current task can block on kreclaim's scheduler: it runs, the
/// task is one of its own (no platform hook), and it is not the idle task
/// (which must always be runnable).
pub(crate) fn can_block_current() -> bool {
    started() && CURRENT_HOOK.get().is_none() && !core::ptr::eq(current(), idle_task_ptr())
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
