//! Running a workload: populate, operate on many tasks, verify.

use super::{Rng, Workload, checksum, fill_content};
use crate::fs::format::FileType;
use crate::fs::policy::Policy;
use crate::fs::{BlockDevice, Fs, FsError, InodeRef, MkfsOptions};
use crate::mm::fault_inject::{FAIL_PAGE_ALLOC, FAILSLAB};
use crate::mm::gfp::{AllocError, GFP_HIGHUSER_MOVABLE, GFP_KERNEL, Gfp};
use crate::mm::global_alloc::{try_arc_or_return, try_format, try_to_vec};
use crate::mm::oom_kill::OomCharge;
use crate::mm::page_alloc::{PAGE_SIZE, PhysAddr, alloc_pages, free_pages, page_address};
use crate::mm::slab::kmalloc::KVec;
use crate::sync::Mutex;
use crate::task::{self, JoinError};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;

/// What the workload knows about one file slot.
#[derive(Clone, Copy, Debug, Default)]
struct FileRec {
    alive: bool,
    /// A worker is changing it; others leave it alone.
    busy: bool,
    gen_: u32,
    size: u32,
    sum: u64,
}

/// A file or directory name (`f000123`, `d0001`), built on the stack so
/// that naming a file never allocates.
struct Name {
    buf: [u8; 12],
    len: usize,
}

impl Name {
    fn new(prefix: u8, n: u32, width: usize) -> Name {
        let mut digits = [b'0'; 10];
        let mut v = n;
        let mut nd = 0;
        while v > 0 || nd == 0 {
            digits[9 - nd] = b'0' + (v % 10) as u8;
            v /= 10;
            nd += 1;
        }
        let nd = nd.max(width).min(10);
        let mut buf = [0u8; 12];
        buf[0] = prefix;
        buf[1..=nd].copy_from_slice(&digits[10 - nd..]);
        Name { buf, len: nd + 1 }
    }

