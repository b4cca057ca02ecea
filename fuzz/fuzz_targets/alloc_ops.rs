//! Drives the allocator API (page allocator, a debug slab cache, kmalloc)
//! with operations decoded from the fuzzer's bytes, every cache created with
//! slab_debug POISON | RED_ZONE | CONSISTENCY_CHECKS. Checks after every
//! step: no two live allocations overlap, alignment holds, live contents are
//! intact, no slab report for valid use; at the end of every input all
//! memory is back (free pages as at the start).

#![no_main]

use kreclaim::mm::gfp::{GFP_ATOMIC, GFP_KERNEL, Gfp};
use kreclaim::mm::page_alloc::{self, MAX_ORDER, PAGE_SIZE};
use kreclaim::mm::slab::{self, KmemCache, SlabFlags, kmalloc};
use kreclaim_host::Config;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::OnceLock;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pages(u32),
    Cache,
    Kmalloc,
}

struct Live {
    len: usize,
    tag: u8,
    kind: Kind,
}

fn cache() -> &'static KmemCache {
    static C: OnceLock<KmemCache> = OnceLock::new();
    C.get_or_init(|| {
        kreclaim_host::init(Config {
            arena_bytes: 64 << 20,
            slab_debug: SlabFlags::DEBUG,
            quiet: true,
            ..Config::default()
        })
        .expect("bring-up");
        KmemCache::create("fuzz-cache", 72, 8, SlabFlags::empty(), None).unwrap()
    })
}

fn check_disjoint(live: &BTreeMap<usize, Live>, p: usize, len: usize) {
    if let Some((&s, l)) = live.range(..p + len).next_back() {
        assert!(
            s + l.len <= p,
            "{p:#x}+{len} overlaps live {s:#x}+{}",
            l.len
        );
    }
}

fn fill(p: usize, len: usize, tag: u8) {
    // Whole object for small blocks; a few spots for pages.
    if len <= 8192 {
        // SAFETY: a live block of `len` bytes.
        unsafe { std::ptr::write_bytes(p as *mut u8, tag, len) };
    } else {
        for off in [0, len / 2, len - 1] {
            // SAFETY: inside a live block.
            unsafe { (p as *mut u8).add(off).write(tag) };
        }
    }
}

fn check(p: usize, l: &Live) {
    let ok = if l.len <= 8192 {
        // SAFETY: a live block of `len` bytes.
        unsafe { std::slice::from_raw_parts(p as *const u8, l.len) }
            .iter()
            .all(|&b| b == l.tag)
    } else {
        [0, l.len / 2, l.len - 1]
            // SAFETY: inside a live block.
            .map(|off| unsafe { (p as *const u8).add(off).read() })
            .iter()
            .all(|&b| b == l.tag)
    };
    assert!(ok, "live block {p:#x}+{} was overwritten", l.len);
}

fn free(p: usize, l: &Live) {
    check(p, l);
    match l.kind {
        Kind::Pages(order) => {
            page_alloc::free_pages(page_alloc::virt_to_phys(p as *const u8), order)
        }
        // SAFETY: non-null; `p` was allocated from `cache()` and the fuzz
        // target drops its record of it here, never using it again.
        Kind::Cache => unsafe { cache().free(NonNull::new_unchecked(p as *mut u8)) },
        Kind::Kmalloc => kmalloc::kfree(p as *mut u8),
    }
}

/// Free pages, counting those that hold sheaves (the `slab_sheaf` cache
/// keeps empty sheaves for the caches) as free: what the operations took is
/// the difference.
fn nr_free_pages() -> u64 {
    page_alloc::nr_free_pages() + kreclaim::mm::slab::sheaf_pages() as u64
}

fuzz_target!(|data: &[u8]| {
    // Exact page counts: no block may stay on a per-CPU page list.
    let _pcp = page_alloc::zone_pcp_disable();
    let c = cache();
    kreclaim_host::shrink_kmalloc_caches();
    c.shrink();
    let free0 = nr_free_pages();
    let reports0 = slab::reports().len();
    let mut live: BTreeMap<usize, Live> = BTreeMap::new();
    let gfp = GFP_KERNEL | Gfp::__GFP_NOWARN;
    for (step, w) in data.chunks(3).enumerate() {
        let (op, a, b) = (w[0], *w.get(1).unwrap_or(&0), *w.get(2).unwrap_or(&0));
        let tag = step as u8 | 1;
        let new = match op % 6 {
            0 => {
                let order = (a as u32) % (MAX_ORDER + 1);
                page_alloc::alloc_pages(GFP_ATOMIC | Gfp::__GFP_NOWARN, order)
                    .ok()
                    .map(|pa| {
                        (
                            page_alloc::page_address(pa) as usize,
                            PAGE_SIZE << order,
                            4096 << order,
                            Kind::Pages(order),
                        )
                    })
            }
            1 => c
                .alloc(gfp)
                .ok()
                .map(|p| (p.as_ptr() as usize, 72, 8, Kind::Cache)),
            2 | 3 => {
                let size = ((a as usize) << 8 | b as usize) % 20_000 + 1;
                let align = 1usize << (b % 13);
                kmalloc::kmalloc_aligned(size, align, gfp).ok().map(|p| {
                    let p = p.as_ptr() as usize;
                    assert!(kmalloc::ksize(p as *const u8) >= size);
                    (p, size, align, Kind::Kmalloc)
                })
            }
            _ => {
                // Free the live block nearest above an address picked by a, b.
                if let Some(&first) = live.keys().next() {
                    let last = *live.keys().next_back().unwrap();
                    let at = first + (last - first) / 65536 * ((a as usize) << 8 | b as usize);
                    let p = *live.range(at..).next().map(|(k, _)| k).unwrap_or(&first);
                    let l = live.remove(&p).unwrap();
                    free(p, &l);
                }
                None
            }
        };
        if let Some((p, len, align, kind)) = new {
            assert_eq!(p % align, 0, "{p:#x} not {align}-aligned");
            check_disjoint(&live, p, len);
            fill(p, len, tag);
            live.insert(p, Live { len, tag, kind });
        }
    }
    for (p, l) in std::mem::take(&mut live) {
        free(p, &l);
    }
    let r = slab::reports();
    assert_eq!(
        r.len(),
        reports0,
        "slab reports on valid use: {:?}",
        &r[reports0..]
    );
    kreclaim_host::shrink_kmalloc_caches();
    c.shrink();
    assert_eq!(nr_free_pages(), free0, "memory leaked");
});
