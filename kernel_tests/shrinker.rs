//! Shrinker registration and Linux's do_shrink_slab arithmetic.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;
use kreclaim::harness::{OrFail, TestResult, wait_for};
use kreclaim::mm::gfp::*;
use kreclaim::mm::inline_name::InlineName;
use kreclaim::mm::list_lru::{ListLru, ListLruHead, ListLruItem, LruDispose, LruStatus};
use kreclaim::mm::scope::MemallocScope;
use kreclaim::mm::shrinker::*;
use kreclaim::task::{self, Task, TaskState};
use kreclaim::{kassert, kassert_eq};

kreclaim::kernel_tests!(
    worked_example_seeks0_batch2049,
    default_seeks_scales_with_priority,
    small_cache_is_emptied_below_one_batch,
    nofs_stop_is_deferred_to_a_kernel_caller,
    nofs_scope_reaches_the_shrinker,
    empty_and_unknown_counts_scan_nothing,
    lying_shrinker_is_reported,
    shrink_slab_walks_every_registered_shrinker,
    unregister_waits_for_scan_on_other_task,
    unregister_from_its_own_scan_is_reported_not_waited_for,
    unregister_blocks_on_the_last_scans_completion,
    register_error_names_the_shrinker,
    do_shrink_slab_table_worked_by_hand,
    scanning_nothing_without_stop_is_reported_not_spun_on,
    list_lru_add_del_and_counts,
    list_lru_walk_honours_each_isolate_result,
    list_lru_rotate_revisits_and_nr_to_walk_bounds_the_walk,
    list_lru_retry_restarts_from_the_head,
    list_lru_stop_ends_the_walk,
    list_lru_contract_breaks_are_reported,
);

/// A fake cache: `objects` freeable objects; records every scan request.
struct Fake {
    objects: Arc<AtomicU64>,
    needs_fs: bool,
    scans: Arc<spin::Mutex<Vec<u64>>>,
    lie: bool,
    slow: Option<Arc<SlowScan>>,
}

/// Keeps a scan in flight until `unregisterer` is waiting inside the
/// unregistration (it set `unregistering`, then slept or blocked), then sets
/// `done`. A fixed sleep in the scan instead could end before the other task
/// even got to look on a loaded host.
struct SlowScan {
    unregisterer: Arc<Task>,
    unregistering: AtomicBool,
    done: AtomicBool,
    /// Wait for the unregisterer to be `Blocked` (on a completion), not
    /// merely asleep: a polling loop sleeps and never blocks.
    blocked_only: bool,
    /// The unregisterer was seen waiting in the state asked for.
    seen_waiting: AtomicBool,
}

impl Fake {
    fn new(objects: u64) -> (Self, Arc<AtomicU64>, Arc<spin::Mutex<Vec<u64>>>) {
        let o = Arc::new(AtomicU64::new(objects));
        let s = Arc::new(spin::Mutex::new(Vec::new()));
        (
            Fake {
                objects: o.clone(),
                needs_fs: false,
                scans: s.clone(),
                lie: false,
                slow: None,
            },
            o,
            s,
        )
    }
}

impl Shrinker for Fake {
    fn count_objects(&self, _sc: &ShrinkControl) -> CountObjects {
        match self.objects.load(Ordering::SeqCst) {
            0 => CountObjects::EMPTY,
            n => CountObjects::new(n),
        }
    }

    fn scan_objects(&self, sc: &mut ShrinkControl) -> ScanObjects {
        if self.needs_fs && !sc.reclaim_fs_allowed() {
            return ScanObjects::STOP;
        }
        self.scans.lock().push(sc.nr_to_scan());
        if let Some(slow) = &self.slow {
            // If unregistration does not wait, the unregisterer never waits
            // here: it returns and finds `done` still false.
            let seen = wait_for("the unregisterer to wait for this scan", || {
                slow.unregistering.load(Ordering::SeqCst)
                    && match slow.unregisterer.state() {
                        TaskState::Blocked => true,
                        TaskState::Sleeping => !slow.blocked_only,
                        _ => false,
                    }
            });
            slow.seen_waiting.store(seen.is_ok(), Ordering::SeqCst);
            slow.done.store(true, Ordering::SeqCst);
        }
        if self.lie {
            return ScanObjects::freed(sc.nr_to_scan() * 2);
        }
        let have = self.objects.load(Ordering::SeqCst);
        let n = sc.nr_to_scan().min(have);
        self.objects.fetch_sub(n, Ordering::SeqCst);
        ScanObjects::freed(n)
    }
}