    fn as_str(&self) -> &str {
        // Only ASCII letters and digits are ever written.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

fn dir_name(d: u32) -> Name {
    Name::new(b'd', d, 4)
}

fn file_name(id: u32) -> Name {
    Name::new(b'f', id, 6)
}

/// Failures injected so far by `fail_page_alloc=` and `failslab=`.
fn injected_total() -> u64 {
    FAIL_PAGE_ALLOC.injected() + FAILSLAB.injected()
}

/// `Arc::new` for the run's set-up, tried again as [`retry_nomem`] does.
fn retry_arc<T>(mut value: T) -> Result<Arc<T>, FsError> {
    for _ in 0..200 {
        match try_arc_or_return(value) {
            Ok(a) => return Ok(a),
            Err((v, _)) => value = v,
        }
        task::sleep(Duration::from_millis(1));
    }
    try_arc_or_return(value).map_err(|_| FsError::NoMemory)
}

/// Runs `f` again while it fails for lack of memory (at most 200 times,
/// 1 ms apart): for the run's set-up and its verifier, which must not take a
/// transient allocation failure for lost data.
/// Samples reserved before the operations start: 256 of 120 bytes fit an
/// order-3 allocation, the largest Linux treats as too small to fail. Room
/// for more is made as the run goes (the old up-front 4,096 was an order-7
/// request that failed, with a warning, on the default 16 MiB).
const SAMPLES_RESERVED: usize = 256;
const _: () = assert!(SAMPLES_RESERVED * core::mem::size_of::<Sample>() <= 32 << 10);

fn retry_nomem<T>(mut f: impl FnMut() -> Result<T, FsError>) -> Result<T, FsError> {
    let mut tries = 0;
    loop {
        match f() {
            Err(FsError::NoMemory) if tries < 200 => {
                tries += 1;
                task::sleep(Duration::from_millis(1));
            }
            r => return r,
        }
    }
}

/// Counters of one run.
#[derive(Default)]
pub struct RunCounters {
    /// Operations done.
    pub ops: AtomicU64,
    /// Reads done.
    pub reads: AtomicU64,
    /// Writes done.
    pub writes: AtomicU64,
    /// Directory listings done.
    pub readdirs: AtomicU64,
    /// Unlinks done.
    pub unlinks: AtomicU64,
    /// Creates done.
    pub creates: AtomicU64,
    /// Operations that failed, short writes included.
    pub errors: AtomicU64,
    /// Writes that wrote fewer bytes than asked (also in `errors`).
    pub short_writes: AtomicU64,
    /// Failed operations during which a failure was injected.
    pub injected_errors: AtomicU64,
    /// Reads that returned wrong contents.
    pub mismatches: AtomicU64,
    /// Workers that never ran their share: no task, or no content buffer.
    pub workers_failed: AtomicU64,
    /// Workers the OOM killer chose: each stopped and exited.
    pub workers_oom_killed: AtomicU64,
    /// Operations that did not run because the application's memory
    /// (`app_pages=`) could not be faulted in (also in `errors`).
    pub app_fault_failures: AtomicU64,
    /// Pages of application memory faulted in (`app_pages=`).
    pub app_pages_faulted: AtomicU64,
}

/// One sample of the time series (`sample_ms=` apart): the free-memory
/// chart and, with `format=json`, the `"kind":"sample"` lines. Counters
/// count from the start of the operations phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Milliseconds since the run started.
    pub ms: u64,
    /// Free pages at that moment.
    pub free_pages: u64,
    /// Operations done by then.
    pub ops: u64,
    /// Pages direct reclaim freed.
    pub direct_pages: u64,
    /// Direct reclaim runs (allocations that stalled in it).
    pub direct_runs: u64,
    /// Pages kswapd freed.
    pub kswapd_pages: u64,
    /// Shrinker calls, summed over every shrinker.
    pub shrinker_calls: u64,
    /// Objects shrinkers scanned.
    pub shrinker_scanned: u64,
    /// Objects shrinkers freed.
    pub shrinker_freed: u64,
    /// SHRINK_STOPs shrinkers returned.
    pub shrinker_stops: u64,
    /// Inodes in the filesystem's inode cache.
    pub inodes_cached: u64,
}

/// Shrinker counters summed over every shrinker: calls, scanned, freed,
/// STOPs (allocates nothing).
fn shrinker_totals() -> [u64; 4] {
    let t = crate::mm::shrinker::totals();
    [t.calls, t.scanned, t.freed, t.stops]
}

/// The outcome of one workload run under one policy.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The policy the run used.
    pub policy: Policy,
    /// Operations that ran.
    pub ops: u64,
    /// Operations asked for (`ops=`): fewer ran if workers failed to start.
    pub ops_requested: u64,
    /// Worker tasks (of `tasks=`) that could not start or get their buffer.
    pub workers_failed: u64,
    /// Worker tasks the OOM killer killed (they exited, leaving their
    /// remaining operations undone).
    pub workers_oom_killed: u64,
    /// Pages of application memory the workers faulted in (`app_pages=`
    /// per operation).
    pub app_pages_faulted: u64,
    /// Operations that did not run because their application memory could
    /// not be faulted in (counted in `errors` too).
    pub app_fault_failures: u64,
    /// Wall time of the run, in nanoseconds.
    pub elapsed_ns: u64,
    /// Operations that failed (short writes included).
    pub errors: u64,
    /// Of those, writes that stopped short.
    pub short_writes: u64,
    /// Files whose populate write failed or stopped short.
    pub populate_errors: u64,
    /// Failed operations (populate and operations phase) during which a
    /// failure was injected: what fault injection cost the workload.
    pub injected_errors: u64,
    /// Failures injected during the run by `fail_page_alloc=` and
    /// `failslab=`.
    pub injected_page_alloc: u64,
    /// Failures injected by `failslab=`.
    pub injected_slab: u64,
    /// Deadlocks reported during the run.
    pub deadlocks: usize,
    /// Lockdep reports printed during the run.
    pub lockdep_reports: usize,
    /// The first of those reports, as printed.
    pub first_lockdep_report: Option<String>,
    /// Whether a report involved both an ILOCK class and `fs_reclaim`.
    pub lockdep_ilock_fs_reclaim: bool,
    /// Files read back intact after unmount, fsck and remount.
    pub files_verified: u64,
    /// Whether every check passed: reads during the run, fsck after unmount
    /// and the read-back after remount.
    pub integrity_ok: bool,
    /// What the integrity check found, in words.
    pub integrity_detail: String,
    /// Filesystem counters at the end of the run.
    pub fs: crate::fs::FsStats,
    /// slabinfo and shrinkers as they were at the end of the run (before
    /// unmount destroyed the filesystem's caches).
    pub slabs: Vec<crate::mm::slab::SlabInfo>,
    /// Shrinkers as they were at the end of the run.
    pub shrinkers: Vec<crate::mm::shrinker::ShrinkerInfo>,
    /// The free-memory samples, for the chart.
    pub samples: Vec<Sample>,
    /// The inode shrinker's highest nr_deferred during the operations (the
    /// value after each do_shrink_slab call, as Linux's tracepoint reports
    /// it; not a sum over calls, which would count claimed and re-deferred
    /// work again each time).
    pub inode_shrinker_deferred: u64,
    /// Inode-shrinker figures of the operations phase (populate excluded).
    pub ops_phase: OpsPhase,
    /// Page allocations that failed during the run.
    pub alloc_failures: u64,
    /// Allocations that stalled in direct reclaim.
    pub alloc_stalls: u64,
    /// Time spent in those stalls, in nanoseconds.
    pub stall_ns: u64,
    /// Where that time went: the waits measured inside direct reclaim
    /// (`mm::memstall`); `stall_ns` minus their sum is the rest.
    pub stall_parts: crate::mm::memstall::StallParts,
    /// Pages direct reclaim freed during the run.
    pub direct_pages: u64,
    /// Pages kswapd freed during the run.
    pub kswapd_pages: u64,
    /// The CPUs the worker tasks ran on, one bit per CPU number.
    pub worker_cpus: u32,
    /// Switches into tasks (not idle) on each CPU during the operations
    /// phase: how the work spread over the CPUs.
    pub cpu_switches: [u64; crate::platform::NR_CPUS],
}

