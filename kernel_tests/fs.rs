//! The in-memory filesystem under a small `mem=`: operations, remount and
//! fsck; heavy reclaim of the inode and buffer caches; the reclaim policies
//! and what lockdep says about each; IO errors during writeback; and the
//! `broken` policy's real deadlock.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use core::time::Duration;
use kreclaim::fs::format::{INODES_PER_CLUSTER, ino_to_agino, ino_to_cluster_block};
use kreclaim::fs::{
    ErrorInjection, FileType, Fs, FsError, InodeRef, MkfsOptions, Policy, RamDisk, check, mkfs,
};
use kreclaim::harness::TestResult;
use kreclaim::mm::fault_inject::{FAIL_PAGE_ALLOC, FAILSLAB, FaultAttr};
use kreclaim::mm::gfp::GFP_KERNEL;
use kreclaim::mm::global_alloc::{try_arc, try_box, try_format};
use kreclaim::mm::scope::MemallocScope;
use kreclaim::sync::lockdep;
use kreclaim::task::{self, JoinError};
use kreclaim::{kassert, kassert_eq};

kreclaim::kernel_tests!(
    cmdline = "mem=24M ramdisk=48M";
    operations_round_trip_and_survive_remount,
    heavy_reclaim_keeps_every_byte,
    trylock_reclaims_during_operations_and_stops_in_transactions,
    lockdep_sees_the_seed_report_only_under_kernel,
    writeback_io_error_keeps_the_inode_dirty,
    workload_records_short_writes_as_acknowledged,
    failslab_on_the_workload_paths_does_not_panic,
    fallible_constructors_fail_under_failslab,
    broken_policy_deadlocks_for_real,
);

fn dev() -> &'static RamDisk {
    kreclaim::arch::x86_64::boot_ramdisk().expect("no RAM disk: ramdisk= missing")
}

/// A mounted filesystem that is shut down when the test case ends, so a
/// failed case (which never unmounts) cannot write into the next one's disk.
struct Mounted(Arc<Fs>);

impl core::ops::Deref for Mounted {
    type Target = Arc<Fs>;
    fn deref(&self) -> &Arc<Fs> {
        &self.0
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.0.force_shutdown();
    }
}

/// mkfs the boot RAM disk and mount it with `policy`.
fn fresh(policy: Policy) -> Result<Mounted, String> {
    let d = dev();
    d.clear_injection();
    mkfs(d, MkfsOptions::default()).map_err(|e| format!("mkfs: {e}"))?;
    mount(policy)
}

fn mount(policy: Policy) -> Result<Mounted, String> {
    Fs::mount(dev(), policy)
        .map(Mounted)
        .map_err(|e| format!("mount: {e}"))
}

macro_rules! ok {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                kassert!(false, "{} failed: {:?}", stringify!($e), e);
                unreachable!()
            }
        }
    };
}

fn fsck_clean() -> TestResult {
    let r = check(dev());
    kassert!(r.is_ok(), "fsck: {:?}", r.err());
    Ok(())
}

/// Deterministic file contents from (seed, dir, file).
fn content(seed: u64, d: u32, f: u32, len: usize) -> Vec<u8> {
    let mut x = seed ^ (u64::from(d) << 32 | u64::from(f)).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes()[..(len - v.len()).min(8)]);
    }
    v
}

fn file_len(d: u32, f: u32) -> usize {
    // 1 to 4 blocks, not block-aligned.
    1000 + ((d * 31 + f * 17) % 4) as usize * 4096 + (f as usize * 7) % 3000
}