fn worked_example_seeks0_batch2049() -> TestResult {
    // XFS's inodegc shrinker (docs/linux-semantics.md): count 4096, seeks 0, batch 2049.
    let (f, _objs, scans) = Fake::new(4096);
    let f = Fake {
        objects: Arc::new(AtomicU64::new(4096)),
        ..f
    };
    let reg = ShrinkerBuilder::new("inodegc")
        .seeks(0)
        .batch(2049)
        .register(f)
        .unwrap();
    kassert_eq!(reg.shrink(GFP_KERNEL, 12), 0);
    kassert!(
        scans.lock().is_empty(),
        "priority 12 must scan nothing: {:?}",
        scans.lock()
    );
    kassert_eq!(reg.nr_deferred(), 2048);
    let freed = reg.shrink(GFP_KERNEL, 11);
    kassert_eq!(
        *scans.lock(),
        alloc::vec![2049u64],
        "priority 11: total_scan = (2048 >> 11) + 2048"
    );
    kassert_eq!(freed, 2049);
    Ok(())
}

fn default_seeks_scales_with_priority() -> TestResult {
    let (f, _o, scans) = Fake::new(100_000);
    let reg = ShrinkerBuilder::new("seeks2").register(f).unwrap();
    // delta = (100000 >> 10) * 4 / 2 = 194 -> one batch of 128, 66 deferred.
    reg.shrink(GFP_KERNEL, 10);
    kassert_eq!(*scans.lock(), alloc::vec![128u64]);
    kassert_eq!(reg.nr_deferred(), 194 - 128);
    kassert_eq!(reg.info().batch, SHRINK_BATCH);
    Ok(())
}

fn small_cache_is_emptied_below_one_batch() -> TestResult {
    let (f, objs, scans) = Fake::new(10);
    let reg = ShrinkerBuilder::new("tiny").register(f).unwrap();
    // priority 0: delta = 10*4/2 = 20, total = min(20, 20); 20 >= freeable.
    let freed = reg.shrink(GFP_KERNEL, 0);
    kassert_eq!(freed, 10);
    kassert_eq!(objs.load(Ordering::SeqCst), 0);
    kassert!(!scans.lock().is_empty());
    Ok(())
}

fn nofs_stop_is_deferred_to_a_kernel_caller() -> TestResult {
    let (f, objs, scans) = Fake::new(1000);
    let f = Fake {
        needs_fs: true,
        ..f
    };
    let reg = ShrinkerBuilder::new("needs_fs").register(f).unwrap();
    // GFP_NOFS at priority 2: delta = (1000 >> 2) * 4 / 2 = 500; STOP at once.
    kassert_eq!(reg.shrink(GFP_NOFS, 2), 0);
    kassert_eq!(reg.stats().stops.load(Ordering::Relaxed), 1);
    kassert_eq!(reg.nr_deferred(), 500);
    kassert!(scans.lock().is_empty());
    // A GFP_KERNEL caller claims the deferred work: total_scan =
    // (500 >> 2) + 500 = 625, done in whole batches of 128 (4 x 128 = 512);
    // without the deferral it would have scanned only 3 batches (delta 500).
    let freed = reg.shrink(GFP_KERNEL, 2);
    kassert_eq!(
        *scans.lock(),
        alloc::vec![128u64; 4],
        "the kernel caller must do the deferred work too"
    );
    kassert_eq!(freed, 512);
    kassert_eq!(objs.load(Ordering::SeqCst), 488);
    // next_deferred = nr + delta - scanned = 500 + 500 - 512.
    kassert_eq!(reg.nr_deferred(), 488);
    Ok(())
}