impl RunResult {
    /// Whether fewer operations ran than `ops=` asked for: such a run did
    /// not do what was asked, whatever its data integrity.
    pub fn is_partial(&self) -> bool {
        self.ops < self.ops_requested
    }
}

/// Inode-shrinker figures of the operations phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpsPhase {
    /// Objects the inode shrinker scanned.
    pub inodes_scanned: u64,
    /// Inodes it reclaimed.
    pub inodes_reclaimed: u64,
    /// Times it returned STOP.
    pub shrinker_stops: u64,
    /// Log forces direct reclaim waited for (`reclaim_pinned=wait`).
    pub direct_reclaim_log_forces: u64,
    /// Device time direct reclaim waited for by the disk model, in
    /// nanoseconds (`FsStats::direct_reclaim_io_wait_ns`).
    pub direct_reclaim_io_wait_ns: u64,
}

fn inode_deferred() -> u64 {
    crate::mm::shrinker::deferred_peak_of("xfs_inode")
}

struct Shared {
    fs: Arc<Fs>,
    w: Workload,
    dirs: Vec<InodeRef>,
    table: Mutex<KVec<FileRec>>,
    counters: RunCounters,
    stop: AtomicBool,
}

fn dir_of(w: &Workload, id: u32) -> u32 {
    id / w.fanout
}

/// Why an operation failed.
enum OpError {
    Fs(FsError),
    /// The application's memory for the operation could not be faulted in
    /// (the operation did not run).
    AppMemory(AllocError),
    /// The write stopped after `written` of `wanted` bytes.
    ShortWrite {
        written: u32,
        wanted: u32,
    },
}

impl From<FsError> for OpError {
    fn from(e: FsError) -> Self {
        OpError::Fs(e)
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::Fs(e) => write!(f, "{e}"),
            OpError::AppMemory(e) => write!(f, "application memory: {e}"),
            OpError::ShortWrite { written, wanted } => {
                write!(f, "short write: {written} of {wanted} bytes")
            }
        }
    }
}

/// What a (re)write of a file left behind, as far as the filesystem
/// acknowledged it.
enum Outcome {
    /// It failed before changing anything: the old record stands.
    Unchanged(FsError),
    /// It failed part way through a step that does not say how far it got
    /// (create, truncate): the file is no longer verified.
    Unknown(FsError),
    /// The file was truncated and then holds exactly `size` bytes with
    /// checksum `sum`: all that was asked, or a short or failed write.
    Written {
        size: u32,
        sum: u64,
        error: Option<OpError>,
    },
}

/// Writes generation `gen_` of file `id` (`size` bytes; creating it if
/// `create`): truncate to 0, then one write whose returned count is what
/// the file holds.
fn write_file(
    sh: &Shared,
    dir: &InodeRef,
    id: u32,
    gen_: u32,
    size: u32,
    buf: &mut [u8],
    create: bool,
) -> Outcome {
    let data = &mut buf[..size as usize];
    fill_content(sh.w.seed, id, gen_, data);
    let name = file_name(id);
    let f = if create {
        match sh.fs.create(dir, name.as_str(), FileType::File) {
            Ok(f) => f,
            Err(e) => return Outcome::Unknown(e),
        }
    } else {
        match sh.fs.lookup(dir, name.as_str()) {
            Ok(Some(f)) => f,
            // A file the record says exists and the directory lacks stays
            // recorded: the verifier reports it missing.
            Ok(None) => return Outcome::Unchanged(FsError::NotFound),
            Err(e) => return Outcome::Unchanged(e),
        }
    };
    if let Err(e) = sh.fs.truncate(&f, 0) {
        return Outcome::Unknown(e);
    }
    match sh.fs.write(&f, 0, data) {
        Ok(n) if n == data.len() => Outcome::Written {
            size,
            sum: checksum(data),
            error: None,
        },
        Ok(n) => Outcome::Written {
            size: n as u32,
            sum: checksum(&data[..n]),
            error: Some(OpError::ShortWrite {
                written: n as u32,
                wanted: size,
            }),
        },
        // Nothing written: the truncation stands.
        Err(e) => Outcome::Written {
            size: 0,
            sum: checksum(&[]),
            error: Some(OpError::Fs(e)),
        },
    }
}

fn read_verify(
    sh: &Shared,
    dir: &InodeRef,
    id: u32,
    rec: FileRec,
    buf: &mut [u8],
) -> Result<bool, FsError> {
    let f = sh
        .fs
        .lookup(dir, file_name(id).as_str())?
        .ok_or(FsError::NotFound)?;
    let n = sh.fs.read(&f, 0, &mut buf[..rec.size as usize + 1])?;
    Ok(n == rec.size as usize && checksum(&buf[..n]) == rec.sum)
}

/// Claims a slot for one operation: `alive` selects live or dead files.
fn claim(sh: &Shared, rng: &mut Rng, alive: bool) -> Option<(u32, FileRec)> {
    let mut t = sh.table.lock();
    let n = t.len() as u64;
    for _ in 0..16 {
        let id = rng.below(n) as u32;
        let r = &mut t[id as usize];
        if !r.busy && r.alive == alive {
            r.busy = true;
            return Some((id, *r));
        }
    }
    None
}