/// Creates `dirs` directories `d<k>` in the root with `files` files each.
fn populate(fs: &Fs, seed: u64, dirs: core::ops::Range<u32>, files: u32) -> Result<(), String> {
    let root = fs.root().map_err(|e| format!("root: {e}"))?;
    for d in dirs {
        let name = format!("d{d}");
        let dir = match fs
            .lookup(&root, &name)
            .map_err(|e| format!("lookup {name}: {e}"))?
        {
            Some(i) => i,
            None => fs
                .create(&root, &name, FileType::Dir)
                .map_err(|e| format!("mkdir {name}: {e}"))?,
        };
        for f in 0..files {
            let fname = format!("f{f}");
            let ino = fs
                .create(&dir, &fname, FileType::File)
                .map_err(|e| format!("create {name}/{fname}: {e}"))?;
            let data = content(seed, d, f, file_len(d, f));
            let n = fs
                .write(&ino, 0, &data)
                .map_err(|e| format!("write {name}/{fname}: {e}"))?;
            if n != data.len() {
                return Err(format!("short write {n} of {}", data.len()));
            }
        }
    }
    Ok(())
}

/// Reads every file back (through lookup) and compares.
fn verify(fs: &Fs, seed: u64, dirs: core::ops::Range<u32>, files: u32) -> Result<(), String> {
    let root = fs.root().map_err(|e| format!("root: {e}"))?;
    let mut buf = vec![0u8; 4 * 4096];
    for d in dirs {
        let name = format!("d{d}");
        let dir = fs
            .lookup(&root, &name)
            .map_err(|e| format!("lookup {name}: {e}"))?
            .ok_or(format!("{name} missing"))?;
        for f in 0..files {
            let fname = format!("f{f}");
            let ino = fs
                .lookup(&dir, &fname)
                .map_err(|e| format!("lookup {name}/{fname}: {e}"))?
                .ok_or(format!("{name}/{fname} missing"))?;
            let want = content(seed, d, f, file_len(d, f));
            let st = fs.stat(&ino).map_err(|e| format!("stat: {e}"))?;
            if st.size != want.len() as u64 {
                return Err(format!(
                    "{name}/{fname}: size {} != {}",
                    st.size,
                    want.len()
                ));
            }
            let n = fs
                .read(&ino, 0, &mut buf)
                .map_err(|e| format!("read {name}/{fname}: {e}"))?;
            if n != want.len() || buf[..n] != want[..] {
                return Err(format!("{name}/{fname}: content differs ({n} bytes read)"));
            }
        }
    }
    Ok(())
}

