//! Property tests of slab caches: a cache of random size, alignment and
//! debug flags per case, then random allocations, zeroed allocations, frees,
//! shrinks and double frees, with the invariants checked after every step.

mod common;

use common::{Extents, check_fill, fill};
use kreclaim::mm::gfp::{GFP_KERNEL, Gfp};
use kreclaim::mm::page_alloc::{self, PageOwner, PhysAddr};
use kreclaim::mm::slab::{self, KmemCache, SlabBug, SlabFlags};
use proptest::prelude::*;
use std::ptr::NonNull;

#[derive(Debug, Clone)]
enum Op {
    Alloc,
    Zalloc,
    Free(usize),
    Shrink,
    /// Free again an object freed earlier (if its address is not live again).
    DoubleFree(usize),
}

/// Free pages, counting those that hold sheaves (the `slab_sheaf` cache:
/// caches keep their empty sheaves) as free: what the caches under test
/// took is the difference.
fn nr_free_pages() -> u64 {
    page_alloc::nr_free_pages() + kreclaim::mm::slab::sheaf_pages() as u64
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => Just(Op::Alloc),
        2 => Just(Op::Zalloc),
        8 => any::<usize>().prop_map(Op::Free),
        1 => Just(Op::Shrink),
        1 => any::<usize>().prop_map(Op::DoubleFree),
    ]
}

#[derive(Debug, Clone)]
struct Params {
    size: usize,
    align: usize,
    flags: SlabFlags,
}

fn params() -> impl Strategy<Value = Params> {
    let size = prop_oneof![4 => 1usize..=256, 2 => 257usize..=2048, 1 => 2049usize..=8192];
    let align = (0u32..=8).prop_map(|s| 1usize << s);
    let flags =
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(hw, p, z, f)| {
            let mut x = SlabFlags::empty();
            x.set(SlabFlags::HWCACHE_ALIGN, hw);
            x.set(SlabFlags::POISON, p);
            x.set(SlabFlags::RED_ZONE, z);
            x.set(SlabFlags::CONSISTENCY_CHECKS, f);
            x
        });
    (size, align, flags).prop_map(|(size, align, flags)| Params { size, align, flags })
}

