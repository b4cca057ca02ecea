//! The shrinker arithmetic against a plain reference model of Linux's
//! `do_shrink_slab` (mm/shrinker.c; the steps are listed in
//! docs/linux-semantics.md, "Shrinkers"): random shrinker settings, object counts, scan behaviours and
//! a random series of calls at random priorities, with and without __GFP_FS.
//! After every call the objects freed, the sequence of `nr_to_scan` values
//! the shrinker saw and the deferred work must match the model.

mod common;

use kreclaim::mm::gfp::{GFP_KERNEL, GFP_NOFS, Gfp};
use kreclaim::mm::shrinker::{
    CountObjects, SHRINK_BATCH, ScanObjects, ShrinkControl, Shrinker, ShrinkerBuilder,
};
use proptest::prelude::*;
use std::sync::{Arc, Mutex};

/// How the test shrinker behaves (the same rules drive the model).
#[derive(Debug, Clone, Copy)]
struct Behaviour {
    /// Returns SHRINK_STOP when the caller lacks __GFP_FS (like XFS).
    needs_fs: bool,
    /// Reports scanning only this fraction (in 1/4) of each batch (>= 1 object).
    scan_quarters: u64,
    /// Count says "cannot tell now" (0) on every k-th call (0 = never).
    unknown_every: u64,
}

#[derive(Debug, Default)]
struct State {
    objects: u64,
    count_calls: u64,
    scans: Vec<u64>,
}

struct TestShrinker {
    b: Behaviour,
    s: Arc<Mutex<State>>,
}

/// What one scan call does to `objects` under `b`: (return, nr_scanned).
fn scan_rule(b: Behaviour, objects: &mut u64, nr_to_scan: u64, fs: bool) -> (Option<u64>, u64) {
    if b.needs_fs && !fs {
        return (None, nr_to_scan);
    }
    let scanned = (nr_to_scan * b.scan_quarters / 4).max(1);
    let freed = scanned.min(*objects);
    *objects -= freed;
    (Some(freed), scanned)
}

fn count_rule(b: Behaviour, st: &mut State) -> CountObjects {
    st.count_calls += 1;
    if b.unknown_every != 0 && st.count_calls.is_multiple_of(b.unknown_every) {
        CountObjects::UNKNOWN
    } else if st.objects == 0 {
        CountObjects::EMPTY
    } else {
        CountObjects::new(st.objects)
    }
}

impl Shrinker for TestShrinker {
    fn count_objects(&self, _sc: &ShrinkControl) -> CountObjects {
        count_rule(self.b, &mut self.s.lock().unwrap())
    }

    fn scan_objects(&self, sc: &mut ShrinkControl) -> ScanObjects {
        let mut st = self.s.lock().unwrap();
        st.scans.push(sc.nr_to_scan());
        let fs = sc.reclaim_fs_allowed();
        let (ret, scanned) = scan_rule(self.b, &mut st.objects, sc.nr_to_scan(), fs);
        sc.set_nr_scanned(scanned);
        ret.map_or(ScanObjects::STOP, ScanObjects::freed)
    }
}

/// The reference: Linux's `do_shrink_slab`, written from the description,
/// over plain integers. Returns (value returned, nr_to_scan of each call).
struct Model {
    b: Behaviour,
    seeks: u64,
    batch: u64,
    nr_deferred: i64,
    st: State,
}