fn nofs_scope_reaches_the_shrinker() -> TestResult {
    let (f, _o, scans) = Fake::new(1000);
    let f = Fake {
        needs_fs: true,
        ..f
    };
    let reg = ShrinkerBuilder::new("scoped").register(f).unwrap();
    {
        let _nofs = MemallocScope::nofs();
        reg.shrink(GFP_KERNEL, 0); // GFP_KERNEL, but the scope strips __GFP_FS
    }
    kassert!(scans.lock().is_empty(), "scanned inside a NOFS scope");
    kassert_eq!(reg.stats().stops.load(Ordering::Relaxed), 1);
    reg.shrink(GFP_KERNEL, 0);
    kassert!(!scans.lock().is_empty());
    Ok(())
}

fn empty_and_unknown_counts_scan_nothing() -> TestResult {
    let (f, _o, scans) = Fake::new(0);
    let reg = ShrinkerBuilder::new("empty").register(f).unwrap();
    kassert_eq!(reg.shrink(GFP_KERNEL, 0), CountObjects::EMPTY.raw());
    kassert!(scans.lock().is_empty());
    kassert_eq!(reg.nr_deferred(), 0);
    kassert!(CountObjects::EMPTY != CountObjects::UNKNOWN);
    Ok(())
}

fn lying_shrinker_is_reported() -> TestResult {
    let (f, _o, _s) = Fake::new(1000);
    let f = Fake { lie: true, ..f };
    let reg = ShrinkerBuilder::new("liar").register(f).unwrap();
    reg.shrink(GFP_KERNEL, 0);
    kassert!(reg.stats().violations.load(Ordering::Relaxed) > 0);
    Ok(())
}

fn shrink_slab_walks_every_registered_shrinker() -> TestResult {
    let (a, ao, _) = Fake::new(50);
    let (b, bo, _) = Fake::new(60);
    let ra = ShrinkerBuilder::new("walk-a").register(a).unwrap();
    let rb = ShrinkerBuilder::new("walk-b").register(b).unwrap();
    let freed = shrink_slab(GFP_KERNEL, 0);
    kassert!(freed >= 110, "freed {freed}");
    kassert_eq!(ao.load(Ordering::SeqCst) + bo.load(Ordering::SeqCst), 0);
    let names: Vec<_> = shrinkers().into_iter().map(|s| s.name).collect();
    kassert!(names.iter().any(|n| n == "walk-a") && names.iter().any(|n| n == "walk-b"));
    drop(ra);
    let names: Vec<_> = shrinkers().into_iter().map(|s| s.name).collect();
    kassert!(
        !names.iter().any(|n| n == "walk-a"),
        "unregistered shrinker still listed"
    );
    kassert_eq!(rb.stats().calls.load(Ordering::Relaxed), 1);
    Ok(())
}

fn unregister_waits_for_scan_on_other_task() -> TestResult {
    unregister_waits_for_scan(false)
}

/// Linux's `shrinker_free`: unregistration blocks on `shrinker->done`,
/// which the scan's `shrinker_put` completes; it does not poll (a task
/// polling with sleeps is `Sleeping`, never `Blocked`).
fn unregister_blocks_on_the_last_scans_completion() -> TestResult {
    unregister_waits_for_scan(true)
}

fn unregister_waits_for_scan(blocked_only: bool) -> TestResult {
    let slow = Arc::new(SlowScan {
        unregisterer: task::current_arc().or_fail("the current task")?,
        unregistering: AtomicBool::new(false),
        done: AtomicBool::new(false),
        blocked_only,
        seen_waiting: AtomicBool::new(false),
    });
    let (f, _o, scans) = Fake::new(1000);
    let f = Fake {
        slow: Some(slow.clone()),
        ..f
    };
    let reg = ShrinkerBuilder::new("slow").register(f).unwrap();
    let reclaimer = task::spawn("reclaimer", || {
        shrink_slab(GFP_KERNEL, 0);
    })
    .unwrap();
    // Wait until the reclaimer is inside scan_objects.
    while scans.lock().is_empty() {
        task::sleep(Duration::from_millis(1));
    }
    kassert!(!slow.done.load(Ordering::SeqCst));
    slow.unregistering.store(true, Ordering::SeqCst);
    drop(reg); // must wait for the scan in flight
    kassert!(
        slow.done.load(Ordering::SeqCst),
        "unregister returned while a scan was running"
    );
    kassert!(
        slow.seen_waiting.load(Ordering::SeqCst),
        "the unregistering task was never seen {} while the scan ran",
        if blocked_only {
            "Blocked (on the completion)"
        } else {
            "waiting"
        }
    );
    let n = scans.lock().len();
    reclaimer.join().unwrap();
    kassert_eq!(scans.lock().len(), n, "scanned after unregistration");
    Ok(())
}