fn run(p: Params, ops: Vec<Op>) {
    let host = common::host();
    let _g = kreclaim_host::serial();
    // Exact page counts: no block may stay on a per-CPU page list.
    let _pcp = kreclaim::mm::page_alloc::zone_pcp_disable();
    let free0 = nr_free_pages();
    let reports0 = slab::reports().len();
    let cache = KmemCache::create("prop-cache", p.size, p.align, p.flags, None).expect("create");
    let info0 = cache.info();
    let pages_per_slab = info0.pagesperslab as u64;
    let mut live: Vec<(usize, u64)> = Vec::new();
    let mut freed: Vec<usize> = Vec::new();
    let mut ext = Extents::default();
    let mut expected_reports = 0;
    for (step, op) in ops.into_iter().enumerate() {
        let tag = step as u64;
        match op {
            Op::Alloc | Op::Zalloc => {
                let zero = matches!(op, Op::Zalloc);
                let r = if zero {
                    cache.zalloc(GFP_KERNEL | Gfp::__GFP_NOWARN)
                } else {
                    cache.alloc(GFP_KERNEL | Gfp::__GFP_NOWARN)
                };
                let obj = r
                    .expect("slab allocation failed with memory to spare")
                    .as_ptr() as usize;
                assert_eq!(obj % p.align, 0, "object {obj:#x} not {}-aligned", p.align);
                assert!(host.arena.contains(obj as *const u8));
                if zero {
                    // SAFETY: a live object of p.size bytes.
                    let s = unsafe { std::slice::from_raw_parts(obj as *const u8, p.size) };
                    assert!(s.iter().all(|&b| b == 0), "zalloc returned dirty memory");
                }
                ext.insert(obj, obj + p.size, tag);
                fill(obj, p.size, tag);
                live.push((obj, tag));
            }
            Op::Free(i) if !live.is_empty() => {
                let (obj, tag) = live.swap_remove(i % live.len());
                check_fill(obj, p.size, tag);
                ext.remove(obj);
                // SAFETY: a live, non-null object of this cache, just removed
                // from `live`: the test does not use it again.
                unsafe { cache.free(NonNull::new_unchecked(obj as *mut u8)) };
                freed.push(obj);
            }
            Op::Shrink => {
                cache.shrink();
                assert_eq!(cache.info().empty_slabs, 0, "shrink left empty slabs");
            }
            Op::DoubleFree(i) if !freed.is_empty() => {
                let obj = freed[i % freed.len()];
                if ext.containing(obj).is_some() {
                    continue; // reallocated since: not a double free
                }
                let before = (slab::reports().len(), cache.info());
                // SAFETY: non-null, and already free (not reallocated, checked
                // above): the free is refused as a double free, only reported.
                unsafe { cache.free(NonNull::new_unchecked(obj as *mut u8)) };
                expected_reports += 1;
                // A cache with sheaves takes the object into this CPU's sheaf
                // (its slab is not read on the fast path, as in SLUB); the
                // double free is found when the sheaf is flushed. Debug
                // caches and frees of a released slab report it at once.
                cache.flush_sheaves();
                let r = slab::reports();
                assert_eq!(r.len(), before.0 + 1, "bad free not reported");
                match r[before.0].bug {
                    // The object's slab is still there.
                    SlabBug::DoubleFree => {}
                    // The slab went back to the page allocator (shrink, or
                    // an empty slab beyond min_partial): not a slab object now.
                    SlabBug::NotASlabObject => assert_eq!(
                        page_alloc::page_owner(PhysAddr::new(obj as u64)),
                        Some(PageOwner::Free)
                    ),
                    other => panic!("bad free reported as {other:?}"),
                }
                assert_eq!(cache.info(), before.1, "a refused free changed the cache");
            }
            _ => {}
        }
        let info = cache.info();
        assert_eq!(info.active_objs, live.len(), "active objects drifted");
        assert!(info.num_objs >= info.active_objs);
        assert_eq!(
            info.num_slabs,
            info.partial_slabs + info.full_slabs + info.empty_slabs
        );
        assert!(info.empty_slabs <= cache.min_partial());
        assert_eq!(
            nr_free_pages(),
            free0 - info.num_slabs as u64 * pages_per_slab,
            "page count does not match the slabs"
        );
    }
    for (obj, tag) in live {
        check_fill(obj, p.size, tag);
        // SAFETY: a live, non-null object of this cache; `live` is consumed.
        unsafe { cache.free(NonNull::new_unchecked(obj as *mut u8)) };
    }
    assert_eq!(cache.info().active_objs, 0);
    cache.destroy().expect("destroy with no live objects");
    assert_eq!(nr_free_pages(), free0, "slab pages leaked");
    assert_eq!(
        slab::reports().len(),
        reports0 + expected_reports,
        "unexpected slab reports: {:?}",
        &slab::reports()[reports0..]
    );
}

proptest! {
    #![proptest_config(common::config())]

    #[test]
    fn slab_cache_invariants(p in params(), ops in proptest::collection::vec(op(), 1..128)) {
        run(p, ops);
    }
}

/// Debug caches catch what they promise: a write after free is reported when
/// the object is handed out again, an overflow into the red zone at free.
#[test]
fn debug_cache_reports_use_after_free_and_overflow() {
    common::host();
    let _g = kreclaim_host::serial();
    // Exact page counts: no block may stay on a per-CPU page list.
    let _pcp = kreclaim::mm::page_alloc::zone_pcp_disable();
    let c = KmemCache::create("prop-debug", 40, 8, SlabFlags::DEBUG, None).unwrap();
    let n0 = slab::reports().len();
    let a = c.alloc(GFP_KERNEL).unwrap();
    // SAFETY: `a` came from `c`, a private cache; the test writes into the
    // freed slot on purpose (its memory stays in the slab) to trigger the
    // poison check.
    unsafe { c.free(a) };
    // SAFETY: deliberately writing into a freed object (still our arena).
    unsafe { a.as_ptr().add(3).write(0) };
    // The freed object is first on the freelist: allocation checks its poison.
    let b = c.alloc(GFP_KERNEL).unwrap();
    assert_eq!(b, a);
    let r = slab::reports();
    assert_eq!(r.len(), n0 + 1);
    assert_eq!(r[n0].bug, SlabBug::PoisonOverwritten);
    // SAFETY: deliberately writing one byte past the object, into its red zone.
    unsafe { b.as_ptr().add(40).write(0) };
    // SAFETY: `b` came from `c` and is not used after this free.
    unsafe { c.free(b) };
    let r = slab::reports();
    assert_eq!(r.len(), n0 + 2);
    assert_eq!(r[n0 + 1].bug, SlabBug::RedzoneOverwritten);
    c.destroy().unwrap();
}