fn release(sh: &Shared, id: u32, rec: FileRec) {
    let mut t = sh.table.lock();
    t[id as usize] = FileRec { busy: false, ..rec };
}

/// Writes a new generation of file `id` (creating it if `create`) and
/// records what the filesystem acknowledged: the bytes a short write did
/// write, an empty file after a failed write, the old contents after a
/// failure that changed nothing; only a file in an unknown state is no
/// longer verified. Short and failed writes are errors.
fn rewrite(
    sh: &Shared,
    rng: &mut Rng,
    id: u32,
    rec: FileRec,
    buf: &mut [u8],
    create: bool,
) -> Result<(), OpError> {
    let dir = &sh.dirs[dir_of(&sh.w, id) as usize];
    let size = sh.w.size_min + rng.below((sh.w.size_max - sh.w.size_min + 1) as u64) as u32;
    let gen_ = rec.gen_ + 1;
    if create && rec.gen_ != 0 {
        // A failed unlink earlier may have left the name behind.
        let _ = sh.fs.unlink(dir, file_name(id).as_str());
    }
    match write_file(sh, dir, id, gen_, size, buf, create) {
        Outcome::Written { size, sum, error } => {
            release(
                sh,
                id,
                FileRec {
                    alive: true,
                    busy: false,
                    gen_,
                    size,
                    sum,
                },
            );
            error.map_or(Ok(()), Err)
        }
        Outcome::Unchanged(e) => {
            release(sh, id, rec);
            Err(e.into())
        }
        Outcome::Unknown(e) => {
            release(
                sh,
                id,
                FileRec {
                    alive: false,
                    gen_,
                    ..rec
                },
            );
            Err(e.into())
        }
    }
}

/// Counts a failed operation (and whether a failure was injected while it
/// ran); prints the first few.
fn count_failure(c: &RunCounters, e: &OpError, injected_before: u64, who: &str) {
    if matches!(e, OpError::ShortWrite { .. }) {
        c.short_writes.fetch_add(1, Ordering::Relaxed);
    }
    if injected_total() != injected_before {
        c.injected_errors.fetch_add(1, Ordering::Relaxed);
    }
    let n = c.errors.fetch_add(1, Ordering::Relaxed);
    if n < 5 {
        crate::println!("workload: {who}: operation failed: {e}");
    }
}

/// A zeroed content buffer big enough for the largest file (+1 to detect
/// files that grew), allocated with explicit GFP flags before the run.
fn content_buffer(w: &Workload) -> Result<KVec<u8>, FsError> {
    let mut buf = KVec::<u8>::with_capacity(w.size_max as usize + 1, GFP_KERNEL)
        .map_err(|_| FsError::NoMemory)?;
    for _ in 0..=w.size_max {
        buf.push(0, GFP_KERNEL).map_err(|_| FsError::NoMemory)?;
    }
    Ok(buf)
}

/// The application's own memory for one operation (`app_pages=`): pages
/// faulted in as an anonymous page fault allocates them
/// (`GFP_HIGHUSER_MOVABLE`, zeroed, then written), charged to the worker for
/// the OOM killer as they come, and freed when this is dropped, after the
/// operation. Faulted in while the worker holds no filesystem lock, so the
/// allocations' direct reclaim has the full GFP_HIGHUSER_MOVABLE context
/// (__GFP_FS included) whatever the era's filesystem GFP.
struct AppMemory<'a> {
    pages: &'a mut KVec<PhysAddr>,
    charge: OomCharge,
}

impl<'a> AppMemory<'a> {
    /// Faults in `n` pages into `pages` (room for `n` reserved up front).
    /// Stops with the allocation's error, or when the worker was killed.
    fn fault_in(pages: &'a mut KVec<PhysAddr>, n: u32) -> Result<Self, AllocError> {
        let mut mem = AppMemory {
            pages,
            charge: OomCharge::new(0),
        };
        for i in 0..n {
            if task::fatal_signal_pending() {
                // do_user_addr_fault: a killed task's fault returns at once.
                return Err(AllocError {
                    gfp: GFP_HIGHUSER_MOVABLE,
                    order: 0,
                });
            }
            let pa = alloc_pages(GFP_HIGHUSER_MOVABLE | Gfp::__GFP_ZERO, 0)?;
            // SAFETY: the page was just allocated for us and is direct
            // mapped; an aligned word inside it is written.
            unsafe { (page_address(pa) as *mut u64).write(0x00a9_9a9e ^ i as u64) };
            if let Err((pa, e)) = mem.pages.push(pa, GFP_KERNEL) {
                free_pages(pa, 0);
                return Err(e);
            }
            mem.charge.add(PAGE_SIZE as u64);
        }
        Ok(mem)
    }
}

impl Drop for AppMemory<'_> {
    fn drop(&mut self) {
        while let Some(pa) = self.pages.pop() {
            free_pages(pa, 0);
        }
    }
}

