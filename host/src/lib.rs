//! kreclaim's `no_std` framework on the host (Linux, macOS): a
//! [`Platform`](kreclaim::platform::Platform) implementation, an arena that
//! plays the part of RAM, and the one-time bring-up of the page allocator and
//! kmalloc — what the property tests, the fuzz target and the benchmarks
//! share. It is also the worked example of embedding the framework (see
//! `examples/minimal_platform.rs` and docs/embedding.md).
//!
//! # The execution model: every host thread is a CPU
//!
//! kreclaim's locks are SMP locks (ticket spinlocks; sleeping locks and
//! wait queues with their state under internal spinlocks), so host threads
//! run the framework truly in parallel, each as a CPU of its own:
//! [`HostPlatform`] keeps the interrupt flag per thread (the framework's
//! own thread-local, `platform::thread_irq_save`, which `IrqGuard` flips
//! inline; masking excludes nothing but this thread's own "interrupt
//! handlers", of which there are none), and
//! `cpu_id` is a per-thread number below `platform::NR_CPUS`, claimed on
//! the thread's first use and given back when the thread exits, so per-CPU
//! data (indexed by CPU number) is per thread. No process-wide lock: a
//! thread that ran out of CPU numbers (more than `NR_CPUS` threads using
//! the framework at once) waits for one to be given back.
//!
//! The *current task* is a thread-local: every host thread gets its own
//! framework task record (`Task::new_foreign`, installed with
//! `task::set_current_task_hook`), so PF_* flags, scoped NOFS/NOIO and the
//! lockdep held-lock stack are per thread, as they are per task in the
//! kernel. Sleeping locks (`Mutex`, `RwSemaphore`) work across threads: a
//! thread that must wait is queued like a kernel task and waits in place
//! (yielding) until the releasing thread hands it the lock. Wait queues and
//! completions poll their condition on the host (no scheduler runs).
//!
//! # One initialisation per process
//!
//! The page allocator and the slab registry are process-global singletons
//! (one zone). [`init`] brings them up once per process (later calls return
//! the first result), and [`serial`] gives tests that compare global
//! counters a process-wide mutex.

pub mod bench;
pub mod global;
pub mod wordindex;

use kreclaim::bootinfo::{MemoryMap, Region, RegionKind};
use kreclaim::mm::page_alloc;
use kreclaim::mm::slab::{self, SlabFlags, kmalloc};
use kreclaim::platform::{self, Platform};
use kreclaim::sync::lockdep::{self, LockdepMode};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

/// The page allocator's largest block (order 10, 4 MiB); the arena is
/// aligned to it so that every buddy block is naturally aligned.
pub const ARENA_ALIGN: usize = 4 << 20;

// ---------------------------------------------------------------------------
// The platform

/// The host platform: each thread is a CPU with its own interrupt flag and
/// CPU number (see the crate docs), time is `Instant`, the cycle counter is
/// the TSC on x86_64, the console is stderr (silenced by [`set_quiet`]), and
/// physical addresses are host addresses (the default identity
/// `phys_to_virt`).
pub struct HostPlatform {
    quiet: AtomicBool,
    console_lines: AtomicU64,
    epoch: OnceLock<Instant>,
}

/// CPU numbers in use by live threads, one bit each.
static CPUS_IN_USE: AtomicUsize = AtomicUsize::new(0);
const NO_CPU: usize = usize::MAX;
const _: () = assert!(kreclaim::platform::NR_CPUS <= usize::BITS as usize);

/// A thread's CPU number; given back when the thread exits.
struct HostCpu(Cell<usize>);

impl HostCpu {
    #[inline]
    fn get(&self) -> usize {
        match self.0.get() {
            NO_CPU => {
                let id = claim_cpu();
                self.0.set(id);
                id
            }
            id => id,
        }
    }
}