/// A shrinker that unregisters itself from inside its own scan: by dropping
/// its registration, or through `unregister()` (whose result it keeps).
struct SelfUnregistering {
    reg: Arc<spin::Mutex<Option<ShrinkerRegistration>>>,
    explicit: bool,
    result: Arc<spin::Mutex<Option<Result<(), UnregisterError>>>>,
    scans: Arc<AtomicU64>,
}

impl Shrinker for SelfUnregistering {
    fn count_objects(&self, _sc: &ShrinkControl) -> CountObjects {
        CountObjects::new(1000)
    }

    fn scan_objects(&self, sc: &mut ShrinkControl) -> ScanObjects {
        self.scans.fetch_add(1, Ordering::SeqCst);
        let reg = self.reg.lock().take();
        if let Some(reg) = reg {
            if self.explicit {
                *self.result.lock() = Some(reg.unregister());
            } else {
                drop(reg);
            }
        }
        ScanObjects::freed(sc.nr_to_scan())
    }
}

fn unregister_from_its_own_scan_is_reported_not_waited_for() -> TestResult {
    for explicit in [false, true] {
        let name = if explicit {
            "self-unreg-explicit"
        } else {
            "self-unreg-drop"
        };
        let slot = Arc::new(spin::Mutex::new(None));
        let result = Arc::new(spin::Mutex::new(None));
        let scans = Arc::new(AtomicU64::new(0));
        let reg = ShrinkerBuilder::new(name)
            .batch(10)
            .register(SelfUnregistering {
                reg: slot.clone(),
                explicit,
                result: result.clone(),
                scans: scans.clone(),
            })
            .unwrap();
        *slot.lock() = Some(reg);
        let before = unregistrations_in_own_callback();
        // Hung forever before: the drop waited for the scan it was in.
        shrink_slab(GFP_KERNEL, 0);
        kassert_eq!(unregistrations_in_own_callback(), before + 1, "{name}");
        kassert!(slot.lock().is_none(), "{name}: the scan did not run");
        kassert_eq!(
            scans.load(Ordering::SeqCst),
            1,
            "{name}: scanned after unregistering"
        );
        let names: Vec<_> = shrinkers().into_iter().map(|s| s.name).collect();
        kassert!(!names.iter().any(|n| n == name), "{name} still registered");
        if explicit {
            let r = result.lock().take();
            kassert_eq!(
                r,
                Some(Err(UnregisterError::InOwnCallback {
                    name: InlineName::new(name)
                }))
            );
        }
        // Freed once the scan returned: only the test's handles remain.
        kassert_eq!(Arc::strong_count(&scans), 1, "{name}: shrinker not freed");
    }
    Ok(())
}

fn register_error_names_the_shrinker() -> TestResult {
    use kreclaim::mm::fault_inject::FAILSLAB;
    // Registration allocates the name, the shrinker and its entry: fail
    // each in turn (the registry slot is allocated at most once).
    for nth in 1..=3 {
        let injected = FAILSLAB.injected();
        let (f, _o, _s) = Fake::new(10);
        FAILSLAB.configure(100, nth, 1);
        let r = ShrinkerBuilder::new("t-nomem-shrinker").register(f);
        FAILSLAB.disable();
        kassert_eq!(FAILSLAB.injected(), injected + 1, "allocation {nth} failed");
        let err = r.err();
        kassert!(
            matches!(err, Some(RegisterError::NoMemory { name }) if name == "t-nomem-shrinker"),
            "allocation {nth}: {:?}",
            err
        );
        let text = alloc::format!("{}", err.unwrap());
        kassert!(
            text.contains("t-nomem-shrinker") && text.contains("out of memory"),
            "{text}"
        );
        kassert!(
            !shrinkers().iter().any(|s| s.name == "t-nomem-shrinker"),
            "a failed registration is not listed"
        );
    }
    Ok(())
}

