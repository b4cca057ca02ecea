//! The in-memory filesystem under a small `mem=`: operations, remount and
//! fsck; heavy reclaim of the inode and buffer caches; the reclaim policies
//! and what lockdep says about each; IO errors during writeback; the
//! `broken` policy's real deadlock; and reference drops racing with unlink,
//! iget and lookup.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use core::time::Duration;
use kreclaim::fs::format::{INODES_PER_CLUSTER, ino_to_agino, ino_to_cluster_block};
use kreclaim::fs::{
    ErrorInjection, FileType, Fs, FsError, InodeRef, MkfsOptions, Policy, RacePoint, RamDisk,
    check, mkfs,
};
use kreclaim::harness::{TestResult, wait_for};
use kreclaim::mm::fault_inject::{FAIL_PAGE_ALLOC, FAILSLAB, FaultAttr};
use kreclaim::mm::gfp::{GFP_HIGHUSER_MOVABLE, GFP_KERNEL};
use kreclaim::mm::global_alloc::{try_arc, try_box, try_format};
use kreclaim::mm::memstall;
use kreclaim::mm::scope::MemallocScope;
use kreclaim::sync::lockdep;
use kreclaim::task::{self, JoinError};
use kreclaim::{kassert, kassert_eq};

kreclaim::kernel_tests!(
    cmdline = "mem=24M ramdisk=48M";
    operations_round_trip_and_survive_remount,
    heavy_reclaim_keeps_every_byte,
    trylock_reclaims_during_operations_and_stops_in_transactions,
    inode_shrinker_leaves_nr_scanned_at_nr_to_scan,
    inode_lru_gives_a_referenced_inode_a_second_chance,
    lockdep_sees_the_seed_report_only_under_kernel,
    reclaim_final_lock_knob_takes_the_lock_after_unindexing,
    reclaim_writeback_knob_writes_dirty_inodes_from_reclaim,
    reclaim_waits_for_or_skips_an_inode_whose_cluster_write_is_in_flight,
    reclaim_pinned_knob_forces_the_log_or_skips_the_inode,
    eras_before_5_9_make_direct_reclaim_wait_for_the_log,
    inode_gfp_knob_lets_a_lookup_miss_enter_fs_reclaim,
    disk_model_makes_requests_take_their_time,
    reclaim_subclass_knob_hides_the_recursive_report,
    writeback_io_error_keeps_the_inode_dirty,
    workload_records_short_writes_as_acknowledged,
    failslab_on_the_workload_paths_does_not_panic,
    fallible_constructors_fail_under_failslab,
    broken_policy_deadlocks_for_real,
    last_two_references_dropped_together_inactivate_once,
    iget_waits_for_inactivation,
    lookup_racing_with_unlink_finds_nothing,
    open_unlink_close_races_leave_fsck_clean,
    fsck_needs_no_block_above_order_3,
    today_reclaiming_a_directory_under_a_directory_ilock_is_reported,
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
    // kswapd on another CPU would keep the writer out of direct reclaim:
    // one CPU's interleaving, as the expectation below assumes.
    let _one = task::BootCpuOnly::new();
    let fs = ok!(fresh(Policy::TRYLOCK));
    // Sample inodes_reclaimed after each directory the writer fills: by
    // work done, not by time (a sampler task sleeping 5 ms may get too few
    // looks on a loaded host).
    let mut samples = 0;
    let mut last = fs.stats().inodes_reclaimed;
    for d in 0..32 {
        ok!(populate(&fs, SEED, d..d + 1, 100));
        let now = fs.stats().inodes_reclaimed;
        if now > last {
            samples += 1;
        }
        last = now;
    }
    let s = fs.stats();
    kassert!(
        samples >= 2,
        "inodes_reclaimed grew during only {samples} of 32 directories: {s:?}"
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

fn inode_shrinker_leaves_nr_scanned_at_nr_to_scan() -> TestResult {
    // Linux's super_cache_scan / xfs_reclaim_inodes_nr leave sc->nr_scanned
    // as do_shrink_slab set it. With a handful of reclaimable inodes (below
    // half a batch of 32), one pass at priority 0 is exactly one scan call:
    // total_scan = min(2n, 2n) is used up by that call. A shrinker that
    // lowered nr_scanned to the n inodes it looked at would leave n >=
    // freeable to scan and be called again for nothing.
    const SEED: u64 = 0x5eed_0003;
    let fs = ok!(fresh(Policy::TRYLOCK));
    ok!(populate(&fs, SEED, 0..1, 6));
    ok!(fs.sync());
    // What the shrinker counts: unused inodes on the LRU and reclaimable
    // ones (super_cache_count).
    let n = fs.stats().inodes_lru + fs.stats().inodes_reclaimable;
    kassert!(
        (1..16).contains(&n),
        "{n} unused inodes: the test needs 1..16"
    );
    let before = ok!(fs.shrinker_info().ok_or("no shrinker")).0;
    let freed = fs.shrink_inode_cache(GFP_KERNEL, 0);
    let after = ok!(fs.shrinker_info().ok_or("no shrinker")).0;
    kassert_eq!(
        after.scan_calls - before.scan_calls,
        1,
        "freed {freed} of {n}"
    );
    kassert!(
        after.scanned - before.scanned >= n,
        "scanned {} of nr_to_scan >= {n}",
        after.scanned - before.scanned
    );
    kassert_eq!(after.violations, before.violations);
    ok!(verify(&fs, SEED, 0..1, 6));
    ok!(fs.unmount());
    fsck_clean()
}

fn inode_lru_gives_a_referenced_inode_a_second_chance() -> TestResult {
    // prune_icache_sb -> inode_lru_isolate: an inode used again while it sat
    // on the LRU (I_REFERENCED) survives one walk (bit cleared, rotated) and
    // is evicted to XFS reclaim by the next; an unused one goes at once.
    let fs = ok!(fresh(Policy::TODAY));
    let root = ok!(fs.root());
    drop(ok!(fs.create(&root, "a", FileType::File)));
    drop(ok!(fs.create(&root, "b", FileType::File)));
    ok!(fs.sync()); // clean: XFS reclaim can free them
    let s0 = fs.stats();
    kassert_eq!(s0.inodes_lru, 2, "a and b unused on the LRU: {s0:?}");
    // `a` is used again while on the LRU: its last reference sets
    // I_REFERENCED (it is still on the LRU: removal is lazy).
    drop(ok!(ok!(fs.lookup(&root, "a")).ok_or("a not found")));
    // First walk over the whole LRU: `b` is evicted, `a` rotated.
    fs.prune_icache_sb(2);
    let s1 = fs.stats();
    kassert_eq!(s1.inodes_lru_rotated - s0.inodes_lru_rotated, 1, "{s1:?}");
    kassert_eq!(s1.inodes_pruned - s0.inodes_pruned, 1, "{s1:?}");
    kassert_eq!(s1.inodes_lru, 1, "a stays on the LRU: {s1:?}");
    kassert_eq!(fs.free_cached_objects(16), 1, "b reclaimed");
    // Second walk: `a`'s bit is clear now, so it goes too.
    fs.prune_icache_sb(2);
    let s2 = fs.stats();
    kassert_eq!(s2.inodes_lru_rotated, s1.inodes_lru_rotated, "{s2:?}");
    kassert_eq!(s2.inodes_lru, 0, "{s2:?}");
    kassert_eq!(fs.free_cached_objects(16), 1, "a reclaimed");
    // Both are read from disk again on the next lookup.
    let reads = fs.stats().inode_reads;
    drop(ok!(ok!(fs.lookup(&root, "a")).ok_or("a not found")));
    drop(ok!(ok!(fs.lookup(&root, "b")).ok_or("b not found")));
    kassert_eq!(fs.stats().inode_reads - reads, 2);
    drop(root);
    ok!(fs.unmount());
    fsck_clean()
}

/// Writers fill memory while readers walk big directories (readdir and
/// lookup hold ILOCK and allocate buffers for uncached directory blocks).
/// Besides the hot directories, some that nobody touches after creating
/// them: the inode LRU keeps the hot ones cached (they are used again
/// before the LRU walk comes back to them), so the directories reclaim
/// locks are cold ones, as on a real system.
fn contended_workload(fs: &Arc<Fs>, seed: u64) -> Result<(), String> {
    const DIRS: u32 = 8;
    const COLD_DIRS: u32 = 32;
    const FILES: u32 = 400;
    let root = fs.root().map_err(|e| format!("{e}"))?;
    for d in 0..DIRS {
        fs.create(&root, &format!("d{d}"), FileType::Dir)
            .map_err(|e| format!("mkdir: {e}"))?;
    }
    for d in 0..COLD_DIRS {
        fs.create(&root, &format!("cold{d}"), FileType::Dir)
            .map_err(|e| format!("mkdir: {e}"))?;
    }
    drop(root);
    let stop = Arc::new(AtomicBool::new(false));
    // A writer's error comes back as a value: a panic in a task would end
    // the whole test kernel.
    let writer_error = Arc::new(spin::Mutex::new(None::<String>));
    let mut writers = Vec::new();
    for w in 0..2u32 {
        let (f, err) = (fs.clone(), writer_error.clone());
        writers.push(
            task::spawn("fs-writer", move || {
                if let Err(e) = populate(&f, seed, w * DIRS / 2..(w + 1) * DIRS / 2, FILES) {
                    err.lock().get_or_insert(format!("writer {w}: {e}"));
                }
            })
            .map_err(|e| format!("spawn a writer: {e:?}"))?,
        );
    }
    let mut readers = Vec::new();
    for r in 0..2u32 {
        let (f, s) = (fs.clone(), stop.clone());
        readers.push(
            task::spawn("fs-reader", move || {
                let Ok(root) = f.root() else {
                    return;
                };
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
            .map_err(|e| format!("spawn a reader: {e:?}"))?,
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
    if let Some(e) = writer_error.lock().take() {
        return Err(e);
    }
    verify(fs, seed, 0..DIRS, FILES)
}

fn ilock_reports_since(n: usize) -> Vec<lockdep::LockdepReport> {
    lockdep::reports_since(n)
        .into_iter()
        .filter(|r| r.classes.iter().any(|c| c.ends_with("_ilock")))
        .collect()
}

fn lockdep_sees_the_seed_report_only_under_kernel() -> TestResult {
    // `today` with plain GFP_KERNEL buffer allocations (a knob override):
    // readdir's buffer allocation under the directory's ILOCK records
    // ILOCK -> fs_reclaim again, and today's final blocking ILOCK in
    // reclaim closes the cycle.
    let mut today_buf_kernel = Policy::TODAY;
    ok!(today_buf_kernel.set_knob("buf_gfp", "kernel"));
    for (i, (policy, reported)) in [
        (Policy::KERNEL, true),
        (Policy::TRYLOCK, false),
        (Policy::NOLOCKDEP, false),
        (Policy::TODAY, false),
        (today_buf_kernel, true),
    ]
    .into_iter()
    .enumerate()
    {
        lockdep::reset_graph();
        let before = lockdep::report_count();
        let fs = ok!(fresh(policy));
        let r = contended_workload(&fs, 0x5eed_0100 + i as u64);
        let s = fs.stats();
        kreclaim::println!("policy {policy} ({}): {s:?}", policy.knobs());
        kassert!(r.is_ok(), "policy {policy}: {}", r.unwrap_err());
        kassert!(
            s.buffers_reclaimed > 0,
            "policy {policy}: no memory pressure"
        );
        if policy.reclaim_final_lock {
            kassert!(s.reclaim_final_locks > 0, "policy {policy}: no final lock");
        }
        ok!(fs.unmount());
        fsck_clean()?;
        let reps = ilock_reports_since(before);
        if reported {
            kassert!(
                reps.iter()
                    .any(|r| r.kind == lockdep::ReportKind::CircularDependency
                        && r.classes.contains(&"fs_reclaim")),
                "{policy} ({}): no ILOCK/fs_reclaim cycle reported ({} reports)",
                policy.knobs(),
                reps.len()
            );
        } else {
            // The seed's report is the ILOCK/fs_reclaim cycle. A reader
            // holding d<n>'s ILOCK whose direct reclaim reclaims a cold
            // directory (blocking ILOCK in `nolockdep`, the final lock in
            // `today`) gets "possible recursive locking" instead, as Linux's
            // lockdep does (see
            // today_reclaiming_a_directory_under_a_directory_ilock_is_reported):
            // whether a reader or kswapd reclaims it is chance, so it is
            // allowed here, and nothing else is.
            let unexpected: Vec<&lockdep::LockdepReport> = reps
                .iter()
                .filter(|r| {
                    !(r.kind == lockdep::ReportKind::RecursiveLocking
                        && r.classes.iter().all(|c| *c == "xfs_dir_ilock"))
                })
                .collect();
            kassert!(
                unexpected.is_empty(),
                "policy {policy}: lockdep reported an ILOCK: {:?} {:?}\n{}",
                unexpected[0].kind,
                unexpected[0].classes,
                unexpected[0].text
            );
        }
    }
    Ok(())
}

/// Creates `n` files one at a time, dropping each and running the inode
/// shrinker at once (before the flusher can write the new inode back).
fn create_and_shrink(fs: &Arc<Fs>, n: u32) -> TestResult {
    let root = ok!(fs.root());
    for i in 0..n {
        drop(ok!(fs.create(&root, &format!("k{i}"), FileType::File)));
        // Unpinned (checkpoint written) but dirty: what these knobs act on.
        ok!(fs.log_force());
        fs.shrink_inode_cache(GFP_KERNEL, 0);
    }
    Ok(())
}

/// A device whose every request takes 100 ms: what reclaim waits for
/// shows in the disk model's figures (which count modelled time, so a
/// loaded host cannot shrink them).
const LOG_LAT: kreclaim::fs::DiskModel = kreclaim::fs::DiskModel {
    lat_us: 100_000,
    bw_mbps: 0,
    flush_us: 0,
};

/// Makes `n` new files' inodes reclaimable, dirty and pinned in the log
/// (committed, no log force since).
fn pinned_reclaimable(fs: &Fs, n: u32) -> TestResult {
    let root = ok!(fs.root());
    for i in 0..n {
        drop(ok!(fs.create(&root, &format!("p{i}"), FileType::File)));
    }
    drop(root);
    fs.prune_icache_sb(4 * u64::from(n));
    let s = fs.stats();
    kassert!(s.inodes_reclaimable >= u64::from(n), "{s:?}");
    kassert!(s.inodes_dirty >= u64::from(n), "{s:?}");
    Ok(())
}

/// Runs `f` as direct reclaim does (PF_MEMALLOC: its waits count as
/// direct reclaim's; a memstall: they count as stall parts) on the 100 ms
/// device.
fn as_direct_reclaim<T>(f: impl FnOnce() -> T) -> T {
    dev().set_model(LOG_LAT);
    let r = {
        let _stall = memstall::MemstallGuard::enter();
        let _memalloc = MemallocScope::noreclaim();
        f()
    };
    dev().set_model(kreclaim::fs::DiskModel::INSTANT);
    r
}

fn reclaim_pinned_knob_forces_the_log_or_skips_the_inode() -> TestResult {
    // Before 5.9 reclaim waited for a pinned inode (xfs_iunpin_wait: force
    // the log, sleep until the checkpoint is written); since 5.9 it
    // requeues it. Only the knob differs between each era and its override.
    for (era, knob) in [
        (Policy::TODAY, None),
        (Policy::TODAY, Some("wait")),
        (Policy::NOFS, None),
        (Policy::NOFS, Some("skip")),
    ] {
        let mut p = era;
        if let Some(v) = knob {
            ok!(p.set_knob("reclaim_pinned", v));
        }
        let wait = p.reclaim_pinned == kreclaim::fs::ReclaimPinned::Wait;
        let fs = ok!(fresh(p));
        pinned_reclaimable(&fs, 4)?;
        let b = fs.stats();
        let freed = as_direct_reclaim(|| fs.free_cached_objects(16));
        let s = fs.stats();
        kreclaim::println!("{era} reclaim_pinned={knob:?}: freed {freed}: {s:?}");
        let waited = s.direct_reclaim_io_wait_ns - b.direct_reclaim_io_wait_ns;
        if wait {
            kassert!(
                s.direct_reclaim_log_forces > b.direct_reclaim_log_forces
                    && s.reclaim_log_forces > b.reclaim_log_forces,
                "{era} {knob:?}: reclaim forced no log: {s:?}"
            );
            kassert!(s.log_checkpoints > b.log_checkpoints);
            kassert!(
                waited >= LOG_LAT.lat_us * 1000,
                "{era} {knob:?}: waited {waited} ns of device time"
            );
            kassert_eq!(s.inodes_requeued_pinned, b.inodes_requeued_pinned);
        } else {
            kassert_eq!(s.reclaim_log_forces, b.reclaim_log_forces, "{s:?}");
            kassert_eq!(waited, 0, "{era} {knob:?}: {s:?}");
            // At least the first: requeueing kicks the flusher, which
            // forces the log 100 ms later at the earliest (a host that
            // stalls this task that long may see the rest unpinned).
            kassert!(
                s.inodes_requeued_pinned > b.inodes_requeued_pinned,
                "{era} {knob:?}: pinned inodes not requeued: {s:?}"
            );
            kassert_eq!(freed, 0, "{era} {knob:?}: freed pinned inodes");
        }
        ok!(fs.unmount());
    }
    fsck_clean()
}

fn eras_before_5_9_make_direct_reclaim_wait_for_the_log() -> TestResult {
    // The stall the 5.9 rework removed, counted in the disk model's time
    // (deterministic) rather than wall-clock milliseconds: the same dirty,
    // pinned, reclaimable inodes, then direct reclaim entered from an
    // allocation under ILOCK (the era's GFP) and from a GFP_KERNEL one.
    let mut waited = Vec::new();
    for era in Policy::ALL {
        let fs = ok!(fresh(era));
        pinned_reclaimable(&fs, 8)?;
        let b = fs.stats();
        let p0 = memstall::snapshot();
        let s1 = as_direct_reclaim(|| {
            fs.shrink_inode_cache(era.gfp_under_ilock, 0);
            fs.stats()
        });
        // An application faulting in its memory (no filesystem lock held):
        // __GFP_FS in every era, so the old eras' reclaim waits for it.
        as_direct_reclaim(|| fs.shrink_inode_cache(GFP_HIGHUSER_MOVABLE, 0));
        let s = fs.stats();
        let parts = memstall::snapshot().since(&p0);
        let w = s.direct_reclaim_io_wait_ns - b.direct_reclaim_io_wait_ns;
        let forces = s.direct_reclaim_log_forces - b.direct_reclaim_log_forces;
        // The stall part is measured where reclaim waits: time only where
        // the disk model says reclaim waited for the device.
        kassert_eq!(parts.io_ns > 0, w > 0, "{era}: {parts:?}, modelled {w} ns");
        kreclaim::println!(
            "{era}: direct reclaim waited {} ms of device time, {forces} log forces, {} writebacks, {} requeued pinned",
            w / 1_000_000,
            s.reclaim_writebacks - b.reclaim_writebacks,
            s.inodes_requeued_pinned - b.inodes_requeued_pinned
        );
        if era.name == "nofs" {
            // GFP_NOFS: the inode shrinker cannot run from the filesystem's
            // own allocations, so they never wait; an application's does.
            kassert!(s1.shrinker_stops > b.shrinker_stops, "{s1:?}");
            kassert_eq!(
                s1.direct_reclaim_io_wait_ns,
                b.direct_reclaim_io_wait_ns,
                "{s1:?}"
            );
        }
        waited.push((era, w, forces));
        ok!(fs.unmount());
    }
    let today = waited
        .iter()
        .find(|(p, ..)| p.name == "today")
        .map_or(u64::MAX, |&(_, w, _)| w);
    kassert_eq!(today, 0, "today's reclaim waited for the device");
    for &(era, w, forces) in &waited {
        match era.name {
            "nofs" | "kernel" | "nolockdep" => {
                kassert!(
                    forces >= 1 && w >= LOG_LAT.lat_us * 1000 && w >= 2 * today,
                    "{era}: waited {w} ns, {forces} log forces"
                );
            }
            _ => kassert_eq!((w, forces), (0, 0), "{era}"),
        }
    }
    fsck_clean()
}

/// A lock of the lookup's caller, so that lockdep shows whether the lookup
/// entered the fs_reclaim section (an allocation that may reclaim from the
/// filesystem, `__GFP_FS`) while it was held.
static LOOKUP_CALLER: kreclaim::sync::RwSemaphore<()> =
    kreclaim::sync::RwSemaphore::new((), kreclaim::lock_class!("t_lookup_caller"));

fn inode_gfp_knob_lets_a_lookup_miss_enter_fs_reclaim() -> TestResult {
    // XFS before the scoped API allocated the in-core inode of an
    // inode-cache miss with KM_SLEEP (`xfs_inode_alloc`): GFP_KERNEL outside
    // a transaction, NOFS inside one (PF_FSTRANS). So under `nofs` a
    // lookup that misses may enter the filesystem's reclaim, and a create,
    // which allocates its inode under the parent's ILOCK in a transaction,
    // may not.
    let fs_reclaim = kreclaim::mm::fs_reclaim::FS_RECLAIM_MAP.class();
    kassert_eq!(Policy::NOFS.inode_gfp, GFP_KERNEL);
    kassert!(Policy::NOFS.scoped_nofs_transactions);
    for (knob, want) in [("kernel", true), ("nofs", false)] {
        let mut p = Policy::NOFS;
        ok!(p.set_knob("inode_gfp", knob));
        let fs = ok!(fresh(p));
        let root = ok!(fs.root());
        lockdep::reset_graph();
        for i in 0..8 {
            drop(ok!(fs.create(&root, &format!("g{i}"), FileType::File)));
        }
        for class in [
            kreclaim::fs::dir_ilock_class(),
            kreclaim::fs::nondir_ilock_class(),
        ] {
            kassert!(
                !lockdep::has_dependency(class, fs_reclaim),
                "inode_gfp={knob}: create allocated with __GFP_FS under {}",
                class.name()
            );
        }
        // Evict them: written back, unpinned, off the LRU, reclaimed.
        ok!(fs.log_force());
        ok!(fs.sync());
        let b = fs.stats();
        for _ in 0..200 {
            fs.prune_icache_sb(64);
            fs.shrink_inode_cache(GFP_KERNEL, 0);
            if fs.stats().inodes_reclaimed >= b.inodes_reclaimed + 8 {
                break;
            }
            task::sleep(Duration::from_millis(1));
        }
        let names: Vec<String> = (0..8).map(|i| format!("g{i}")).collect();
        let reads = fs.stats().inode_reads;
        {
            // Nothing else allocates while it is held (the names are made).
            let _caller = LOOKUP_CALLER.down_read();
            for name in &names {
                kassert!(ok!(fs.lookup(&root, name)).is_some());
            }
        }
        kassert!(
            fs.stats().inode_reads > reads,
            "inode_gfp={knob}: no lookup missed the inode cache"
        );
        kassert_eq!(
            lockdep::has_dependency(LOOKUP_CALLER.class(), fs_reclaim),
            want,
            "inode_gfp={knob}"
        );
        drop(root);
        ok!(fs.unmount());
    }
    fsck_clean()
}

fn reclaim_final_lock_knob_takes_the_lock_after_unindexing() -> TestResult {
    for (knob, want) in [("on", true), ("off", false)] {
        let mut p = Policy::TODAY;
        ok!(p.set_knob("reclaim_final_lock", knob));
        let fs = ok!(fresh(p));
        create_and_shrink(&fs, 20)?;
        ok!(fs.sync());
        let (b, p0) = (fs.stats(), memstall::snapshot());
        {
            // In a memstall, as direct reclaim: the blocking final lock is
            // the only lock call of today's reclaim, a stall part.
            // An inode whose cluster write is still in flight is requeued
            // (`requeued_flushing`); shrink again until one is reclaimed.
            let _stall = memstall::MemstallGuard::enter();
            for _ in 0..200 {
                fs.shrink_inode_cache(GFP_KERNEL, 0);
                if fs.stats().inodes_reclaimed > b.inodes_reclaimed {
                    break;
                }
                task::sleep(core::time::Duration::from_millis(1));
            }
        }
        let parts = memstall::snapshot().since(&p0);
        let s = fs.stats();
        kassert!(
            s.inodes_reclaimed > b.inodes_reclaimed,
            "{knob}: the shrink reclaimed nothing: {s:?}"
        );
        kassert_eq!(
            s.reclaim_final_locks > 0,
            want,
            "reclaim_final_lock={knob}: {s:?}"
        );
        kassert_eq!(
            parts.lock_ns > 0,
            want && s.reclaim_final_locks > b.reclaim_final_locks,
            "reclaim_final_lock={knob}: {parts:?}"
        );
        kassert_eq!(
            (parts.pfmemalloc_ns, parts.noprogress_ns, parts.io_ns),
            (0, 0, 0),
            "{parts:?}"
        );
        if want {
            kassert!(
                s.reclaim_final_locks > b.reclaim_final_locks,
                "the shrink took no final lock: {s:?}"
            );
        }
        if want {
            kassert_eq!(s.reclaim_final_locks, s.inodes_reclaimed);
        }
        ok!(fs.unmount());
    }
    fsck_clean()
}

fn reclaim_writeback_knob_writes_dirty_inodes_from_reclaim() -> TestResult {
    for (era, knob) in [
        (Policy::TODAY, None),
        (Policy::TODAY, Some("sync")),
        (Policy::NOFS, None),
        (Policy::NOFS, Some("none")),
    ] {
        let mut p = era;
        if let Some(v) = knob {
            ok!(p.set_knob("reclaim_writeback", v));
        }
        let sync = p.reclaim_writeback == kreclaim::fs::policy::ReclaimWriteback::Sync;
        let fs = ok!(fresh(p));
        create_and_shrink(&fs, 20)?;
        let s = fs.stats();
        kreclaim::println!("{era} reclaim_writeback={knob:?}: {s:?}");
        if sync {
            kassert!(
                s.reclaim_writebacks > 0,
                "{era} {knob:?}: reclaim wrote nothing back: {s:?}"
            );
        } else {
            kassert_eq!(s.reclaim_writebacks, 0, "{era} {knob:?}: {s:?}");
            kassert!(
                s.inodes_requeued_dirty > 0,
                "{era} {knob:?}: no dirty inode met: {s:?}"
            );
        }
        ok!(fs.unmount());
    }
    fsck_clean()
}

fn reclaim_waits_for_or_skips_an_inode_whose_cluster_write_is_in_flight() -> TestResult {
    // XFS holds an inode's flush lock from its cluster flush until the
    // buffer IO completes. Reclaim before 5.9 (`reclaim_writeback=sync`)
    // waits for it (xfs_iflock); since 5.9 it skips the inode. A device
    // with a 5 s latency keeps the flusher's writes in flight long enough
    // for reclaim to meet them whatever the host's load.
    use kreclaim::fs::DiskModel;
    const SLOW: DiskModel = DiskModel {
        lat_us: 5_000_000,
        bw_mbps: 0,
        flush_us: 0,
    };
    for (era, waits) in [(Policy::TODAY, false), (Policy::NOFS, true)] {
        let fs = ok!(fresh(era));
        let root = ok!(fs.root());
        for i in 0..4 {
            drop(ok!(fs.create(&root, &format!("w{i}"), FileType::File)));
        }
        // Unused and dirty: off the LRU to XFS's reclaimable state.
        fs.prune_icache_sb(16);
        kassert!(fs.stats().inodes_reclaimable >= 4, "{:?}", fs.stats());
        // Unpinned (their checkpoint written), so the flusher may write
        // them back.
        ok!(fs.log_force());
        dev().set_model(SLOW);
        // The flusher (every second) writes the clusters back: queued, so
        // it does not wait, and the inodes are clean with the IO in flight.
        wait_for("the flusher to write the new inodes", || {
            fs.stats().inodes_dirty == 0
        })?;
        let before = fs.stats();
        let freed = fs.free_cached_objects(16);
        let s = fs.stats();
        dev().set_model(DiskModel::INSTANT);
        kreclaim::println!("{era}: freed {freed}: {s:?}");
        if waits {
            kassert!(
                s.reclaim_iflock_waits > before.reclaim_iflock_waits,
                "{era}: reclaim did not wait for the write: {s:?}"
            );
            kassert!(freed >= 4, "{era}: freed {freed}");
        } else {
            kassert_eq!(s.reclaim_iflock_waits, 0, "{era}: {s:?}");
            kassert!(
                s.inodes_requeued_flushing > before.inodes_requeued_flushing,
                "{era}: reclaim did not skip the inodes under IO: {s:?}"
            );
            kassert_eq!(freed, 0, "{era}: freed inodes whose write is in flight");
        }
        drop(root);
        ok!(fs.unmount());
    }
    fsck_clean()
}

fn reclaim_subclass_knob_hides_the_recursive_report() -> TestResult {
    // A task holding a directory's ILOCK enters reclaim (as direct reclaim
    // from a lookup would), and reclaim blocks on other directories' ILOCKs
    // (`nolockdep`: blocking reclaim ILOCK). At subclass 0, as XFS, lockdep
    // sees the class taken twice; the (not XFS) knob hides it.
    for (knob, reported) in [("off", true), ("on", false)] {
        lockdep::reset_graph();
        let before = lockdep::report_count();
        let mut p = Policy::NOLOCKDEP;
        ok!(p.set_knob("reclaim_subclass", knob));
        let fs = ok!(fresh(p));
        let root = ok!(fs.root());
        for i in 0..8 {
            drop(ok!(fs.create(&root, &format!("sub{i}"), FileType::Dir)));
        }
        ok!(fs.sync());
        // Two passes: the first moves the unused directories off the inode
        // LRU to XFS's reclaimable state (prune_icache_sb), the second
        // reclaims them with the blocking ILOCK.
        let freed = {
            let _g = fs.ilock(&root, false);
            let _memalloc = MemallocScope::noreclaim();
            fs.shrink_inode_cache(GFP_KERNEL, 0);
            fs.shrink_inode_cache(GFP_KERNEL, 0);
            fs.stats().inodes_reclaimed
        };
        kassert!(freed > 0, "reclaim_subclass={knob}: nothing reclaimed");
        drop(root);
        ok!(fs.unmount());
        let recursive = lockdep::reports_since(before).iter().any(|r| {
            r.kind == lockdep::ReportKind::RecursiveLocking && r.classes.contains(&"xfs_dir_ilock")
        });
        kassert_eq!(recursive, reported, "reclaim_subclass={knob}");
    }
    Ok(())
}

fn disk_model_makes_requests_take_their_time() -> TestResult {
    use kreclaim::fs::{BlockDevice, DiskModel};
    let mem: &'static mut [u8] = alloc::boxed::Box::leak(vec![0u8; 16 * 4096].into_boxed_slice());
    let d = RamDisk::from_static(mem, 4096);
    let block = vec![0x5au8; 4096];
    let mut back = vec![0u8; 4096];
    // Instant (the default of RamDisk::new): no wait at all.
    kassert!(d.model().is_instant());
    for b in 0..4 {
        ok!(d.write_block(b, &block));
    }
    kassert_eq!(d.stats().wait_ns, 0);
    // Latency: each read waits at least 2 ms for its completion, writes are
    // queued (lower bounds only: a loaded machine can make a wait longer,
    // never shorter).
    d.set_model(DiskModel {
        lat_us: 2000,
        bw_mbps: 0,
        flush_us: 0,
    });
    let t0 = kreclaim::time::now_ns();
    for b in 0..4 {
        ok!(d.write_block(b, &block));
        ok!(d.read_block(b, &mut back));
    }
    kassert_eq!(back, block);
    let took = kreclaim::time::now_ns() - t0;
    kassert!(took >= 4 * 2_000_000, "4 reads took {took} ns");
    kassert!(d.stats().wait_ns >= 4 * 2_000_000, "{:?}", d.stats());
    // Bandwidth: 8 blocks at 1 MB/s are 32768 µs of transfer, which a
    // flush waits for.
    d.set_model(DiskModel {
        lat_us: 1,
        bw_mbps: 1,
        flush_us: 0,
    });
    let t0 = kreclaim::time::now_ns();
    for b in 0..8 {
        ok!(d.write_block(b, &block));
    }
    ok!(d.flush());
    let took = kreclaim::time::now_ns() - t0;
    kassert!(took >= 32_768_000, "8 blocks at 1 MB/s took {took} ns");
    // A log write (REQ_PREFLUSH | REQ_FUA) completes after the device has
    // written its cache out: 50 ms of flush here. Its submitter does not
    // wait for it, and a plain write has no flush. The completion times
    // come from the model (the queue is idle after the flush above), so
    // they bound both ways whatever the host's load.
    d.set_model(DiskModel {
        lat_us: 1,
        bw_mbps: 0,
        flush_us: 50_000,
    });
    let waited = d.stats().wait_ns;
    let t0 = kreclaim::time::now_ns();
    let logged = d.submit_log_write(4096);
    let t1 = kreclaim::time::now_ns();
    kassert!(
        logged >= t0 + 50_001_000,
        "log write done {} ns after",
        logged - t0
    );
    kassert!(
        logged <= t1 + 50_001_000,
        "log write done {} ns after",
        logged - t1
    );
    kassert_eq!(
        d.stats().wait_ns,
        waited,
        "the submitter waited for the flush"
    );
    // A write queued behind it completes after it.
    let write = ok!(d.write_block_async(0, &block));
    kassert!(write >= logged, "{write} < {logged}");
    d.wait_completion(write);
    // Without a flush cost the log write is an ordinary write.
    d.set_model(DiskModel {
        lat_us: 1,
        bw_mbps: 0,
        flush_us: 0,
    });
    let t0 = kreclaim::time::now_ns();
    let logged = d.submit_log_write(4096);
    kassert!(
        logged <= kreclaim::time::now_ns() + 1_000,
        "{} ns after",
        logged - t0
    );
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
    // Unpinned: the flusher writes only inodes whose checkpoint is written.
    ok!(fs.log_force());
    wait_for("the flusher to fail", || fs.stats().flush_errors > errs0)?;
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
    // then, once both hold theirs, enters reclaim's cluster flush on the
    // other's cluster. (A fixed sleep instead of waiting for the other lets
    // one task finish first on a loaded host.)
    let holding = Arc::new(AtomicUsize::new(0));
    let both_hold = |h: &AtomicUsize| {
        h.fetch_add(1, Ordering::SeqCst);
        while h.load(Ordering::SeqCst) < 2 {
            task::sleep(Duration::from_millis(1));
        }
    };
    let (ha, hb) = (holding.clone(), holding.clone());
    let a = ok!(task::spawn("holder-x", move || {
        let _g = fa.ilock(&xa, true);
        both_hold(&ha);
        let _ = fa.reclaim_flush_cluster(ya.ino());
    }));
    let b = ok!(task::spawn("holder-y", move || {
        let _g = fb.ilock(&yb, true);
        both_hold(&hb);
        let _ = fb.reclaim_flush_cluster(xb.ino());
    }));
    kassert_eq!(
        a.join_timeout(Duration::from_secs(60)),
        Err(JoinError::Deadlocked)
    );
    kassert_eq!(
        b.join_timeout(Duration::from_secs(60)),
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
    kassert!(dl[dl_before].locks.iter().any(|l| l.ends_with("_ilock")));
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

// -- Reference drops racing with unlink and lookup ---------------------------
//
// `Fs::set_race_hook` runs a hook just before a reference is dropped
// (`Put`), just before the last reference's task frees an unlinked inode on
// disk (`Inactivate`), and in lookup between the directory read and taking
// the inode (`LookupFound`). The hooks below wait or yield there, which
// forces the interleavings that a preemption at those points would give.

/// The inode the hooks act on.
static HOOK_INO: AtomicU32 = AtomicU32::new(0);
/// Tasks that reached the `Put` hook for `HOOK_INO`.
static AT_PUT: AtomicU32 = AtomicU32::new(0);
/// The `Inactivate` hook ran for `HOOK_INO`.
static IN_INACTIVATE: AtomicBool = AtomicBool::new(false);
/// The racing iget returned.
static IGET_DONE: AtomicBool = AtomicBool::new(false);

/// Every dropper of `HOOK_INO` waits until two have arrived, so both have
/// made whatever check precedes the drop before either drops.
fn put_barrier(ino: u32, point: RacePoint) {
    if point != RacePoint::Put || ino != HOOK_INO.load(Ordering::Acquire) {
        return;
    }
    AT_PUT.fetch_add(1, Ordering::AcqRel);
    for _ in 0..10_000 {
        if AT_PUT.load(Ordering::Acquire) >= 2 {
            break;
        }
        task::yield_now();
    }
}

/// Two tasks drop the last two references of an unlinked file at once:
/// exactly one of them must free it on disk.
fn last_two_references_dropped_together_inactivate_once() -> TestResult {
    let fs = ok!(fresh(Policy::TRYLOCK));
    let root = ok!(fs.root());
    let a = ok!(fs.create(&root, "victim", FileType::File));
    ok!(fs.write(&a, 0, &content(11, 0, 0, 9000)));
    let b = a.clone();
    let ino = a.ino();
    ok!(fs.unlink(&root, "victim"));
    let before = fs.stats().inactivations;
    HOOK_INO.store(ino, Ordering::Release);
    AT_PUT.store(0, Ordering::Release);
    fs.set_race_hook(Some(put_barrier));
    let ta = task::spawn("drop-a", move || drop(a)).unwrap();
    let tb = task::spawn("drop-b", move || drop(b)).unwrap();
    let (ja, jb) = (ta.join(), tb.join());
    fs.set_race_hook(None);
    kassert!(ja.is_ok() && jb.is_ok());
    kassert_eq!(AT_PUT.load(Ordering::Acquire), 2);
    kassert_eq!(
        fs.stats().inactivations - before,
        1,
        "the unlinked inode was not freed exactly once"
    );
    kassert_eq!(fs.iget(ino).err(), Some(FsError::InodeNotAllocated { ino }));
    drop(root);
    ok!(fs.unmount());
    fsck_clean()
}

/// The dropper of the last reference pauses before freeing the inode on
/// disk until the racing iget returned (bounded: a correct iget waits for
/// the dropper instead).
fn inactivate_pause(ino: u32, point: RacePoint) {
    if point != RacePoint::Inactivate || ino != HOOK_INO.load(Ordering::Acquire) {
        return;
    }
    IN_INACTIVATE.store(true, Ordering::Release);
    for _ in 0..200 {
        if IGET_DONE.load(Ordering::Acquire) {
            break;
        }
        task::yield_now();
    }
}

/// An iget (open by inode number) of an unlinked file whose last reference
/// is being dropped must not hand out a reference to the inode being freed:
/// it waits for the inactivation and then finds the inode free.
fn iget_waits_for_inactivation() -> TestResult {
    const NOT_ALLOCATED: u32 = 1;
    const OTHER_ERROR: u32 = 2;
    const FREED_UNDER_REFERENCE: u32 = 3;
    const STILL_ALLOCATED: u32 = 4;
    let fs = ok!(fresh(Policy::TRYLOCK));
    let root = ok!(fs.root());
    let f = ok!(fs.create(&root, "victim", FileType::File));
    ok!(fs.write(&f, 0, &content(12, 0, 0, 9000)));
    let ino = f.ino();
    ok!(fs.unlink(&root, "victim"));
    let before = fs.stats().inactivations;
    HOOK_INO.store(ino, Ordering::Release);
    IN_INACTIVATE.store(false, Ordering::Release);
    IGET_DONE.store(false, Ordering::Release);
    let dropped = Arc::new(AtomicBool::new(false));
    let outcome = Arc::new(AtomicU32::new(0));
    fs.set_race_hook(Some(inactivate_pause));
    let (fs2, dropped2, outcome2) = (fs.0.clone(), dropped.clone(), outcome.clone());
    let looker = task::spawn("iget-victim", move || {
        while !IN_INACTIVATE.load(Ordering::Acquire) {
            task::yield_now();
        }
        let r = fs2.iget(ino);
        IGET_DONE.store(true, Ordering::Release);
        let o = match r {
            Err(FsError::InodeNotAllocated { .. }) => NOT_ALLOCATED,
            Err(_) => OTHER_ERROR,
            Ok(r) => {
                // Hold it until the dropper is done, then look at it.
                while !dropped2.load(Ordering::Acquire) {
                    task::yield_now();
                }
                match fs2.stat(&r) {
                    Err(FsError::InodeNotAllocated { .. }) => FREED_UNDER_REFERENCE,
                    Err(_) => OTHER_ERROR,
                    Ok(_) => STILL_ALLOCATED,
                }
            }
        };
        outcome2.store(o, Ordering::Release);
    })
    .unwrap();
    drop(f); // the last reference: inactivation, with the hook's pause
    dropped.store(true, Ordering::Release);
    let j = looker.join();
    fs.set_race_hook(None);
    kassert!(j.is_ok());
    kassert!(IN_INACTIVATE.load(Ordering::Acquire), "no inactivation ran");
    let o = outcome.load(Ordering::Acquire);
    kassert!(
        o != FREED_UNDER_REFERENCE,
        "iget returned a reference to an inode that was then freed on disk"
    );
    kassert_eq!(o, NOT_ALLOCATED);
    kassert_eq!(fs.stats().inactivations - before, 1);
    drop(root);
    ok!(fs.unmount());
    fsck_clean()
}

/// Set once the racing unlink returned.
static UNLINK_DONE: AtomicBool = AtomicBool::new(false);
/// The lookup reached `LookupFound` for `HOOK_INO`.
static AT_LOOKUP: AtomicBool = AtomicBool::new(false);

/// The lookup of `HOOK_INO` pauses after the directory named it until the
/// unlink of that name returned (bounded).
fn lookup_pause(ino: u32, point: RacePoint) {
    if point != RacePoint::LookupFound || ino != HOOK_INO.load(Ordering::Acquire) {
        return;
    }
    AT_LOOKUP.store(true, Ordering::Release);
    // Bounded by time, not by yields: on SMP the unlink runs on another CPU
    // and a yield here returns at once.
    let t0 = kreclaim::time::now_ns();
    while !UNLINK_DONE.load(Ordering::Acquire) && kreclaim::time::now_ns() - t0 < 10_000_000_000 {
        task::yield_now();
    }
}

/// A lookup that read the name just before an unlink removed it and freed
/// the inode finds nothing; it neither fails nor returns the freed inode.
fn lookup_racing_with_unlink_finds_nothing() -> TestResult {
    const NONE: u32 = 1;
    const SOME: u32 = 2;
    const NOT_ALLOCATED: u32 = 3;
    const OTHER_ERROR: u32 = 4;
    let fs = ok!(fresh(Policy::TRYLOCK));
    let root = ok!(fs.root());
    let ino = ok!(fs.create(&root, "victim", FileType::File)).ino();
    let before = fs.stats().inactivations;
    HOOK_INO.store(ino, Ordering::Release);
    AT_LOOKUP.store(false, Ordering::Release);
    UNLINK_DONE.store(false, Ordering::Release);
    let outcome = Arc::new(AtomicU32::new(0));
    fs.set_race_hook(Some(lookup_pause));
    let (fs2, root2, outcome2) = (fs.0.clone(), root.clone(), outcome.clone());
    let looker = task::spawn("lookup-victim", move || {
        let o = match fs2.lookup(&root2, "victim") {
            Ok(None) => NONE,
            Ok(Some(_)) => SOME,
            Err(FsError::InodeNotAllocated { .. }) => NOT_ALLOCATED,
            Err(_) => OTHER_ERROR,
        };
        outcome2.store(o, Ordering::Release);
    })
    .unwrap();
    while !AT_LOOKUP.load(Ordering::Acquire) {
        task::yield_now();
    }
    let r = fs.unlink(&root, "victim");
    UNLINK_DONE.store(true, Ordering::Release);
    let j = looker.join();
    fs.set_race_hook(None);
    kassert!(j.is_ok());
    ok!(r);
    kassert_eq!(fs.stats().inactivations - before, 1);
    kassert_eq!(outcome.load(Ordering::Acquire), NONE);
    drop(root);
    ok!(fs.unmount());
    fsck_clean()
}

/// A preemption point at every reference drop and before every
/// inactivation, to widen the race windows of the stress test.
fn yield_hook(_ino: u32, _point: RacePoint) {
    task::yield_now();
}

/// Names the stress tasks fight over.
const RACE_NAMES: u32 = 4;

/// One stress task: random creates, lookups (opens), iget by remembered
/// inode numbers (opens by handle), writes, unlinks and drops (closes) of
/// a few names in `dir`. Every reference it holds must stay usable.
/// Returns (creates, unlinks) that succeeded.
fn race_worker(fs: &Fs, dir: &InodeRef, seed: u64, iters: u32) -> Result<(u64, u64), String> {
    let mut x = seed | 1;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut held: Vec<InodeRef> = Vec::new();
    let mut seen: Vec<u32> = Vec::new();
    let (mut creates, mut unlinks) = (0u64, 0u64);
    let data = content(seed, 0, 0, 5000);
    for i in 0..iters {
        let r = rnd();
        let name = format!("r{}", (r >> 8) % u64::from(RACE_NAMES));
        match r % 7 {
            0 => match fs.create(dir, &name, FileType::File) {
                Ok(f) => {
                    creates += 1;
                    seen.push(f.ino());
                    held.push(f);
                }
                Err(FsError::NameExists) => {}
                Err(e) => return Err(format!("{i}: create {name}: {e}")),
            },
            1 | 2 => match fs.lookup(dir, &name) {
                Ok(Some(f)) => {
                    seen.push(f.ino());
                    held.push(f);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("{i}: lookup {name}: {e}")),
            },
            3 => match fs.unlink(dir, &name) {
                Ok(()) => unlinks += 1,
                Err(FsError::NotFound) => {}
                Err(e) => return Err(format!("{i}: unlink {name}: {e}")),
            },
            4 if !seen.is_empty() => {
                let ino = seen[(r >> 16) as usize % seen.len()];
                match fs.iget(ino) {
                    Ok(f) => held.push(f),
                    Err(FsError::InodeNotAllocated { .. }) => {}
                    Err(e) => return Err(format!("{i}: iget {ino}: {e}")),
                }
            }
            5 if !held.is_empty() => {
                let f = &held[(r >> 16) as usize % held.len()];
                let len = 1 + (r >> 24) as usize % data.len();
                match fs.write(f, 0, &data[..len]) {
                    Ok(_) => {}
                    Err(e) => return Err(format!("{i}: write to held inode {}: {e}", f.ino())),
                }
            }
            _ => {
                if !held.is_empty() {
                    let f = held.swap_remove((r >> 16) as usize % held.len());
                    drop(f);
                }
            }
        }
        // Whatever we hold is a live inode, linked or not.
        for f in held.iter() {
            if let Err(e) = fs.stat(f) {
                return Err(format!("{i}: stat of held inode {}: {e}", f.ino()));
            }
        }
        if held.len() > 3 {
            drop(held.remove(0));
        }
        if seen.len() > 16 {
            seen.remove(0);
        }
    }
    Ok((creates, unlinks))
}

/// Many tasks (preemptive scheduler, plus a yield at every reference drop)
/// open, unlink, create and close the same few names. Afterwards every
/// created inode was freed on disk exactly once, nothing stays referenced,
/// and fsck finds no leaked unlinked inode and no block leak.
fn open_unlink_close_races_leave_fsck_clean() -> TestResult {
    const TASKS: u64 = 6;
    const ITERS: u32 = 300;
    let fs = ok!(fresh(Policy::TRYLOCK));
    let root = ok!(fs.root());
    let dir = ok!(fs.create(&root, "race", FileType::Dir));
    let before = fs.stats().inactivations;
    let failures = Arc::new(AtomicU32::new(0));
    let creates = Arc::new(core::sync::atomic::AtomicU64::new(0));
    let unlinks = Arc::new(core::sync::atomic::AtomicU64::new(0));
    fs.set_race_hook(Some(yield_hook));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (f, d) = (fs.0.clone(), dir.clone());
        let (fl, c, u) = (failures.clone(), creates.clone(), unlinks.clone());
        tasks.push(
            task::spawn("fs-racer", move || {
                match race_worker(&f, &d, 0x5eed_0300 + t * 0x1_0001, ITERS) {
                    Ok((nc, nu)) => {
                        c.fetch_add(nc, Ordering::Relaxed);
                        u.fetch_add(nu, Ordering::Relaxed);
                    }
                    Err(e) => {
                        kreclaim::println!("racer {t}: {e}");
                        fl.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .unwrap(),
        );
    }
    let mut joined = true;
    for t in tasks {
        joined &= t.join().is_ok();
    }
    fs.set_race_hook(None);
    kassert!(joined, "a racer deadlocked");
    kassert_eq!(failures.load(Ordering::Relaxed), 0);
    // Unlink what is left; then every created inode must have been freed.
    let mut left = 0u64;
    for n in 0..RACE_NAMES {
        match fs.unlink(&dir, &format!("r{n}")) {
            Ok(()) => left += 1,
            Err(FsError::NotFound) => {}
            Err(e) => kassert!(false, "unlink r{n}: {e}"),
        }
    }
    let (c, u) = (
        creates.load(Ordering::Relaxed),
        unlinks.load(Ordering::Relaxed) + left,
    );
    kassert!(c > 20, "too few creates to race: {c}");
    kassert_eq!(c, u);
    kassert_eq!(
        fs.stats().inactivations - before,
        c,
        "unlinked inodes not freed exactly once"
    );
    drop((dir, root));
    let s = fs.stats();
    // Every cached inode is unused: on the LRU or reclaimable.
    kassert_eq!(
        s.inodes_cached,
        s.inodes_lru + s.inodes_reclaimable,
        "{s:?}"
    );
    ok!(fs.unmount());
    fsck_clean()
}

/// Memory held so that no free block is larger than order 3: everything is
/// taken in order-3 blocks (no watermarks: `__GFP_MEMALLOC`), then the
/// blocks whose order-3 buddy is also held are given back, so a given-back
/// block can never merge into order 4; blocks above order 3 that frees by
/// other tasks form meanwhile are taken as well. About half of memory stays
/// free.
struct NoBlockAboveOrder3 {
    held: Vec<kreclaim::mm::page::PhysAddr>,
    /// Order-4 blocks taken afterwards.
    big: Vec<kreclaim::mm::page::PhysAddr>,
}

impl NoBlockAboveOrder3 {
    fn new() -> Result<Self, String> {
        use kreclaim::mm::gfp::{GFP_NOWAIT, Gfp};
        use kreclaim::mm::page_alloc::{alloc_pages, free_pages};
        let mut all = Vec::new();
        all.try_reserve(4096)
            .map_err(|_| String::from("no room for the list"))?;
        let gfp = GFP_NOWAIT | Gfp::__GFP_NOWARN | Gfp::__GFP_MEMALLOC;
        while all.len() < all.capacity() {
            match alloc_pages(gfp, 3) {
                Ok(pa) => all.push(pa),
                Err(_) => break,
            }
        }
        all.sort_unstable_by_key(|pa| pa.as_u64());
        let mut held = Vec::new();
        held.try_reserve(all.len())
            .map_err(|_| String::from("no room for the list"))?;
        for &pa in &all {
            let buddy = pa.as_u64() ^ (8 * 4096);
            let buddy_held = all.binary_search_by_key(&buddy, |b| b.as_u64()).is_ok();
            if pa.as_u64() & (8 * 4096) == 0 && buddy_held {
                free_pages(pa, 3);
            } else {
                held.push(pa);
            }
        }
        let mut big = Vec::new();
        big.try_reserve(64)
            .map_err(|_| String::from("no room for the list"))?;
        let mut me = NoBlockAboveOrder3 { held, big };
        me.take_blocks_above_order_3();
        Ok(me)
    }

    /// Pages other tasks freed meanwhile may have merged above order 3:
    /// takes those blocks too (a few at most). Returns the free blocks per
    /// order afterwards.
    fn take_blocks_above_order_3(&mut self) -> [u64; kreclaim::mm::zone::NR_ORDERS] {
        use kreclaim::mm::gfp::{GFP_NOWAIT, Gfp};
        let gfp = GFP_NOWAIT | Gfp::__GFP_NOWARN | Gfp::__GFP_MEMALLOC;
        loop {
            let free = kreclaim::mm::page_alloc::free_per_order();
            if free[4..].iter().all(|&n| n == 0) || self.big.len() == self.big.capacity() {
                return free;
            }
            match kreclaim::mm::page_alloc::alloc_pages(gfp, 4) {
                Ok(pa) => self.big.push(pa),
                Err(_) => return free,
            }
        }
    }
}

impl Drop for NoBlockAboveOrder3 {
    fn drop(&mut self) {
        for &pa in &self.held {
            kreclaim::mm::page_alloc::free_pages(pa, 3);
        }
        for &pa in &self.big {
            kreclaim::mm::page_alloc::free_pages(pa, 4);
        }
    }
}

/// fsck after unmount on a fragmented machine (the CI's `mem=4M` run once
/// failed with "fsck after unmount: out of memory"): its owner map for this
/// 48 MiB disk is 48 KiB, which as one allocation is order 4, a costly
/// order the allocator does not retry. In chunks of a page it needs no block
/// above order 0.
fn fsck_needs_no_block_above_order_3() -> TestResult {
    let fs = ok!(fresh(Policy::TODAY));
    let root = ok!(fs.root());
    for i in 0..4 {
        drop(ok!(fs.create(&root, &format!("d{i}"), FileType::Dir)));
    }
    drop(root);
    ok!(fs.unmount());
    drop(fs);
    let geo = ok!(kreclaim::fs::fsck(dev())).geometry;
    kassert!(
        geo.total_blocks * 4 > 8 * 4096,
        "the owner map ({} blocks) must be above order 3 for this test",
        geo.total_blocks
    );
    let mut frag = ok!(NoBlockAboveOrder3::new());
    // Once more right before the check: frees by other tasks may have
    // merged meanwhile (the premise is logged, not asserted: a block that
    // appears during the check could only let the old code pass).
    let free = frag.take_blocks_above_order_3();
    kreclaim::println!("free blocks per order before fsck: {free:?}");
    let r = check(dev());
    drop(frag);
    kassert!(
        r.is_ok(),
        "fsck with no free block above order 3: {:?}",
        r.err()
    );
    Ok(())
}

/// The cause of `today`'s rare "possible recursive locking" on
/// xfs_dir_ilock: a task holding a directory's ILOCK (a lookup or readdir)
/// enters direct reclaim with __GFP_FS (today's GFP_KERNEL|__GFP_NOLOCKDEP:
/// NOLOCKDEP hides only the fs_reclaim dependency), the inode shrinker
/// reclaims another, unreferenced directory, and reclaim's final blocking
/// ILOCK takes the same class at subclass 0. Linux 6.10's lockdep printed
/// exactly this (xfs_reclaim_inode vs xfs_ilock_data_map_shared, called a
/// false positive on LKML): kreclaim keeps it. The workload avoids it by
/// keeping its directories referenced, during the run and its check.
fn today_reclaiming_a_directory_under_a_directory_ilock_is_reported() -> TestResult {
    lockdep::reset_graph();
    let before = lockdep::report_count();
    let fs = ok!(fresh(Policy::TODAY));
    let root = ok!(fs.root());
    let sub = ok!(fs.create(&root, "sub", FileType::Dir));
    ok!(fs.sync());
    drop(sub);
    // As a lookup in the root entering direct reclaim: two passes (the LRU
    // walk, then XFS reclaim) with the root's ILOCK held.
    let reclaimed = {
        let _g = fs.ilock(&root, false);
        let _memalloc = MemallocScope::noreclaim();
        fs.shrink_inode_cache(GFP_KERNEL, 0);
        fs.shrink_inode_cache(GFP_KERNEL, 0);
        fs.stats().inodes_reclaimed
    };
    drop(root);
    ok!(fs.unmount());
    let recursive = lockdep::reports_since(before).iter().any(|r| {
        r.kind == lockdep::ReportKind::RecursiveLocking && r.classes.contains(&"xfs_dir_ilock")
    });
    kassert!(
        reclaimed > 0,
        "the unreferenced directory was not reclaimed"
    );
    kassert!(recursive, "no recursive-locking report on xfs_dir_ilock");
    Ok(())
}