impl Model {
    fn do_shrink_slab(&mut self, fs: bool, priority: u32) -> (u64, Vec<u64>) {
        let mut calls = Vec::new();
        // 1. freeable = count(); 0 or SHRINK_EMPTY: return it.
        let count = count_rule(self.b, &mut self.st);
        if count == CountObjects::UNKNOWN || count == CountObjects::EMPTY {
            return (count.raw(), calls);
        }
        let freeable = count.raw() as i64;
        // 2. claim all deferred work.
        let nr = std::mem::take(&mut self.nr_deferred);
        // 3. delta.
        let delta = if self.seeks == 0 {
            freeable / 2
        } else {
            (freeable >> priority) * 4 / self.seeks as i64
        };
        // 4. total_scan.
        let mut total_scan = ((nr >> priority) + delta).min(2 * freeable);
        let batch = if self.batch == 0 {
            SHRINK_BATCH
        } else {
            self.batch
        } as i64;
        let (mut freed, mut scanned) = (0u64, 0i64);
        // 5. whole batches; caches smaller than a batch are emptied.
        while total_scan >= batch || total_scan >= freeable {
            let nr_to_scan = batch.min(total_scan) as u64;
            calls.push(nr_to_scan);
            let (ret, nr_scanned) = scan_rule(self.b, &mut self.st.objects, nr_to_scan, fs);
            let Some(ret) = ret else { break };
            freed += ret;
            total_scan -= nr_scanned as i64;
            scanned += nr_scanned as i64;
        }
        // 6. next_deferred = clamp(nr + delta - scanned, 0, 2 * freeable).
        let next = (nr + delta - scanned).max(0).min(2 * freeable);
        self.nr_deferred += next;
        (freed, calls)
    }
}

#[derive(Debug, Clone)]
struct Setup {
    seeks: u32,
    batch: u64,
    objects: u64,
    b: Behaviour,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop_oneof![Just(0u32), Just(1), Just(2), Just(4), 1u32..=16],
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(128),
            Just(1024),
            Just(2049),
            1u64..=4096
        ],
        prop_oneof![0u64..=300, 0u64..=1_000_000],
        any::<bool>(),
        1u64..=4,
        prop_oneof![3 => Just(0u64), 1 => 2u64..=5],
    )
        .prop_map(
            |(seeks, batch, objects, needs_fs, q, unknown_every)| Setup {
                seeks,
                batch,
                objects,
                b: Behaviour {
                    needs_fs,
                    scan_quarters: q,
                    unknown_every,
                },
            },
        )
}

/// (priority 0..=12, caller has __GFP_FS, objects added before the call)
fn calls() -> impl Strategy<Value = Vec<(u32, bool, u64)>> {
    proptest::collection::vec(
        (
            0u32..=12,
            any::<bool>(),
            prop_oneof![3 => Just(0u64), 1 => 0u64..=5000],
        ),
        1..24,
    )
}