fn operations_round_trip_and_survive_remount() -> TestResult {
    let fs = ok!(fresh(Policy::TRYLOCK));
    let root = ok!(fs.root());
    kassert_eq!(root.ino(), 1);
    let sub = ok!(fs.create(&root, "sub", FileType::Dir));
    let a = ok!(fs.create(&root, "a", FileType::File));
    let b = ok!(fs.create(&sub, "b", FileType::File));
    kassert_eq!(
        fs.create(&root, "a", FileType::File).err(),
        Some(FsError::NameExists)
    );
    // Data: direct blocks, an indirect block, a hole.
    let big = content(7, 0, 0, 50 * 4096 + 123);
    kassert_eq!(ok!(fs.write(&a, 0, &big)), big.len());
    kassert_eq!(ok!(fs.write(&b, 10_000, b"hello")), 5);
    let mut buf = vec![0u8; big.len() + 100];
    kassert_eq!(ok!(fs.read(&a, 0, &mut buf)), big.len());
    kassert!(buf[..big.len()] == big[..]);
    let mut small = [0xffu8; 10_005];
    kassert_eq!(ok!(fs.read(&b, 0, &mut small)), 10_005);
    kassert!(small[..10_000].iter().all(|&c| c == 0), "hole not zero");
    kassert!(&small[10_000..] == b"hello");
    // stat, lookup, readdir.
    let st = ok!(fs.stat(&a));
    kassert_eq!(st.size, big.len() as u64);
    kassert_eq!(st.nlink, 1);
    kassert_eq!(st.ftype, FileType::File);
    kassert_eq!(
        st.nblocks,
        51 + 1,
        "50 direct+indirect data blocks and the indirect block"
    );
    kassert_eq!(
        ok!(fs.lookup(&root, "sub")).map(|i| i.ino()),
        Some(sub.ino())
    );
    kassert!(ok!(fs.lookup(&root, "nope")).is_none());
    let mut names = Vec::new();
    let n = ok!(fs.readdir(&root, &mut |name, ino, t| names.push((
        String::from(name),
        ino,
        t
    ))));
    kassert_eq!(n, 2);
    kassert!(names.contains(&(String::from("a"), a.ino(), FileType::File)));
    kassert!(names.contains(&(String::from("sub"), sub.ino(), FileType::Dir)));
    // truncate down (frees the indirect block), then up (zeros).
    ok!(fs.truncate(&a, 5000));
    kassert_eq!(ok!(fs.stat(&a)).nblocks, 2);
    ok!(fs.truncate(&a, 9000));
    let mut t = vec![0xffu8; 9000];
    kassert_eq!(ok!(fs.read(&a, 0, &mut t)), 9000);
    kassert!(t[..5000] == big[..5000]);
    kassert!(t[5000..].iter().all(|&c| c == 0), "truncated tail not zero");
    // unlink: a non-empty directory refuses; a file goes away.
    kassert_eq!(
        fs.unlink(&root, "sub").err(),
        Some(FsError::DirNotEmpty { ino: sub.ino() })
    );
    let c = ok!(fs.create(&root, "c", FileType::File));
    ok!(fs.write(&c, 0, &[1u8; 20_000]));
    let c_ino = c.ino();
    drop(c);
    ok!(fs.unlink(&root, "c"));
    kassert!(ok!(fs.lookup(&root, "c")).is_none());
    kassert_eq!(
        fs.iget(c_ino).err(),
        Some(FsError::InodeNotAllocated { ino: c_ino })
    );
    kassert!(fs.stats().inactivations >= 1);
    // An unlinked but still referenced inode lives until its last reference.
    let e = ok!(fs.create(&root, "e", FileType::File));
    ok!(fs.write(&e, 0, b"still here"));
    ok!(fs.unlink(&root, "e"));
    let mut s = [0u8; 10];
    kassert_eq!(ok!(fs.read(&e, 0, &mut s)), 10);
    kassert!(&s == b"still here");
    kassert_eq!(ok!(fs.stat(&e)).nlink, 0);
    drop(e);
    // Unmount refuses while references exist.
    kassert!(matches!(fs.unmount(), Err(FsError::Busy { .. })));
    let (a_ino, b_ino) = (a.ino(), b.ino());
    drop((root, sub, a, b));
    ok!(fs.unmount());
    kassert!(matches!(fs.root(), Err(FsError::Shutdown)));
    fsck_clean()?;
    // Remount: the same content.
    let fs = ok!(mount(Policy::TRYLOCK));
    let root = ok!(fs.root());
    let a = ok!(ok!(fs.lookup(&root, "a")).ok_or("a missing"));
    kassert_eq!(a.ino(), a_ino);
    let mut t2 = vec![0u8; 9000];
    kassert_eq!(ok!(fs.read(&a, 0, &mut t2)), 9000);
    kassert!(t2 == t);
    let sub = ok!(ok!(fs.lookup(&root, "sub")).ok_or("sub missing"));
    let b = ok!(ok!(fs.lookup(&sub, "b")).ok_or("b missing"));
    kassert_eq!(b.ino(), b_ino);
    let mut small2 = [0u8; 10_005];
    kassert_eq!(ok!(fs.read(&b, 0, &mut small2)), 10_005);
    kassert!(small2 == small);
    kassert!(ok!(fs.lookup(&root, "e")).is_none());
    drop((root, sub, a, b));
    ok!(fs.unmount());
    fsck_clean()
}