fn worker(sh: Arc<Shared>, index: u32, ops: u64) {
    let mut rng = Rng::new(sh.w.seed ^ 0x5eed ^ (index as u64) << 32);
    let Ok(mut buf) = retry_nomem(|| content_buffer(&sh.w)) else {
        sh.counters.errors.fetch_add(1, Ordering::Relaxed);
        sh.counters.workers_failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    // Room for the addresses of the application's pages, so that faulting
    // them in allocates nothing but the pages.
    let Ok(mut app_pages) = retry_nomem(|| {
        KVec::<PhysAddr>::with_capacity(sh.w.app_pages as usize, GFP_KERNEL)
            .map_err(|_| FsError::NoMemory)
    }) else {
        sh.counters.errors.fetch_add(1, Ordering::Relaxed);
        sh.counters.workers_failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    // The content buffer is what this worker holds: the OOM killer weighs
    // it (a process's RSS in Linux).
    let _charge = OomCharge::new(buf.capacity() as u64);
    let m = sh.w.mix;
    for _ in 0..ops {
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
        if task::fatal_signal_pending() {
            // Killed: exit cleanly, releasing the buffer and the charge.
            sh.counters
                .workers_oom_killed
                .fetch_add(1, Ordering::Relaxed);
            crate::println!("workload: {}: OOM-killed, exiting", task::current().name());
            return;
        }
        let roll = rng.below(100) as u8;
        let c = &sh.counters;
        let injected_before = injected_total();
        // The program's buffers for this operation, freed after it.
        let app = match AppMemory::fault_in(&mut app_pages, sh.w.app_pages) {
            Ok(app) => {
                c.app_pages_faulted
                    .fetch_add(sh.w.app_pages as u64, Ordering::Relaxed);
                app
            }
            Err(e) => {
                c.ops.fetch_add(1, Ordering::Relaxed);
                c.app_fault_failures.fetch_add(1, Ordering::Relaxed);
                count_failure(
                    c,
                    &OpError::AppMemory(e),
                    injected_before,
                    task::current().name(),
                );
                continue;
            }
        };
        let result: Result<(), OpError> = if roll < m.read {
            c.reads.fetch_add(1, Ordering::Relaxed);
            match claim(&sh, &mut rng, true) {
                Some((id, rec)) => {
                    let dir = &sh.dirs[dir_of(&sh.w, id) as usize];
                    let r = read_verify(&sh, dir, id, rec, &mut buf);
                    release(&sh, id, rec);
                    match r {
                        Ok(true) => Ok(()),
                        Ok(false) => {
                            c.mismatches.fetch_add(1, Ordering::Relaxed);
                            crate::println!("workload: file {id} read back wrong contents");
                            Ok(())
                        }
                        Err(e) => Err(e.into()),
                    }
                }
                None => Ok(()),
            }
        } else if roll < m.read + m.write {
            c.writes.fetch_add(1, Ordering::Relaxed);
            match claim(&sh, &mut rng, true) {
                Some((id, rec)) => rewrite(&sh, &mut rng, id, rec, &mut buf, false),
                None => Ok(()),
            }
        } else if roll < m.read + m.write + m.readdir {
            c.readdirs.fetch_add(1, Ordering::Relaxed);
            let d = rng.below(sh.dirs.len() as u64) as usize;
            let mut n = 0u32;
            sh.fs
                .readdir(&sh.dirs[d], &mut |_, _, _| n += 1)
                .map(|_| ())
                .map_err(OpError::from)
        } else if roll < m.read + m.write + m.readdir + m.unlink {
            c.unlinks.fetch_add(1, Ordering::Relaxed);
            match claim(&sh, &mut rng, true) {
                Some((id, rec)) => {
                    let dir = &sh.dirs[dir_of(&sh.w, id) as usize];
                    let r = sh.fs.unlink(dir, file_name(id).as_str());
                    // On failure the name may or may not be gone: stop verifying it.
                    release(
                        &sh,
                        id,
                        FileRec {
                            alive: false,
                            ..rec
                        },
                    );
                    r.map_err(OpError::from)
                }
                None => Ok(()),
            }
        } else {
            c.creates.fetch_add(1, Ordering::Relaxed);
            match claim(&sh, &mut rng, false) {
                Some((id, rec)) => rewrite(&sh, &mut rng, id, rec, &mut buf, true),
                None => Ok(()),
            }
        };
        drop(app);
        c.ops.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            count_failure(c, &e, injected_before, task::current().name());
        }
    }
}

/// Progress printing and the samples behind the chart, every `sample_ms=`;
/// with `format=json` each sample is also printed as it is taken (a line
/// per sample, tagged with its policy and time).
fn monitor(sh: Arc<Shared>, samples: Arc<Mutex<KVec<Sample>>>, t0: u64, live: bool) {
    let mut last_print = 0;
    let json = crate::json::json_mode();
    let v0 = crate::mm::vmscan::stats().snapshot();
    let sh0 = shrinker_totals();
    let period = Duration::from_millis(sh.w.sample_ms.max(1) as u64);
    while !sh.stop.load(Ordering::Relaxed) {
        let ms = (crate::time::now_ns() - t0) / 1_000_000;
        let ops = sh.counters.ops.load(Ordering::Relaxed);
        let free = crate::mm::page_alloc::nr_free_pages();
        let v = crate::mm::vmscan::stats().snapshot();
        let st = sh.fs.stats();
        let shr = shrinker_totals();
        let sample = Sample {
            ms,
            free_pages: free,
            ops,
            direct_pages: v.direct_pages.saturating_sub(v0.direct_pages),
            direct_runs: v.direct_runs.saturating_sub(v0.direct_runs),
            kswapd_pages: v.kswapd_pages.saturating_sub(v0.kswapd_pages),
            shrinker_calls: shr[0].saturating_sub(sh0[0]),
            shrinker_scanned: shr[1].saturating_sub(sh0[1]),
            shrinker_freed: shr[2].saturating_sub(sh0[2]),
            shrinker_stops: shr[3].saturating_sub(sh0[3]),
            inodes_cached: st.inodes_cached,
        };
        {
            // Growing is quiet and may fail: the chart then stops early,
            // the run and the JSON samples go on.
            let _ = samples.lock().push(sample, GFP_KERNEL | Gfp::__GFP_NOWARN);
        }
        if json {
            sample_json(sh.fs.policy().name, &sample);
        }
        if live && ms - last_print >= 1000 {
            last_print = ms;
            crate::println!(
                "[{:>4}.{}s] {:>7} ops | free {:>5} KiB | reclaim: direct {} pg, kswapd {} pg | inodes cached {} reclaimed {} | {} tasks",
                ms / 1000,
                ms % 1000 / 100,
                ops,
                free * 4,
                v.direct_pages,
                v.kswapd_pages,
                st.inodes_cached,
                st.inodes_reclaimed,
                sh.w.tasks,
            );
        }
        task::sleep(period);
    }
}

/// mkfs, mount, populate, run the operations on `w.tasks` tasks, then
/// unmount, remount and verify every surviving file against what the
/// filesystem acknowledged. Every allocation is fallible: set-up steps and
/// the verifier retry what failed for lack of memory; an operation that
/// fails is counted and the run goes on.
pub fn run(
    dev: &'static dyn BlockDevice,
    policy: Policy,
    w: Workload,
    live: bool,
) -> Result<RunResult, FsError> {
    let lockdep0 = crate::sync::lockdep::report_count();
    let deadlocks0 = task::deadlock::report_count();
    let (pa_injected0, slab_injected0) = (FAIL_PAGE_ALLOC.injected(), FAILSLAB.injected());
    retry_nomem(|| crate::fs::mkfs(dev, MkfsOptions::default()))?;
    let fs = retry_nomem(|| Fs::mount(dev, policy))?;
    let root = retry_nomem(|| fs.root())?;
    let ndirs = w.files.div_ceil(w.fanout);
    let mut dirs = Vec::new();
    retry_nomem(|| {
        dirs.try_reserve(ndirs as usize)
            .map_err(|_| FsError::NoMemory)
    })?;
    for d in 0..ndirs {
        let name = dir_name(d);
        // A create that failed part way may have added the name after all.
        let dir = retry_nomem(|| match fs.create(&root, name.as_str(), FileType::Dir) {
            Err(FsError::NameExists) => fs.lookup(&root, name.as_str())?.ok_or(FsError::NotFound),
            r => r,
        })?;
        dirs.push(dir);
    }
    drop(root);
    let mut table = retry_nomem(|| {
        KVec::with_capacity(w.files as usize, GFP_KERNEL).map_err(|_| FsError::NoMemory)
    })?;
    for _ in 0..w.files {
        let _ = table.push(FileRec::default(), GFP_KERNEL);
    }
    let sh = retry_arc(Shared {
        fs: fs.clone(),
        w,
        dirs,
        table: Mutex::new(table, crate::lock_class!("workload_table")),
        counters: RunCounters::default(),
        stop: AtomicBool::new(false),
    })?;
    // Populate: every file once; a failed file is counted and left to the
    // operations (a later create recreates it).
    let mut populate_errors = 0;
    {
        let mut buf = retry_nomem(|| content_buffer(&w))?;
        let mut rng = Rng::new(w.seed);
        for id in 0..w.files {
            let injected_before = injected_total();
            if let Err(e) = rewrite(&sh, &mut rng, id, FileRec::default(), &mut buf, true) {
                populate_errors += 1;
                count_failure(&sh.counters, &e, injected_before, "populate");
            }
        }
    }
    let populate_failed = sh.counters.errors.load(Ordering::Relaxed);
    if live {
        crate::println!(
            "workload: {} files in {} directories populated; running {} ops on {} tasks",
            w.files,
            ndirs,
            w.ops,
            w.tasks
        );
    }
    // Reclaim is measured over the operations, not the populate phase.
    let pa0 = crate::mm::page_alloc::stats().snapshot();
    let parts0 = crate::mm::memstall::snapshot();
    let v0 = crate::mm::vmscan::stats().snapshot();
    let fs0 = fs.stats();
    crate::mm::shrinker::reset_deferred_peak("xfs_inode");
    let t0 = crate::time::now_ns();
    let switches0: [u64; crate::platform::NR_CPUS] = core::array::from_fn(task::cpu_task_switches);
    // Room for the first SAMPLES_RESERVED samples, a non-costly allocation;
    // without it the chart is empty and the run goes on.
    let samples =
        KVec::with_capacity(SAMPLES_RESERVED, GFP_KERNEL | Gfp::__GFP_NOWARN).unwrap_or_default();
    let samples = retry_arc(Mutex::new(samples, crate::lock_class!("workload_samples")))?;
    let mon = retry_nomem(|| {
        let (sh, s) = (sh.clone(), samples.clone());
        task::spawn("monitor", move || monitor(sh, s, t0, live)).map_err(|_| FsError::NoMemory)
    })?;
    let mut workers = Vec::new();
    retry_nomem(|| {
        workers
            .try_reserve_exact(w.tasks as usize)
            .map_err(|_| FsError::NoMemory)
    })?;
    for i in 0..w.tasks {
        let share = w.ops / w.tasks as u64 + (i < (w.ops % w.tasks as u64) as u32) as u64;
        let spawned = retry_nomem(|| {
            let sh2 = sh.clone();
            task::spawn("fsworker", move || worker(sh2, i, share)).map_err(|_| FsError::NoMemory)
        });
        match spawned {
            Ok(h) => workers.push(h),
            Err(_) => {
                sh.counters.errors.fetch_add(1, Ordering::Relaxed);
                sh.counters.workers_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let mut deadlocked_workers = 0;
    let mut worker_cpus = 0;
    for h in workers {
        let t = h.task().clone();
        let joined = h.join();
        worker_cpus |= t.cpus_ran();
        if let Err(JoinError::Deadlocked) = joined {
            deadlocked_workers += 1;
        }
    }
    let elapsed_ns = crate::time::now_ns() - t0;
    let cpu_switches: [u64; crate::platform::NR_CPUS] =
        core::array::from_fn(|c| task::cpu_task_switches(c) - switches0[c]);
    sh.stop.store(true, Ordering::Relaxed);
    let _ = mon.join();
    let ops = sh.counters.ops.load(Ordering::Relaxed);
    let errors = sh.counters.errors.load(Ordering::Relaxed) - populate_failed;
    let short_writes = sh.counters.short_writes.load(Ordering::Relaxed);
    let injected_errors = sh.counters.injected_errors.load(Ordering::Relaxed);
    let workers_failed = sh.counters.workers_failed.load(Ordering::Relaxed);
    let workers_oom_killed = sh.counters.workers_oom_killed.load(Ordering::Relaxed);
    let app_pages_faulted = sh.counters.app_pages_faulted.load(Ordering::Relaxed);
    let app_fault_failures = sh.counters.app_fault_failures.load(Ordering::Relaxed);
    let fs_stats = fs.stats();
    let slabs = crate::mm::slab::try_slabinfo().unwrap_or_default();
    let shrinkers = crate::mm::shrinker::try_shrinkers().unwrap_or_default();
    let inode_shrinker_deferred = inode_deferred();
    let ops_phase = OpsPhase {
        inodes_scanned: fs_stats.inodes_scanned - fs0.inodes_scanned,
        inodes_reclaimed: fs_stats.inodes_reclaimed - fs0.inodes_reclaimed,
        shrinker_stops: fs_stats.shrinker_stops - fs0.shrinker_stops,
        direct_reclaim_log_forces: fs_stats.direct_reclaim_log_forces
            - fs0.direct_reclaim_log_forces,
        direct_reclaim_io_wait_ns: fs_stats.direct_reclaim_io_wait_ns
            - fs0.direct_reclaim_io_wait_ns,
    };

    // Verify after the caches were reclaimed: unmount, remount, read all.
    let mut integrity_ok = sh.counters.mismatches.load(Ordering::Relaxed) == 0;
    let mut detail = String::new();
    let mut verified = 0;
    if deadlocked_workers > 0 {
        detail = try_format(format_args!(
            "{deadlocked_workers} worker(s) deadlocked; filesystem left mounted"
        ))
        .unwrap_or_default();
    } else {
        // Moved out, not copied: a copy (24 bytes a file, 56 KiB for 2400)
        // is an order-4 allocation, which a fragmented small machine often
        // cannot serve after the run. The workers are done with it.
        let recs = core::mem::take(&mut *sh.table.lock());
        let fs_dirs = ndirs;
        drop(sh);
        retry_nomem(|| fs.unmount())?;
        if let Err(e) = retry_nomem(|| crate::fs::check(dev)) {
            integrity_ok = false;
            detail = try_format(format_args!("fsck after unmount: {e}")).unwrap_or_default();
        }
        let fs2 = retry_nomem(|| Fs::mount(dev, policy))?;
        let root = retry_nomem(|| fs2.root())?;
        let mut buf = retry_nomem(|| content_buffer(&w))?;
        let mut bad = 0;
        // The directories stay referenced until the check ends, as the
        // workers' do during the run: an unreferenced directory reclaimed
        // by a lookup's direct reclaim, which holds another directory's
        // ILOCK, would make the era's final blocking ILOCK report
        // "possible recursive locking" (Linux's lockdep prints it too) and
        // count it against the era being measured.
        let mut held_dirs = Vec::new();
        retry_nomem(|| {
            held_dirs
                .try_reserve_exact(fs_dirs as usize)
                .map_err(|_| FsError::NoMemory)
        })?;
        for d in 0..fs_dirs {
            let dir = retry_nomem(|| fs2.lookup(&root, dir_name(d).as_str()))?
                .ok_or(FsError::NotFound)?;
            for id in (d * w.fanout)..((d + 1) * w.fanout).min(w.files) {
                let rec = recs[id as usize];
                if !rec.alive {
                    continue;
                }
                match retry_nomem(|| fs2.lookup(&dir, file_name(id).as_str()))? {
                    Some(f) => {
                        let n = retry_nomem(|| fs2.read(&f, 0, &mut buf[..rec.size as usize + 1]))?;
                        if n == rec.size as usize && checksum(&buf[..n]) == rec.sum {
                            verified += 1;
                        } else {
                            bad += 1;
                            if bad <= 3 {
                                crate::println!(
                                    "verify: file {id}: {n} bytes, expected {} (checksum mismatch or size)",
                                    rec.size
                                );
                            }
                        }
                    }
                    None => {
                        bad += 1;
                        if bad <= 3 {
                            crate::println!("verify: file {id} is missing");
                        }
                    }
                }
            }
            held_dirs.push(dir);
        }
        drop(held_dirs);
        drop(root);
        retry_nomem(|| fs2.unmount())?;
        if bad > 0 {
            integrity_ok = false;
            detail =
                try_format(format_args!("{bad} files wrong after remount")).unwrap_or_default();
        } else if detail.is_empty() {
            detail = try_format(format_args!(
                "{verified} files verified after unmount, fsck and remount"
            ))
            .unwrap_or_default();
        }
    }
    let reports = crate::sync::lockdep::try_reports_since(lockdep0).unwrap_or_default();
    let first = reports
        .first()
        .and_then(|r| crate::mm::global_alloc::try_string(&r.text).ok());
    let ilock_fs = reports.iter().any(|r| {
        r.classes.iter().any(|c| c.ends_with("_ilock")) && r.classes.contains(&"fs_reclaim")
    });
    let pa1 = crate::mm::page_alloc::stats().snapshot();
    let parts1 = crate::mm::memstall::snapshot();
    let v1 = crate::mm::vmscan::stats().snapshot();
    let samples = try_to_vec(&samples.lock()).unwrap_or_default();
    Ok(RunResult {
        worker_cpus,
        cpu_switches,
        policy,
        ops,
        ops_requested: w.ops,
        workers_failed,
        workers_oom_killed,
        app_pages_faulted,
        app_fault_failures,
        elapsed_ns,
        errors,
        short_writes,
        populate_errors,
        injected_errors,
        injected_page_alloc: FAIL_PAGE_ALLOC.injected() - pa_injected0,
        injected_slab: FAILSLAB.injected() - slab_injected0,
        deadlocks: task::deadlock::report_count() - deadlocks0,
        lockdep_reports: reports.len(),
        first_lockdep_report: first,
        lockdep_ilock_fs_reclaim: ilock_fs,
        files_verified: verified,
        integrity_ok,
        integrity_detail: detail,
        fs: fs_stats,
        slabs,
        shrinkers,
        samples,
        inode_shrinker_deferred,
        ops_phase,
        alloc_failures: pa1.failures - pa0.failures,
        alloc_stalls: pa1.alloc_stalls - pa0.alloc_stalls,
        stall_ns: pa1.stall_ns - pa0.stall_ns,
        stall_parts: parts1.since(&parts0),
        direct_pages: v1.direct_pages - v0.direct_pages,
        kswapd_pages: v1.kswapd_pages - v0.kswapd_pages,
    })
}

/// Where free memory stands against the watermarks: `above_high`,
/// `between` (low..=high), `below_low`, `below_min`.
pub fn watermark_state(free: u64, w: &crate::mm::zone::Watermarks) -> &'static str {
    if free < w.min {
        "below_min"
    } else if free < w.low {
        "below_low"
    } else if free > w.high {
        "above_high"
    } else {
        "between"
    }
}

/// One `{"kind":"sample",...}` line of the time series, printed by the
/// workload's monitor as it takes the sample.
pub fn sample_json(policy: &str, s: &Sample) {
    let w = crate::mm::page_alloc::watermarks();
    crate::json::json_line(|j| {
        j.begin_object()
            .field_str("kind", "sample")
            .field_str("policy", policy)
            .field_u64("ms", s.ms)
            .field_u64("ops", s.ops)
            .field_u64("free_pages", s.free_pages)
            .field_str("watermark", watermark_state(s.free_pages, &w))
            .field_u64("direct_reclaim_pages", s.direct_pages)
            .field_u64("direct_reclaim_runs", s.direct_runs)
            .field_u64("kswapd_pages", s.kswapd_pages)
            .field_u64("shrinker_calls", s.shrinker_calls)
            .field_u64("shrinker_scanned", s.shrinker_scanned)
            .field_u64("shrinker_freed", s.shrinker_freed)
            .field_u64("shrinker_stops", s.shrinker_stops)
            .field_u64("inodes_cached", s.inodes_cached)
            .end_object();
    });
}