fn run(s: Setup, calls: Vec<(u32, bool, u64)>) {
    common::host();
    let _g = kreclaim_host::serial();
    let state = Arc::new(Mutex::new(State {
        objects: s.objects,
        ..State::default()
    }));
    let reg = ShrinkerBuilder::new("prop-shrinker")
        .seeks(s.seeks)
        .batch(s.batch)
        .register(TestShrinker {
            b: s.b,
            s: state.clone(),
        })
        .expect("register");
    let mut model = Model {
        b: s.b,
        seeks: s.seeks as u64,
        batch: s.batch,
        nr_deferred: 0,
        st: State {
            objects: s.objects,
            ..State::default()
        },
    };
    for (i, (priority, fs, add)) in calls.into_iter().enumerate() {
        state.lock().unwrap().objects += add;
        model.st.objects += add;
        let gfp: Gfp = if fs { GFP_KERNEL } else { GFP_NOFS };
        let got = reg.shrink(gfp, priority);
        let (want, want_calls) = model.do_shrink_slab(fs, priority);
        let scans = std::mem::take(&mut state.lock().unwrap().scans);
        assert_eq!(scans, want_calls, "call {i}: nr_to_scan sequence");
        assert_eq!(got, want, "call {i}: return value");
        assert_eq!(
            reg.nr_deferred(),
            model.nr_deferred,
            "call {i}: nr_deferred"
        );
        assert_eq!(state.lock().unwrap().objects, model.st.objects);
    }
    assert_eq!(
        reg.stats()
            .violations
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

proptest! {
    #![proptest_config(common::config())]

    #[test]
    fn do_shrink_slab_matches_linux(s in setup(), calls in calls()) {
        run(s, calls);
    }
}

/// The worked example of docs/linux-semantics.md (XFS inodegc): count 4096,
/// seeks 0, batch 2049. Priority 12 defers 2048 and scans nothing; priority
/// 11 then fires one batch of 2049.
#[test]
fn worked_example_from_the_reference() {
    common::host();
    let _g = kreclaim_host::serial();
    let state = Arc::new(Mutex::new(State {
        objects: 4096,
        ..State::default()
    }));
    let b = Behaviour {
        needs_fs: false,
        scan_quarters: 4,
        unknown_every: 0,
    };
    let reg = ShrinkerBuilder::new("inodegc")
        .seeks(0)
        .batch(2049)
        .register(TestShrinker {
            b,
            s: state.clone(),
        })
        .unwrap();
    assert_eq!(reg.shrink(GFP_KERNEL, 12), 0);
    assert!(state.lock().unwrap().scans.is_empty());
    assert_eq!(reg.nr_deferred(), 2048);
    // 4096 objects: delta 2048, total_scan = (2048 >> 11) + 2048 = 2049.
    assert_eq!(reg.shrink(GFP_KERNEL, 11), 2049);
    assert_eq!(state.lock().unwrap().scans, vec![2049]);
}

/// Pages a test shrinker holds and gives back to the page allocator.
struct PageHoard(Arc<Mutex<Vec<kreclaim::mm::page::PhysAddr>>>);

impl Shrinker for PageHoard {
    fn count_objects(&self, _sc: &ShrinkControl) -> CountObjects {
        CountObjects::new(self.0.lock().unwrap().len() as u64)
    }
    fn scan_objects(&self, sc: &mut ShrinkControl) -> ScanObjects {
        let mut hoard = self.0.lock().unwrap();
        let n = sc.nr_to_scan().min(hoard.len() as u64);
        for _ in 0..n {
            kreclaim::mm::page_alloc::free_pages(hoard.pop().unwrap(), 0);
        }
        ScanObjects::freed(n)
    }
}

/// `kswapd_balance`, kswapd's step for kernels without its thread (the
/// host has none): below the low watermark it reclaims through the
/// shrinkers up to the high watermark; above the low one it does nothing.
#[test]
fn kswapd_balance_reclaims_to_the_high_watermark() {
    use kreclaim::mm::{page_alloc, vmscan};
    common::host();
    let _g = kreclaim_host::serial();
    let hoard = Arc::new(Mutex::new(Vec::new()));
    // GFP_NOWAIT never reclaims: it stops at the min watermark.
    while let Ok(pa) = page_alloc::alloc_pages(GFP_NOWAIT_QUIET, 0) {
        hoard.lock().unwrap().push(pa);
    }
    let wm = page_alloc::watermarks();
    assert!(page_alloc::nr_free_pages() <= wm.low);
    let reg = ShrinkerBuilder::new("page_hoard")
        .register(PageHoard(hoard.clone()))
        .unwrap();
    let got = vmscan::kswapd_balance();
    assert!(got > 0, "kswapd_balance reclaimed nothing");
    assert!(page_alloc::nr_free_pages() > wm.high);
    // Between the low and the high watermark: nothing to do yet.
    while page_alloc::nr_free_pages() > wm.low + 1 {
        hoard
            .lock()
            .unwrap()
            .push(page_alloc::alloc_pages(GFP_NOWAIT_QUIET, 0).unwrap());
    }
    let held = hoard.lock().unwrap().len();
    assert_eq!(
        vmscan::kswapd_balance(),
        0,
        "above the low watermark it must do nothing"
    );
    assert_eq!(hoard.lock().unwrap().len(), held);
    reg.unregister().unwrap();
    for pa in hoard.lock().unwrap().drain(..) {
        page_alloc::free_pages(pa, 0);
    }
}

const GFP_NOWAIT_QUIET: Gfp = kreclaim::mm::gfp::GFP_NOWAIT.union(Gfp::__GFP_NOWARN);