fn heavy_reclaim_keeps_every_byte() -> TestResult {
    const SEED: u64 = 0x5eed_0001;
    const DIRS: u32 = 32;
    const FILES: u32 = 100;
    let fs = ok!(fresh(Policy::TRYLOCK));
    ok!(populate(&fs, SEED, 0..DIRS, FILES));
    let s = fs.stats();
    let slab = fs.inode_slab_info();
    let created = u64::from(DIRS * FILES + DIRS);
    kassert!(s.inodes_reclaimed > 0, "no inode was reclaimed: {s:?}");
    kassert!(s.buffers_reclaimed > 0, "no buffer was reclaimed: {s:?}");
    kassert!(
        (slab.active_objs as u64) < created,
        "xfs_inode slab did not shrink: {} objects for {created} inodes",
        slab.active_objs
    );
    ok!(verify(&fs, SEED, 0..DIRS, FILES));
    let s2 = fs.stats();
    kassert!(s2.inode_reads > s.inode_reads, "no inode was read back");
    ok!(fs.unmount());
    fsck_clean()?;
    let fs = ok!(mount(Policy::TRYLOCK));
    ok!(verify(&fs, SEED, 0..DIRS, FILES));
    ok!(fs.unmount());
    fsck_clean()
}

fn trylock_reclaims_during_operations_and_stops_in_transactions() -> TestResult {
    const SEED: u64 = 0x5eed_0002;
    let fs = ok!(fresh(Policy::TRYLOCK));
    let done = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(AtomicU32::new(0));
    let (f2, d2, s2) = (fs.clone(), done.clone(), samples.clone());
    // Sample inodes_reclaimed while the writer runs.
    let sampler = task::spawn("sampler", move || {
        let mut last = f2.stats().inodes_reclaimed;
        while !d2.load(Ordering::Acquire) {
            task::sleep(Duration::from_millis(5));
            let now = f2.stats().inodes_reclaimed;
            if now > last {
                s2.fetch_add(1, Ordering::Relaxed);
            }
            last = now;
        }
    })
    .unwrap();
    let r = populate(&fs, SEED, 0..32, 100);
    done.store(true, Ordering::Release);
    kassert!(sampler.join().is_ok());
    ok!(r);
    let s = fs.stats();
    kassert!(
        samples.load(Ordering::Relaxed) >= 2,
        "inodes_reclaimed grew in only {} samples: {s:?}",
        samples.load(Ordering::Relaxed)
    );
    // Under `trylock` only transactions run without __GFP_FS, so every STOP
    // here came from reclaim entered inside a transaction.
    kassert!(s.shrinker_stops > 0, "no STOP from a transaction: {s:?}");
    kassert_eq!(s.inodes_requeued_locked + s.inodes_reclaimed > 0, true);
    // And deterministically: inside a NOFS scope, the shrinker refuses.
    let stops = fs.stats().shrinker_stops;
    let freed = {
        let _nofs = MemallocScope::nofs();
        fs.shrink_inode_cache(GFP_KERNEL, 0)
    };
    kassert_eq!(freed, 0);
    kassert!(fs.stats().shrinker_stops > stops);
    // Outside it, the same call frees inodes.
    kassert!(fs.shrink_inode_cache(GFP_KERNEL, 0) > 0 || fs.stats().inodes_reclaimable == 0);
    ok!(verify(&fs, SEED, 0..32, 100));
    ok!(fs.unmount());
    fsck_clean()
}