impl Drop for HostCpu {
    fn drop(&mut self) {
        let id = self.0.replace(NO_CPU);
        if id != NO_CPU {
            // The framework's copy goes first: the number is another
            // thread's as soon as it is given back.
            platform::forget_thread_cpu();
            CPUS_IN_USE.fetch_and(!(1 << id), Ordering::Release);
        }
    }
}

/// The lowest free CPU number; waits while all are taken.
fn claim_cpu() -> usize {
    loop {
        let used = CPUS_IN_USE.load(Ordering::Relaxed);
        let free = (!used).trailing_zeros() as usize;
        if free >= kreclaim::platform::NR_CPUS {
            std::thread::yield_now();
            continue;
        }
        if CPUS_IN_USE
            .compare_exchange_weak(used, used | 1 << free, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return free;
        }
    }
}

thread_local! {
    /// This thread's CPU number, claimed on first use.
    static CPU: HostCpu = const { HostCpu(Cell::new(NO_CPU)) };
    /// A CPU number for a thread whose `CPU` is already destroyed (it is
    /// exiting and still calls the framework, e.g. freeing through the
    /// global allocator): claimed for good, as such calls come late in a
    /// thread's life and rarely.
    static LATE_CPU: Cell<usize> = const { Cell::new(NO_CPU) };
    /// This thread's framework task, made on first use (leaked: it lives as
    /// long as the thread could still call into the framework).
    static THREAD_TASK: std::cell::Cell<Option<&'static kreclaim::task::Task>> =
        const { std::cell::Cell::new(None) };
    /// Set while the task is being made: its allocations may come back here
    /// (kreclaim as the global allocator asks for the current task).
    static MAKING_TASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The calling thread's CPU number (see the crate docs).
pub fn host_cpu_id() -> usize {
    CPU.try_with(|c| c.get()).unwrap_or_else(|_| {
        LATE_CPU
            .try_with(|c| {
                if c.get() == NO_CPU {
                    c.set(claim_cpu());
                }
                c.get()
            })
            // No thread-locals left at all: a fresh number each time would
            // leak them, so share the last one (never expected).
            .unwrap_or(kreclaim::platform::NR_CPUS - 1)
    })
}

/// The running thread's framework task (the `task::CurrentTaskHook`).
pub fn current_host_task() -> Option<&'static kreclaim::task::Task> {
    if let Some(t) = THREAD_TASK.try_with(|t| t.get()).ok().flatten() {
        return Some(t);
    }
    if MAKING_TASK.try_with(|m| m.replace(true)).unwrap_or(true) {
        return None; // re-entered while making it, or the thread is exiting
    }
    let name = std::thread::current()
        .name()
        .unwrap_or("host-thread")
        .to_string();
    let t = kreclaim::task::Task::new_foreign(&name);
    // SAFETY: the Arc is leaked, so the task is never freed.
    let t: &'static kreclaim::task::Task = unsafe { &*std::sync::Arc::into_raw(t) };
    let _ = THREAD_TASK.try_with(|c| c.set(Some(t)));
    let _ = MAKING_TASK.try_with(|m| m.set(false));
    Some(t)
}

impl HostPlatform {
    pub const fn new() -> Self {
        Self {
            quiet: AtomicBool::new(false),
            console_lines: AtomicU64::new(0),
            epoch: OnceLock::new(),
        }
    }
}

impl Default for HostPlatform {
    fn default() -> Self {
        Self::new()
    }
}

impl Platform for HostPlatform {
    /// The thread's flag, which the framework keeps (and `IrqGuard` flips
    /// inline: see `irq_flag_is_native`).
    #[inline]
    fn irq_save(&self) -> bool {
        platform::thread_irq_save()
    }

    #[inline]
    fn irq_restore(&self, was_enabled: bool) {
        platform::thread_irq_restore(was_enabled);
    }

    /// Interrupt masking is the thread-local flag and nothing else.
    fn irq_flag_is_native(&self) -> bool {
        true
    }

