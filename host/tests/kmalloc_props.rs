//! Property tests of kmalloc: random sizes (0 to past the largest slab
//! class) and alignments, frees, `ksize`, and frees of foreign pointers, with
//! the invariants checked after every step.

mod common;

use common::{Extents, check_stamp, stamp};
use kreclaim::mm::gfp::{GFP_KERNEL, Gfp};
use kreclaim::mm::page_alloc;
use kreclaim::mm::slab::{self, SlabBug, kmalloc};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        size: usize,
        align: usize,
    },
    Free(usize),
    /// kfree of a pointer kmalloc never handed out (inside a live object).
    ForeignFree(usize),
}

/// Free pages, counting those that hold sheaves (the `slab_sheaf` cache:
/// caches keep their empty sheaves) as free: what the caches under test
/// took is the difference.
fn nr_free_pages() -> u64 {
    page_alloc::nr_free_pages() + kreclaim::mm::slab::sheaf_pages() as u64
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => Just(0usize),
        8 => 1usize..=256,
        4 => 257usize..=8192,
        1 => 8193usize..=(64 << 10),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let align = prop_oneof![8 => Just(1usize), 2 => (0u32..=12).prop_map(|s| 1usize << s)];
    prop_oneof![
        10 => (size(), align).prop_map(|(size, align)| Op::Alloc { size, align }),
        8 => any::<usize>().prop_map(Op::Free),
        1 => any::<usize>().prop_map(Op::ForeignFree),
    ]
}

fn slab_active() -> usize {
    slab::slabinfo()
        .iter()
        .filter(|i| i.name.starts_with("kmalloc-"))
        .map(|i| i.active_objs)
        .sum()
}

fn run(ops: Vec<Op>) {
    let host = common::host();
    let _g = kreclaim_host::serial();
    // Exact page counts: no block may stay on a per-CPU page list.
    let _pcp = kreclaim::mm::page_alloc::zone_pcp_disable();
    kreclaim_host::shrink_kmalloc_caches();
    let free0 = nr_free_pages();
    let active0 = slab_active();
    let reports0 = slab::reports().len();
    // (pointer, requested size, tag, served by a slab)
    let mut live: Vec<(usize, usize, u64, bool)> = Vec::new();
    let mut ext = Extents::default();
    let mut expected_reports = 0;
    for (step, op) in ops.into_iter().enumerate() {
        let tag = step as u64;
        match op {
            Op::Alloc { size, align } => {
                let p = kmalloc::kmalloc_aligned(size, align, GFP_KERNEL | Gfp::__GFP_NOWARN)
                    .expect("kmalloc failed with memory to spare")
                    .as_ptr();
                if size == 0 {
                    assert_eq!(p, kmalloc::ZERO_SIZE_PTR);
                    assert_eq!(kmalloc::ksize(p), 0);
                    kmalloc::kfree(p);
                    continue;
                }
                let p = p as usize;
                assert_eq!(p % align, 0, "kmalloc({size}, align {align}) = {p:#x}");
                let usable = kmalloc::ksize(p as *const u8);
                assert!(usable >= size, "ksize {usable} < requested {size}");
                assert!(host.arena.contains(p as *const u8));
                assert!(host.arena.contains((p + usable - 1) as *const u8));
                let by_slab = kmalloc::kmalloc_slab(size, align).is_some();
                if by_slab {
                    // Natural alignment of power-of-two classes (Linux's promise).
                    if usable.is_power_of_two() {
                        assert_eq!(p % usable.min(512), 0);
                    }
                } else {
                    assert_eq!(p % 4096, 0, "large kmalloc not page aligned");
                }
                ext.insert(p, p + usable, tag);
                stamp(p, usable, tag);
                live.push((p, usable, tag, by_slab));
            }
            Op::Free(i) if !live.is_empty() => {
                let (p, usable, tag, _) = live.swap_remove(i % live.len());
                check_stamp(p, usable, tag);
                ext.remove(p);
                kmalloc::kfree(p as *mut u8);
            }
            Op::ForeignFree(i) if !live.is_empty() => {
                let (p, usable, _, _) = live[i % live.len()];
                if usable < 2 {
                    continue;
                }
                // One byte into a live object: never a valid kfree argument.
                let before = (nr_free_pages(), slab_active());
                kmalloc::kfree((p + 1) as *mut u8);
                expected_reports += 1;
                assert_eq!(
                    (nr_free_pages(), slab_active()),
                    before,
                    "a bad kfree freed"
                );
            }
            _ => {}
        }
        let slab_live = live.iter().filter(|l| l.3).count();
        assert_eq!(slab_active(), active0 + slab_live, "slab objects drifted");
    }
    for (p, usable, tag, _) in live {
        check_stamp(p, usable, tag);
        kmalloc::kfree(p as *mut u8);
    }
    assert_eq!(slab_active(), active0);
    kreclaim_host::shrink_kmalloc_caches();
    assert_eq!(nr_free_pages(), free0, "kmalloc leaked pages");
    let reports = slab::reports();
    // Bad kfrees inside large blocks print a BUG line but record no slab
    // report; inside slab objects they record BadOffset.
    let new: Vec<_> = reports[reports0..].iter().map(|r| r.bug).collect();
    assert!(new.len() <= expected_reports, "unexpected reports: {new:?}");
    assert!(new.iter().all(|b| *b == SlabBug::BadOffset), "{new:?}");
}

proptest! {
    #![proptest_config(common::config())]

    #[test]
    fn kmalloc_invariants(ops in proptest::collection::vec(op(), 1..128)) {
        run(ops);
    }
}

/// The class lookup (a table for small sizes) picks what a search of the
/// classes would: the smallest class large and aligned enough.
#[test]
fn kmalloc_slab_picks_the_smallest_fitting_class() {
    let _host = common::host();
    for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096] {
        for size in 0..=kmalloc::KMALLOC_MAX_CACHE_SIZE + 1 {
            let want = kmalloc::KMALLOC_SIZES
                .iter()
                .find(|&&s| s >= size && (1usize << s.trailing_zeros().min(9)) >= align)
                .copied();
            let got = kmalloc::kmalloc_slab(size, align).map(|c| c.object_size());
            assert_eq!(got, want, "size {size} align {align}");
        }
    }
}