/// Writers fill memory while readers walk big directories (readdir and
/// lookup hold ILOCK and allocate buffers for uncached directory blocks).
fn contended_workload(fs: &Arc<Fs>, seed: u64) -> Result<(), String> {
    const DIRS: u32 = 8;
    const FILES: u32 = 400;
    let root = fs.root().map_err(|e| format!("{e}"))?;
    for d in 0..DIRS {
        fs.create(&root, &format!("d{d}"), FileType::Dir)
            .map_err(|e| format!("mkdir: {e}"))?;
    }
    drop(root);
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2u32 {
        let f = fs.clone();
        writers.push(
            task::spawn("fs-writer", move || {
                if let Err(e) = populate(&f, seed, w * DIRS / 2..(w + 1) * DIRS / 2, FILES) {
                    kreclaim::println!("writer {w}: {e}");
                    panic!("writer failed");
                }
            })
            .unwrap(),
        );
    }
    let mut readers = Vec::new();
    for r in 0..2u32 {
        let (f, s) = (fs.clone(), stop.clone());
        readers.push(
            task::spawn("fs-reader", move || {
                let root = f.root().unwrap();
                let mut i = r;
                while !s.load(Ordering::Acquire) {
                    let d = i % DIRS;
                    i += 1;
                    let Ok(Some(dir)) = f.lookup(&root, &format!("d{d}")) else {
                        continue;
                    };
                    let mut names: Vec<String> = Vec::new();
                    let _ = f.readdir(&dir, &mut |n, _, _| names.push(String::from(n)));
                    for n in names.iter().step_by(37) {
                        let _ = f.lookup(&dir, n);
                    }
                    task::sleep(Duration::from_millis(2));
                }
            })
            .unwrap(),
        );
    }
    let mut res = Ok(());
    for w in writers {
        if w.join().is_err() {
            res = Err(String::from("writer deadlocked"));
        }
    }
    stop.store(true, Ordering::Release);
    for r in readers {
        if r.join().is_err() {
            res = Err(String::from("reader deadlocked"));
        }
    }
    res?;
    verify(fs, seed, 0..DIRS, FILES)
}

fn ilock_reports_since(n: usize) -> Vec<lockdep::LockdepReport> {
    lockdep::reports_since(n)
        .into_iter()
        .filter(|r| r.classes.contains(&"xfs_ilock"))
        .collect()
}

fn lockdep_sees_the_seed_report_only_under_kernel() -> TestResult {
    for (i, policy) in [Policy::KERNEL, Policy::TRYLOCK, Policy::NOLOCKDEP]
        .into_iter()
        .enumerate()
    {
        lockdep::reset_graph();
        let before = lockdep::report_count();
        let fs = ok!(fresh(policy));
        let r = contended_workload(&fs, 0x5eed_0100 + i as u64);
        let s = fs.stats();
        kreclaim::println!("policy {policy}: {s:?}");
        kassert!(r.is_ok(), "policy {policy}: {}", r.unwrap_err());
        kassert!(
            s.buffers_reclaimed > 0,
            "policy {policy}: no memory pressure"
        );
        ok!(fs.unmount());
        fsck_clean()?;
        let reps = ilock_reports_since(before);
        if policy == Policy::KERNEL {
            kassert!(
                reps.iter()
                    .any(|r| r.kind == lockdep::ReportKind::CircularDependency
                        && r.classes.contains(&"fs_reclaim")),
                "kernel: no xfs_ilock/fs_reclaim cycle reported ({} reports)",
                reps.len()
            );
        } else {
            kassert!(
                reps.is_empty(),
                "policy {policy}: lockdep reported xfs_ilock: {:?} {:?}\n{}",
                reps[0].kind,
                reps[0].classes,
                reps[0].text
            );
        }
    }
    Ok(())
}

fn writeback_io_error_keeps_the_inode_dirty() -> TestResult {
    let fs = ok!(fresh(Policy::TRYLOCK));
    let root = ok!(fs.root());
    ok!(fs.sync());
    let f = ok!(fs.create(&root, "victim", FileType::File));
    let data = content(3, 0, 0, 12_345);
    ok!(fs.write(&f, 0, &data));
    let ino = f.ino();
    let blk = ino_to_cluster_block(&fs.superblock().geometry, ino);
    // Fail every write of the victim's cluster block, then let writeback
    // (the flusher, then sync) try.
    dev().inject_write_errors(ErrorInjection::FailBlock(blk));
    let errs0 = fs.stats().flush_errors;
    drop(f);
    let mut waited = 0;
    while fs.stats().flush_errors == errs0 && waited < 2000 {
        task::sleep(Duration::from_millis(10));
        waited += 10;
    }
    kassert!(fs.stats().flush_errors > errs0, "the flusher never failed");
    kassert!(fs.sync().is_err(), "sync succeeded with the block failing");
    kassert!(fs.stats().inodes_dirty >= 1);
    // Reclaim must not drop it: the slot on disk still says free.
    let rq0 = fs.stats().inodes_requeued_dirty;
    for _ in 0..4 {
        fs.shrink_inode_cache(GFP_KERNEL, 0);
    }
    kassert!(
        fs.stats().inodes_requeued_dirty > rq0,
        "reclaim never met the dirty inode"
    );
    let f = ok!(fs.iget(ino));
    kassert_eq!(ok!(fs.stat(&f)).size, data.len() as u64);
    drop(f);
    // Clear the error: sync writes it, and it is on disk.
    dev().clear_injection();
    ok!(fs.sync());
    kassert_eq!(fs.stats().inodes_dirty, 0);
    drop(root);
    ok!(fs.unmount());
    fsck_clean()?;
    let fs = ok!(mount(Policy::TRYLOCK));
    let root = ok!(fs.root());
    let f = ok!(ok!(fs.lookup(&root, "victim")).ok_or("victim missing"));
    kassert_eq!(f.ino(), ino);
    let mut buf = vec![0u8; 20_000];
    kassert_eq!(ok!(fs.read(&f, 0, &mut buf)), data.len());
    kassert!(buf[..data.len()] == data[..]);
    drop((root, f));
    ok!(fs.unmount());
    fsck_clean()
}