    #[inline]
    fn cpu_id(&self) -> usize {
        host_cpu_id()
    }

    /// A thread keeps its number until it exits (`HostCpu`'s drop tells
    /// the framework to forget it first).
    fn cpu_id_is_per_thread(&self) -> bool {
        true
    }

    /// `membarrier(2)`, private expedited (Linux 4.14+). The first call
    /// registers the process for it; where the system refuses (an older
    /// kernel, a seccomp filter) this returns `false` and the framework
    /// keeps its per-CPU flags atomic.
    fn membarrier(&self) -> bool {
        membarrier_private_expedited()
    }

    /// A host thread spinning for a lock lets the OS run the others (the
    /// holder may be a preempted thread).
    fn cpu_relax(&self) {
        std::thread::yield_now();
    }

    /// A blocked host thread waits in place (see `task`'s foreign tasks):
    /// give the core to other threads meanwhile.
    fn wait_for_interrupt(&self) {
        std::thread::yield_now();
    }

    fn now_ns(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }

    fn cycles(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: RDTSC has no preconditions in user mode on x86_64 hosts.
            unsafe { core::arch::x86_64::_rdtsc() }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.now_ns()
        }
    }

    fn console_write(&self, s: &str) {
        self.console_lines
            .fetch_add(s.matches('\n').count() as u64, Ordering::Relaxed);
        if !self.quiet.load(Ordering::Relaxed) {
            let _ = std::io::stderr().write_all(s.as_bytes());
        }
    }
}

/// The platform every host process installs.
pub static HOST: HostPlatform = HostPlatform::new();

/// Silences (or restores) the framework's console: tests that provoke
/// reports on purpose (bad frees, allocation failures) keep the output short.
/// Lines are still counted ([`console_lines`]).
pub fn set_quiet(quiet: bool) {
    HOST.quiet.store(quiet, Ordering::Relaxed);
}

/// Lines the framework has printed since the process started.
pub fn console_lines() -> u64 {
    HOST.console_lines.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------
// The arena and bring-up

/// How to bring the framework up.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Bytes of "RAM" (a multiple of [`ARENA_ALIGN`]).
    pub arena_bytes: usize,
    /// `min_free_kbytes`; `None` for Linux's default formula.
    pub min_free_kbytes: Option<u64>,
    /// Lockdep on (validating) or off.
    pub lockdep: bool,
    /// Slab debug flags applied to every cache created after bring-up,
    /// the kmalloc caches included (Linux's `slab_debug=`).
    pub slab_debug: SlabFlags,
    /// Start with the console silenced.
    pub quiet: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            arena_bytes: 64 << 20,
            min_free_kbytes: None,
            lockdep: true,
            slab_debug: SlabFlags::empty(),
            quiet: false,
        }
    }
}

/// The "RAM" behind the page allocator: host memory from the system
/// allocator, aligned to the largest buddy block. Never freed (the page
/// allocator owns it for the rest of the process).
#[derive(Clone, Copy, Debug)]
pub struct Arena {
    pub start: usize,
    pub len: usize,
}

impl Arena {
    /// Whether `p` points into the arena.
    pub fn contains(&self, p: *const u8) -> bool {
        (self.start..self.start + self.len).contains(&(p as usize))
    }
}

/// Why [`init`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostInitError {
    /// `arena_bytes` is 0 or not a multiple of [`ARENA_ALIGN`].
    BadArenaSize(usize),
    /// The system allocator could not provide the arena.
    NoArena(usize),
    PageAlloc(page_alloc::InitError),
    /// A kmalloc cache could not be created (named in the error).
    Kmalloc(kmalloc::KmallocInitError),
}

