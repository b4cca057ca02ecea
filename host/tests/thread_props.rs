//! The allocator across host threads, each thread a CPU of its own: objects
//! allocated on one thread and freed on another (they go to the freeing
//! CPU's sheaf), pages likewise, and a shrinker registered and unregistered
//! while another thread runs reclaim. Nothing may be lost, overwritten or
//! left counted once every thread has drained its sheaves; unregistration
//! may not return while a scan of the shrinker runs on another CPU.

mod common;

use common::{check_fill, check_stamp, fill, stamp};
use kreclaim::mm::gfp::{GFP_KERNEL, Gfp};
use kreclaim::mm::page_alloc::{self, PhysAddr};
use kreclaim::mm::shrinker::{
    self, CountObjects, ScanObjects, ShrinkControl, Shrinker, ShrinkerBuilder,
};
use kreclaim::mm::slab::{self, KmemCache, SlabFlags};
use proptest::prelude::*;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Barrier};

/// Free pages, counting sheaves' own pages as free (as slab_props does).
fn nr_free_pages() -> u64 {
    page_alloc::nr_free_pages() + slab::sheaf_pages() as u64
}

/// A ring of `n` threads: thread `i` sends to `i + 1` and receives from
/// `i - 1`. Runs `f(i, to_next, from_prev)` on each, started together.
fn ring<T: Send + 'static>(
    n: usize,
    f: impl Fn(usize, Sender<T>, Receiver<T>) + Send + Sync + 'static,
) {
    let f = Arc::new(f);
    let go = Arc::new(Barrier::new(n));
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| channel::<T>()).unzip();
    let mut rxs: Vec<Option<Receiver<T>>> = rxs.into_iter().map(Some).collect();
    let hs: Vec<_> = (0..n)
        .map(|i| {
            let tx = txs[(i + 1) % n].clone();
            let rx = rxs[i].take().unwrap();
            let (f, go) = (f.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                f(i, tx, rx)
            })
        })
        .collect();
    drop(txs);
    for h in hs {
        h.join().expect("a worker thread panicked");
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: common::cases().min(16),
        ..common::config()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Every thread allocates objects, fills them, and hands them to the
    /// next thread, which checks and frees them (a cross-CPU free: into its
    /// own sheaf). Each thread drains its CPU's sheaves before it ends (as
    /// Linux flushes every CPU's); then the cache counts no object, its
    /// slabinfo adds up, it validates, and destroying it gives back every
    /// page.
    #[test]
    fn slab_cross_thread_frees_lose_nothing(
        threads in 2usize..5,
        per_thread in 1usize..1500,
        size in prop_oneof![8usize..=64, 65usize..=512, 513usize..=2048],
        batch in 1usize..64,
    ) {
        common::host();
        let _serial = kreclaim_host::serial();
        let _pcp = page_alloc::zone_pcp_disable();
        let free0 = nr_free_pages();
        let reports0 = slab::reports().len();
        let cache: &'static KmemCache = Box::leak(Box::new(
            KmemCache::create("thread-props", size, 8, SlabFlags::empty(), None).unwrap(),
        ));
        let pages_per_slab = cache.info().pagesperslab as u64;
        let received = Arc::new(AtomicUsize::new(0));
        let r = received.clone();
        ring::<Vec<(usize, u64)>>(threads, move |t, tx, rx| {
            let mut sent = 0;
            while sent < per_thread {
                let n = batch.min(per_thread - sent);
                let objs: Vec<(usize, u64)> = (0..n)
                    .map(|k| {
                        let o = cache.alloc(GFP_KERNEL).expect("alloc").as_ptr() as usize;
                        let tag = ((t as u64) << 32) | (sent + k) as u64;
                        fill(o, size.min(64), tag);
                        (o, tag)
                    })
                    .collect();
                sent += n;
                tx.send(objs).unwrap();
            }
            drop(tx);
            // Free what the previous thread allocated, on this CPU.
            for objs in rx {
                for (o, tag) in objs {
                    check_fill(o, size.min(64), tag);
                    // SAFETY: a live object of `cache`, handed over whole.
                    unsafe { cache.free(NonNull::new(o as *mut u8).unwrap()) };
                    r.fetch_add(1, Ordering::Relaxed);
                }
            }
            // This CPU's sheaves back to the slabs.
            cache.flush_sheaves();
        });
        prop_assert_eq!(received.load(Ordering::Relaxed), threads * per_thread);
        let info = cache.info();
        prop_assert_eq!(info.active_objs, 0, "objects still counted: {:?}", info);
        prop_assert_eq!(info.sheaf_objs, 0);
        prop_assert_eq!(
            info.num_slabs,
            info.partial_slabs + info.full_slabs + info.empty_slabs
        );
        prop_assert!(cache.validate().is_ok(), "{:?}", cache.validate());
        prop_assert_eq!(
            nr_free_pages(),
            free0 - info.num_slabs as u64 * pages_per_slab,
            "page count does not match the slabs"
        );
        // SAFETY: leaked above for the threads; they are joined, so this is
        // the last reference.
        let cache = unsafe { std::ptr::read(cache) };
        cache.destroy().expect("destroy with no live objects");
        prop_assert_eq!(nr_free_pages(), free0, "slab pages leaked");
        prop_assert_eq!(slab::reports().len(), reports0, "{:?}", &slab::reports()[reports0..]);
    }

    /// Blocks of random orders allocated on one thread and freed on the
    /// next: no block handed out twice (stamps survive), and every page
    /// comes back.
    #[test]
    fn pages_cross_thread_frees_lose_nothing(
        threads in 2usize..5,
        per_thread in 1usize..300,
        max_order in 0u32..4,
    ) {
        common::host();
        let _serial = kreclaim_host::serial();
        let _pcp = page_alloc::zone_pcp_disable();
        let free0 = nr_free_pages();
        ring::<(u64, u32, u64)>(threads, move |t, tx, rx| {
            for k in 0..per_thread {
                let order = (k as u32 * 7 + t as u32) % (max_order + 1);
                let pa = page_alloc::alloc_pages(GFP_KERNEL, order).expect("alloc_pages");
                let p = page_alloc::page_address(pa) as usize;
                let tag = ((t as u64) << 32) | k as u64;
                stamp(p, 4096 << order, tag);
                tx.send((pa.as_u64(), order, tag)).unwrap();
            }
            drop(tx);
            for (pa, order, tag) in rx {
                let pa = PhysAddr::new(pa);
                check_stamp(page_alloc::page_address(pa) as usize, 4096 << order, tag);
                page_alloc::free_pages(pa, order);
            }
        });
        prop_assert_eq!(nr_free_pages(), free0, "pages lost across threads");
    }
}

