//! module_init / module_exit: a subsystem creates a cache and registers a
//! shrinker on load and releases both on unload, also while reclaim runs.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;
use kreclaim::harness::{OrFail, TestResult, wait_for};
use kreclaim::mm::gfp::GFP_KERNEL;
use kreclaim::mm::shrinker::*;
use kreclaim::mm::slab::{self, KmemCache, SlabFlags};
use kreclaim::module::{Module, ModuleError, loaded_modules, module_load};
use kreclaim::task::{self, Task, TaskState};
use kreclaim::{kassert, kassert_eq};

kreclaim::kernel_tests!(
    load_creates_and_unload_releases,
    double_load_is_refused,
    unload_while_reclaim_runs_elsewhere_is_safe,
    unload_with_live_objects_reports_the_cache,
    init_failing_for_lack_of_memory_is_an_error_not_an_abort,
);

static SCANNING: AtomicBool = AtomicBool::new(false);
static SCANS: AtomicU64 = AtomicU64::new(0);
/// The task that is about to unload the module while a scan runs: the scan
/// stays in flight until that task waits inside the unload. (A fixed sleep
/// in the scan could end before the unloader even looked, on a loaded host.)
static UNLOADER: spin::Mutex<Option<Arc<Task>>> = spin::Mutex::new(None);
static UNLOADING: AtomicBool = AtomicBool::new(false);

struct SlowShrinker;

impl Shrinker for SlowShrinker {
    fn count_objects(&self, _sc: &ShrinkControl) -> CountObjects {
        CountObjects::new(100)
    }
    fn scan_objects(&self, sc: &mut ShrinkControl) -> ScanObjects {
        SCANNING.store(true, Ordering::SeqCst);
        let unloader = UNLOADER.lock().clone();
        if let Some(u) = unloader {
            // An unload that does not wait never waits here: it returns and
            // finds the scan unfinished.
            let _ = wait_for("the unloader to wait for this scan", || {
                UNLOADING.load(Ordering::SeqCst)
                    && matches!(u.state(), TaskState::Sleeping | TaskState::Blocked)
            });
        }
        SCANS.fetch_add(1, Ordering::SeqCst);
        SCANNING.store(false, Ordering::SeqCst);
        ScanObjects::freed(sc.nr_to_scan().min(1))
    }
}

struct TestFs {
    cache: KmemCache,
    _shrinker: ShrinkerRegistration,
}

impl Module for TestFs {
    const NAME: &'static str = "testfs";
    fn init() -> Result<Self, ModuleError> {
        let cache = KmemCache::create("testfs_inode", 200, 8, SlabFlags::RECLAIM_ACCOUNT, None)
            .map_err(|e| ModuleError::new(Self::NAME, e))?;
        let shrinker = ShrinkerBuilder::new("testfs")
            .register(SlowShrinker)
            .map_err(|e| ModuleError::new(Self::NAME, alloc::format!("{e:?}")))?;
        Ok(TestFs {
            cache,
            _shrinker: shrinker,
        })
    }
}

fn names() -> (bool, bool) {
    (
        slab::slabinfo().iter().any(|s| s.name == "testfs_inode"),
        shrinkers().iter().any(|s| s.name == "testfs"),
    )
}

fn load_creates_and_unload_releases() -> TestResult {
    kassert_eq!(names(), (false, false));
    let m = module_load::<TestFs>().unwrap();
    kassert_eq!(names(), (true, true));
    kassert!(loaded_modules().contains(&"testfs"));
    let obj = m.get().cache.alloc(GFP_KERNEL).unwrap();
    // SAFETY: `obj` was just allocated from this cache and is not used again.
    unsafe { m.get().cache.free(obj) };
    kassert!(m.unload().is_ok());
    kassert_eq!(names(), (false, false));
    kassert!(!loaded_modules().contains(&"testfs"));
    Ok(())
}

fn double_load_is_refused() -> TestResult {
    let m = module_load::<TestFs>().unwrap();
    let e = module_load::<TestFs>().err().unwrap();
    kassert_eq!(e.module, "testfs");
    drop(m);
    kassert!(module_load::<TestFs>().is_ok());
    Ok(())
}

fn unload_while_reclaim_runs_elsewhere_is_safe() -> TestResult {
    let m = module_load::<TestFs>().unwrap();
    *UNLOADER.lock() = Some(task::current_arc().or_fail("the current task")?);
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let reclaimer = task::spawn("reclaimer", move || {
        shrink_slab(GFP_KERNEL, 0);
        d.store(true, Ordering::SeqCst);
    })
    .unwrap();
    while !SCANNING.load(Ordering::SeqCst) {
        task::sleep(Duration::from_millis(1));
    }
    let before = SCANS.load(Ordering::SeqCst);
    UNLOADING.store(true, Ordering::SeqCst);
    kassert!(m.unload().is_ok());
    // Unload returned only after the scan in flight finished...
    kassert!(
        SCANS.load(Ordering::SeqCst) > before,
        "unload did not wait for the scan"
    );
    kassert!(!SCANNING.load(Ordering::SeqCst));
    // ...and the shrinker is never called again.
    let after = SCANS.load(Ordering::SeqCst);
    reclaimer.join().unwrap();
    shrink_slab(GFP_KERNEL, 0);
    kassert_eq!(SCANS.load(Ordering::SeqCst), after);
    kassert!(done.load(Ordering::SeqCst));
    Ok(())
}

fn unload_with_live_objects_reports_the_cache() -> TestResult {
    let before = slab::reports().len();
    let m = module_load::<TestFs>().unwrap();
    let _leak = m.get().cache.alloc(GFP_KERNEL).unwrap();
    drop(m); // exit drops the cache: destroy reports live objects
    let r = slab::reports();
    kassert_eq!(r.len(), before + 1);
    kassert_eq!(r[before].bug, slab::SlabBug::LiveObjectsAtDestroy);
    kassert_eq!(r[before].cache.as_str(), "testfs_inode");
    Ok(())
}

/// Every slab allocation fails while the module loads: creating its cache
/// fails, and so does formatting the reason. Both must come back as values
/// (an infallible `format!` there aborted the kernel).
fn init_failing_for_lack_of_memory_is_an_error_not_an_abort() -> TestResult {
    use kreclaim::mm::fault_inject::FAILSLAB;
    // A cache of that name may be left (leaked on purpose) by an earlier test.
    let caches = || {
        slab::slabinfo()
            .iter()
            .filter(|s| s.name == "testfs_inode")
            .count()
    };
    let caches_before = caches();
    let injected = FAILSLAB.injected();
    FAILSLAB.configure(100, 1, -1);
    let r = module_load::<TestFs>();
    FAILSLAB.disable();
    kassert!(FAILSLAB.injected() > injected, "no allocation was failed");
    let Err(err) = r else {
        return Err(kreclaim::harness::TestFailure::new(
            alloc::string::String::from("loading with no memory succeeded"),
        ));
    };
    kassert_eq!(err.module, "testfs");
    let text = alloc::format!("{err}");
    kassert!(
        text.contains("testfs") && text.contains("out of memory"),
        "{text}"
    );
    kassert!(!loaded_modules().contains(&"testfs"));
    kassert_eq!(caches(), caches_before, "the module's cache is not left");
    kassert!(!names().1, "the module's shrinker is not left");
    // With memory back, the module loads.
    let m = module_load::<TestFs>().or_fail("load with memory back")?;
    kassert_eq!(caches(), caches_before + 1);
    m.unload().or_fail("unload")?;
    Ok(())
}
