//! Running a workload: populate, operate on many tasks, verify.

use super::{Rng, Workload, checksum, fill_content};
use crate::fs::format::FileType;
use crate::fs::policy::Policy;
use crate::fs::{BlockDevice, Fs, FsError, InodeRef, MkfsOptions};
use crate::mm::gfp::GFP_KERNEL;
use crate::mm::slab::kmalloc::KVec;
use crate::sync::Mutex;
use crate::task::{self, JoinError};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
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

fn dir_name(d: u32) -> String {
    format!("d{d:04}")
}

fn file_name(id: u32) -> String {
    format!("f{id:06}")
}

/// Counters of one run.
#[derive(Default)]
pub struct RunCounters {
    pub ops: AtomicU64,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub readdirs: AtomicU64,
    pub unlinks: AtomicU64,
    pub creates: AtomicU64,
    pub errors: AtomicU64,
    pub mismatches: AtomicU64,
    /// Workers that never ran their share: no task, or no content buffer.
    pub workers_failed: AtomicU64,
}

/// One sample of the free-memory chart.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub ms: u64,
    pub free_pages: u64,
    pub ops: u64,
}

/// The outcome of one workload run under one policy.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub policy: Policy,
    pub ops: u64,
    /// Operations asked for (`ops=`): fewer ran if workers failed to start.
    pub ops_requested: u64,
    /// Worker tasks (of `tasks=`) that could not start or get their buffer.
    pub workers_failed: u64,
    pub elapsed_ns: u64,
    pub errors: u64,
    pub deadlocks: usize,
    pub lockdep_reports: usize,
    pub first_lockdep_report: Option<String>,
    pub lockdep_ilock_fs_reclaim: bool,
    pub files_verified: u64,
    pub integrity_ok: bool,
    pub integrity_detail: String,
    pub fs: crate::fs::FsStats,
    /// slabinfo and shrinkers as they were at the end of the run (before
    /// unmount destroyed the filesystem's caches).
    pub slabs: Vec<crate::mm::slab::SlabInfo>,
    pub shrinkers: Vec<crate::mm::shrinker::ShrinkerInfo>,
    pub samples: Vec<Sample>,
    /// Work the inode shrinker deferred during the operations
    /// (do_shrink_slab's nr_deferred additions, summed).
    pub inode_shrinker_deferred: u64,
    /// Inode-shrinker figures of the operations phase (populate excluded).
    pub ops_phase: OpsPhase,
    pub alloc_failures: u64,
    pub alloc_stalls: u64,
    pub stall_ns: u64,
    pub direct_pages: u64,
    pub kswapd_pages: u64,
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
    pub inodes_scanned: u64,
    pub inodes_reclaimed: u64,
    pub shrinker_stops: u64,
}