/// A shrinker that records whether a scan of it is running, and whether one
/// ran after its unregistration returned.
struct Watched {
    inside: Arc<AtomicUsize>,
    scans: Arc<AtomicU64>,
    gone: Arc<AtomicBool>,
    late: Arc<AtomicU64>,
}

impl Shrinker for Watched {
    fn count_objects(&self, _sc: &ShrinkControl) -> CountObjects {
        if self.gone.load(Ordering::SeqCst) {
            self.late.fetch_add(1, Ordering::SeqCst);
        }
        CountObjects::new(1 << 20)
    }
    fn scan_objects(&self, sc: &mut ShrinkControl) -> ScanObjects {
        self.inside.fetch_add(1, Ordering::SeqCst);
        if self.gone.load(Ordering::SeqCst) {
            self.late.fetch_add(1, Ordering::SeqCst);
        }
        // Stay a while, so that unregistration often finds us here.
        for _ in 0..64 {
            std::thread::yield_now();
        }
        self.scans.fetch_add(1, Ordering::SeqCst);
        self.inside.fetch_sub(1, Ordering::SeqCst);
        ScanObjects::freed(sc.nr_to_scan())
    }
}

/// Shrinkers registered and unregistered on one thread while others run
/// reclaim (`shrink_slab`) on theirs: unregistration returns only once no
/// scan of the shrinker runs on any CPU, and no call reaches it after.
#[test]
fn shrinker_unregister_waits_for_scans_on_other_threads() {
    common::host();
    let _serial = kreclaim_host::serial();
    const ROUNDS: usize = 200;
    const RECLAIMERS: usize = 2;
    let stop = Arc::new(AtomicBool::new(false));
    let reclaimers: Vec<_> = (0..RECLAIMERS)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut calls = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    shrinker::shrink_slab(GFP_KERNEL | Gfp::__GFP_NOWARN, 0);
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let mut caught_inside = 0;
    let mut total_scans = 0;
    for round in 0..ROUNDS {
        let w = Watched {
            inside: Arc::new(AtomicUsize::new(0)),
            scans: Arc::new(AtomicU64::new(0)),
            gone: Arc::new(AtomicBool::new(false)),
            late: Arc::new(AtomicU64::new(0)),
        };
        let (inside, scans, gone, late) = (
            w.inside.clone(),
            w.scans.clone(),
            w.gone.clone(),
            w.late.clone(),
        );
        let reg = ShrinkerBuilder::new("thread_props").register(w).unwrap();
        // Let reclaim find it, at least in most rounds.
        while scans.load(Ordering::SeqCst) == 0 && round % 4 != 0 {
            std::thread::yield_now();
            if reclaimers.iter().all(|h| h.is_finished()) {
                break;
            }
        }
        caught_inside += usize::from(inside.load(Ordering::SeqCst) != 0);
        reg.unregister()
            .expect("unregister from outside any callback");
        assert_eq!(
            inside.load(Ordering::SeqCst),
            0,
            "round {round}: unregister returned while a scan of the shrinker ran"
        );
        gone.store(true, Ordering::SeqCst);
        for _ in 0..16 {
            std::thread::yield_now();
        }
        assert_eq!(
            late.load(Ordering::SeqCst),
            0,
            "round {round}: the shrinker was called after unregister returned"
        );
        total_scans += scans.load(Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);
    for h in reclaimers {
        assert!(h.join().expect("a reclaimer panicked") > 0);
    }
    assert!(total_scans > 0, "reclaim never reached the shrinkers");
    eprintln!("{caught_inside} of {ROUNDS} unregistrations found a scan in progress");
}

/// Drains from another thread race with each CPU's own fast path: where a
/// CPU's sheaf flag is a plain store (each thread a CPU), the drainer must
/// announce itself and fence (`membarrier`) before it takes the sheaves,
/// or both sides use one sheaf at once and an object is handed out twice
/// or freed twice. Workers allocate, stamp, check and free in a hot loop
/// while a drainer empties every CPU's sheaves (`flush_sheaves`, `shrink`,
/// `validate`) without pause; every stamp must survive, no report may
/// appear, and the counts must add up at the end.
#[test]
fn drains_from_another_thread_never_share_a_sheaf_with_its_cpu() {
    common::host();
    let _serial = kreclaim_host::serial();
    let _pcp = page_alloc::zone_pcp_disable();
    let reports0 = slab::reports().len();
    let cache: &'static KmemCache = Box::leak(Box::new(
        KmemCache::create("drain-race", 64, 8, SlabFlags::empty(), None).unwrap(),
    ));
    let workers = 2;
    let rounds = 100_000;
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let drains = Arc::new(AtomicU64::new(0));
    let drainer = {
        let (stop, drains) = (stop.clone(), drains.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                cache.flush_sheaves();
                cache.shrink();
                let _ = cache.validate();
                drains.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let hs: Vec<_> = (0..workers)
        .map(|t| {
            let done = done.clone();
            std::thread::spawn(move || {
                for r in 0..rounds {
                    let objs: Vec<(usize, u64)> = (0..4)
                        .map(|k| {
                            let o = cache.alloc(GFP_KERNEL).expect("alloc").as_ptr() as usize;
                            let tag = ((r as u64) << 3) | ((t as u64) << 2) | k;
                            fill(o, 64, tag);
                            (o, tag)
                        })
                        .collect();
                    for (o, tag) in objs {
                        check_fill(o, 64, tag);
                        // SAFETY: a live object of `cache`, allocated above.
                        unsafe { cache.free(NonNull::new(o as *mut u8).unwrap()) };
                    }
                }
                cache.flush_sheaves();
                done.fetch_add(1, Ordering::Release);
            })
        })
        .collect();
    for h in hs {
        h.join()
            .expect("a worker thread panicked (a stamp was overwritten?)");
    }
    stop.store(true, Ordering::Release);
    drainer.join().unwrap();
    assert_eq!(done.load(Ordering::Acquire), workers);
    assert!(drains.load(Ordering::Relaxed) > 0, "the drainer never ran");
    assert_eq!(
        slab::reports().len(),
        reports0,
        "{:?}",
        &slab::reports()[reports0..]
    );
    let info = cache.info();
    assert_eq!(info.active_objs, 0, "objects still counted: {info:?}");
    assert!(cache.validate().is_ok(), "{:?}", cache.validate());
    // SAFETY: leaked above for the threads; they are joined.
    let cache = unsafe { std::ptr::read(cache) };
    cache.destroy().expect("destroy with no live objects");
}