/// A cache whose count never changes (`freeable`), that frees at most
/// `frees` objects per scan call and leaves `nr_scanned` as it was given
/// (as Linux's shrinkers do), or sets it to `scanned_override`; STOPs
/// without __GFP_FS.
struct Table {
    freeable: u64,
    frees: u64,
    scanned_override: Option<u64>,
    scans: Arc<spin::Mutex<Vec<u64>>>,
}

impl Shrinker for Table {
    fn count_objects(&self, _sc: &ShrinkControl) -> CountObjects {
        CountObjects::new(self.freeable)
    }

    fn scan_objects(&self, sc: &mut ShrinkControl) -> ScanObjects {
        if !sc.reclaim_fs_allowed() {
            return ScanObjects::STOP;
        }
        self.scans.lock().push(sc.nr_to_scan());
        if let Some(n) = self.scanned_override {
            sc.set_nr_scanned(n);
        }
        ScanObjects::freed(self.frees.min(sc.nr_to_scan()))
    }
}

/// One row: the shrinker, the GFP_NOFS passes (each STOPs and defers its
/// work) that set up nr_deferred, then one GFP_KERNEL pass and what Linux's
/// do_shrink_slab does in it.
struct Row {
    name: &'static str,
    freeable: u64,
    frees: u64,
    seeks: u32,
    batch: u64,
    nofs_priorities: &'static [u32],
    priority: u32,
    // Expected:
    deferred_in: i64,
    scan_calls: &'static [u64],
    freed: u64,
    deferred_out: i64,
}

fn do_shrink_slab_table_worked_by_hand() -> TestResult {
    const ROWS: &[Row] = &[
        // delta = (1000 >> 2) * 4 / 2 = 500; total_scan = min(500, 2000):
        // 3 batches of 128 (384), 116 < 128 and < 1000 left; 500 - 384 deferred.
        Row {
            name: "t-plain",
            freeable: 1000,
            frees: 1000,
            seeks: 2,
            batch: 128,
            nofs_priorities: &[],
            priority: 2,
            deferred_in: 0,
            scan_calls: &[128, 128, 128],
            freed: 384,
            deferred_out: 116,
        },
        // NOFS at priority 2 defers delta 500. Then priority 4: nr = 500,
        // delta = (1000 >> 4) * 4 / 2 = 124, total = (500 >> 4) + 124 = 155:
        // one batch; next = 500 + 124 - 128 = 496.
        Row {
            name: "t-deferred",
            freeable: 1000,
            frees: 1000,
            seeks: 2,
            batch: 128,
            nofs_priorities: &[2],
            priority: 4,
            deferred_in: 500,
            scan_calls: &[128],
            freed: 128,
            deferred_out: 496,
        },
        // seeks 0: delta = freeable / 2 = 150 whatever the priority; one
        // batch of 100, 50 deferred.
        Row {
            name: "t-seeks0",
            freeable: 300,
            frees: 300,
            seeks: 0,
            batch: 100,
            nofs_priorities: &[],
            priority: 12,
            deferred_in: 0,
            scan_calls: &[100],
            freed: 100,
            deferred_out: 50,
        },
        // Two NOFS passes at priority 0: 2000, then min(2000 + 2000, 2000):
        // nr_deferred is capped at 2 x freeable. The kernel pass at
        // priority 12: delta = 0, total = (2000 >> 12) + 0 = 0: nothing;
        // next = min(2000 + 0 - 0, 2000).
        Row {
            name: "t-cap",
            freeable: 1000,
            frees: 1000,
            seeks: 2,
            batch: 128,
            nofs_priorities: &[0, 0],
            priority: 12,
            deferred_in: 2000,
            scan_calls: &[],
            freed: 0,
            deferred_out: 2000,
        },
        // Objects that cannot be freed still count as scanned: 15 batches
        // of 128 (1920 of total_scan 2000), 10 freed each; 80 deferred.
        Row {
            name: "t-pinned",
            freeable: 1000,
            frees: 10,
            seeks: 2,
            batch: 128,
            nofs_priorities: &[],
            priority: 0,
            deferred_in: 0,
            scan_calls: &[128; 15],
            freed: 150,
            deferred_out: 80,
        },
    ];
    for row in ROWS {
        let scans = Arc::new(spin::Mutex::new(Vec::new()));
        let reg = ShrinkerBuilder::new(row.name)
            .seeks(row.seeks)
            .batch(row.batch)
            .register(Table {
                freeable: row.freeable,
                frees: row.frees,
                scanned_override: None,
                scans: scans.clone(),
            })
            .or_fail("register")?;
        for &p in row.nofs_priorities {
            kassert_eq!(reg.shrink(GFP_NOFS, p), 0, "{}: NOFS pass", row.name);
        }
        kassert_eq!(
            reg.nr_deferred(),
            row.deferred_in,
            "{}: deferred in",
            row.name
        );
        kassert!(scans.lock().is_empty(), "{}: a NOFS pass scanned", row.name);
        let freed = reg.shrink(GFP_KERNEL, row.priority);
        kassert_eq!(
            &scans.lock()[..],
            row.scan_calls,
            "{}: scan calls",
            row.name
        );
        kassert_eq!(freed, row.freed, "{}: freed", row.name);
        kassert_eq!(
            reg.nr_deferred(),
            row.deferred_out,
            "{}: deferred out",
            row.name
        );
        let info = reg.info();
        kassert_eq!(
            info.scanned,
            row.scan_calls.iter().sum::<u64>(),
            "{}: scanned",
            row.name
        );
        // The tracepoint-style figure: the highest nr_deferred after a
        // call, not a sum of what each call deferred.
        kassert_eq!(
            info.deferred_peak as i64,
            row.deferred_in.max(row.deferred_out),
            "{}: deferred peak",
            row.name
        );
    }
    Ok(())
}