fn inode_deferred() -> u64 {
    crate::mm::shrinker::shrinkers()
        .iter()
        .filter(|s| s.name == "xfs_inode")
        .map(|s| s.deferred)
        .sum()
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

fn write_file(
    sh: &Shared,
    dir: &InodeRef,
    id: u32,
    gen_: u32,
    size: u32,
    buf: &mut [u8],
    create: bool,
) -> Result<u64, FsError> {
    let data = &mut buf[..size as usize];
    fill_content(sh.w.seed, id, gen_, data);
    let name = file_name(id);
    let f = if create {
        sh.fs.create(dir, &name, FileType::File)?
    } else {
        sh.fs.lookup(dir, &name)?.ok_or(FsError::NotFound)?
    };
    sh.fs.truncate(&f, 0)?;
    sh.fs.write(&f, 0, data)?;
    Ok(checksum(data))
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
        .lookup(dir, &file_name(id))?
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
/// records its checksum; on failure the file is no longer verified, since
/// its contents are unknown.
fn rewrite(
    sh: &Shared,
    rng: &mut Rng,
    id: u32,
    rec: FileRec,
    buf: &mut [u8],
    create: bool,
) -> Result<(), FsError> {
    let dir = &sh.dirs[dir_of(&sh.w, id) as usize];
    let size = sh.w.size_min + rng.below((sh.w.size_max - sh.w.size_min + 1) as u64) as u32;
    let gen_ = rec.gen_ + 1;
    if create {
        // A failed unlink earlier may have left the name behind.
        let _ = sh.fs.unlink(dir, &file_name(id));
    }
    match write_file(sh, dir, id, gen_, size, buf, create) {
        Ok(sum) => {
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
            Ok(())
        }
        Err(e) => {
            release(
                sh,
                id,
                FileRec {
                    alive: false,
                    ..rec
                },
            );
            Err(e)
        }
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

fn worker(sh: Arc<Shared>, index: u32, ops: u64) {
    let mut rng = Rng::new(sh.w.seed ^ 0x5eed ^ (index as u64) << 32);
    let Ok(mut buf) = content_buffer(&sh.w) else {
        sh.counters.errors.fetch_add(1, Ordering::Relaxed);
        sh.counters.workers_failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let m = sh.w.mix;
    for _ in 0..ops {
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
        let roll = rng.below(100) as u8;
        let c = &sh.counters;
        let result: Result<(), FsError> = if roll < m.read {
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
                        Err(e) => Err(e),
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
        } else if roll < m.read + m.write + m.readdir + m.unlink {
            c.unlinks.fetch_add(1, Ordering::Relaxed);
            match claim(&sh, &mut rng, true) {
                Some((id, rec)) => {
                    let dir = &sh.dirs[dir_of(&sh.w, id) as usize];
                    let r = sh.fs.unlink(dir, &file_name(id));
                    // On failure the name may or may not be gone: stop verifying it.
                    release(
                        &sh,
                        id,
                        FileRec {
                            alive: false,
                            ..rec
                        },
                    );
                    r
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
        c.ops.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            let n = c.errors.fetch_add(1, Ordering::Relaxed);
            if n < 5 {
                crate::println!("workload: task {index}: operation failed: {e}");
            }
        }
    }
}

/// Progress printing and the free-memory samples behind the chart.
fn monitor(sh: Arc<Shared>, samples: Arc<Mutex<Vec<Sample>>>, t0: u64, live: bool) {
    let mut last_print = 0;
    while !sh.stop.load(Ordering::Relaxed) {
        let ms = (crate::time::now_ns() - t0) / 1_000_000;
        let ops = sh.counters.ops.load(Ordering::Relaxed);
        let free = crate::mm::page_alloc::nr_free_pages();
        {
            let mut s = samples.lock();
            if s.len() < s.capacity() {
                s.push(Sample {
                    ms,
                    free_pages: free,
                    ops,
                });
            }
        }
        if live && ms - last_print >= 1000 {
            last_print = ms;
            let v = crate::mm::vmscan::stats().snapshot();
            let st = sh.fs.stats();
            crate::println!(
                "[{:>4}.{}s] {:>7} ops | free {:>5} KiB | reclaim: direct {} pg, kswapd {} pg | inodes cached {} reclaimed {} | {}",
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
        task::sleep(Duration::from_millis(50));
    }
}

/// mkfs, mount, populate, run the operations on `w.tasks` tasks, then
/// unmount, remount and verify every surviving file.
pub fn run(
    dev: &'static dyn BlockDevice,
    policy: Policy,
    w: Workload,
    live: bool,
) -> Result<RunResult, FsError> {
    let lockdep0 = crate::sync::lockdep::report_count();
    let deadlocks0 = task::deadlock::report_count();
    crate::fs::mkfs(dev, MkfsOptions::default())?;
    let fs = Fs::mount(dev, policy)?;
    let root = fs.root()?;
    let ndirs = w.files.div_ceil(w.fanout);
    let mut dirs = Vec::new();
    dirs.try_reserve(ndirs as usize)
        .map_err(|_| FsError::NoMemory)?;
    for d in 0..ndirs {
        dirs.push(fs.create(&root, &dir_name(d), FileType::Dir)?);
    }
    drop(root);
    let mut table =
        KVec::with_capacity(w.files as usize, GFP_KERNEL).map_err(|_| FsError::NoMemory)?;
    for _ in 0..w.files {
        let _ = table.push(FileRec::default(), GFP_KERNEL);
    }
    let sh = Arc::new(Shared {
        fs: fs.clone(),
        w,
        dirs,
        table: Mutex::new(table, crate::lock_class!("workload_table")),
        counters: RunCounters::default(),
        stop: AtomicBool::new(false),
    });
    // Populate: every file once.
    {
        let mut buf = content_buffer(&w)?;
        let mut rng = Rng::new(w.seed);
        for id in 0..w.files {
            let size = w.size_min + rng.below((w.size_max - w.size_min + 1) as u64) as u32;
            let dir = &sh.dirs[dir_of(&w, id) as usize];
            let sum = write_file(&sh, dir, id, 1, size, &mut buf, true)?;
            sh.table.lock()[id as usize] = FileRec {
                alive: true,
                busy: false,
                gen_: 1,
                size,
                sum,
            };
        }
    }
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
    let v0 = crate::mm::vmscan::stats().snapshot();
    let fs0 = fs.stats();
    let deferred0 = inode_deferred();
    let t0 = crate::time::now_ns();
    let mut samples = Vec::new();
    let _ = samples.try_reserve(4096);
    let samples = Arc::new(Mutex::new(samples, crate::lock_class!("workload_samples")));
    let mon = {
        let (sh, s) = (sh.clone(), samples.clone());
        task::spawn("monitor", move || monitor(sh, s, t0, live)).map_err(|_| FsError::NoMemory)?
    };
    let mut workers = Vec::new();
    for i in 0..w.tasks {
        let share = w.ops / w.tasks as u64 + (i < (w.ops % w.tasks as u64) as u32) as u64;
        let sh2 = sh.clone();
        match task::spawn("fsworker", move || worker(sh2, i, share)) {
            Ok(h) => workers.push(h),
            Err(_) => {
                sh.counters.errors.fetch_add(1, Ordering::Relaxed);
                sh.counters.workers_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let mut deadlocked_workers = 0;
    for h in workers {
        if let Err(JoinError::Deadlocked) = h.join() {
            deadlocked_workers += 1;
        }
    }
    let elapsed_ns = crate::time::now_ns() - t0;
    sh.stop.store(true, Ordering::Relaxed);
    let _ = mon.join();
    let ops = sh.counters.ops.load(Ordering::Relaxed);
    let errors = sh.counters.errors.load(Ordering::Relaxed);
    let workers_failed = sh.counters.workers_failed.load(Ordering::Relaxed);
    let fs_stats = fs.stats();
    let slabs = crate::mm::slab::slabinfo();
    let shrinkers = crate::mm::shrinker::shrinkers();
    let inode_shrinker_deferred = inode_deferred() - deferred0;
    let ops_phase = OpsPhase {
        inodes_scanned: fs_stats.inodes_scanned - fs0.inodes_scanned,
        inodes_reclaimed: fs_stats.inodes_reclaimed - fs0.inodes_reclaimed,
        shrinker_stops: fs_stats.shrinker_stops - fs0.shrinker_stops,
    };

    // Verify after the caches were reclaimed: unmount, remount, read all.
    let mut integrity_ok = sh.counters.mismatches.load(Ordering::Relaxed) == 0;
    let mut detail = String::new();
    let mut verified = 0;
    if deadlocked_workers > 0 {
        detail = format!("{deadlocked_workers} worker(s) deadlocked; filesystem left mounted");
    } else {
        let recs: Vec<FileRec> = sh.table.lock().iter().copied().collect();
        let fs_dirs = ndirs;
        drop(sh);
        fs.unmount()?;
        match crate::fs::check(dev) {
            Ok(_) => {}
            Err(e) => {
                integrity_ok = false;
                detail = format!("fsck after unmount: {e}");
            }
        }
        let fs2 = Fs::mount(dev, policy)?;
        let root = fs2.root()?;
        let mut buf = content_buffer(&w)?;
        let mut bad = 0;
        for d in 0..fs_dirs {
            let dir = fs2.lookup(&root, &dir_name(d))?.ok_or(FsError::NotFound)?;
            for id in (d * w.fanout)..((d + 1) * w.fanout).min(w.files) {
                let rec = recs[id as usize];
                let found = fs2.lookup(&dir, &file_name(id))?;
                match (rec.alive, found) {
                    (true, Some(f)) => {
                        let n = fs2.read(&f, 0, &mut buf[..rec.size as usize + 1])?;
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
                    (true, None) => {
                        bad += 1;
                        if bad <= 3 {
                            crate::println!("verify: file {id} is missing");
                        }
                    }
                    (false, _) => {}
                }
            }
        }
        drop(root);
        fs2.unmount()?;
        if bad > 0 {
            integrity_ok = false;
            detail = format!("{bad} files wrong after remount");
        } else if detail.is_empty() {
            detail = format!("{verified} files verified after unmount, fsck and remount");
        }
    }
    let reports = crate::sync::lockdep::reports_since(lockdep0);
    let first = reports.first().map(|r| r.text.clone());
    let ilock_fs = reports
        .iter()
        .any(|r| r.classes.contains(&"xfs_ilock") && r.classes.contains(&"fs_reclaim"));
    let pa1 = crate::mm::page_alloc::stats().snapshot();
    let v1 = crate::mm::vmscan::stats().snapshot();
    let samples = samples.lock().clone();
    Ok(RunResult {
        policy,
        ops,
        ops_requested: w.ops,
        workers_failed,
        elapsed_ns,
        errors,
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
        direct_pages: v1.direct_pages - v0.direct_pages,
        kswapd_pages: v1.kswapd_pages - v0.kswapd_pages,
    })
}