/// A small workload (about 2 s under TCG) run with `attr` failing 10% of
/// its calls, at most 100 times, from mkfs on.
fn workload_under(attr: &FaultAttr) -> Result<kreclaim::workload::RunResult, String> {
    let w = kreclaim::workload::Workload {
        files: 300,
        size_min: 8 << 10,
        size_max: 28 << 10,
        fanout: 32,
        tasks: 2,
        ops: 1500,
        seed: 7,
        ..Default::default()
    };
    dev().clear_injection();
    attr.configure(10, 1, 100);
    let r = kreclaim::workload::run(dev(), Policy::TRYLOCK, w, false);
    attr.disable();
    r.map_err(|e| format!("workload under {}: {e}", attr.name()))
}

/// Issue 9: the workload ignored the count `Fs::write` returns, so a write
/// cut short by an allocation failure was recorded as complete and the
/// verifier reported lost data. Now the short write is an error and what
/// the filesystem acknowledged (its first bytes) is what gets verified.
fn workload_records_short_writes_as_acknowledged() -> TestResult {
    let r = ok!(workload_under(&FAIL_PAGE_ALLOC));
    kreclaim::println!(
        "fail_page_alloc: {} injected, {} failed ops ({} short writes, {} populate), {}",
        r.injected_page_alloc,
        r.injected_errors,
        r.short_writes,
        r.populate_errors,
        r.integrity_detail
    );
    kassert!(r.injected_page_alloc > 0, "nothing was injected");
    kassert!(r.short_writes > 0, "no write was cut short");
    kassert!(r.injected_errors > 0, "no operation failed by injection");
    kassert!(
        r.errors + r.populate_errors >= r.short_writes,
        "short writes are errors"
    );
    kassert!(r.integrity_ok, "integrity: {}", r.integrity_detail);
    kassert!(r.files_verified > 0);
    Ok(())
}

/// Issue 9: failslab made `format!`, `Box`, `Arc` and `Vec` on the workload,
/// filesystem and report paths abort the kernel. Now every such allocation
/// is fallible and the run keeps its data.
fn failslab_on_the_workload_paths_does_not_panic() -> TestResult {
    let r = ok!(workload_under(&FAILSLAB));
    kreclaim::println!(
        "failslab: {} injected, {} failed ops, {}",
        r.injected_slab,
        r.injected_errors,
        r.integrity_detail
    );
    kassert!(r.injected_slab > 0, "nothing was injected");
    kassert!(r.integrity_ok, "integrity: {}", r.integrity_detail);
    Ok(())
}

