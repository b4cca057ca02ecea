//! Property tests of the buddy page allocator: random sequences of
//! allocations (orders 0..=10), frees and deliberate bad frees, with the
//! invariants checked after every step.

mod common;

use common::{Extents, check_stamp, stamp};
use kreclaim::mm::gfp::{GFP_ATOMIC, Gfp};
use kreclaim::mm::page_alloc::{
    self, BadFreeKind, MAX_ORDER, PAGE_SIZE, PageOwner, PhysAddr, alloc_pages, free_pages,
    nr_free_pages,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Alloc(u32),
    /// Free the live block at this index (modulo the number live).
    Free(usize),
    /// Free again a block freed earlier (modulo the number freed): must be
    /// refused, whatever the allocator did with the memory since.
    BadFree(usize),
}

fn order() -> impl Strategy<Value = u32> {
    // Mostly small orders, as real workloads; sometimes up to MAX_ORDER.
    prop_oneof![6 => 0u32..=3, 1 => 0u32..=MAX_ORDER]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => order().prop_map(Op::Alloc),
        8 => any::<usize>().prop_map(Op::Free),
        1 => any::<usize>().prop_map(Op::BadFree),
    ]
}

/// The reference for a GFP_ATOMIC allocation (no reclaim): Linux's
/// watermark check at MIN with __GFP_HIGH's reserve and the non-blocking
/// caller's quarter (the fast path at LOW is stricter, so the slow path's
/// check decides), plus a free block of at least the order.
fn atomic_should_succeed(order: u32) -> bool {
    let min = page_alloc::watermarks().min as i64;
    let mut mark = min - min / 2;
    mark -= mark / 4;
    let free = nr_free_pages() as i64 - ((1i64 << order) - 1);
    let per_order = page_alloc::free_per_order();
    free > mark && per_order[order as usize..].iter().any(|&n| n > 0)
}

fn run(ops: Vec<Op>) {
    let host = common::host();
    let _g = kreclaim_host::serial();
    // Exact page counts: no block may stay on a per-CPU page list.
    let _pcp = kreclaim::mm::page_alloc::zone_pcp_disable();
    let gfp = GFP_ATOMIC | Gfp::__GFP_NOWARN;
    let free0 = nr_free_pages();
    let per_order0 = page_alloc::free_per_order();
    let bad0 = page_alloc::stats().snapshot().bad_frees;
    let mut live: Vec<(usize, u32, u64)> = Vec::new();
    let mut freed: Vec<(usize, u32)> = Vec::new();
    let mut ext = Extents::default();
    let mut live_pages = 0u64;
    let mut bad = 0u64;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Alloc(order) => {
                let expect = atomic_should_succeed(order);
                match alloc_pages(gfp, order) {
                    Ok(pa) => {
                        assert!(
                            expect,
                            "order-{order} allocation succeeded below the watermark"
                        );
                        let p = page_alloc::page_address(pa) as usize;
                        let len = PAGE_SIZE << order;
                        assert_eq!(
                            p % len,
                            0,
                            "order-{order} block {p:#x} not naturally aligned"
                        );
                        assert!(host.arena.contains(p as *const u8));
                        assert!(host.arena.contains((p + len - 1) as *const u8));
                        assert_eq!(page_alloc::page_block(pa), Some((pa, order)));
                        ext.insert(p, p + len, step as u64);
                        stamp(p, len, step as u64);
                        live.push((p, order, step as u64));
                        live_pages += 1 << order;
                    }
                    Err(e) => {
                        assert!(
                            !expect,
                            "order-{order} allocation failed above the watermark"
                        );
                        assert_eq!(e.order, order);
                    }
                }
            }
            Op::Free(i) if !live.is_empty() => {
                let (p, order, tag) = live.swap_remove(i % live.len());
                check_stamp(p, PAGE_SIZE << order, tag);
                ext.remove(p);
                free_pages(page_alloc::virt_to_phys(p as *const u8), order);
                assert_eq!(
                    page_alloc::page_owner(PhysAddr::new(p as u64)),
                    Some(PageOwner::Free)
                );
                live_pages -= 1 << order;
                freed.push((p, order));
            }
            Op::BadFree(i) if !freed.is_empty() => {
                let (p, order) = freed[i % freed.len()];
                // Reallocated since with exactly this start and order: a
                // legitimate free of someone else's block, not a bad one.
                if live.iter().any(|&(q, o, _)| q == p && o == order) {
                    continue;
                }
                let before = nr_free_pages();
                free_pages(PhysAddr::new(p as u64), order);
                bad += 1;
                let got = page_alloc::last_bad_free().expect("bad free not recorded");
                assert_eq!(got.pfn, (p / PAGE_SIZE) as u64);
                match ext.containing(p) {
                    None => assert!(matches!(got.kind, BadFreeKind::DoubleFree { .. }), "{got}"),
                    Some(_) => assert!(
                        matches!(
                            got.kind,
                            BadFreeKind::NotHead { .. } | BadFreeKind::WrongOrder { .. }
                        ),
                        "{got}"
                    ),
                }
                assert_eq!(
                    nr_free_pages(),
                    before,
                    "a refused free changed the free count"
                );
            }
            _ => {}
        }
        assert_eq!(nr_free_pages(), free0 - live_pages, "free count drifted");
        assert_eq!(page_alloc::stats().snapshot().bad_frees, bad0 + bad);
    }
    for (p, order, tag) in live {
        check_stamp(p, PAGE_SIZE << order, tag);
        free_pages(PhysAddr::new(p as u64), order);
    }
    assert_eq!(nr_free_pages(), free0, "pages leaked");
    // Every buddy merged back: the free lists are exactly as before.
    assert_eq!(
        page_alloc::free_per_order(),
        per_order0,
        "buddies did not merge back"
    );
}

proptest! {
    #![proptest_config(common::config())]

    #[test]
    fn page_allocator_invariants(ops in proptest::collection::vec(op(), 1..128)) {
        run(ops);
    }
}

/// The mechanism check: the oracle above must be able to fail. Exhaust the
/// zone with order-0 GFP_ATOMIC allocations; the allocator must stop exactly
/// where the watermark says, and give every page back.
#[test]
fn atomic_allocations_stop_at_the_watermark() {
    common::host();
    let _g = kreclaim_host::serial();
    // Exact page counts: no block may stay on a per-CPU page list.
    let _pcp = kreclaim::mm::page_alloc::zone_pcp_disable();
    let gfp = GFP_ATOMIC | Gfp::__GFP_NOWARN;
    let free0 = nr_free_pages();
    let mut got = Vec::new();
    while atomic_should_succeed(0) {
        got.push(alloc_pages(gfp, 0).expect("allocation above the watermark failed"));
    }
    assert!(
        alloc_pages(gfp, 0).is_err(),
        "allocation below the watermark succeeded"
    );
    assert!(nr_free_pages() > 0, "the reserve was handed out");
    for pa in got {
        free_pages(pa, 0);
    }
    assert_eq!(nr_free_pages(), free0);
}