impl std::fmt::Display for HostInitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadArenaSize(n) => write!(
                f,
                "arena of {n} bytes: must be a non-zero multiple of {ARENA_ALIGN}"
            ),
            Self::NoArena(n) => write!(f, "the system allocator refused an arena of {n} bytes"),
            Self::PageAlloc(e) => write!(f, "page allocator: {e}"),
            Self::Kmalloc(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for HostInitError {}

/// What the one bring-up of this process produced.
#[derive(Clone, Copy, Debug)]
pub struct Host {
    pub arena: Arena,
    pub config: Config,
}

static HOST_STATE: OnceLock<Result<Host, HostInitError>> = OnceLock::new();

/// Allocates an arena of `bytes` from the system allocator and brings the
/// page allocator and kmalloc up over it, without going through the Rust
/// global allocator for the arena itself (so a global allocator built on
/// kreclaim can call it).
fn bring_up(config: Config) -> Result<Host, HostInitError> {
    let bytes = config.arena_bytes;
    if bytes == 0 || !bytes.is_multiple_of(ARENA_ALIGN) {
        return Err(HostInitError::BadArenaSize(bytes));
    }
    let layout = Layout::from_size_align(bytes, ARENA_ALIGN)
        .map_err(|_| HostInitError::BadArenaSize(bytes))?;
    // SAFETY: a non-zero layout.
    let start = unsafe { System.alloc(layout) } as usize;
    if start == 0 {
        return Err(HostInitError::NoArena(bytes));
    }
    platform::set(&HOST);
    kreclaim::task::set_current_task_hook(current_host_task);
    set_quiet(config.quiet);
    lockdep::set_mode(if config.lockdep {
        LockdepMode::On
    } else {
        LockdepMode::Off
    });
    let mut map = MemoryMap::new();
    map.push(Region {
        start: start as u64,
        end: (start + bytes) as u64,
        kind: RegionKind::Ram,
    });
    page_alloc::init(&map, None, config.min_free_kbytes).map_err(HostInitError::PageAlloc)?;
    slab::set_global_debug(config.slab_debug, None);
    kmalloc::kmalloc_init().map_err(HostInitError::Kmalloc)?;
    Ok(Host {
        arena: Arena { start, len: bytes },
        config,
    })
}

/// Brings the framework up once per process with `config`; later calls
/// return the first call's result whatever their `config`.
pub fn init(config: Config) -> Result<Host, HostInitError> {
    HOST_STATE.get_or_init(|| bring_up(config)).clone()
}

/// The bring-up of this process, if [`init`] succeeded.
pub fn host() -> Option<Host> {
    HOST_STATE.get().and_then(|r| r.as_ref().ok().copied())
}

static SERIAL: Mutex<()> = Mutex::new(());

/// A process-wide mutex for tests that compare the allocator's global
/// counters (free pages, slab statistics): libtest runs tests on several
/// threads, and the allocator is one per process.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Releases the empty slabs the kmalloc caches keep (up to `MIN_PARTIAL`
/// each); returns pages released.
pub fn shrink_kmalloc_caches() -> usize {
    kmalloc::KMALLOC_SIZES
        .iter()
        .filter_map(|&s| kmalloc::kmalloc_slab(s, 1))
        .map(|c| c.shrink())
        .sum()
}

/// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, registering the process
/// on first use; `false` if either call fails.
fn membarrier_private_expedited() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;
    // 0: not tried, 1: registered, 2: unavailable.
    static STATE: AtomicU8 = AtomicU8::new(0);
    if STATE.load(Ordering::Acquire) == 0 {
        // SAFETY: membarrier takes two integer arguments and touches no
        // memory of ours; an unknown command only fails with an error.
        let r = unsafe { libc::syscall(libc::SYS_membarrier, CMD_REGISTER_PRIVATE_EXPEDITED, 0) };
        STATE.store(if r == 0 { 1 } else { 2 }, Ordering::Release);
    }
    if STATE.load(Ordering::Acquire) != 1 {
        return false;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_membarrier, CMD_PRIVATE_EXPEDITED, 0) == 0 }
}