/// The fallible forms of `Arc::new`, `Box::new` and `format!` return an
/// error where the infallible ones abort, and work when memory is there.
fn fallible_constructors_fail_under_failslab() -> TestResult {
    // A few failures, in case another task takes one first.
    FAILSLAB.configure(100, 1, 3);
    let arc = try_arc([7u64; 4]);
    FAILSLAB.disable();
    kassert!(arc.is_err(), "try_arc succeeded under failslab");
    FAILSLAB.configure(100, 1, 3);
    let boxed = try_box([7u64; 4]);
    FAILSLAB.disable();
    kassert!(boxed.is_err(), "try_box succeeded under failslab");
    FAILSLAB.configure(100, 1, 3);
    let text = try_format(format_args!("{}-{}", "x", 42));
    FAILSLAB.disable();
    kassert!(text.is_err(), "try_format succeeded under failslab");

    let arc = ok!(try_arc([7u64; 4]));
    let weak = Arc::downgrade(&arc);
    kassert_eq!(*arc, [7u64; 4]);
    kassert_eq!(Arc::strong_count(&arc), 1);
    drop(arc);
    kassert!(weak.upgrade().is_none());
    kassert_eq!(*ok!(try_box(5u32)), 5);
    kassert_eq!(
        ok!(try_format(format_args!("{}-{}", "x", 42))).as_str(),
        "x-42"
    );
    Ok(())
}

fn broken_policy_deadlocks_for_real() -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    let dl_before = task::deadlock::report_count();
    let fs = ok!(fresh(Policy::BROKEN));
    let root = ok!(fs.root());
    let mut files: Vec<InodeRef> = Vec::new();
    for i in 0..40 {
        files.push(ok!(fs.create(&root, &format!("f{i}"), FileType::File)));
    }
    let cluster = |i: &InodeRef| ino_to_agino(i.ino()) / INODES_PER_CLUSTER;
    let x = ok!(files
        .iter()
        .find(|i| cluster(i) == 0)
        .ok_or("none in cluster 0"))
    .clone();
    let y = ok!(files
        .iter()
        .find(|i| cluster(i) == 1)
        .ok_or("none in cluster 1"))
    .clone();
    drop(files);
    ok!(fs.sync()); // nothing dirty: the flusher stays out of the way
    let (fa, fb) = (fs.clone(), fs.clone());
    let (xa, ya) = (x.clone(), y.clone());
    let (xb, yb) = (x, y);
    // Each task holds one referenced inode's ILOCK (as an operation does),
    // then enters reclaim's cluster flush on the other's cluster.
    let a = task::spawn("holder-x", move || {
        let _g = fa.ilock(&xa, true);
        task::sleep(Duration::from_millis(30));
        let _ = fa.reclaim_flush_cluster(ya.ino());
    })
    .unwrap();
    let b = task::spawn("holder-y", move || {
        let _g = fb.ilock(&yb, true);
        task::sleep(Duration::from_millis(30));
        let _ = fb.reclaim_flush_cluster(xb.ino());
    })
    .unwrap();
    kassert_eq!(
        a.join_timeout(Duration::from_secs(10)),
        Err(JoinError::Deadlocked)
    );
    kassert_eq!(
        b.join_timeout(Duration::from_secs(10)),
        Err(JoinError::Deadlocked)
    );
    let dl = task::deadlock::reports();
    kassert!(dl.len() > dl_before, "no deadlock reported");
    let names: Vec<&str> = dl[dl_before]
        .tasks
        .iter()
        .map(|(_, n)| n.as_str())
        .collect();
    kassert!(
        names.contains(&"holder-x") && names.contains(&"holder-y"),
        "{names:?}"
    );
    kassert!(dl[dl_before].locks.iter().any(|l| l == "xfs_ilock"));
    let reps = ilock_reports_since(before);
    kassert!(
        reps.iter()
            .any(|r| r.kind == lockdep::ReportKind::CircularDependency
                && r.classes.contains(&"fs_reclaim")),
        "broken: no xfs_ilock/fs_reclaim cycle reported"
    );
    // The two tasks are parked forever holding ILOCKs: shut the fs down.
    fs.force_shutdown();
    kassert_eq!(fs.lookup(&root, "f0").err(), Some(FsError::Shutdown));
    Ok(())
}