fn scanning_nothing_without_stop_is_reported_not_spun_on() -> TestResult {
    let scans = Arc::new(spin::Mutex::new(Vec::new()));
    let reg = ShrinkerBuilder::new("scans-nothing")
        .register(Table {
            freeable: 10,
            frees: 0,
            scanned_override: Some(0),
            scans: scans.clone(),
        })
        .or_fail("register")?;
    // priority 0: total_scan = min(20, 20) >= freeable, so Linux's loop
    // would never end; the pass ends after one call and names the shrinker.
    reg.shrink(GFP_KERNEL, 0);
    kassert_eq!(scans.lock().len(), 1);
    kassert_eq!(reg.stats().violations.load(Ordering::Relaxed), 1);
    Ok(())
}

/// An object for the list_lru tests.
struct LruObj {
    id: u32,
    lru: ListLruHead<LruObj>,
}

// SAFETY: always the object's own `lru` field.
unsafe impl ListLruItem for LruObj {
    fn lru_head(&self) -> &ListLruHead<Self> {
        &self.lru
    }
}

/// `n` objects with ids 0..n (the vector is never resized, so they do not
/// move while on a list).
fn lru_objs(n: u32) -> Vec<LruObj> {
    (0..n)
        .map(|id| LruObj {
            id,
            lru: ListLruHead::new(),
        })
        .collect()
}

fn ptr_of(o: &LruObj) -> core::ptr::NonNull<LruObj> {
    core::ptr::NonNull::from(o)
}

fn id_of(p: core::ptr::NonNull<LruObj>) -> u32 {
    // SAFETY: the tests only walk lists of objects they keep alive.
    unsafe { p.as_ref() }.id
}

/// An LRU holding every object of `objs`, in order (oldest first).
fn lru_of(objs: &[LruObj]) -> ListLru<LruObj> {
    let lru = ListLru::new(kreclaim::lock_class!("test_list_lru"));
    for o in objs {
        // SAFETY: the objects outlive the LRU in every test (declared first,
        // dropped last) and are on no other list.
        // (Each test checks the count.)
        unsafe { lru.add(ptr_of(o)) };
    }
    lru
}

/// The ids on the list, head (oldest) first, read with a walk that skips
/// everything.
fn lru_order(lru: &ListLru<LruObj>) -> Vec<u32> {
    let mut ids = Vec::new();
    lru.walk(
        |p, _| {
            ids.push(id_of(p));
            LruStatus::Skip
        },
        u64::MAX,
    );
    ids
}

fn list_lru_add_del_and_counts() -> TestResult {
    let objs = lru_objs(3);
    let lru = lru_of(&objs);
    kassert_eq!(lru.count(), 3);
    kassert_eq!(lru.count_one(0), 3);
    kassert_eq!(lru.count_one(1), 0, "a node that does not exist");
    // SAFETY: as in `lru_of`.
    unsafe {
        kassert_eq!(lru.add(ptr_of(&objs[1])), false, "already on the list");
        kassert_eq!(lru.count(), 3);
        kassert_eq!(lru.del(ptr_of(&objs[1])), true);
        kassert_eq!(lru.del(ptr_of(&objs[1])), false, "not on the list");
    }
    kassert_eq!(lru.count(), 2);
    kassert_eq!(lru_order(&lru), [0, 2]);
    // Re-added at the tail (the most recent end).
    // SAFETY: as in `lru_of`.
    kassert_eq!(unsafe { lru.add(ptr_of(&objs[1])) }, true);
    kassert_eq!(lru_order(&lru), [0, 2, 1]);
    kassert_eq!(lru.shrink_count(), 3);
    Ok(())
}

fn list_lru_walk_honours_each_isolate_result() -> TestResult {
    let objs = lru_objs(5);
    let lru = lru_of(&objs);
    let mut dispose = LruDispose::new();
    let mut visits = Vec::new();
    // 0: removed; 1: rotated; 2: skipped; 3: moved to a dispose list;
    // 4: skipped. Five visits: 1 is not seen again.
    let removed = lru.walk(
        |p, walk| {
            visits.push(id_of(p));
            match id_of(p) {
                0 => {
                    walk.isolate(p);
                    LruStatus::Removed
                }
                1 => LruStatus::Rotate,
                3 => {
                    walk.isolate_move(p, &mut dispose);
                    LruStatus::Removed
                }
                _ => LruStatus::Skip,
            }
        },
        5,
    );
    kassert_eq!(visits, [0, 1, 2, 3, 4]);
    kassert_eq!(removed, 2);
    kassert_eq!(lru.count(), 3);
    kassert_eq!(lru_order(&lru), [2, 4, 1], "1 rotated to the tail");
    kassert_eq!(dispose.len(), 1);
    kassert_eq!(dispose.pop().map(id_of), Some(3));
    kassert!(dispose.pop().is_none());
    // Isolated items can be added again.
    // SAFETY: as in `lru_of`.
    unsafe {
        kassert_eq!(lru.add(ptr_of(&objs[0])), true);
        kassert_eq!(lru.add(ptr_of(&objs[3])), true);
    }
    kassert_eq!(lru_order(&lru), [2, 4, 1, 0, 3]);
    kassert_eq!(lru.violations(), 0);
    Ok(())
}

fn list_lru_rotate_revisits_and_nr_to_walk_bounds_the_walk() -> TestResult {
    let objs = lru_objs(3);
    let lru = lru_of(&objs);
    let mut visits = Vec::new();
    // Rotated items go to the tail, so an always-rotating walk comes back
    // to them: only nr_to_walk ends it (Linux's list_for_each_safe walk).
    let removed = lru.walk(
        |p, _| {
            visits.push(id_of(p));
            LruStatus::Rotate
        },
        7,
    );
    kassert_eq!(removed, 0);
    kassert_eq!(visits, [0, 1, 2, 0, 1, 2, 0]);
    kassert_eq!(lru_order(&lru), [1, 2, 0]);
    // nr_to_walk 0 visits nothing; a short walk removes at most that many.
    kassert_eq!(lru.walk(|_, _| LruStatus::Skip, 0), 0);
    let removed = lru.walk(
        |p, walk| {
            walk.isolate(p);
            LruStatus::Removed
        },
        2,
    );
    kassert_eq!(removed, 2);
    kassert_eq!(lru_order(&lru), [0]);
    kassert_eq!(lru.count(), 1);
    Ok(())
}

fn list_lru_retry_restarts_from_the_head() -> TestResult {
    let objs = lru_objs(3);
    let lru = lru_of(&objs);
    let mut visits = Vec::new();
    let mut dropped_once = false;
    // Item 1 drops the lock once and answers Retry: the walk restarts at
    // the head, and every visit counts against nr_to_walk.
    lru.walk(
        |p, walk| {
            visits.push(id_of(p));
            if id_of(p) == 1 && !dropped_once {
                dropped_once = true;
                walk.unlocked(|| ());
                return LruStatus::Retry;
            }
            LruStatus::Skip
        },
        u64::MAX,
    );
    kassert_eq!(visits, [0, 1, 0, 1, 2]);
    visits.clear();
    let mut dropped_once = false;
    lru.walk(
        |p, walk| {
            visits.push(id_of(p));
            if id_of(p) == 1 && !dropped_once {
                dropped_once = true;
                walk.unlocked(|| ());
                return LruStatus::Retry;
            }
            LruStatus::Skip
        },
        3,
    );
    kassert_eq!(visits, [0, 1, 0], "retries count against nr_to_walk");
    // RemovedRetry: removed (with the lock retaken), then restart.
    visits.clear();
    let removed = lru.walk(
        |p, walk| {
            visits.push(id_of(p));
            if id_of(p) == 1 {
                walk.unlocked(|| ());
                walk.isolate(p);
                return LruStatus::RemovedRetry;
            }
            LruStatus::Skip
        },
        u64::MAX,
    );
    kassert_eq!(removed, 1);
    kassert_eq!(visits, [0, 1, 0, 2]);
    kassert_eq!(lru_order(&lru), [0, 2]);
    kassert_eq!(lru.violations(), 0);
    Ok(())
}

fn list_lru_stop_ends_the_walk() -> TestResult {
    let objs = lru_objs(4);
    let lru = lru_of(&objs);
    let mut visits = Vec::new();
    let removed = lru.walk(
        |p, walk| {
            visits.push(id_of(p));
            if id_of(p) == 1 {
                return LruStatus::Stop;
            }
            walk.isolate(p);
            LruStatus::Removed
        },
        u64::MAX,
    );
    kassert_eq!(visits, [0, 1]);
    kassert_eq!(removed, 1);
    kassert_eq!(lru_order(&lru), [1, 2, 3]);
    Ok(())
}

fn list_lru_contract_breaks_are_reported() -> TestResult {
    let objs = lru_objs(2);
    let lru = lru_of(&objs);
    // "Removed" without taking the item off: reported, not counted as
    // removed, and the walk restarts instead of trusting the list.
    let mut visits = Vec::new();
    let removed = lru.walk(
        |p, _| {
            visits.push(id_of(p));
            if visits.len() == 1 {
                LruStatus::Removed
            } else {
                LruStatus::Skip
            }
        },
        u64::MAX,
    );
    kassert_eq!(removed, 0);
    kassert_eq!(visits, [0, 0, 1]);
    kassert_eq!(lru.violations(), 1);
    // "Rotate" after dropping the lock: the position is stale; reported,
    // and the walk restarts without moving anything.
    let mut visits = Vec::new();
    lru.walk(
        |p, walk| {
            visits.push(id_of(p));
            if visits.len() == 1 {
                walk.unlocked(|| ());
                LruStatus::Rotate
            } else {
                LruStatus::Skip
            }
        },
        u64::MAX,
    );
    kassert_eq!(visits, [0, 0, 1]);
    kassert_eq!(lru.violations(), 2);
    kassert_eq!(lru_order(&lru), [0, 1]);
    kassert_eq!(lru.count(), 2);
    // Isolating another item than the one called for: refused, reported.
    let other = ptr_of(&objs[1]);
    let removed = lru.walk(
        |p, walk| {
            if id_of(p) == 0 {
                walk.isolate(other);
            }
            LruStatus::Skip
        },
        u64::MAX,
    );
    kassert_eq!(removed, 0);
    kassert_eq!(lru.violations(), 3);
    kassert_eq!(lru_order(&lru), [0, 1]);
    Ok(())
}
