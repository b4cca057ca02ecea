//! Slab caches and kmalloc: slab lists and min_partial, constructors, debug
//! reports, hardened free pointers, kmalloc classes, KBox/KVec/TypedCache,
//! failslab, the global allocator's GFP context, slabinfo.
//!
//! The built-in `slab_debug=Z,kmalloc-16` gives one kmalloc cache red zones
//! from boot, as the command line would.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use kreclaim::config::{CmdlineError, Config};
use kreclaim::harness::{TestFailure, TestResult};
use kreclaim::mm::fault_inject::{FAIL_PAGE_ALLOC, FAILSLAB};
use kreclaim::mm::gfp::{GFP_ATOMIC, GFP_KERNEL, GFP_NOFS, GFP_NOIO, Gfp};
use kreclaim::mm::global_alloc::global_gfp;
use kreclaim::mm::page_alloc::{
    self, PAGE_SIZE, PageOwner, alloc_pages, free_pages, nr_free_pages, page_address, virt_to_phys,
};
use kreclaim::mm::scope::MemallocScope;
use kreclaim::mm::slab::kmalloc::{
    KBox, KVec, ZERO_SIZE_PTR, kfree, kmalloc, kmalloc_aligned, kmalloc_slab, ksize, kzalloc,
};
use kreclaim::mm::slab::{
    self, CreateError, DestroyError, KmemCache, MIN_PARTIAL, SlabBug, SlabFlags, SlabReport,
    TypedCache, kmem_cache_create, set_global_debug, slab_debug_parse,
};
use kreclaim::sync::lockdep;
use kreclaim::task::{self, PreemptGuard};
use kreclaim::{kassert, kassert_eq};

kreclaim::kernel_tests!(
    cmdline = "slab_debug=Z,kmalloc-16";
    objects_move_between_full_partial_and_empty,
    empty_slabs_beyond_min_partial_go_back_to_the_page_allocator,
    an_empty_slab_is_freed_once_partial_slabs_reach_min_partial,
    min_partial_is_half_the_log2_of_the_slot_size_within_5_and_10,
    constructor_runs_once_per_object_when_a_slab_is_populated,
    objects_never_overlap_in_any_kmalloc_class,
    kmalloc_inline_class_lookup_agrees_with_kmalloc_slab_for_every_size,
    concurrent_allocation_keeps_objects_and_counts_intact,
    create_rejects_bad_sizes_and_alignments,
    hwcache_align_rounds_to_cache_lines,
    zalloc_zeroes_even_poisoned_objects,
    double_free_is_reported_and_ignored,
    free_to_the_wrong_cache_is_reported_and_ignored,
    free_of_a_pointer_no_slab_owns_is_reported_and_ignored,
    write_after_free_is_detected_on_the_next_allocation,
    red_zone_overflow_is_detected_on_free,
    left_red_zone_underflow_is_detected_with_the_cache_name,
    red_zone_overflow_in_a_kmalloc_cache_is_reported_without_deadlock,
    destroy_with_live_objects_names_the_cache_and_count,
    destroy_of_an_empty_cache_returns_its_pages,
    slab_debug_parses_linux_letters,
    global_debug_flags_reach_the_named_cache_only,
    free_pointers_are_not_raw_addresses,
    a_write_to_a_freed_objects_first_word_leaves_the_free_list_intact,
    a_corrupt_free_pointer_is_reported_with_the_cache_name_not_followed,
    kmalloc_sizes_map_to_linux_classes,
    kmalloc_zero_and_kfree_null_are_no_ops,
    large_kmalloc_comes_from_and_returns_to_the_page_allocator,
    kmalloc_alignment_is_honoured,
    kfree_of_a_foreign_pointer_is_reported_not_freed,
    kbox_and_kvec_work_and_fail_as_values,
    typed_cache_drops_values,
    a_static_typed_cache_is_created_at_init_and_refuses_use_before,
    failslab_fails_the_next_allocation_then_stops,
    global_allocator_takes_gfp_from_the_context,
    slabinfo_rows_are_consistent,
    slabinfo_text_has_the_v2_1_header_and_rows,
    oom_report_under_the_registry_lock_does_not_deadlock,
    a_64_byte_cache_uses_at_least_95_percent_of_its_slab,
    percpu_refill_reentered_by_a_lockdep_report_loses_nothing,
    kmalloc_aligned_refuses_an_alignment_that_is_not_a_power_of_two,
    double_kfree_of_a_large_allocation_is_a_double_free,
    kmalloc_slack_after_the_requested_size_is_red_zoned,
    a_full_cache_registry_is_registry_full_not_no_memory,
    create_under_failslab_is_no_memory_and_leaks_nothing,
    kmalloc_cache_creation_failure_is_an_error_naming_the_cache,
    sheaf_fast_path_returns_objects_lifo_per_cpu,
    frees_refill_sheaves_then_swap_then_the_barn_with_exact_counts,
    bulk_alloc_and_free_take_and_return_every_object,
    shrink_and_destroy_drain_the_sheaves,
    debug_caches_bypass_sheaves_and_catch_every_double_free,
    a_double_free_of_an_object_back_on_its_slab_is_reported_when_its_sheaf_is_flushed,
    failslab_fails_an_allocation_the_sheaf_could_serve,
    slabinfo_counts_sheaf_objects_apart_and_is_exact_after_a_flush,
    reclaim_flushes_every_cache_sheaves_before_it_gives_up,
    kmalloc_and_kfree_go_through_the_sheaves_too,
    a_held_sheaf_lock_sends_allocations_and_frees_to_the_slabs,
    a_sleeping_allocation_with_interrupts_masked_is_reported_even_from_a_full_sheaf,
    turning_lockdep_back_on_takes_allocations_off_the_fast_path,
    shrink_frees_the_barns_empty_sheaves,
    a_cpu_without_sheaves_never_keeps_objects_in_the_shared_empty_sheaf,
    kfree_of_a_slab_page_reused_by_the_page_allocator_or_another_cache_finds_its_owner,
    bench_mm_times_each_side_in_loop_copies_and_keeps_the_peers_code_on_its_page,
    preempt_disable_changes_this_cpus_gs_preempt_word,
    a_tick_inside_the_fast_path_finds_the_task_pinned_and_allocates_around_it,
    a_drain_of_an_absent_cpus_sheaves_needs_no_answer_from_it,
    the_fast_paths_data_lies_on_consecutive_pages_of_its_own,
);

const NOWARN: Gfp = Gfp::__GFP_NOWARN;

#[track_caller]
fn fail(msg: String) -> TestFailure {
    TestFailure::new(msg)
}

fn cache(name: &'static str, size: usize, flags: SlabFlags) -> Result<KmemCache, TestFailure> {
    kmem_cache_create(name, size, 0, flags, None)
        .map_err(|e| fail(alloc::format!("kmem_cache_create: {e}")))
}

/// Objects of one cache held by a test, freed when it ends (also when a
/// check fails). The vector is sized up front: no allocation while held.
struct Objs<'a> {
    cache: &'a KmemCache,
    v: Vec<NonNull<u8>>,
}

impl<'a> Objs<'a> {
    fn new(cache: &'a KmemCache, capacity: usize) -> Self {
        Objs {
            cache,
            v: Vec::with_capacity(capacity),
        }
    }

    fn alloc(&mut self) -> Result<NonNull<u8>, TestFailure> {
        if self.v.len() == self.v.capacity() {
            return Err(fail(String::from("Objs: capacity exceeded")));
        }
        let p = self
            .cache
            .alloc(GFP_KERNEL)
            .map_err(|e| fail(alloc::format!("alloc from {}: {e}", self.cache.name())))?;
        self.v.push(p);
        Ok(p)
    }

    fn free_last(&mut self) {
        if let Some(p) = self.v.pop() {
            // SAFETY: `p` came from this cache and leaves the tracking vector here: nothing uses it again.
            unsafe { self.cache.free(p) };
        }
    }

    fn free_all(&mut self) {
        while !self.v.is_empty() {
            self.free_last();
        }
    }
}

impl Drop for Objs<'_> {
    fn drop(&mut self) {
        self.free_all();
    }
}

fn reports_since(n: usize) -> Vec<SlabReport> {
    slab::reports()
        .get(n..)
        .map(<[_]>::to_vec)
        .unwrap_or_default()
}

/// Exactly one new report, of `bug` against `cache`.
#[track_caller]
fn one_report(n: usize, bug: SlabBug, cache: &str) -> Result<SlabReport, TestFailure> {
    let r = reports_since(n);
    if r.len() != 1 || r[0].bug != bug || r[0].cache != cache {
        return Err(fail(alloc::format!(
            "expected one {bug:?} report for {cache}, got {r:?}"
        )));
    }
    Ok(r[0].clone())
}

/// The `len` bytes at `p`, to fill or check.
///
/// # Safety
/// `p` must point at `len` mapped bytes that nothing else uses while the
/// slice lives: an object of at least `len` bytes that the caller owns, or a
/// freed one in a private cache (to read its poison).
unsafe fn bytes<'a>(p: NonNull<u8>, len: usize) -> &'a mut [u8] {
    // SAFETY: the caller's promise above.
    unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), len) }
}

/// Counts of (num_slabs, full, partial, empty, active_objs).
fn lists(c: &KmemCache) -> (usize, usize, usize, usize, usize) {
    let i = c.info();
    (
        i.num_slabs,
        i.full_slabs,
        i.partial_slabs,
        i.empty_slabs,
        i.active_objs,
    )
}

fn objects_move_between_full_partial_and_empty() -> TestResult {
    let c = cache("t-lists", 64, SlabFlags::empty())?;
    let per = c.info().objperslab;
    kassert_eq!(per, (4096 - 128) / 64, "one 4 KiB slab, 128-byte header");
    kassert_eq!(c.info().pagesperslab, 1);
    kassert_eq!(lists(&c), (0, 0, 0, 0, 0));
    let mut objs = Objs::new(&c, per + 1);
    objs.alloc()?;
    kassert_eq!(lists(&c), (1, 0, 1, 0, 1), "first object: one partial slab");
    for _ in 1..per {
        objs.alloc()?;
    }
    kassert_eq!(lists(&c), (1, 1, 0, 0, per), "objperslab objects: full");
    objs.free_last();
    kassert_eq!(lists(&c), (1, 0, 1, 0, per - 1), "one freed: partial");
    objs.alloc()?;
    kassert_eq!(lists(&c), (1, 1, 0, 0, per), "full again");
    objs.alloc()?;
    kassert_eq!(lists(&c), (2, 1, 1, 0, per + 1), "a second slab");
    objs.free_all();
    kassert_eq!(lists(&c), (2, 0, 0, 2, 0), "all freed: both empty");
    kassert_eq!(c.info().num_objs, 2 * per);
    Ok(())
}

fn empty_slabs_beyond_min_partial_go_back_to_the_page_allocator() -> TestResult {
    // Exact page counts: no block may stay on a per-CPU page list.
    let _pcp = page_alloc::zone_pcp_disable();
    // Order-0 slabs (64 B objects) and order-2 slabs (3000 B objects).
    for (name, size) in [("t-release", 64), ("t-release-big", 3000)] {
        let c = cache(name, size, SlabFlags::empty())?;
        let per = c.info().objperslab;
        let pages = c.info().pagesperslab as u64;
        let min_partial = c.min_partial();
        kassert_eq!(
            min_partial,
            MIN_PARTIAL,
            "{name}: ilog2(size) / 2 is below 5"
        );
        let slabs = MIN_PARTIAL + 3;
        let mut objs = Objs::new(&c, slabs * per);
        // This cache's slab pages, not the zone's free count: with several
        // CPUs, kswapd or another CPU's task may take or give back a page
        // between two readings of a global counter.
        let slab_pages = || c.info().num_slabs as u64 * pages;
        for _ in 0..slabs * per {
            objs.alloc()?;
        }
        let after_alloc = slab_pages();
        // The objects were handed out slab by slab: free them slab by slab,
        // the newest slab first, flushing the sheaves (where freed objects
        // wait, as in Linux) after each, so that one slab goes empty at a
        // time while every other is full or empty. The slab going empty
        // counts as one of the node's partial slabs (Linux's `__slab_free`
        // tests `n->nr_partial >= s->min_partial` with it still listed), so
        // min_partial - 1 empty slabs stay.
        for _ in 0..slabs {
            for _ in 0..per {
                objs.free_last();
            }
            c.flush_sheaves();
        }
        let after_free = slab_pages();
        let shrunk = c.shrink();
        let after_shrink = slab_pages();
        kassert_eq!(after_alloc, slabs as u64 * pages, "{name}: pages per slab");
        kassert_eq!(
            after_alloc - after_free,
            (slabs - (min_partial - 1)) as u64 * pages,
            "{name}: empty slabs beyond min_partial are released on free"
        );
        kassert_eq!(
            shrunk as u64,
            (min_partial - 1) as u64 * pages,
            "{name}: shrink releases the kept ones"
        );
        kassert_eq!(after_shrink, 0, "{name}");
        kassert_eq!(lists(&c), (0, 0, 0, 0, 0), "{name}");
        // The cache still works after shrinking to nothing.
        objs.alloc()?;
        kassert_eq!(lists(&c), (1, 0, 1, 0, 1), "{name}");
    }
    Ok(())
}

/// The addresses of `objs` grouped by slab (slabs sit at addresses aligned
/// to their size), in the order the slabs were first seen.
fn by_slab(objs: &[NonNull<u8>], slab_bytes: usize) -> Vec<Vec<NonNull<u8>>> {
    let mut groups: Vec<(usize, Vec<NonNull<u8>>)> = Vec::new();
    for &p in objs {
        let base = p.as_ptr() as usize & !(slab_bytes - 1);
        match groups.iter_mut().find(|(b, _)| *b == base) {
            Some((_, g)) => g.push(p),
            None => groups.push((base, alloc::vec![p])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

fn an_empty_slab_is_freed_once_partial_slabs_reach_min_partial() -> TestResult {
    // A cache with sheaves (frees reach the slabs when the sheaves are
    // flushed) and a debug cache (every free goes to its slab at once): the
    // two paths that can empty a slab.
    for (name, flags) in [
        ("t-minpartial", SlabFlags::empty()),
        ("t-minpartial-f", SlabFlags::CONSISTENCY_CHECKS),
    ] {
        let c = cache(name, 64, flags)?;
        let m = c.min_partial();
        kassert_eq!(m, 5, "{name}");
        let per = c.info().objperslab;
        let slab_bytes = c.info().pagesperslab * 4096;
        let slabs = m + 2;
        let mut objs = Objs::new(&c, slabs * per);
        for _ in 0..slabs * per {
            objs.alloc()?;
        }
        kassert_eq!(lists(&c), (slabs, slabs, 0, 0, slabs * per), "{name}");
        let groups = by_slab(&objs.v, slab_bytes);
        kassert_eq!(groups.len(), slabs, "{name}: objects of {slabs} slabs");
        let free = |objs: &mut Objs, group: &[NonNull<u8>]| {
            for p in group {
                objs.v.retain(|q| q != p);
                // SAFETY: an object of this cache, just dropped from `objs`.
                unsafe { c.free(*p) };
            }
            c.flush_sheaves();
        };
        // m - 2 partial slabs: the slab that goes empty makes m - 1 with
        // itself, below min_partial: it is kept.
        for g in &groups[..m - 2] {
            free(&mut objs, &g[..1]);
        }
        free(&mut objs, &groups[slabs - 1]);
        kassert_eq!(
            lists(&c),
            (
                slabs,
                slabs - 1 - (m - 2),
                m - 2,
                1,
                (slabs - 1) * per - (m - 2)
            ),
            "{name}: kept"
        );
        c.shrink();
        kassert_eq!(
            lists(&c).0,
            slabs - 1,
            "{name}: shrink freed the empty slab"
        );
        // m - 1 partial slabs and no empty one: with the slab going empty
        // the node holds m partial slabs, so it goes back to the page
        // allocator (kreclaim kept up to 5 empty slabs whatever the number
        // of partial ones).
        free(&mut objs, &groups[m - 2][..1]);
        free(&mut objs, &groups[slabs - 2]);
        kassert_eq!(
            lists(&c),
            (
                slabs - 2,
                slabs - 2 - (m - 1),
                m - 1,
                0,
                (slabs - 2) * per - (m - 1)
            ),
            "{name}: freed"
        );
        c.validate().map_err(|e| fail(alloc::format!("{e}")))?;
    }
    Ok(())
}

fn min_partial_is_half_the_log2_of_the_slot_size_within_5_and_10() -> TestResult {
    // Linux's set_min_partial(s, ilog2(s->size) / 2), clamped to
    // [MIN_PARTIAL, MAX_PARTIAL] = [5, 10].
    for (size, want) in [
        (8, 5),
        (64, 5),
        (1000, 5),
        (2048, 5),
        (4096, 6),
        (8192, 6),
        (16384, 7),
        (20000, 7),
    ] {
        let c = cache("t-minpartial-size", size, SlabFlags::empty())?;
        kassert_eq!(c.min_partial(), want, "object size {size}");
        kassert!((slab::MIN_PARTIAL..=slab::MAX_PARTIAL).contains(&c.min_partial()));
    }
    // One object per 32 KiB slab: each slab goes from full to empty at once,
    // without being a partial slab, so min_partial (7) empty slabs stay.
    let c = cache("t-minpartial-16k", 16384, SlabFlags::empty())?;
    kassert_eq!(c.info().objperslab, 1);
    let mut objs = Objs::new(&c, 10);
    for _ in 0..10 {
        objs.alloc()?;
    }
    objs.free_all();
    c.flush_sheaves();
    let i = c.info();
    kassert_eq!((i.num_slabs, i.empty_slabs), (7, 7), "{i:?}");
    Ok(())
}

static CTOR_CALLS: AtomicUsize = AtomicUsize::new(0);
const CONSTRUCTED: u64 = 0xc0ff_ee00_c0ff_ee00;

fn ctor(p: *mut u8) {
    CTOR_CALLS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the slab hands the constructor a whole object.
    unsafe { p.cast::<u64>().write(CONSTRUCTED) };
}

fn constructor_runs_once_per_object_when_a_slab_is_populated() -> TestResult {
    CTOR_CALLS.store(0, Ordering::SeqCst);
    // POISON would destroy the constructed state; SLUB drops it for ctor caches.
    let c = kmem_cache_create("t-ctor", 64, 0, SlabFlags::POISON, Some(ctor))
        .map_err(|e| fail(alloc::format!("{e}")))?;
    kassert!(!c.flags().contains(SlabFlags::POISON));
    kassert_eq!(CTOR_CALLS.load(Ordering::SeqCst), 0, "no slab yet");
    let per = c.info().objperslab;
    let mut objs = Objs::new(&c, 2 * per);
    let a = objs.alloc()?;
    kassert_eq!(CTOR_CALLS.load(Ordering::SeqCst), per, "the whole slab");
    // SAFETY: a 64-byte object of ours.
    kassert_eq!(unsafe { a.cast::<u64>().read() }, CONSTRUCTED);
    // The free pointer must not clobber the constructed state either.
    objs.free_last();
    let b = objs.alloc()?;
    kassert_eq!(b, a);
    // SAFETY: `b` is the same 64-byte object of ours, allocated again (b == a).
    kassert_eq!(unsafe { b.cast::<u64>().read() }, CONSTRUCTED);
    for _ in 0..100 {
        objs.free_last();
        objs.alloc()?;
    }
    kassert_eq!(CTOR_CALLS.load(Ordering::SeqCst), per, "not per allocation");
    for _ in 1..per + 1 {
        objs.alloc()?;
    }
    kassert_eq!(CTOR_CALLS.load(Ordering::SeqCst), 2 * per, "second slab");
    Ok(())
}

fn objects_never_overlap_in_any_kmalloc_class() -> TestResult {
    // Enough objects for several slabs of every class; each object filled
    // with its own byte, checked after all are allocated.
    for &size in &kreclaim::mm::slab::kmalloc::KMALLOC_SIZES {
        let n = (64 * 1024 / size).clamp(16, 1200);
        let mut v: Vec<NonNull<u8>> = Vec::with_capacity(n);
        let c = kmalloc_slab(size, 1).ok_or_else(|| fail(alloc::format!("no class {size}")))?;
        let active = c.info().active_objs;
        for i in 0..n {
            let p = kmalloc(size, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
            // SAFETY: `p` is a fresh kmalloc object of `size` bytes, ours alone.
            unsafe { bytes(p, size) }.fill(i as u8);
            v.push(p);
        }
        kassert_eq!(c.info().active_objs, active + n, "{}", c.name());
        let mut bad = None;
        for (i, p) in v.iter().enumerate() {
            // SAFETY: `*p` is a live kmalloc object of `size` bytes that this test allocated and still owns.
            if unsafe { bytes(*p, size) }.iter().any(|b| *b != i as u8) {
                bad = Some(i);
            }
        }
        // Free in an interleaved order: odd indices first.
        for p in v.iter().skip(1).step_by(2).chain(v.iter().step_by(2)) {
            kfree(p.as_ptr());
        }
        kassert!(bad.is_none(), "{}: object {bad:?} overwritten", c.name());
        kassert_eq!(c.info().active_objs, active, "{}", c.name());
    }
    Ok(())
}

fn concurrent_allocation_keeps_objects_and_counts_intact() -> TestResult {
    // Two tasks share a cache under preemption (1 kHz tick); each keeps up
    // to 300 live objects stamped with its own pattern and checks them
    // before freeing. Slabs are created and released throughout.
    const OPS: usize = 40_000;
    const MAX_OPS: usize = 4_000_000;
    const LIVE: usize = 300;
    let c = Arc::new(cache("t-concurrent", 48, SlabFlags::empty())?);
    let errors = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(2);
    for id in 0..2u8 {
        let (c, errors) = (c.clone(), errors.clone());
        let t = task::spawn("slab-stress", move || {
            let mut live: Vec<NonNull<u8>> = Vec::with_capacity(LIVE);
            let mut x = 0x2545_f491_4f6c_dd1du64 + id as u64;
            let stamp = 0x40 + id;
            // At least OPS operations, and on until this task has been
            // switched out a few times (a fast allocator may finish OPS
            // inside one slice); MAX_OPS bounds it if preemption is broken.
            let mut op = 0;
            while op < OPS || (task::current().switches() < 3 && op < MAX_OPS) {
                op += 1;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if live.len() < LIVE && (live.is_empty() || !x.is_multiple_of(3)) {
                    match c.alloc(GFP_KERNEL) {
                        Ok(p) => {
                            // SAFETY: `p` is a fresh 48-byte object of `c`, ours alone.
                            unsafe { bytes(p, 48) }.fill(stamp);
                            live.push(p);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                } else {
                    let p = live.swap_remove(x as usize % live.len());
                    // SAFETY: `p` is a live 48-byte object of `c` that this test still owns (it is freed after the check).
                    if unsafe { bytes(p, 48) }.iter().any(|b| *b != stamp) {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                    // SAFETY: `p` came from this cache and was removed from `live`: nothing uses it again.
                    unsafe { c.free(p) };
                }
                if x.is_multiple_of(64) {
                    c.shrink();
                }
            }
            for p in live {
                // SAFETY: the remaining objects of `live` came from this cache; `live` is consumed.
                unsafe { c.free(p) };
            }
        })
        .map_err(|e| fail(alloc::format!("spawn: {e:?}")))?;
        tasks.push(t);
    }
    let n = slab::reports().len();
    let mut switches = 0;
    let mut cpus = 0;
    for t in tasks {
        let task = t.task().clone();
        t.join().map_err(|e| fail(alloc::format!("join: {e:?}")))?;
        switches += task.switches();
        cpus |= task.cpus_ran();
    }
    // Each task ran more than once: they were preempted mid-stream; or
    // (SMP) they ran at the same time on several CPUs.
    kassert!(
        switches > 4 || cpus.count_ones() > 1,
        "only {switches} context switches, all on CPUs {cpus:#b}"
    );
    kassert_eq!(errors.load(Ordering::SeqCst), 0, "objects shared or lost");
    kassert_eq!(c.info().active_objs, 0);
    kassert!(reports_since(n).is_empty(), "{:?}", reports_since(n));
    Ok(())
}

fn create_rejects_bad_sizes_and_alignments() -> TestResult {
    let bad = |size, align| kmem_cache_create("t-bad", size, align, SlabFlags::empty(), None);
    kassert!(matches!(
        bad(0, 8),
        Err(CreateError::BadSize { size: 0, .. })
    ));
    kassert!(matches!(
        bad(1 << 20, 8),
        Err(CreateError::BadSize {
            size: 0x10_0000,
            ..
        })
    ));
    kassert!(matches!(
        bad(64, 24),
        Err(CreateError::BadAlign { align: 24, .. })
    ));
    kassert!(matches!(
        bad(64, 8192),
        Err(CreateError::BadAlign { align: 8192, .. })
    ));
    let c = bad(64, 4096).map_err(|e| fail(alloc::format!("{e}")))?;
    let p = c
        .alloc(GFP_KERNEL)
        .map_err(|e| fail(alloc::format!("{e}")))?;
    let aligned = (p.as_ptr() as usize).is_multiple_of(4096);
    // SAFETY: `p` came from this cache and is not used after this free.
    unsafe { c.free(p) };
    kassert!(aligned);
    Ok(())
}

fn hwcache_align_rounds_to_cache_lines() -> TestResult {
    for (size, align) in [(40, 64), (20, 32), (100, 64)] {
        let c = cache("t-hwcache", size, SlabFlags::HWCACHE_ALIGN)?;
        let mut objs = Objs::new(&c, 3);
        for _ in 0..3 {
            let p = objs.alloc()?;
            kassert_eq!(p.as_ptr() as usize % align, 0, "size {size}");
        }
    }
    Ok(())
}

fn zalloc_zeroes_even_poisoned_objects() -> TestResult {
    let c = cache("t-zalloc", 100, SlabFlags::POISON | SlabFlags::RED_ZONE)?;
    let n = slab::reports().len();
    let p = c
        .alloc(GFP_KERNEL)
        .map_err(|e| fail(alloc::format!("{e}")))?;
    // SAFETY: `p` is a fresh 100-byte object of `c`, ours alone.
    unsafe { bytes(p, 100) }.fill(0x77);
    // SAFETY: `p` came from this cache and is not used after this free.
    unsafe { c.free(p) };
    let z = c
        .zalloc(GFP_KERNEL)
        .map_err(|e| fail(alloc::format!("{e}")))?;
    // SAFETY: `z` is a fresh 100-byte object of `c`, ours alone.
    let zero = unsafe { bytes(z, 100) }.iter().all(|b| *b == 0);
    // SAFETY: `z` came from this cache and is not used after this free.
    unsafe { c.free(z) };
    kassert_eq!(z, p);
    kassert!(zero);
    let k = kzalloc(200, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
    // SAFETY: `k` is a fresh 200-byte kzalloc object, ours alone.
    let zero = unsafe { bytes(k, 200) }.iter().all(|b| *b == 0);
    kfree(k.as_ptr());
    kassert!(zero);
    kassert!(reports_since(n).is_empty(), "{:?}", reports_since(n));
    Ok(())
}

fn double_free_is_reported_and_ignored() -> TestResult {
    let c = cache("t-dfree", 64, SlabFlags::empty())?;
    let mut objs = Objs::new(&c, 4);
    let a = objs.alloc()?;
    objs.alloc()?;
    // SAFETY: `a` came from this cache; the test only frees it again below to check the double-free report, which touches no object.
    unsafe { c.free(a) };
    objs.v.retain(|p| *p != a);
    let n = slab::reports().len();
    // SAFETY: `a` is already free: the free is rejected as a double free and reported, nothing is written.
    unsafe { c.free(a) };
    let r = one_report(n, SlabBug::DoubleFree, "t-dfree")?;
    kassert_eq!(r.addr, a.as_ptr() as usize);
    kassert_eq!(lists(&c), (1, 0, 1, 0, 1), "counts unchanged");
    // Had the second free been linked, `a` would now be handed out twice.
    let x = objs.alloc()?;
    let y = objs.alloc()?;
    kassert_eq!(x, a);
    kassert!(x != y, "the same object allocated twice");
    kassert_eq!(c.info().active_objs, 3);
    Ok(())
}

fn free_to_the_wrong_cache_is_reported_and_ignored() -> TestResult {
    let a = cache("t-wrong-a", 64, SlabFlags::empty())?;
    let b = cache("t-wrong-b", 64, SlabFlags::empty())?;
    let mut objs_b = Objs::new(&b, 1);
    objs_b.alloc()?;
    let o = a
        .alloc(GFP_KERNEL)
        .map_err(|e| fail(alloc::format!("{e}")))?;
    let n = slab::reports().len();
    // SAFETY: `o` belongs to cache `a`: `b` rejects it as a wrong-cache free and only reports it.
    unsafe { b.free(o) };
    let r = one_report(n, SlabBug::WrongCache, "t-wrong-b");
    let counts = (a.info().active_objs, b.info().active_objs);
    // SAFETY: `o` came from `a` (the free into `b` was rejected) and is not used again.
    unsafe { a.free(o) };
    r?;
    kassert_eq!(counts, (1, 1), "neither cache changed");
    kassert_eq!(a.info().active_objs, 0, "the right cache takes it");
    kassert_eq!(slab::reports().len(), n + 1);
    Ok(())
}

fn free_of_a_pointer_no_slab_owns_is_reported_and_ignored() -> TestResult {
    let c = cache("t-foreign", 64, SlabFlags::empty())?;
    let mut objs = Objs::new(&c, 4);
    let o = objs.alloc()?;
    // A page straight from the page allocator.
    let pa = alloc_pages(GFP_KERNEL, 0).map_err(|e| fail(alloc::format!("{e}")))?;
    let page = NonNull::new(page_address(pa)).ok_or_else(|| fail(String::from("null")))?;
    // SAFETY: `page` is a page from alloc_pages, direct mapped and ours alone.
    unsafe { bytes(page, PAGE_SIZE) }.fill(0x3c);
    let n = slab::reports().len();
    // SAFETY: a page from the page allocator is no slab object: the free is rejected and only reported.
    unsafe { c.free(page) };
    // SAFETY: the rejected free left `page` allocated, mapped and ours.
    let untouched = unsafe { bytes(page, PAGE_SIZE) }.iter().all(|b| *b == 0x3c);
    let owner = page_alloc::page_owner(pa);
    free_pages(pa, 0);
    one_report(n, SlabBug::NotASlabObject, "t-foreign")?;
    kassert!(untouched, "the page was written to");
    kassert_eq!(owner, Some(PageOwner::Kernel));
    // A stack address: outside the direct map the page allocator manages.
    let local = [0u64; 2];
    let n = slab::reports().len();
    // SAFETY: a stack address is no slab object: the free is rejected and only reported.
    unsafe { c.free(NonNull::from(&local).cast()) };
    one_report(n, SlabBug::NotASlabObject, "t-foreign")?;
    // Inside a slab but not at an object boundary: inside an object, and
    // in the slab header.
    let n = slab::reports().len();
    // SAFETY: `o + 8` is still inside the object (so `add` stays in
    // bounds), and a pointer that is not at an object boundary is rejected
    // by the free and only reported.
    unsafe { c.free(o.add(8)) };
    one_report(n, SlabBug::BadOffset, "t-foreign")?;
    let n = slab::reports().len();
    let header = (o.as_ptr() as usize & !(PAGE_SIZE - 1)) as *mut u8;
    // SAFETY: the slab header is not an object: the free is rejected and only reported.
    unsafe { c.free(NonNull::new(header).ok_or_else(|| fail(String::from("null")))?) };
    one_report(n, SlabBug::BadOffset, "t-foreign")?;
    kassert_eq!(lists(&c), (1, 0, 1, 0, 1), "counts unchanged");
    objs.alloc()?;
    objs.free_all();
    kassert_eq!(lists(&c), (1, 0, 0, 1, 0), "still usable");
    Ok(())
}

fn write_after_free_is_detected_on_the_next_allocation() -> TestResult {
    let c = cache("t-poison", 64, SlabFlags::POISON)?;
    let mut objs = Objs::new(&c, 2);
    let o = objs.alloc()?;
    // SAFETY: `o` is a fresh 64-byte object of `c`, ours alone.
    unsafe { bytes(o, 64) }.fill(0x11);
    objs.free_last();
    // SAFETY: `o` was freed into `c`, a private cache nothing else allocates from, and not handed out again; its slab stays mapped and the test only reads the poison.
    let b = unsafe { bytes(o, 64) };
    kassert!(
        b[..63].iter().all(|v| *v == 0x6b) && b[63] == 0xa5,
        "freed object not poisoned: {b:x?}"
    );
    b[10] = 0x42; // use after free
    let n = slab::reports().len();
    let p = objs.alloc()?;
    kassert_eq!(p, o);
    let r = one_report(n, SlabBug::PoisonOverwritten, "t-poison")?;
    kassert_eq!(r.offset, Some(10));
    kassert_eq!(r.addr, o.as_ptr() as usize);
    // Freed and allocated again cleanly: the poison was laid anew.
    objs.free_last();
    objs.alloc()?;
    objs.free_all();
    kassert_eq!(slab::reports().len(), n + 1);
    kassert_eq!(c.info().active_objs, 0);
    Ok(())
}

fn red_zone_overflow_is_detected_on_free() -> TestResult {
    let c = cache("t-redzone", 60, SlabFlags::RED_ZONE)?;
    let mut objs = Objs::new(&c, 2);
    let o = objs.alloc()?;
    let other = objs.alloc()?;
    // SAFETY: the red zone follows the 60-byte object inside its slot.
    unsafe { o.as_ptr().add(60).write(0) };
    let n = slab::reports().len();
    let l = lockdep::report_count();
    // SAFETY: `o` came from this cache and is dropped from `objs` right after; only its red zone is inspected via the report.
    unsafe { c.free(o) };
    objs.v.retain(|p| *p != o);
    let r = one_report(n, SlabBug::RedzoneOverwritten, "t-redzone")?;
    kassert_eq!(r.offset, Some(60));
    kassert_eq!(r.addr, o.as_ptr() as usize);
    kassert_eq!(
        lockdep::report_count(),
        l,
        "{:?}",
        lockdep::reports_since(l)
    );
    kassert_eq!(c.info().active_objs, 1, "the free went through");
    // Repaired: the next use of the object reports nothing.
    kassert_eq!(objs.alloc()?, o);
    objs.free_all();
    kassert_eq!(slab::reports().len(), n + 1);
    // An object never overflowed is not reported.
    kassert!(other != o);
    Ok(())
}

fn left_red_zone_underflow_is_detected_with_the_cache_name() -> TestResult {
    let c = cache("t-redleft", 64, SlabFlags::RED_ZONE)?;
    kassert_eq!(c.red_left_pad(), 8, "a word before each object");
    let mut objs = Objs::new(&c, 3);
    // The slab's first object (right after the slab header) and the next.
    let first = objs.alloc()?;
    let o = objs.alloc()?;
    // An underflow: the byte just before the object, on free.
    // SAFETY: the left red zone precedes the object inside its slot.
    unsafe { o.as_ptr().sub(1).write(0) };
    let n = slab::reports().len();
    // SAFETY: `o` came from this cache and leaves `objs` right after.
    unsafe { c.free(o) };
    objs.v.retain(|p| *p != o);
    let r = one_report(n, SlabBug::RedzoneOverwritten, "t-redleft")?;
    kassert_eq!(r.what, "Left Redzone overwritten");
    kassert_eq!((r.addr, r.offset), (o.as_ptr() as usize, None));
    // The first byte of the left red zone, while the object is free: found
    // when it is handed out again.
    // SAFETY: a freed object of this private cache, still in its slab and
    // not handed out; its left red zone is written on purpose.
    unsafe { o.as_ptr().sub(8).write(0x42) };
    let n = slab::reports().len();
    kassert_eq!(objs.alloc()?, o);
    let r = one_report(n, SlabBug::RedzoneOverwritten, "t-redleft")?;
    kassert_eq!(r.what, "Left Redzone overwritten");
    // The first object of a slab has a left red zone too, and the pattern
    // was laid anew: frees without underflow report nothing.
    // SAFETY: as above, before `first`.
    unsafe { first.as_ptr().sub(8).write(0) };
    let n = slab::reports().len();
    objs.free_all();
    let r = one_report(n, SlabBug::RedzoneOverwritten, "t-redleft")?;
    kassert_eq!(r.addr, first.as_ptr() as usize);
    // A right red zone overflow is still told apart.
    let p = objs.alloc()?;
    // SAFETY: the right red zone follows the 64-byte object.
    unsafe { p.as_ptr().add(64).write(0) };
    let n = slab::reports().len();
    objs.free_all();
    let r = one_report(n, SlabBug::RedzoneOverwritten, "t-redleft")?;
    kassert_eq!(
        (r.what.as_str(), r.offset),
        ("Right Redzone overwritten", Some(64))
    );
    kassert_eq!(c.info().active_objs, 0);
    Ok(())
}

fn red_zone_overflow_in_a_kmalloc_cache_is_reported_without_deadlock() -> TestResult {
    // slab_debug=Z,kmalloc-16 (built in) reached this kmalloc cache only.
    let k16 = kmalloc_slab(16, 1).ok_or_else(|| fail(String::from("no kmalloc-16")))?;
    let k32 = kmalloc_slab(32, 1).ok_or_else(|| fail(String::from("no kmalloc-32")))?;
    kassert_eq!(k16.name(), "kmalloc-16");
    kassert!(k16.flags().contains(SlabFlags::RED_ZONE));
    kassert!(!k32.flags().contains(SlabFlags::RED_ZONE));
    let p = kmalloc(16, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
    // SAFETY: byte 16 is the first red-zone byte of the slot.
    unsafe { p.as_ptr().add(16).write(0) };
    let n = slab::reports().len();
    let l = lockdep::report_count();
    // The report records the cache name, which allocates from kmalloc-16
    // itself: it must not do so under the cache's list lock.
    kfree(p.as_ptr());
    let r = one_report(n, SlabBug::RedzoneOverwritten, "kmalloc-16")?;
    kassert_eq!(r.offset, Some(16));
    kassert_eq!(
        lockdep::report_count(),
        l,
        "{:?}",
        lockdep::reports_since(l)
    );
    Ok(())
}

fn destroy_with_live_objects_names_the_cache_and_count() -> TestResult {
    let c = cache("t-destroy", 64, SlabFlags::empty())?;
    for _ in 0..3 {
        // Leaked on purpose: the cache stays (leaked) for them.
        c.alloc(GFP_KERNEL)
            .map_err(|e| fail(alloc::format!("{e}")))?;
    }
    let n = slab::reports().len();
    let r = c.destroy();
    kassert_eq!(
        r,
        Err(DestroyError::LiveObjects {
            cache: String::from("t-destroy"),
            count: 3
        })
    );
    one_report(n, SlabBug::LiveObjectsAtDestroy, "t-destroy")?;
    // The leaked cache is still listed: its objects are still there.
    let row = slab::slabinfo().into_iter().find(|r| r.name == "t-destroy");
    kassert_eq!(row.map(|r| r.active_objs), Some(3));
    // Everything else still works.
    let p = kmalloc(64, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
    kfree(p.as_ptr());
    Ok(())
}

fn destroy_of_an_empty_cache_returns_its_pages() -> TestResult {
    // Exact page counts: no block may stay on a per-CPU page list.
    let _pcp = page_alloc::zone_pcp_disable();
    let c = cache("t-destroy-ok", 64, SlabFlags::empty())?;
    let per = c.info().objperslab;
    let mut v: Vec<NonNull<u8>> = Vec::with_capacity(3 * per);
    // Pages that sheaves take (the slab_sheaf cache) are not this cache's.
    let nr_free_pages = || nr_free_pages() + slab::sheaf_pages() as u64;
    let before = nr_free_pages();
    for _ in 0..3 * per {
        v.push(
            c.alloc(GFP_KERNEL)
                .map_err(|e| fail(alloc::format!("{e}")))?,
        );
    }
    for p in v.drain(..) {
        // SAFETY: the drained objects came from this cache and are not used again.
        unsafe { c.free(p) };
    }
    let kept = before - nr_free_pages();
    let r = c.destroy();
    let after = nr_free_pages();
    kassert_eq!(kept, 3, "three empty slabs kept (MIN_PARTIAL)");
    kassert_eq!(r, Ok(()));
    kassert_eq!(after, before);
    kassert!(slab::slabinfo().iter().all(|r| r.name != "t-destroy-ok"));
    Ok(())
}

fn slab_debug_parses_linux_letters() -> TestResult {
    let all = SlabFlags::CONSISTENCY_CHECKS | SlabFlags::RED_ZONE | SlabFlags::POISON;
    kassert_eq!(slab_debug_parse("FZP,mycache"), Ok((all, Some("mycache"))));
    kassert_eq!(slab_debug_parse("fz"), Ok((all - SlabFlags::POISON, None)));
    kassert_eq!(slab_debug_parse("P"), Ok((SlabFlags::POISON, None)));
    kassert_eq!(slab_debug_parse("-"), Ok((SlabFlags::empty(), None)));
    kassert_eq!(slab_debug_parse(""), Ok((SlabFlags::DEBUG, None)));
    kassert_eq!(
        slab_debug_parse(",dentry"),
        Ok((SlabFlags::DEBUG, Some("dentry")))
    );
    kassert_eq!(slab_debug_parse("U"), Ok((SlabFlags::empty(), None)));
    kassert!(slab_debug_parse("FQ").is_err());
    kassert!(slab_debug_parse("X,mycache").is_err());
    let e = Config::parse("slab_debug=K").unwrap_err();
    kassert!(
        matches!(
            e,
            CmdlineError::BadValue {
                key: "slab_debug",
                ..
            }
        ),
        "{e:?}"
    );
    let c = Config::parse("slab_debug=ZP,kmalloc-64").map_err(|e| fail(alloc::format!("{e}")))?;
    kassert_eq!(
        c.slab_debug,
        Some((
            SlabFlags::RED_ZONE | SlabFlags::POISON,
            Some(String::from("kmalloc-64"))
        ))
    );
    // The configuration line shows it back.
    for (arg, shown) in [
        ("slab_debug=pz,kmalloc-64", " slab_debug=ZP,kmalloc-64"),
        ("slab_debug=", " slab_debug=FZP"),
        ("slab_debug=-", " slab_debug=-"),
    ] {
        let c = Config::parse(arg).map_err(|e| fail(alloc::format!("{e}")))?;
        let text = alloc::format!("{c}");
        kassert!(text.ends_with(shown), "{arg}: '{text}'");
    }
    Ok(())
}

/// Puts the boot-time debug setting back, also when a check fails.
struct RestoreGlobalDebug;

impl Drop for RestoreGlobalDebug {
    fn drop(&mut self) {
        set_global_debug(SlabFlags::RED_ZONE, Some(String::from("kmalloc-16")));
    }
}

fn global_debug_flags_reach_the_named_cache_only() -> TestResult {
    let _restore = RestoreGlobalDebug;
    set_global_debug(
        SlabFlags::POISON | SlabFlags::RED_ZONE,
        Some(String::from("t-global")),
    );
    let named = cache("t-global", 32, SlabFlags::empty())?;
    let other = cache("t-global-other", 32, SlabFlags::empty())?;
    kassert!(
        named
            .flags()
            .contains(SlabFlags::POISON | SlabFlags::RED_ZONE)
    );
    kassert!(!other.flags().intersects(SlabFlags::DEBUG));
    // ...and the flags act: a freed object is poisoned.
    let p = named
        .alloc(GFP_KERNEL)
        .map_err(|e| fail(alloc::format!("{e}")))?;
    // SAFETY: `p` came from `named`, a private cache nobody else allocates from, so the read of its poison below sees the freed slot untouched by another owner.
    unsafe { named.free(p) };
    // SAFETY: `p` was freed into `named`, a private cache nothing else allocates from; its slab stays mapped and the test only reads the poison.
    kassert_eq!(unsafe { bytes(p, 32) }[0], 0x6b);
    drop(named);
    set_global_debug(SlabFlags::POISON, None);
    let every = cache("t-global-every", 32, SlabFlags::empty())?;
    kassert!(every.flags().contains(SlabFlags::POISON));
    set_global_debug(SlabFlags::empty(), None);
    let none = cache("t-global", 32, SlabFlags::empty())?;
    kassert!(!none.flags().intersects(SlabFlags::DEBUG));
    Ok(())
}

fn free_pointers_are_not_raw_addresses() -> TestResult {
    // Without debug flags or a constructor, a 64-byte cache keeps the free
    // pointer in the middle of a free object (offset 32), as SLUB does.
    let c = cache("t-hardened", 64, SlabFlags::empty())?;
    kassert_eq!(c.freeptr_offset(), 32);
    let per = c.info().objperslab;
    let mut objs = Objs::new(&c, per);
    for _ in 0..per {
        objs.alloc()?;
    }
    kassert_eq!(lists(&c), (1, 1, 0, 0, per), "one full slab");
    let (a, b) = (objs.v[5], objs.v[3]);
    let freeptr = |p: NonNull<u8>| {
        // SAFETY: the free-pointer word of an object of this (live) slab.
        unsafe { p.as_ptr().add(32).cast::<usize>().read() }
    };
    const MARK: u8 = 0x55;
    // SAFETY: objects of ours.
    unsafe {
        bytes(a, 64).fill(MARK);
        bytes(b, 64).fill(MARK);
    }
    // Free a, then b: b's free pointer leads to a, a's ends the list (the
    // slab was full).
    // SAFETY: `a` came from this private cache; the test reads back its slot's free pointer below, and nothing else allocates from the cache in between.
    unsafe { c.free(a) };
    // SAFETY: as for `a` on the line above, the same holds for `b`: it came from this private cache and is only read back to find its free pointer.
    unsafe { c.free(b) };
    // Both wait in this CPU's sheaf (an array: no free pointer written)
    // until the sheaf is flushed onto their slab's free list.
    kassert_eq!(c.flush_sheaves(), 2);
    let slab_lo = a.as_ptr() as usize & !4095;
    for (p, what) in [(b, "b -> a"), (a, "a -> end of list")] {
        let stored = freeptr(p);
        kassert!(
            stored != usize::from_ne_bytes([MARK; 8]),
            "{what}: no free pointer at offset 32"
        );
        kassert!(
            stored != 0,
            "{what}: the end of the list is stored in the clear"
        );
        kassert!(
            !(slab_lo..slab_lo + 4096).contains(&stored),
            "{what}: free pointer {stored:#x} is a raw address inside the slab (a is {a:p})"
        );
    }
    // The list decodes: b, then a come back (LIFO).
    let x = c
        .alloc(GFP_KERNEL)
        .map_err(|e| fail(alloc::format!("{e}")))?;
    let y = c
        .alloc(GFP_KERNEL)
        .map_err(|e| fail(alloc::format!("{e}")))?;
    kassert_eq!((x, y), (b, a));
    Ok(())
}

/// Frees `free` (objects of `c` held by `objs`) in order, straight onto
/// their slab's free list (this CPU's sheaves flushed): the last one freed
/// heads the list.
fn free_onto_the_slab(c: &KmemCache, objs: &mut Objs, free: &[NonNull<u8>]) {
    for p in free {
        objs.v.retain(|q| q != p);
        // SAFETY: an object of this cache, just dropped from `objs`.
        unsafe { c.free(*p) };
    }
    c.flush_sheaves();
}

fn a_write_to_a_freed_objects_first_word_leaves_the_free_list_intact() -> TestResult {
    // With sheaves (the list is built when they are flushed) and without
    // (debug checks: straight to the slab). Linux keeps the free pointer in
    // the middle of the object, so a use after free of the first word (a
    // refcount, a list head) does not redirect the allocator; kreclaim kept
    // it at offset 0.
    for (name, flags) in [
        ("t-freeptr-first", SlabFlags::empty()),
        ("t-freeptr-first-f", SlabFlags::CONSISTENCY_CHECKS),
    ] {
        let c = cache(name, 64, flags)?;
        kassert_eq!(c.freeptr_offset(), 32, "{name}");
        let per = c.info().objperslab;
        let mut objs = Objs::new(&c, per + 2);
        for _ in 0..per {
            objs.alloc()?;
        }
        let (a, b) = (objs.v[5], objs.v[3]);
        free_onto_the_slab(&c, &mut objs, &[a, b]);
        let n = slab::reports().len();
        // Use after free: the first 16 bytes of both free objects.
        // SAFETY: freed objects of this private cache, still in its slab and
        // not handed out; the test writes them on purpose.
        unsafe {
            bytes(a, 16).fill(0x41);
            bytes(b, 16).fill(0x41);
        }
        kassert_eq!(objs.alloc()?, b, "{name}");
        kassert_eq!(objs.alloc()?, a, "{name}: the list still leads to a");
        kassert_eq!(reports_since(n).len(), 0, "{name}: {:?}", reports_since(n));
        c.validate().map_err(|e| fail(alloc::format!("{e}")))?;
    }
    Ok(())
}

fn a_corrupt_free_pointer_is_reported_with_the_cache_name_not_followed() -> TestResult {
    for (name, flags) in [
        ("t-freeptr-mid", SlabFlags::empty()),
        ("t-freeptr-mid-f", SlabFlags::CONSISTENCY_CHECKS),
    ] {
        let c = cache(name, 64, flags)?;
        let off = c.freeptr_offset();
        let per = c.info().objperslab;
        let mut objs = Objs::new(&c, per + 2);
        for _ in 0..per {
            objs.alloc()?;
        }
        // The list: d -> b -> a.
        let (a, b, d) = (objs.v[5], objs.v[3], objs.v[7]);
        free_onto_the_slab(&c, &mut objs, &[a, b, d]);
        // d's free pointer overwritten with a's raw address, a valid free
        // object: decoded (hardened), it is no object, so it is caught
        // rather than followed (skipping b) or dereferenced.
        // SAFETY: the free-pointer word of a freed object of this private
        // cache, still in its slab and not handed out; written on purpose.
        unsafe {
            d.as_ptr()
                .add(off)
                .cast::<usize>()
                .write(a.as_ptr() as usize)
        };
        let n = slab::reports().len();
        kassert_eq!(objs.alloc()?, d, "{name}: the head is intact");
        let r = one_report(n, SlabBug::FreePointerCorrupt, name)?;
        kassert_eq!(r.addr, d.as_ptr() as usize, "{name}");
        kassert_eq!(r.offset, Some(off), "{name}");
        // The rest of the slab's list is abandoned (a and b are leaked, as
        // Linux's "Marking all objects used"): the next object comes from a
        // new slab, and the counts agree.
        let e = objs.alloc()?;
        kassert!(e != a && e != b, "{name}: a corrupt list was followed");
        kassert_eq!(c.info().num_slabs, 2, "{name}");
        kassert_eq!(reports_since(n).len(), 1, "{name}");
        c.validate().map_err(|e| fail(alloc::format!("{e}")))?;
        // A use after free that zeroes e's middle word: the end of a list
        // is encoded too, so 0 decodes to no object rather than to "end of
        // list" (which would silently drop the rest of the list).
        free_onto_the_slab(&c, &mut objs, &[e]);
        // SAFETY: as above: a freed object of this private cache.
        unsafe { bytes(e, 64)[off..off + 8].fill(0) };
        let n = slab::reports().len();
        kassert_eq!(objs.alloc()?, e, "{name}: e is its slab's head");
        one_report(n, SlabBug::FreePointerCorrupt, name)?;
        objs.free_all();
        // Objects of abandoned lists stay counted: the cache cannot be
        // destroyed (it is leaked, as Linux leaks such a slab).
        kassert!(c.info().active_objs > 0, "{name}");
    }
    Ok(())
}

fn kmalloc_sizes_map_to_linux_classes() -> TestResult {
    let cases: [(usize, usize); 16] = [
        (1, 8),
        (8, 8),
        (9, 16),
        (17, 32),
        (33, 64),
        (64, 64),
        (65, 96),
        (96, 96),
        (97, 128),
        (129, 192),
        (193, 256),
        (257, 512),
        (1000, 1024),
        (2048, 2048),
        (4096, 4096),
        (4097, 8192),
    ];
    for (size, class) in cases {
        let c = kmalloc_slab(size, 1).ok_or_else(|| fail(alloc::format!("no class {size}")))?;
        kassert_eq!(c.object_size(), class, "kmalloc_slab({size})");
        let p = kmalloc(size, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
        // SAFETY: `p` is a fresh kmalloc object of `size` bytes, ours alone.
        unsafe { bytes(p, size) }.fill(0xee);
        let got = ksize(p.as_ptr());
        kfree(p.as_ptr());
        kassert_eq!(got, class, "ksize(kmalloc({size}))");
    }
    kassert!(kmalloc_slab(8193, 1).is_none(), "above 8 KiB: pages");
    Ok(())
}

/// kmalloc's inline lookup (a table of cache pointers by `(size + 7) / 8`
/// up to 192, the power of two above) against `kmalloc_slab` (the
/// reference search through the class list), for every size a class
/// serves and every alignment the inline path takes; then the sizes and
/// alignments it leaves to the general path.
fn kmalloc_inline_class_lookup_agrees_with_kmalloc_slab_for_every_size() -> TestResult {
    for align in [1usize, 2, 4, 8] {
        for size in 1..=8192usize {
            let want = kmalloc_slab(size, align)
                .ok_or_else(|| fail(alloc::format!("no class for {size}")))?
                .object_size();
            let p = kmalloc_aligned(size, align, GFP_KERNEL)
                .map_err(|e| fail(alloc::format!("kmalloc_aligned({size}, {align}): {e}")))?;
            let got = ksize(p.as_ptr());
            let addr = p.as_ptr() as usize;
            kfree(p.as_ptr());
            kassert_eq!(got, want, "ksize(kmalloc_aligned({size}, {align}))");
            kassert_eq!(addr % align, 0, "kmalloc_aligned({size}, {align})");
        }
    }
    // Not by the table: size 0, a size above the classes, a stricter or a
    // bad alignment.
    let p = kmalloc_aligned(0, 8, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
    kassert_eq!(p.as_ptr(), ZERO_SIZE_PTR);
    let p = kmalloc(8193, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
    let got = ksize(p.as_ptr());
    kfree(p.as_ptr());
    kassert_eq!(got, 4 * PAGE_SIZE, "kmalloc(8193) is a large kmalloc");
    let p = kmalloc_aligned(40, 16, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
    let got = ksize(p.as_ptr());
    kfree(p.as_ptr());
    kassert_eq!(
        got,
        64,
        "kmalloc_aligned(40, 16): the first 16-aligned class"
    );
    let n = slab::reports().len();
    kassert!(
        kmalloc_aligned(40, 0, GFP_KERNEL | NOWARN).is_err(),
        "align 0"
    );
    kassert!(
        kmalloc_aligned(40, 3, GFP_KERNEL | NOWARN).is_err(),
        "align 3"
    );
    kassert_eq!(slab::reports().len(), n + 2, "both bad alignments reported");
    Ok(())
}

fn kmalloc_zero_and_kfree_null_are_no_ops() -> TestResult {
    let n = slab::reports().len();
    let bad_frees = page_alloc::stats().snapshot().bad_frees;
    let p = kmalloc(0, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
    kassert_eq!(p.as_ptr(), ZERO_SIZE_PTR);
    kassert_eq!(ZERO_SIZE_PTR as usize, 16);
    kassert_eq!(ksize(ZERO_SIZE_PTR), 0);
    kfree(ZERO_SIZE_PTR);
    kfree(core::ptr::null_mut());
    kassert_eq!(slab::reports().len(), n);
    kassert_eq!(page_alloc::stats().snapshot().bad_frees, bad_frees);
    Ok(())
}

fn large_kmalloc_comes_from_and_returns_to_the_page_allocator() -> TestResult {
    // Exact page counts: no block may stay on a per-CPU page list.
    let _pcp = page_alloc::zone_pcp_disable();
    for (size, order) in [(8193usize, 2u32), (100_000, 5), (4 << 20, 10)] {
        let before = nr_free_pages();
        let p = kmalloc(size, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
        let during = nr_free_pages();
        // SAFETY: `p` is a fresh kmalloc object of `size` bytes, ours alone.
        unsafe { bytes(p, size) }.fill(0x99);
        let owner = page_alloc::page_owner(virt_to_phys(p.as_ptr()));
        let got = ksize(p.as_ptr());
        kfree(p.as_ptr());
        let after = nr_free_pages();
        kassert_eq!(before - during, 1 << order, "kmalloc({size})");
        kassert_eq!(got, PAGE_SIZE << order);
        kassert_eq!(owner, Some(PageOwner::Other("kmalloc-large")));
        kassert_eq!(p.as_ptr() as usize % (PAGE_SIZE << order), 0);
        kassert_eq!(after, before, "kfree returned the pages");
    }
    let too_big = kmalloc(8 << 20, GFP_KERNEL | NOWARN);
    kassert!(too_big.is_err(), "above MAX_ORDER fails as a value");
    Ok(())
}

fn kmalloc_alignment_is_honoured() -> TestResult {
    for align in [8usize, 64, 512, 4096] {
        for size in [1usize, 24, 100, 600, 3000, 5000] {
            let p = kmalloc_aligned(size, align, GFP_KERNEL)
                .map_err(|e| fail(alloc::format!("{e}")))?;
            let addr = p.as_ptr() as usize;
            let got = ksize(p.as_ptr());
            kfree(p.as_ptr());
            kassert_eq!(addr % align, 0, "kmalloc_aligned({size}, {align})");
            kassert!(got >= size, "ksize {got} < {size}");
        }
    }
    // The smallest class that is aligned enough, not the smallest that fits.
    for (align, class) in [(64usize, 64usize), (512, 512), (4096, 4096)] {
        let p = kmalloc_aligned(1, align, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
        let got = ksize(p.as_ptr());
        kfree(p.as_ptr());
        kassert_eq!(got, class, "kmalloc_aligned(1, {align})");
    }
    // Power-of-two sizes are naturally aligned up to the 512-byte cap
    // (kreclaim keeps slab headers on the slab; see docs/memory.md).
    for size in [8usize, 16, 32, 64, 128, 256, 512] {
        let p = kmalloc(size, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
        let addr = p.as_ptr() as usize;
        kfree(p.as_ptr());
        kassert_eq!(addr % size, 0, "kmalloc({size})");
    }
    Ok(())
}

fn kfree_of_a_foreign_pointer_is_reported_not_freed() -> TestResult {
    let pa = alloc_pages(GFP_KERNEL, 0).map_err(|e| fail(alloc::format!("{e}")))?;
    let page = page_address(pa);
    let n = slab::reports().len();
    let before = nr_free_pages();
    kfree(page);
    let after = nr_free_pages();
    let owner = page_alloc::page_owner(pa);
    free_pages(pa, 0);
    one_report(n, SlabBug::NotASlabObject, "kmalloc")?;
    kassert_eq!(after, before, "nothing was freed");
    kassert_eq!(owner, Some(PageOwner::Kernel));
    // A pointer into a kmalloc object, and into a large allocation.
    let p = kmalloc(64, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
    let n = slab::reports().len();
    // SAFETY: inside the object.
    kfree(unsafe { p.as_ptr().add(8) });
    let r = one_report(n, SlabBug::BadOffset, "kmalloc-64");
    let size = ksize(p.as_ptr());
    kfree(p.as_ptr());
    r?;
    kassert_eq!(size, 64, "still allocated");
    let big = kmalloc(3 * PAGE_SIZE, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
    let before = nr_free_pages();
    let n = slab::reports().len();
    // SAFETY: inside the allocation.
    kfree(unsafe { big.as_ptr().add(64) });
    let r = one_report(n, SlabBug::BadOffset, "kmalloc-large");
    let after = nr_free_pages();
    kfree(big.as_ptr());
    r?;
    kassert_eq!(after, before, "nothing was freed");
    Ok(())
}

static DROPS: AtomicUsize = AtomicUsize::new(0);

struct Counted {
    value: u64,
    _pad: [u8; 40],
}

impl Counted {
    fn new(value: u64) -> Self {
        Counted {
            value,
            _pad: [0; 40],
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

fn kbox_and_kvec_work_and_fail_as_values() -> TestResult {
    DROPS.store(0, Ordering::SeqCst);
    let b = KBox::new(Counted::new(7), GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
    kassert_eq!(b.value, 7);
    let p: *const Counted = &*b;
    kassert_eq!(ksize(p.cast()), 64, "a kmalloc-64 object");
    drop(b);
    kassert_eq!(DROPS.load(Ordering::SeqCst), 1, "KBox drops its value");

    let mut v: KVec<u32> = KVec::new();
    for i in 0..1000 {
        v.push(i, GFP_KERNEL)
            .map_err(|(_, e)| fail(alloc::format!("{e}")))?;
    }
    kassert_eq!(v.len(), 1000);
    kassert!(v.iter().enumerate().all(|(i, x)| *x == i as u32));
    kassert!(ksize(v.as_ptr().cast()) >= 4000);
    kassert_eq!(v.pop(), Some(999));

    // Failures are values: FAILSLAB for the slab path...
    let injected = FAILSLAB.injected();
    FAILSLAB.configure(100, 1, 1);
    let r = KBox::new(Counted::new(8), GFP_KERNEL | NOWARN);
    kassert!(r.is_err());
    kassert_eq!(FAILSLAB.injected(), injected + 1);
    kassert_eq!(DROPS.load(Ordering::SeqCst), 2, "the value was dropped");
    let mut small: KVec<u64> = KVec::new();
    FAILSLAB.configure(100, 1, 1);
    let r = small.push(5, GFP_KERNEL | NOWARN);
    kassert!(matches!(r, Err((5, _))), "the value comes back");
    kassert!(small.is_empty());
    small
        .push(6, GFP_KERNEL)
        .map_err(|(_, e)| fail(alloc::format!("{e}")))?;
    kassert_eq!(&small[..], &[6]);
    // ...and FAIL_PAGE_ALLOC for a reservation beyond the kmalloc caches.
    let mut big: KVec<u8> = KVec::new();
    FAIL_PAGE_ALLOC.configure(100, 1, 1);
    let r = big.reserve(100_000, GFP_KERNEL | NOWARN);
    FAIL_PAGE_ALLOC.disable();
    kassert!(r.is_err());
    kassert_eq!(big.capacity(), 0);
    big.reserve(100_000, GFP_KERNEL)
        .map_err(|e| fail(alloc::format!("{e}")))?;
    kassert!(big.capacity() >= 100_000);
    Ok(())
}

/// A typed cache in a `static` (const constructor), created at init.
static STATIC_TYPED: TypedCache<u64> = TypedCache::new_static("t-static", SlabFlags::empty());

fn a_static_typed_cache_is_created_at_init_and_refuses_use_before() -> TestResult {
    kassert!(STATIC_TYPED.cache().is_none());
    // Used before create(): a reported bug and an error value, no crash.
    kassert!(STATIC_TYPED.alloc(GFP_KERNEL, 1).is_err());
    STATIC_TYPED
        .create()
        .map_err(|e| fail(alloc::format!("{e}")))?;
    STATIC_TYPED
        .create()
        .map_err(|e| fail(alloc::format!("second create: {e}")))?;
    let b = STATIC_TYPED
        .alloc(GFP_KERNEL, 7)
        .map_err(|e| fail(alloc::format!("{e}")))?;
    kassert_eq!(*b, 7);
    kassert_eq!(STATIC_TYPED.cache().map(|c| c.info().active_objs), Some(1));
    drop(b);
    kassert_eq!(STATIC_TYPED.cache().map(|c| c.info().active_objs), Some(0));
    Ok(())
}

fn typed_cache_drops_values() -> TestResult {
    DROPS.store(0, Ordering::SeqCst);
    let tc = TypedCache::<Counted>::new("t-typed", SlabFlags::empty())
        .map_err(|e| fail(alloc::format!("{e}")))?;
    kassert_eq!(
        tc.cache().map(|c| c.object_size()),
        Some(core::mem::size_of::<Counted>())
    );
    let a = tc
        .alloc(GFP_KERNEL, Counted::new(1))
        .map_err(|e| fail(alloc::format!("{e}")))?;
    let mut b = tc
        .alloc(GFP_KERNEL, Counted::new(2))
        .map_err(|e| fail(alloc::format!("{e}")))?;
    b.value += 40;
    kassert_eq!((a.value, b.value), (1, 42));
    kassert_eq!(tc.cache().map(|c| c.info().active_objs), Some(2));
    drop(a);
    kassert_eq!(DROPS.load(Ordering::SeqCst), 1);
    kassert_eq!(tc.cache().map(|c| c.info().active_objs), Some(1));
    drop(b);
    kassert_eq!(DROPS.load(Ordering::SeqCst), 2);
    kassert_eq!(tc.cache().map(|c| c.info().active_objs), Some(0));
    FAILSLAB.configure(100, 1, 1);
    let r = tc.alloc(GFP_KERNEL | NOWARN, Counted::new(3));
    kassert!(r.is_err());
    kassert_eq!(
        DROPS.load(Ordering::SeqCst),
        3,
        "a value that found no room is dropped"
    );
    Ok(())
}

fn failslab_fails_the_next_allocation_then_stops() -> TestResult {
    let c = cache("t-failslab", 64, SlabFlags::empty())?;
    let injected = FAILSLAB.injected();
    FAILSLAB.configure(100, 1, 1);
    let first = c.alloc(GFP_KERNEL | NOWARN);
    let second = c.alloc(GFP_KERNEL | NOWARN);
    let left = FAILSLAB.times_left();
    if let Ok(p) = second {
        // SAFETY: `p` came from this cache and is not used after this free.
        unsafe { c.free(p) };
    }
    kassert!(first.is_err(), "the next allocation fails");
    kassert!(second.is_ok(), "and only that one");
    kassert_eq!(FAILSLAB.injected(), injected + 1);
    kassert_eq!(left, 0);
    // __GFP_NOFAIL is never failed on purpose.
    FAILSLAB.configure(100, 1, 1);
    let nofail = c.alloc(GFP_KERNEL | Gfp::__GFP_NOFAIL);
    FAILSLAB.disable();
    if let Ok(p) = nofail {
        // SAFETY: `p` came from this cache and is not used after this free.
        unsafe { c.free(p) };
    }
    kassert!(nofail.is_ok());
    // Linux's ignore-gfp-wait: only allocations that cannot sleep fail.
    FAILSLAB.set_ignore_gfp_reclaim(true);
    FAILSLAB.configure(100, 1, 1);
    let sleeping = c.alloc(GFP_KERNEL | NOWARN);
    let atomic = c.alloc(GFP_ATOMIC | NOWARN);
    FAILSLAB.disable();
    FAILSLAB.set_ignore_gfp_reclaim(false);
    for p in [sleeping, atomic].into_iter().flatten() {
        // SAFETY: each `p` came from this cache and is not used after this free.
        unsafe { c.free(p) };
    }
    kassert!(sleeping.is_ok(), "a GFP_KERNEL allocation was failed");
    kassert!(atomic.is_err(), "the GFP_ATOMIC allocation was not failed");
    kassert_eq!(c.info().active_objs, 0);
    Ok(())
}

fn global_allocator_takes_gfp_from_the_context() -> TestResult {
    kassert_eq!(global_gfp(), GFP_KERNEL);
    {
        let _nofs = MemallocScope::nofs();
        kassert_eq!(global_gfp(), GFP_NOFS);
        // A Vec deep in library code allocates from kmalloc...
        let v: Vec<u64> = alloc::vec![1];
        kassert!(ksize(v.as_ptr().cast()) >= 8, "not a kmalloc object");
        // ...and a large one from the page allocator, under GFP_NOFS.
        let failed = page_alloc::stats().failures_for(GFP_NOFS);
        let mut big: Vec<u8> = Vec::new();
        FAIL_PAGE_ALLOC.configure(100, 1, 1);
        let r = big.try_reserve_exact(64 * 1024);
        FAIL_PAGE_ALLOC.disable();
        kassert!(r.is_err());
        kassert_eq!(page_alloc::stats().failures_for(GFP_NOFS), failed + 1);
    }
    {
        let _noio = MemallocScope::noio();
        kassert_eq!(global_gfp(), GFP_NOIO);
    }
    let masked = kreclaim::platform::without_interrupts(global_gfp);
    kassert_eq!(masked, GFP_ATOMIC, "interrupts masked");
    let no_preempt = {
        let _p = PreemptGuard::new();
        global_gfp()
    };
    kassert_eq!(no_preempt, GFP_ATOMIC, "preemption disabled");
    kassert_eq!(global_gfp(), GFP_KERNEL);
    // Layouts aligned beyond the 512-byte class cap still get their alignment.
    #[repr(align(2048))]
    struct Aligned([u8; 2048]);
    let b = Box::new(Aligned([1; 2048]));
    let addr = b.0.as_ptr() as usize;
    let size = ksize(addr as *const u8);
    drop(b);
    kassert_eq!(addr % 2048, 0);
    kassert!(size >= 2048, "ksize {size}");
    Ok(())
}

fn slabinfo_rows_are_consistent() -> TestResult {
    let c = cache("t-slabinfo", 100, SlabFlags::RECLAIM_ACCOUNT)?;
    let mut objs = Objs::new(&c, 5);
    for _ in 0..5 {
        objs.alloc()?;
    }
    let rows = slab::slabinfo();
    for name in [
        "kmalloc-8",
        "kmalloc-96",
        "kmalloc-192",
        "kmalloc-1k",
        "kmalloc-8k",
        "t-slabinfo",
    ] {
        kassert!(rows.iter().any(|r| r.name == name), "no row for {name}");
    }
    for r in &rows {
        kassert_eq!(r.num_objs, r.num_slabs * r.objperslab, "{r:?}");
        kassert!(r.active_objs <= r.num_objs, "{r:?}");
        kassert!(r.active_slabs <= r.num_slabs, "{r:?}");
        kassert_eq!(r.active_slabs, r.partial_slabs + r.full_slabs, "{r:?}");
        kassert_eq!(
            r.num_slabs,
            r.partial_slabs + r.full_slabs + r.empty_slabs,
            "{r:?}"
        );
        kassert!(r.pagesperslab.is_power_of_two(), "{r:?}");
        kassert!(
            r.objperslab * r.objsize <= r.pagesperslab * PAGE_SIZE,
            "{r:?}"
        );
    }
    let r = rows
        .iter()
        .find(|r| r.name == "t-slabinfo")
        .ok_or_else(|| fail(String::from("row")))?;
    kassert_eq!((r.active_objs, r.num_slabs, r.active_slabs), (5, 1, 1));
    kassert!(r.objsize >= 100);
    kassert!(r.reclaimable);
    Ok(())
}

fn slabinfo_text_has_the_v2_1_header_and_rows() -> TestResult {
    let c = cache("t-slabtext", 64, SlabFlags::empty())?;
    let mut objs = Objs::new(&c, 3);
    for _ in 0..3 {
        objs.alloc()?;
    }
    let mut text = String::with_capacity(64 * 1024);
    slab::write_slabinfo(&mut text).map_err(|_| fail(String::from("write")))?;
    let mut lines = text.lines();
    kassert_eq!(lines.next(), Some("slabinfo - version: 2.1"));
    let header = lines.next().unwrap_or("");
    kassert!(
        header.starts_with("# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>"),
        "{header}"
    );
    let row = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("t-slabtext"))
        .ok_or_else(|| fail(alloc::format!("no row in\n{text}")))?;
    let f: Vec<&str> = row.split_whitespace().collect();
    let per = alloc::format!("{}", c.info().objperslab);
    kassert_eq!(
        f,
        [
            "t-slabtext",
            "3",
            per.as_str(),
            "64",
            per.as_str(),
            "1",
            ":",
            "tunables",
            "0",
            "0",
            "0",
            ":",
            "slabdata",
            "1",
            "1",
            "0"
        ]
    );
    kassert!(text.lines().any(|l| l.starts_with("kmalloc-64 ")));
    Ok(())
}

/// A writer that, partway through the rows, runs the out-of-memory
/// reporter `show_slabinfo`, as a failed allocation in the writer would.
struct ReportingWriter {
    reported: bool,
    lines: usize,
}

impl core::fmt::Write for ReportingWriter {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        if self.lines >= 2 && !self.reported {
            self.reported = true;
            slab::show_slabinfo();
        }
        self.lines += s.matches('\n').count();
        Ok(())
    }
}

fn oom_report_under_the_registry_lock_does_not_deadlock() -> TestResult {
    let mut w = ReportingWriter {
        reported: false,
        lines: 0,
    };
    slab::write_slabinfo(&mut w).map_err(|_| fail(String::from("write")))?;
    kassert!(w.reported);
    kassert!(w.lines > 2 + 13, "{} lines", w.lines);
    // Outside the lock the reporter prints every row again.
    slab::show_slabinfo();
    Ok(())
}

fn a_64_byte_cache_uses_at_least_95_percent_of_its_slab() -> TestResult {
    // A goal the project tracks: the on-slab header must stay small.
    let c = cache("t-efficiency", 64, SlabFlags::empty())?;
    let k64 = kmalloc_slab(64, 1).ok_or_else(|| fail(String::from("no kmalloc-64")))?;
    for i in [c.info(), k64.info()] {
        let used = i.objperslab * 64;
        let slab = i.pagesperslab * PAGE_SIZE;
        kassert!(
            used * 100 >= slab * 95,
            "{}: {} objects of 64 B in {} B = {}.{}%",
            i.name,
            i.objperslab,
            slab,
            used * 100 / slab,
            used * 1000 / slab % 10
        );
    }
    Ok(())
}

/// The kmalloc caches kmalloc serves sizes up to 8 KiB from.
fn kmalloc_caches() -> Vec<&'static KmemCache> {
    let mut v: Vec<&'static KmemCache> = Vec::new();
    for &size in &kreclaim::mm::slab::kmalloc::KMALLOC_SIZES {
        if let Some(c) = kmalloc_slab(size, 1)
            && !v.iter().any(|x| core::ptr::eq(*x, c))
        {
            v.push(c);
        }
    }
    v
}

/// A refill of a CPU's sheaf takes the list lock; lockdep can report on
/// that acquisition, and the report allocates through kmalloc, re-entering
/// the cache being refilled (and refilling the sheaf meanwhile). Objects
/// must not be lost and the slabs must stay consistent.
fn percpu_refill_reentered_by_a_lockdep_report_loses_nothing() -> TestResult {
    use core::panic::Location;
    use kreclaim::sync::SpinLock;
    use kreclaim::sync::lockdep::{Acquire, LockdepMap};
    static OUTER: SpinLock<()> = SpinLock::new((), kreclaim::lock_class!("slab_reentry_outer"));
    let caches = kmalloc_caches();
    let list_lock = LockdepMap::new(slab::list_lock_class());
    let mut reports = 0;
    let mut held: Vec<(usize, *mut u8)> = Vec::with_capacity(16);
    for &size in &[8, 16, 32, 64, 96, 128, 192, 256] {
        lockdep::reset_graph();
        // "outer taken while a list lock is held": list_lock -> outer.
        lockdep::lock_acquire(&list_lock, 1, Acquire::EXCLUSIVE, Location::caller());
        drop(OUTER.lock());
        lockdep::lock_release(&list_lock, 1, Location::caller());
        // Every sheaf empty (validate flushes): the next allocation refills.
        for c in &caches {
            c.validate()
                .map_err(|e| fail(alloc::format!("before: {e}")))?;
        }
        let l = lockdep::report_count();
        let p = {
            let _g = OUTER.lock();
            // The refill takes the list lock under `outer`: outer -> list_lock
            // closes the cycle, and the report is built right there.
            kmalloc(size, GFP_ATOMIC).map_err(|e| fail(alloc::format!("{e}")))?
        };
        held.push((size, p.as_ptr()));
        reports += lockdep::report_count() - l;
        for c in &caches {
            c.validate()
                .map_err(|e| fail(alloc::format!("after kmalloc({size}): {e}")))?;
        }
    }
    lockdep::reset_graph();
    kassert!(reports >= 1, "no lockdep report was provoked");
    for (_, p) in held {
        kfree(p);
    }
    for c in &caches {
        c.validate()
            .map_err(|e| fail(alloc::format!("at the end: {e}")))?;
    }
    Ok(())
}

fn kmalloc_aligned_refuses_an_alignment_that_is_not_a_power_of_two() -> TestResult {
    for (size, align) in [(64, 24), (100, 48), (8, 3), (5000, 6000), (16, 0)] {
        let n = slab::reports().len();
        let r = kmalloc_aligned(size, align, GFP_KERNEL);
        if let Ok(p) = r {
            kfree(p.as_ptr());
            return Err(fail(alloc::format!(
                "kmalloc_aligned({size}, {align}) = {p:p}, not refused"
            )));
        }
        one_report(n, SlabBug::BadAlign, "kmalloc")?;
    }
    // Powers of two are still served, aligned.
    let p = kmalloc_aligned(100, 64, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
    kassert_eq!(p.as_ptr() as usize % 64, 0);
    kfree(p.as_ptr());
    Ok(())
}

fn double_kfree_of_a_large_allocation_is_a_double_free() -> TestResult {
    let p = kmalloc(1 << 20, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
    kfree(p.as_ptr());
    let before = nr_free_pages();
    let n = slab::reports().len();
    kfree(p.as_ptr());
    one_report(n, SlabBug::DoubleFree, "kmalloc")?;
    kassert_eq!(nr_free_pages(), before, "the second kfree freed something");
    Ok(())
}

/// With red zones (slab_debug=Z, here kmalloc-16 only), kmalloc red-zones the
/// slack between the size asked for and the class size, as SLUB does with
/// `orig_size`: kmalloc(12) then a write at byte 12 is an overflow.
fn kmalloc_slack_after_the_requested_size_is_red_zoned() -> TestResult {
    let k16 = kmalloc_slab(16, 1).ok_or_else(|| fail(String::from("no kmalloc-16")))?;
    kassert!(k16.flags().contains(SlabFlags::RED_ZONE));
    for (size, at) in [(12, 12), (9, 15), (15, 15)] {
        let p = kmalloc(size, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
        // SAFETY: inside the 16-byte slot, past the size asked for.
        unsafe { p.as_ptr().add(at).write(0) };
        let n = slab::reports().len();
        kfree(p.as_ptr());
        let r = one_report(n, SlabBug::RedzoneOverwritten, "kmalloc-16")?;
        kassert_eq!(r.offset, Some(at), "kmalloc({size}), write at {at}");
    }
    let n = slab::reports().len();
    // Writes inside the size asked for are fine.
    let p = kzalloc(12, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
    // SAFETY: `p` is a fresh 12-byte kzalloc object, ours alone.
    kassert!(unsafe { bytes(p, 12) }.iter().all(|b| *b == 0));
    // SAFETY: `p` is the same 12-byte object, still ours.
    unsafe { bytes(p, 12) }.fill(0x11);
    kfree(p.as_ptr());
    // ksize hands the whole object over: then all of it may be written.
    let p = kmalloc(12, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
    kassert_eq!(ksize(p.as_ptr()), 16);
    // SAFETY: ksize says the object has 16 usable bytes, and `p` is ours.
    unsafe { bytes(p, 16) }.fill(0x22);
    kfree(p.as_ptr());
    // So may a full-size request, and an object from kmem_cache_alloc.
    let p = kmalloc(16, GFP_KERNEL).map_err(|e| fail(alloc::format!("{e}")))?;
    // SAFETY: `p` is a fresh 16-byte kmalloc object, ours alone.
    unsafe { bytes(p, 16) }.fill(0x33);
    kfree(p.as_ptr());
    let p = k16
        .alloc(GFP_KERNEL)
        .map_err(|e| fail(alloc::format!("{e}")))?;
    // SAFETY: `p` is a fresh 16-byte object of `k16`, ours alone.
    unsafe { bytes(p, 16) }.fill(0x44);
    // SAFETY: `p` came from `k16` and is not used after this free.
    unsafe { k16.free(p) };
    kassert_eq!(reports_since(n).len(), 0, "{:?}", reports_since(n));
    Ok(())
}

fn a_full_cache_registry_is_registry_full_not_no_memory() -> TestResult {
    let mut made = Vec::new();
    made.try_reserve(1024)
        .map_err(|_| fail(String::from("reserve")))?;
    let err = loop {
        if made.len() == made.capacity() {
            return Err(fail(String::from(
                "1024 caches and the registry still takes more",
            )));
        }
        match kmem_cache_create("t-fill", 32, 0, SlabFlags::empty(), None) {
            Ok(c) => made.push(c),
            Err(e) => break e,
        }
    };
    let n = made.len();
    kassert!(n > 0, "the registry was already full: {err}");
    kassert!(
        matches!(err, CreateError::RegistryFull { max, .. } if max >= n),
        "a full registry is not a lack of memory: {err:?}"
    );
    kassert!(*err.name() == "t-fill", "{err:?}");
    let text = alloc::format!("{err}");
    kassert!(
        text.contains("t-fill") && text.contains("registry full"),
        "{text}"
    );
    // A long name is cut in the error, never allocated.
    let long = "t-fill-with-a-name-much-longer-than-forty-bytes-of-inline-room";
    let before = active_objs();
    let e = kmem_cache_create(long, 32, 0, SlabFlags::empty(), None).err();
    kassert_eq!(
        active_objs(),
        before,
        "a refused cache leaked its name or descriptor"
    );
    kassert!(
        matches!(&e, Some(CreateError::RegistryFull { name, .. }) if name.is_truncated()
            && long.starts_with(name.as_str())),
        "{e:?}"
    );
    // One slot freed is one cache more.
    drop(made.pop());
    let again = kmem_cache_create("t-fill", 32, 0, SlabFlags::empty(), None);
    kassert!(again.is_ok(), "{:?}", again.err());
    drop(again);
    drop(made);
    kassert!(
        !slab::slabinfo().iter().any(|i| i.name == "t-fill"),
        "every t-fill cache was destroyed"
    );
    Ok(())
}

/// Slab objects in use over every cache (the slabinfo vector's own are
/// counted both times), leaving out `slab_sheaf`: a CPU's sheaves are
/// installed lazily by its first use of a cache (here possibly by the
/// formatting or the slabinfo vector itself, when this runs alone), which
/// is per-CPU state, not a leak.
fn active_objs() -> usize {
    slab::slabinfo()
        .iter()
        .filter(|i| i.name != "slab_sheaf")
        .map(|i| i.active_objs)
        .sum()
}

fn create_under_failslab_is_no_memory_and_leaks_nothing() -> TestResult {
    // Creation allocates the name, then the descriptor: fail each in turn.
    for nth in 1..=2 {
        let before = active_objs();
        let injected = FAILSLAB.injected();
        FAILSLAB.configure(100, nth, 1);
        let r = kmem_cache_create("t-failslab-create", 48, 0, SlabFlags::empty(), None);
        FAILSLAB.disable();
        kassert_eq!(FAILSLAB.injected(), injected + 1, "allocation {nth} failed");
        let err = r.err();
        kassert!(
            matches!(&err, Some(CreateError::NoMemory { name }) if *name == "t-failslab-create"),
            "allocation {nth}: {err:?}"
        );
        let text = alloc::format!("{}", err.unwrap());
        kassert!(text.contains("t-failslab-create") && text.contains("out of memory"));
        drop(text);
        kassert!(
            !slab::slabinfo()
                .iter()
                .any(|i| i.name == "t-failslab-create"),
            "a failed cache is not registered"
        );
        kassert_eq!(active_objs(), before, "allocation {nth}: leaked an object");
    }
    let c = kmem_cache_create("t-failslab-create", 48, 0, SlabFlags::empty(), None);
    kassert!(c.is_ok(), "{:?}", c.err());
    Ok(())
}

/// kmalloc_init used to `expect` its caches (a panic when the early heap was
/// too small); creating them is now all or none with an error that names
/// the failing cache. Fail each allocation in turn: every class fails once
/// (its first allocation), every failure leaves no cache and no object.
fn kmalloc_cache_creation_failure_is_an_error_naming_the_cache() -> TestResult {
    use kreclaim::mm::slab::kmalloc::{KMALLOC_SIZES, KmallocInitError, create_kmalloc_caches};
    let rows = || {
        slab::slabinfo()
            .iter()
            .filter(|i| i.name.starts_with("kmalloc-"))
            .count()
    };
    // Objects freed by a destroyed cache sit in this CPU's sheaves until
    // flushed: count after a flush, on one CPU, and without the sheaves
    // themselves (`slab_sheaf`: a cache used here for the first time gets
    // its sheaves, which flushing empties but keeps).
    let _one = task::BootCpuOnly::new();
    let objs = || {
        slab::flush_all_sheaves();
        slab::slabinfo()
            .iter()
            .filter(|i| i.name != "slab_sheaf")
            .map(|i| i.active_objs)
            .sum::<usize>()
    };
    let (rows0, objs0) = (rows(), objs());
    let mut failed = [false; 13];
    let mut succeeded = false;
    for nth in 1..=200 {
        let injected = FAILSLAB.injected();
        FAILSLAB.configure(100, nth, 1);
        let r = create_kmalloc_caches();
        FAILSLAB.disable();
        // Another task took the injected failure: try this one again.
        let stolen = r.is_ok() && FAILSLAB.injected() != injected;
        match r {
            Err(KmallocInitError(e)) => {
                // Counted before this arm allocates its own strings.
                let (rows_now, objs_now) = (rows(), objs());
                kassert_eq!(
                    rows_now,
                    rows0,
                    "allocation {nth}: a cache was left registered"
                );
                kassert_eq!(objs_now, objs0, "allocation {nth}: leaked an object");
                kassert!(matches!(e, CreateError::NoMemory { .. }), "{e}");
                let name = alloc::format!("{}", e.name());
                let class = KMALLOC_SIZES
                    .iter()
                    .position(|&sz| kmalloc_slab(sz, 8).is_some_and(|c| c.name() == name));
                kassert!(
                    class.is_some(),
                    "allocation {nth}: {e} names no kmalloc class"
                );
                failed[class.unwrap_or(0)] = true;
                let text = alloc::format!("{}", KmallocInitError(e.clone()));
                kassert!(
                    text.starts_with("kmalloc_init: ")
                        && text.contains(name.as_str())
                        && text.contains("out of memory"),
                    "{text}"
                );
            }
            Ok(caches) => {
                kassert_eq!(rows(), rows0 + KMALLOC_SIZES.len());
                drop(caches);
                kassert_eq!(rows(), rows0);
                if !stolen {
                    succeeded = true;
                    break;
                }
            }
        }
    }
    kassert!(succeeded, "creation never succeeded");
    kassert!(
        failed.iter().all(|&f| f),
        "classes that never failed: {failed:?}"
    );
    Ok(())
}

/// (objects cached in sheaves, full sheaves in the barn, empty ones,
/// objects handed out), sheaves not flushed.
fn sheaves(c: &KmemCache) -> (usize, usize, usize, usize) {
    let i = c.info_unflushed();
    (i.sheaf_objs, i.barn_full, i.barn_empty, i.active_objs)
}

/// Runs `f` with lockdep off, as `bench=mm lockdep=off` does: the
/// allocation fast path proper (with lockdep on, every allocation takes the
/// slow path for the fs_reclaim annotation).
fn lockdep_off<R>(f: impl FnOnce() -> R) -> R {
    let saved = lockdep::mode();
    lockdep::set_mode(lockdep::LockdepMode::Off);
    let r = f();
    lockdep::set_mode(saved);
    r
}

fn sheaf_fast_path_returns_objects_lifo_per_cpu() -> TestResult {
    let c = cache("t-sheaf-lifo", 64, SlabFlags::empty())?;
    kassert_eq!(c.info().sheaf_capacity, 30);
    let mut objs = Objs::new(&c, 8);
    for _ in 0..4 {
        objs.alloc()?;
    }
    c.flush_sheaves();
    let (a, b) = (objs.v[1], objs.v[2]);
    const MARK: u64 = 0x5eaf_5eaf_5eaf_5eaf;
    // SAFETY: live objects of ours.
    unsafe {
        a.cast::<u64>().write(MARK);
        b.cast::<u64>().write(MARK);
    }
    objs.v.retain(|p| *p != a && *p != b);
    let (x, y, cached, words) = lockdep_off(|| {
        // SAFETY: `a` and `b` came from this cache and left `objs`.
        unsafe {
            c.free(a);
            c.free(b);
        }
        let cached = sheaves(&c);
        // A sheaf is an array: nothing is written into a freed object (a
        // slab's free list would put its free pointer in the first word).
        // SAFETY: freed objects of a live slab, only read.
        let words = unsafe { (a.cast::<u64>().read(), b.cast::<u64>().read()) };
        let x = c.alloc(GFP_KERNEL);
        let y = c.alloc(GFP_KERNEL);
        (x, y, cached, words)
    });
    let (x, y) = (
        x.map_err(|e| fail(alloc::format!("{e}")))?,
        y.map_err(|e| fail(alloc::format!("{e}")))?,
    );
    objs.v.push(x);
    objs.v.push(y);
    kassert_eq!(cached, (2, 0, 0, 2), "both freed objects wait in the sheaf");
    kassert_eq!(words, (MARK, MARK), "freed objects were written to");
    kassert_eq!((x, y), (b, a), "last freed, first allocated");
    kassert_eq!(sheaves(&c), (0, 0, 0, 4));
    Ok(())
}

fn frees_refill_sheaves_then_swap_then_the_barn_with_exact_counts() -> TestResult {
    use kreclaim::mm::slab::MAX_FULL_SHEAVES;
    let c = cache("t-sheaf-barn", 64, SlabFlags::empty())?;
    let cap = c.info().sheaf_capacity;
    kassert_eq!(cap, 30);
    let held = 2 * cap + MAX_FULL_SHEAVES * cap + 1 + 60;
    let mut objs = Objs::new(&c, held);
    for _ in 0..held {
        objs.alloc()?;
    }
    c.flush_sheaves();
    kassert_eq!(sheaves(&c), (0, 0, 0, held));
    let v = objs.v.clone();
    let freed = core::cell::Cell::new(0);
    let free_n = |n: usize| {
        for p in &v[freed.get()..freed.get() + n] {
            // SAFETY: each object came from this cache; it leaves `objs`
            // below (retain) before the test ends, so it is freed once.
            unsafe { c.free(*p) };
        }
        freed.set(freed.get() + n);
    };
    free_n(cap);
    kassert_eq!(sheaves(&c), (cap, 0, 0, held - cap), "main sheaf full");
    free_n(1);
    kassert_eq!(sheaves(&c).0, cap + 1, "main full: swapped with the spare");
    free_n(cap - 1);
    kassert_eq!(sheaves(&c).0, 2 * cap, "main and spare full");
    for k in 1..=MAX_FULL_SHEAVES {
        free_n(1);
        kassert_eq!(
            sheaves(&c),
            (2 * cap + (k - 1) * cap + 1, k, 0, held - freed.get()),
            "a full main went to the barn for an empty sheaf ({k})"
        );
        free_n(cap - 1);
    }
    let full = 2 * cap + MAX_FULL_SHEAVES * cap;
    kassert_eq!(sheaves(&c), (full, MAX_FULL_SHEAVES, 0, held - freed.get()));
    // The barn is full: the next full main goes back to the slabs.
    free_n(1);
    kassert_eq!(
        sheaves(&c),
        (full - cap + 1, MAX_FULL_SHEAVES, 0, held - freed.get()),
        "a full main flushed to the slabs"
    );
    let freed_objs: Vec<NonNull<u8>> = v[..freed.get()].to_vec();
    objs.v.retain(|p| !freed_objs.contains(p));
    // Allocation undoes it: main (one object), the spare (the first sheaf
    // filled, newest first), then a full sheaf from the barn (the last one
    // put there) for the empty main, which goes to the barn's empties.
    let f = |k: usize| freed_objs[k - 1];
    let first = objs.alloc()?;
    let freed = freed.get();
    kassert_eq!(first, f(freed));
    let second = objs.alloc()?;
    kassert_eq!(second, f(cap), "the spare, newest first");
    for _ in 0..cap - 1 {
        objs.alloc()?;
    }
    kassert_eq!(
        sheaves(&c).0,
        MAX_FULL_SHEAVES * cap,
        "main and spare empty"
    );
    let from_barn = objs.alloc()?;
    kassert_eq!(
        from_barn,
        f(2 * cap + MAX_FULL_SHEAVES * cap - cap),
        "the newest object of the last sheaf put in the barn"
    );
    kassert_eq!(
        sheaves(&c),
        (
            MAX_FULL_SHEAVES * cap - 1,
            MAX_FULL_SHEAVES - 1,
            1,
            held - freed + cap + 2
        ),
        "a full sheaf from the barn for the empty main"
    );
    c.validate().map_err(|e| fail(alloc::format!("{e}")))?;
    Ok(())
}

fn bulk_alloc_and_free_take_and_return_every_object() -> TestResult {
    let c = cache("t-bulk", 64, SlabFlags::empty())?;
    let mut v = [core::ptr::null_mut::<u8>(); 100];
    c.alloc_bulk(GFP_KERNEL | Gfp::__GFP_ZERO, &mut v)
        .map_err(|e| fail(alloc::format!("{e}")))?;
    let mut sorted = v.to_vec();
    sorted.sort();
    sorted.dedup();
    kassert_eq!(sorted.len(), 100, "an object handed out twice");
    kassert!(!v.contains(&core::ptr::null_mut()));
    let zero = v.iter().all(|p| {
        // SAFETY: each pointer is a live 64-byte object of this cache that
        // the test owns until the bulk free below (none is null).
        unsafe { bytes(NonNull::new(*p).unwrap_or(NonNull::dangling()), 64) }
            .iter()
            .all(|b| *b == 0)
    });
    kassert!(zero, "__GFP_ZERO");
    kassert_eq!(c.info().active_objs, 100);
    // SAFETY: the objects came from this cache and are not used again.
    unsafe { slab::kmem_cache_free_bulk(&c, &v) };
    kassert_eq!(c.info().active_objs, 0);
    // All or none: with failslab armed, the call fails and takes nothing.
    let injected = FAILSLAB.injected();
    FAILSLAB.configure(100, 1, 1);
    let r = slab::kmem_cache_alloc_bulk(&c, GFP_KERNEL | NOWARN, &mut v);
    FAILSLAB.disable();
    kassert!(r.is_err());
    kassert_eq!(FAILSLAB.injected(), injected + 1);
    kassert_eq!(c.info().active_objs, 0);
    c.validate().map_err(|e| fail(alloc::format!("{e}")))?;
    Ok(())
}

fn shrink_and_destroy_drain_the_sheaves() -> TestResult {
    let c = cache("t-sheaf-shrink", 64, SlabFlags::empty())?;
    let per = c.info().objperslab;
    let nr_free_pages = || nr_free_pages() + slab::sheaf_pages() as u64;
    let before = nr_free_pages();
    let mut objs = Objs::new(&c, 3 * per);
    for _ in 0..3 * per {
        objs.alloc()?;
    }
    objs.free_all();
    let (cached, _, _, active) = sheaves(&c);
    kassert!(
        cached > 0 && active == 0,
        "{cached} cached, {active} active"
    );
    kassert!(c.info_unflushed().num_slabs > 0);
    let pages = c.shrink();
    kassert_eq!(sheaves(&c).0, 0, "shrink flushed the sheaves");
    kassert_eq!(c.info_unflushed().num_slabs, 0, "and released every slab");
    kassert_eq!(pages, 3);
    kassert_eq!(nr_free_pages(), before);
    // Destroy with objects only in sheaves: not live objects.
    let d = cache("t-sheaf-destroy", 64, SlabFlags::empty())?;
    let mut v = [core::ptr::null_mut::<u8>(); 10];
    d.alloc_bulk(GFP_KERNEL, &mut v)
        .map_err(|e| fail(alloc::format!("{e}")))?;
    d.flush_sheaves(); // the refill's leftovers
    // SAFETY: the objects came from `d` and are not used again.
    unsafe { d.free_bulk(&v) };
    kassert_eq!(d.info_unflushed().sheaf_objs, 10);
    let n = slab::reports().len();
    kassert_eq!(d.destroy(), Ok(()));
    kassert!(reports_since(n).is_empty(), "{:?}", reports_since(n));
    kassert!(slab::slabinfo().iter().all(|r| r.name != "t-sheaf-destroy"));
    // Truly live objects are still reported, by name and count, whatever
    // the sheaves hold.
    let e = cache("t-sheaf-live", 64, SlabFlags::empty())?;
    let mut w = [core::ptr::null_mut::<u8>(); 3];
    e.alloc_bulk(GFP_KERNEL, &mut w)
        .map_err(|e| fail(alloc::format!("{e}")))?;
    // SAFETY: `w[0]` came from `e` and is not used again.
    unsafe { e.free_bulk(&w[..1]) };
    let n = slab::reports().len();
    let r = e.destroy();
    kassert_eq!(
        r,
        Err(DestroyError::LiveObjects {
            cache: String::from("t-sheaf-live"),
            count: 2
        })
    );
    one_report(n, SlabBug::LiveObjectsAtDestroy, "t-sheaf-live")?;
    Ok(())
}

fn debug_caches_bypass_sheaves_and_catch_every_double_free() -> TestResult {
    // With `F`, a free is checked at once: a double free of an object that
    // is not the last one freed is caught on the spot.
    let c = cache("t-sheaf-debug", 64, SlabFlags::CONSISTENCY_CHECKS)?;
    kassert_eq!(c.info().sheaf_capacity, 0, "a debug cache has no sheaves");
    let mut objs = Objs::new(&c, 4);
    let (a, b) = (objs.alloc()?, objs.alloc()?);
    objs.alloc()?;
    objs.v.retain(|p| *p != a && *p != b);
    // SAFETY: `a` and `b` came from this cache; the second free of `a` is
    // refused and only reported.
    unsafe {
        c.free(a);
        c.free(b);
    }
    let n = slab::reports().len();
    // SAFETY: `a` is already free: refused and reported.
    unsafe { c.free(a) };
    let r = one_report(n, SlabBug::DoubleFree, "t-sheaf-debug")?;
    kassert_eq!(r.addr, a.as_ptr() as usize);
    kassert_eq!(c.info_unflushed().sheaf_objs, 0);
    kassert_eq!(c.info().active_objs, 1);
    // Without debug flags the same double free waits in the sheaf (as in
    // Linux) and is reported, by name, when the sheaf is flushed; the
    // object is linked onto its slab once.
    let d = cache("t-sheaf-nodebug", 64, SlabFlags::empty())?;
    let mut objs = Objs::new(&d, 4);
    let (a, b) = (objs.alloc()?, objs.alloc()?);
    objs.alloc()?;
    d.flush_sheaves(); // the refill's leftovers
    objs.v.retain(|p| *p != a && *p != b);
    // SAFETY: as above.
    unsafe {
        d.free(a);
        d.free(b);
        d.free(a);
    }
    let n = slab::reports().len();
    kassert_eq!(d.flush_sheaves(), 3);
    let r = one_report(n, SlabBug::DoubleFree, "t-sheaf-nodebug")?;
    kassert_eq!(r.addr, a.as_ptr() as usize);
    kassert_eq!(d.info().active_objs, 1);
    d.validate().map_err(|e| fail(alloc::format!("{e}")))?;
    // The naive check (SLUB's): freeing the object freed last is caught at once.
    let x = objs.alloc()?;
    objs.v.retain(|p| *p != x);
    // SAFETY: `x` came from `d`; the second free is refused and reported.
    unsafe { d.free(x) };
    let n = slab::reports().len();
    // SAFETY: `x` is already free (the last object freed): refused.
    unsafe { d.free(x) };
    one_report(n, SlabBug::DoubleFree, "t-sheaf-nodebug")?;
    Ok(())
}

fn a_double_free_of_an_object_back_on_its_slab_is_reported_when_its_sheaf_is_flushed() -> TestResult
{
    // The free fast path reads only the page's private word, not the
    // slab's allocation bitmap (as SLUB): an object freed twice after its
    // first free reached the slab goes into the sheaf, and the flush finds
    // it already free, reports it by name and does not link it again.
    let c = cache("t-dfree-flush", 64, SlabFlags::empty())?;
    let mut objs = Objs::new(&c, 4);
    let a = objs.alloc()?;
    objs.alloc()?;
    objs.v.retain(|p| *p != a);
    // SAFETY: `a` came from this cache and is not used again.
    unsafe { c.free(a) };
    c.flush_sheaves(); // `a` is back on its slab's free list
    let before = lists(&c);
    let n = slab::reports().len();
    // SAFETY: `a` is already free: taken into the sheaf, refused at the
    // flush below, only reported; nothing is written to it.
    unsafe { c.free(a) };
    c.flush_sheaves();
    let r = one_report(n, SlabBug::DoubleFree, "t-dfree-flush")?;
    kassert_eq!(r.addr, a.as_ptr() as usize);
    kassert_eq!(lists(&c), before, "counts unchanged");
    c.validate().map_err(|e| fail(alloc::format!("{e}")))?;
    // Linked once: the next allocations hand it out once.
    let x = objs.alloc()?;
    let y = objs.alloc()?;
    kassert!(x != y, "the same object allocated twice");
    kassert_eq!(c.info().active_objs, 3);
    Ok(())
}

fn failslab_fails_an_allocation_the_sheaf_could_serve() -> TestResult {
    let c = cache("t-sheaf-failslab", 64, SlabFlags::empty())?;
    let mut objs = Objs::new(&c, 2);
    objs.alloc()?;
    let (cached, ..) = sheaves(&c);
    kassert!(cached > 0, "the sheaf holds objects");
    let injected = FAILSLAB.injected();
    let (first, second) = lockdep_off(|| {
        // An allocation first, so that the fast path is on (the slow path
        // turns it on once lockdep is off): arming failslab must turn it off.
        if let Ok(p) = c.alloc(GFP_KERNEL | NOWARN) {
            // SAFETY: from `c`, not used again.
            unsafe { c.free(p) };
        }
        FAILSLAB.configure(100, 1, 1);
        let first = c.alloc(GFP_KERNEL | NOWARN);
        let second = c.alloc(GFP_KERNEL | NOWARN);
        FAILSLAB.disable();
        (first, second)
    });
    if let Ok(p) = second {
        objs.v.push(p);
    }
    kassert!(first.is_err(), "failslab must fail the fast path too");
    kassert!(second.is_ok());
    kassert_eq!(FAILSLAB.injected(), injected + 1);
    kassert_eq!(
        sheaves(&c).0,
        cached - 1,
        "only the second came from the sheaf"
    );
    Ok(())
}

fn slabinfo_counts_sheaf_objects_apart_and_is_exact_after_a_flush() -> TestResult {
    let c = cache("t-sheaf-info", 64, SlabFlags::empty())?;
    let mut objs = Objs::new(&c, 80);
    for _ in 0..80 {
        objs.alloc()?;
    }
    c.flush_sheaves();
    for _ in 0..20 {
        objs.free_last();
    }
    let row = |name: &str| {
        slab::slabinfo()
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| fail(alloc::format!("no row {name}")))
    };
    let r = row("t-sheaf-info")?;
    kassert_eq!((r.active_objs, r.sheaf_objs), (60, 20), "{r:?}");
    kassert_eq!(r.num_slabs, 2, "the sheaf's objects keep their slabs");
    c.flush_sheaves();
    let r = row("t-sheaf-info")?;
    kassert_eq!((r.active_objs, r.sheaf_objs), (60, 0), "{r:?}");
    kassert_eq!(r.num_slabs, 2);
    kassert_eq!(r.active_slabs, r.partial_slabs + r.full_slabs);
    kassert_eq!(r.num_slabs, r.active_slabs + r.empty_slabs);
    c.validate().map_err(|e| fail(alloc::format!("{e}")))?;
    Ok(())
}

fn reclaim_flushes_every_cache_sheaves_before_it_gives_up() -> TestResult {
    let c = cache("t-sheaf-reclaim", 64, SlabFlags::empty())?;
    let mut objs = Objs::new(&c, 200);
    for _ in 0..200 {
        objs.alloc()?;
    }
    objs.free_all();
    kassert!(sheaves(&c).0 > 0);
    // Nothing else to reclaim here: every priority runs, then the sheaves
    // are flushed.
    kreclaim::mm::vmscan::try_to_free_pages(GFP_KERNEL, 0);
    let i = c.info_unflushed();
    kassert_eq!((i.sheaf_objs, i.barn_full), (0, 0), "{i:?}");
    kassert!(i.num_slabs <= MIN_PARTIAL, "{i:?}");
    Ok(())
}

fn kmalloc_and_kfree_go_through_the_sheaves_too() -> TestResult {
    let c = kmalloc_slab(64, 1).ok_or_else(|| fail(String::from("no kmalloc-64")))?;
    kassert_eq!(c.info().sheaf_capacity, 30);
    let (p, before, after, q) = lockdep_off(|| {
        let p = kmalloc(64, GFP_KERNEL);
        let before = c.info_unflushed().sheaf_objs;
        if let Ok(p) = p {
            kfree(p.as_ptr());
        }
        let after = c.info_unflushed().sheaf_objs;
        let q = kmalloc(64, GFP_KERNEL);
        (p, before, after, q)
    });
    let (p, q) = (
        p.map_err(|e| fail(alloc::format!("{e}")))?,
        q.map_err(|e| fail(alloc::format!("{e}")))?,
    );
    kfree(q.as_ptr());
    kassert_eq!(after, before + 1, "kfree pushed onto this CPU's sheaf");
    kassert_eq!(q, p, "kmalloc popped it back");
    Ok(())
}

fn a_held_sheaf_lock_sends_allocations_and_frees_to_the_slabs() -> TestResult {
    // An interrupt handler (or a task that preempted the holder) that
    // allocates while this CPU's sheaf lock is held must leave the sheaves
    // alone: it finds the lock held and goes to the slabs under the list
    // lock. Simulated by holding the lock around the calls.
    let c = cache("t-sheaf-held", 64, SlabFlags::empty())?;
    let mut objs = Objs::new(&c, 16);
    lockdep_off(|| -> TestResult {
        for _ in 0..4 {
            objs.alloc()?;
        }
        // Free two into the sheaf, so that it holds objects the held path
        // must not take.
        let (a, b) = (objs.v.pop().unwrap(), objs.v.pop().unwrap());
        // SAFETY: both came from `c` and are not used again.
        unsafe {
            c.free(a);
            c.free(b);
        }
        let cpu = kreclaim::platform::cpu_id();
        let before = sheaves(&c);
        kassert!(before.0 > 0, "the sheaf holds objects: {before:?}");
        let inside = slab::with_sheaves_held(&c, cpu, || {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(c.alloc(GFP_ATOMIC));
            }
            let during = sheaves(&c);
            let freed = got.first().and_then(|r| r.as_ref().ok()).copied();
            if let Some(p) = freed {
                // SAFETY: just allocated from `c`, not used again.
                unsafe { c.free(p) };
            }
            (got, during, sheaves(&c))
        });
        let Some((got, during, after_free)) = inside else {
            return Err(fail(String::from("the sheaf lock was not free")));
        };
        let mut live: Vec<NonNull<u8>> = Vec::new();
        for r in &got {
            live.push(*r.as_ref().map_err(|e| fail(alloc::format!("{e}")))?);
        }
        // Served by the slabs: the sheaf is untouched, and each served
        // object is one no sheaf holds (not `a` or `b`).
        kassert_eq!(during.0, before.0, "an allocation took from a held sheaf");
        kassert_eq!(during.3, before.3 + 3, "three objects handed out");
        kassert_eq!(after_free.0, before.0, "a free pushed onto a held sheaf");
        kassert_eq!(after_free.3, before.3 + 2);
        kassert!(live.iter().all(|p| *p != a && *p != b), "{live:?}");
        kassert!(live[1] != live[2]);
        // Released: the fast path uses the sheaf again.
        // SAFETY: live[0] was freed inside; the others came from `c`.
        unsafe {
            c.free(live[1]);
            c.free(live[2]);
        }
        kassert_eq!(sheaves(&c).0, before.0 + 2);
        let x = objs.alloc()?;
        kassert!(x == live[2], "the sheaf's newest object after release");
        kassert_eq!(sheaves(&c).0, before.0 + 1);
        Ok(())
    })?;
    c.validate().map_err(|e| fail(alloc::format!("{e}")))?;
    kassert_eq!(c.info().active_objs, objs.v.len());
    Ok(())
}

fn a_sleeping_allocation_with_interrupts_masked_is_reported_even_from_a_full_sheaf() -> TestResult {
    // With lockdep on (the default: kreclaim's debug mode, as a Linux
    // kernel with CONFIG_DEBUG_ATOMIC_SLEEP) every allocation takes the
    // slow path, whose might_alloc reports a GFP_KERNEL allocation with
    // interrupts masked, though the sheaf could serve it. With lockdep off
    // the fast path does not look (as Linux without the option): the sheaf
    // serves it quietly, and the slow path (an empty sheaf) still reports.
    let c = cache("t-sheaf-atomic", 64, SlabFlags::empty())?;
    let mut objs = Objs::new(&c, 4);
    let masked_alloc = |c: &KmemCache| -> TestResult {
        let r = {
            let _irq = kreclaim::platform::IrqGuard::new();
            c.alloc(GFP_KERNEL)
        };
        let p = r.map_err(|e| fail(alloc::format!("{e}")))?;
        // SAFETY: from `c`, not used again.
        unsafe { c.free(p) };
        Ok(())
    };
    let warm = objs.alloc()?;
    objs.v.retain(|p| *p != warm);
    // SAFETY: from `c`, not used again.
    unsafe { c.free(warm) };
    kassert!(sheaves(&c).0 > 0, "the sheaf holds objects");
    let saved = lockdep::mode();
    lockdep::set_mode(lockdep::LockdepMode::On);
    let n = task::invalid_context_sleeps();
    let r = masked_alloc(&c);
    lockdep::set_mode(saved);
    r?;
    kassert_eq!(
        task::invalid_context_sleeps(),
        n + 1,
        "not reported with lockdep on"
    );
    lockdep_off(|| -> TestResult {
        // A full sheaf: the fast path serves it without looking.
        kassert!(sheaves(&c).0 > 0, "the sheaf holds objects");
        masked_alloc(&c)?;
        kassert_eq!(task::invalid_context_sleeps(), n + 1);
        // An empty sheaf: the slow path looks and reports.
        c.flush_sheaves();
        kassert_eq!(sheaves(&c).0, 0);
        masked_alloc(&c)?;
        kassert_eq!(
            task::invalid_context_sleeps(),
            n + 2,
            "the slow path did not report"
        );
        // Interrupts enabled: served quietly.
        let q = c
            .alloc(GFP_KERNEL)
            .map_err(|e| fail(alloc::format!("{e}")))?;
        // SAFETY: from `c`, not used again.
        unsafe { c.free(q) };
        kassert_eq!(task::invalid_context_sleeps(), n + 2);
        Ok(())
    })
}

fn turning_lockdep_back_on_takes_allocations_off_the_fast_path() -> TestResult {
    // One flag stands for "lockdep off, failslab disarmed" on the fast
    // path; turning lockdep on must clear it at once. Observed through the
    // preempt count, which only the slow path reads: a sleeping allocation
    // with preemption disabled is served quietly from the sheaf while
    // lockdep is off, and reported once lockdep is on again.
    let c = cache("t-sheaf-lockdep-on", 64, SlabFlags::empty())?;
    let mut objs = Objs::new(&c, 4);
    let sleeping_alloc = |c: &KmemCache| -> TestResult {
        let r = {
            let _p = PreemptGuard::new();
            c.alloc(GFP_KERNEL)
        };
        let p = r.map_err(|e| fail(alloc::format!("{e}")))?;
        // SAFETY: from `c`, not used again.
        unsafe { c.free(p) };
        Ok(())
    };
    let n = task::invalid_context_sleeps();
    lockdep_off(|| -> TestResult {
        let warm = objs.alloc()?; // the slow path turns the fast path on
        objs.v.retain(|p| *p != warm);
        // SAFETY: from `c`, not used again.
        unsafe { c.free(warm) };
        kassert!(sheaves(&c).0 > 0, "the sheaf holds objects");
        sleeping_alloc(&c)?;
        kassert_eq!(
            task::invalid_context_sleeps(),
            n,
            "lockdep off: the fast path"
        );
        Ok(())
    })?;
    kassert!(lockdep::mode() != lockdep::LockdepMode::Off);
    sleeping_alloc(&c)?;
    kassert_eq!(
        task::invalid_context_sleeps(),
        n + 1,
        "lockdep on: a sheaf-served allocation skipped might_alloc"
    );
    Ok(())
}

/// Objects of the `slab_sheaf` cache in use: the sheaves that exist.
fn sheaves_in_use() -> usize {
    kreclaim::mm::slab::slabinfo()
        .iter()
        .find(|i| i.name == "slab_sheaf")
        .map_or(0, |i| i.active_objs)
}

/// Linux's `barn_shrink` on `kmem_cache_shrink`: the sheaves the barn keeps
/// (full ones flushed onto its empty list) are freed back to the
/// `slab_sheaf` cache, not kept for a cache that was just shrunk. Before,
/// shrink left them in the barn and only reclaim's shrinker of
/// `slab_sheaf` could see them, as objects in use.
fn shrink_frees_the_barns_empty_sheaves() -> TestResult {
    let c = cache("t-barn-shrink", 64, SlabFlags::empty())?;
    let cap = c.info().sheaf_capacity;
    kassert!(cap > 0);
    let mut objs = Objs::new(&c, 5 * cap);
    // Frees of five sheaves' worth on this CPU fill its main and spare
    // sheaves and send full ones to the barn.
    lockdep_off(|| -> TestResult {
        for _ in 0..5 * cap {
            objs.alloc()?;
        }
        objs.free_all();
        Ok(())
    })?;
    let filled = c.info_unflushed();
    kassert!(
        filled.barn_full > 0,
        "no full sheaf reached the barn: {filled:?}"
    );
    // A flush empties them onto the barn's empty list, where they stay.
    c.flush_sheaves();
    let flushed = c.info_unflushed();
    kassert!(flushed.barn_empty > 0, "{flushed:?}");
    kassert_eq!(flushed.barn_full, 0, "{flushed:?}");
    let sheaves = sheaves_in_use();
    c.shrink();
    let sheaves_after = sheaves_in_use();
    let shrunk = c.info_unflushed();
    drop(objs);
    c.destroy()
        .map_err(|e| fail(alloc::format!("destroy: {e:?}")))?;
    kassert_eq!(
        shrunk.barn_empty,
        0,
        "the barn kept its sheaves: {shrunk:?}"
    );
    kassert_eq!(shrunk.barn_full, 0, "{shrunk:?}");
    kassert_eq!(shrunk.num_slabs, 0, "{shrunk:?}");
    kassert_eq!(
        sheaves_after + flushed.barn_empty,
        sheaves,
        "the barn's sheaves went back to slab_sheaf"
    );
    Ok(())
}

fn a_cpu_without_sheaves_never_keeps_objects_in_the_shared_empty_sheaf() -> TestResult {
    // A CPU that has no main sheaf of a cache points at one static empty
    // sheaf shared by every cache, whose size fails both fast paths' test.
    // Were it taken for a real sheaf, a free on such a CPU would leave the
    // object there and another cache's first allocation would hand it out.
    let n = cache("t-nosheaf-n", 64, SlabFlags::empty())?;
    let m = cache("t-nosheaf-m", 64, SlabFlags::empty())?;
    lockdep_off(|| -> TestResult {
        let cpu = kreclaim::platform::cpu_id();
        // Allocated with the CPU's sheaf lock held: straight from the
        // slabs, and the CPU gets no sheaves of `n`.
        let x = slab::with_sheaves_held(&n, cpu, || n.alloc(GFP_ATOMIC))
            .ok_or_else(|| fail(String::from("the sheaf lock was not free")))?
            .map_err(|e| fail(alloc::format!("{e}")))?;
        kassert_eq!(n.info_unflushed().sheaf_objs, 0);
        // Freed where the CPU has no main sheaf of `n`: to its slab or to a
        // sheaf of `n` installed for it, never into the shared one.
        // SAFETY: `x` came from `n` and is not used again.
        unsafe { n.free(x) };
        kassert_eq!(n.info_unflushed().active_objs, 0, "x is free in n");
        // `m` has no sheaves on this CPU either: its first objects are its
        // own.
        let y = m
            .alloc(GFP_KERNEL)
            .map_err(|e| fail(alloc::format!("{e}")))?;
        let z = m
            .alloc(GFP_KERNEL)
            .map_err(|e| fail(alloc::format!("{e}")))?;
        kassert!(y != x && z != x, "m handed out n's object {x:p}");
        kassert_eq!(m.info_unflushed().active_objs, 2, "y and z are m's");
        // SAFETY: both came from `m` and are not used again.
        unsafe {
            m.free(y);
            m.free(z);
        }
        // And `n`'s next objects are its own, `x` among them again.
        let a = n
            .alloc(GFP_KERNEL)
            .map_err(|e| fail(alloc::format!("{e}")))?;
        kassert!(a == x, "n's sheaf gives x back: {a:p} {x:p}");
        // SAFETY: from `n`, not used again.
        unsafe { n.free(a) };
        n.validate().map_err(|e| fail(alloc::format!("{e}")))?;
        m.validate().map_err(|e| fail(alloc::format!("{e}")))?;
        Ok(())
    })
}

fn kfree_of_a_slab_page_reused_by_the_page_allocator_or_another_cache_finds_its_owner() -> TestResult
{
    // kfree reads the object's cache from its page's `slab_cache` word. It
    // must not outlive the slab: a page that went back to the page
    // allocator and out again as a plain page is no slab object's, and one
    // that became another cache's slab is that cache's.
    let a = cache("t-reuse-a", 64, SlabFlags::empty())?;
    kassert_eq!(a.info().pagesperslab, 1);
    let p = a
        .alloc(GFP_KERNEL)
        .map_err(|e| fail(alloc::format!("{e}")))?;
    let page =
        page_alloc::PhysAddr::new(virt_to_phys(p.as_ptr()).as_u64() & !(PAGE_SIZE as u64 - 1));
    // SAFETY: from `a`, not used again.
    unsafe { a.free(p) };
    a.destroy()
        .map_err(|e| fail(alloc::format!("destroy: {e:?}")))?;
    // Take pages until the slab's page comes back (the per-CPU list hands
    // out the page freed last first).
    let mut taken = Vec::with_capacity(256);
    let mut found = false;
    for _ in 0..256 {
        let pa = alloc_pages(GFP_KERNEL, 0).map_err(|e| fail(alloc::format!("{e}")))?;
        taken.push(pa);
        if pa == page {
            found = true;
            break;
        }
    }
    let n = slab::reports().len();
    let before = nr_free_pages();
    if found {
        // A plain page now: kfree of the old object's address is reported
        // and frees nothing.
        kfree(p.as_ptr());
    }
    let after = nr_free_pages();
    let owner = page_alloc::page_owner(page);
    for pa in taken.drain(..) {
        free_pages(pa, 0);
    }
    kassert!(
        found,
        "the slab's page did not come back from the page allocator"
    );
    one_report(n, SlabBug::NotASlabObject, "kmalloc")?;
    kassert_eq!(after, before, "nothing was freed");
    kassert_eq!(owner, Some(PageOwner::Kernel));
    // Freed again, it becomes the next slab of another cache: kfree of an
    // object there frees it to that cache.
    let b = cache("t-reuse-b", 128, SlabFlags::empty())?;
    let mut objs = Objs::new(&b, 512);
    let mut q = None;
    for _ in 0..512 {
        let o = objs.alloc()?;
        if virt_to_phys(o.as_ptr()).as_u64() & !(PAGE_SIZE as u64 - 1) == page.as_u64() {
            q = Some(o);
            break;
        }
    }
    let Some(q) = q else {
        return Err(fail(String::from("no slab of t-reuse-b on the page")));
    };
    let n = slab::reports().len();
    lockdep_off(|| -> TestResult {
        objs.v.retain(|o| *o != q);
        let active = b.info_unflushed().active_objs;
        kfree(q.as_ptr());
        kassert_eq!(
            b.info_unflushed().active_objs,
            active - 1,
            "kfree freed to t-reuse-b"
        );
        // The sheaf's newest object.
        let r = objs.alloc()?;
        kassert!(r == q, "t-reuse-b's next object is q: {r:p} {q:p}");
        Ok(())
    })?;
    kassert_eq!(slab::reports().len(), n, "{:?}", reports_since(n));
    drop(objs);
    b.validate().map_err(|e| fail(alloc::format!("{e}")))?;
    Ok(())
}

/// `bench=mm`'s defence against layout luck under TCG (docs/performance.md,
/// "Layout luck"): the paired rows time each side in every copy of the
/// timing loop (distinct code addresses, none shared between the sides),
/// and the peer's code lies on its own page with its hot entry points in
/// distinct slots of QEMU's jump cache; the churn moves each side's pointer
/// array through places in distinct entries of QEMU's software TLB.
/// Figures are printed, never checked.
fn bench_mm_times_each_side_in_loop_copies_and_keeps_the_peers_code_on_its_page() -> TestResult {
    use kreclaim::bench::{self, LOOP_COPIES, tcg_jump_cache_slot};
    lockdep_off(|| bench::mm(bench::Format::Text))
        .map_err(|e| TestFailure::new(alloc::format!("bench=mm: no block for the peer: {e}")))?;
    let loops = bench::pair_loop_addresses();
    let mut all: Vec<usize> = loops.iter().flatten().copied().collect();
    kassert!(
        all.iter().all(|&a| a != 0),
        "a loop copy never ran: {loops:x?}"
    );
    all.sort_unstable();
    all.dedup();
    kassert_eq!(all.len(), 2 * LOOP_COPIES, "loop copies shared: {loops:x?}");
    let p = bench::peer_text();
    kassert_eq!(p.start % PAGE_SIZE, 0, "peer text not page aligned: {p:x?}");
    kassert!(
        p.start < p.end && p.end <= p.start + PAGE_SIZE,
        "peer text not within one page: {p:x?}"
    );
    for h in p.hot {
        kassert!(
            p.start <= h && h < p.end,
            "peer hot point outside its page: {p:x?}"
        );
    }
    // The churn ran with each side's pointer array in CHURN_PLACEMENTS
    // places that take different entries of QEMU's smallest software TLB
    // (64 entries, by page number).
    for (side, places) in bench::churn_array_addresses().iter().enumerate() {
        kassert!(
            places.iter().all(|&a| a != 0),
            "side {side}: a churn placement never ran: {places:x?}"
        );
        let mut entries: Vec<usize> = places.iter().map(|&a| (a / PAGE_SIZE) % 64).collect();
        entries.sort_unstable();
        entries.dedup();
        kassert_eq!(
            entries.len(),
            bench::CHURN_PLACEMENTS,
            "side {side}: churn placements share TLB entries: {places:x?}"
        );
    }
    let mut slots: Vec<usize> = p.hot.iter().map(|&h| tcg_jump_cache_slot(h)).collect();
    slots.sort_unstable();
    slots.dedup();
    kassert_eq!(
        slots.len(),
        p.hot.len(),
        "peer hot points share a jump-cache slot: {p:x?}"
    );
    Ok(())
}

/// The scheduler's preempt count is the word of the CPU's `gs:` data that
/// the slab's fast paths change inline (`CpuData::preempt_count`, at
/// `platform::KERNEL_PREEMPT_COUNT_GS_OFFSET`, asserted at build time):
/// `preempt_disable` moves that word, read here by its field, and
/// `preempt_count` reads it back.
fn preempt_disable_changes_this_cpus_gs_preempt_word() -> TestResult {
    use kreclaim::arch::x86_64::smp;
    kassert!(
        kreclaim::platform::kernel_gs_layout(),
        "the kernel's own platform did not install its gs layout"
    );
    let irq = kreclaim::platform::IrqGuard::new();
    let before = smp::this_cpu().preempt_count();
    task::preempt_disable();
    let inside = smp::this_cpu().preempt_count();
    let seen = task::preempt_count();
    task::preempt_disable();
    let nested = smp::this_cpu().preempt_count();
    task::preempt_enable();
    task::preempt_enable();
    let after = smp::this_cpu().preempt_count();
    drop(irq);
    kassert_eq!(inside, before + 1, "preempt_disable left the gs word alone");
    kassert_eq!(seen, inside);
    kassert_eq!(nested, before + 2);
    kassert_eq!(after, before);
    Ok(())
}

/// The cache the tick probe watches (its address; 0: none).
static PROBE_CACHE: AtomicUsize = AtomicUsize::new(0);
/// Ticks that came while this CPU's sheaf flag of the watched cache was
/// held by its own context (a fast path in progress).
static PROBE_HITS: AtomicUsize = AtomicUsize::new(0);
/// Ticks that came inside a pinned stretch of the fast path (from reading
/// the CPU to taking its flag: `platform::in_pinned_section`).
static PROBE_PIN_HITS: AtomicUsize = AtomicUsize::new(0);
/// ... of which the interrupted task was not pinned (preempt count 0: the
/// tick could have moved it to another CPU with the flag half taken).
static PROBE_UNPINNED: AtomicUsize = AtomicUsize::new(0);
/// Allocations the probe made from inside those ticks that failed.
static PROBE_FAILED: AtomicUsize = AtomicUsize::new(0);
/// What the probe allocated (addresses; 0: empty), freed by the test.
static PROBE_OBJS: [AtomicUsize; 64] = [const { AtomicUsize::new(0) }; 64];

/// The boot CPU's tick hook for the pinning test: when the tick came
/// inside a pinned stretch of the fast path, notes whether the task is
/// pinned (the interrupt entry counts it so); when it came while the
/// watched cache's sheaf flag of this CPU is held by this CPU (the
/// interrupted task is inside the fast path), allocates from the cache (as
/// an interrupt handler may), which must take the slow path; then the
/// usual tick.
fn pin_probe_tick(frame: &mut kreclaim::arch::x86_64::interrupts::TrapFrame) {
    let addr = PROBE_CACHE.load(Ordering::Acquire);
    if addr != 0 && kreclaim::platform::in_pinned_section(frame.rip as usize) {
        PROBE_PIN_HITS.fetch_add(1, Ordering::Relaxed);
        if task::preempt_count() == 0 {
            PROBE_UNPINNED.fetch_add(1, Ordering::Relaxed);
        }
    }
    if addr != 0 {
        // SAFETY: the test keeps the cache alive while its address is set.
        let c = unsafe { &*(addr as *const KmemCache) };
        if slab::sheaves_locked_by_owner(c, kreclaim::platform::cpu_id()) {
            let n = PROBE_HITS.fetch_add(1, Ordering::Relaxed);
            if n < PROBE_OBJS.len() {
                match c.alloc(GFP_ATOMIC) {
                    Ok(p) => PROBE_OBJS[n].store(p.as_ptr() as usize, Ordering::Relaxed),
                    Err(_) => {
                        PROBE_FAILED.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
    kreclaim::arch::x86_64::smp::tlb_sync_local();
    task::on_tick();
}

/// A tick that lands inside the fast path's pinned stretch (between
/// reading the CPU and taking its sheaf flag) finds the task pinned to its
/// CPU (preempt count above 0: the tick will not move it, and a remote
/// taker's barrier is not answered there), and an allocation from a tick
/// that lands while the fast path holds the flag goes around the held
/// sheaves (the slabs) without disturbing them: every object is handed out
/// once, the cache validates, and after everything is freed and flushed
/// nothing is live.
fn a_tick_inside_the_fast_path_finds_the_task_pinned_and_allocates_around_it() -> TestResult {
    use kreclaim::arch::x86_64::timer;
    const WANT_HITS: usize = 16;
    const WANT_PIN_HITS: usize = 4;
    const MAX_ROUNDS: usize = 50_000_000;
    let c = cache("t-pin-probe", 64, SlabFlags::empty())?;
    for o in PROBE_OBJS.iter() {
        o.store(0, Ordering::Relaxed);
    }
    PROBE_HITS.store(0, Ordering::Relaxed);
    PROBE_PIN_HITS.store(0, Ordering::Relaxed);
    PROBE_UNPINNED.store(0, Ordering::Relaxed);
    PROBE_FAILED.store(0, Ordering::Relaxed);
    static ROUNDS: AtomicUsize = AtomicUsize::new(0);
    let addr = &c as *const KmemCache as usize;
    // On the boot CPU, whose tick (the PIT) calls the hook; bound, so that
    // no idle CPU steals the loop away from it.
    let h = task::spawn_on(0, "pin-probe", move || {
        // SAFETY: the test keeps the cache alive until the task is joined.
        let c = unsafe { &*(addr as *const KmemCache) };
        lockdep_off(|| {
            // Warm this CPU's sheaves: the loop below stays on the fast path.
            let warm: Vec<_> = (0..8).filter_map(|_| c.alloc(GFP_KERNEL).ok()).collect();
            for p in warm {
                // SAFETY: just allocated from `c`, not used again.
                unsafe { c.free(p) };
            }
            PROBE_CACHE.store(addr, Ordering::Release);
            timer::set_tick_hook(pin_probe_tick);
            let mut rounds = 0;
            while rounds < MAX_ROUNDS
                && (PROBE_HITS.load(Ordering::Relaxed) < WANT_HITS
                    || PROBE_PIN_HITS.load(Ordering::Relaxed) < WANT_PIN_HITS)
            {
                if let Ok(p) = c.alloc(GFP_KERNEL) {
                    // SAFETY: just allocated from `c`, not used again.
                    unsafe { c.free(core::hint::black_box(p)) };
                }
                rounds += 1;
            }
            timer::set_tick_hook(|_| {
                kreclaim::arch::x86_64::smp::tlb_sync_local();
                task::on_tick()
            });
            PROBE_CACHE.store(0, Ordering::Release);
            ROUNDS.store(rounds, Ordering::Relaxed);
        });
    })
    .map_err(|e| fail(alloc::format!("spawn_on: {e:?}")))?;
    kassert!(
        h.join_timeout(core::time::Duration::from_secs(120)).is_ok(),
        "the probe loop did not finish"
    );
    let rounds = ROUNDS.load(Ordering::Relaxed);
    let hits = PROBE_HITS.load(Ordering::Relaxed);
    let objs: Vec<usize> = PROBE_OBJS
        .iter()
        .map(|o| o.swap(0, Ordering::Relaxed))
        .filter(|&a| a != 0)
        .collect();
    let mut all = objs.clone();
    all.sort_unstable();
    let unique = all.windows(2).all(|w| w[0] != w[1]);
    let valid = c.validate();
    for a in objs {
        // SAFETY: allocated from `c` (by the probe or above), freed once.
        unsafe { c.free(NonNull::new_unchecked(a as *mut u8)) };
    }
    c.flush_sheaves();
    let info = c.info_unflushed();
    let pin_hits = PROBE_PIN_HITS.load(Ordering::Relaxed);
    kassert!(
        hits > 0 && pin_hits > 0,
        "ticks inside the fast path: {hits} with the flag held, {pin_hits} in a pinned \
         stretch, in {rounds} rounds"
    );
    kassert_eq!(
        PROBE_UNPINNED.load(Ordering::Relaxed),
        0,
        "ticks found the fast path's task preemptible ({pin_hits} in a pinned stretch)"
    );
    kassert_eq!(PROBE_FAILED.load(Ordering::Relaxed), 0);
    kassert!(unique, "an object was handed out twice");
    kassert!(valid.is_ok(), "{:?}", valid.err());
    kassert_eq!(info.active_objs, 0, "objects lost: {info:?}");
    kassert_eq!(info.sheaf_objs, 0, "{info:?}");
    c.destroy()
        .map_err(|e| fail(alloc::format!("destroy: {e:?}")))?;
    Ok(())
}

/// A CPU that is not there (the last possible number) gets sheaves and a
/// full main sheaf through `prefill_sheaves` (a remote taker), and
/// `flush_sheaves` drains them: neither waits for an answer from the CPU
/// (it runs nothing), neither gives up, and both took the sheaves through
/// their `remote` flag.
fn a_drain_of_an_absent_cpus_sheaves_needs_no_answer_from_it() -> TestResult {
    let absent = slab::MAX_CPUS - 1;
    kassert!(absent >= kreclaim::arch::x86_64::smp::nr_cpus());
    let c = cache("t-absent-cpu", 64, SlabFlags::empty())?;
    let takes = slab::sheaf_remote_takes();
    let giveups = slab::sheaf_drain_giveups();
    kassert!(slab::prefill_sheaves(&c, absent), "prefill of CPU {absent}");
    let filled = c.info_unflushed();
    kassert!(filled.sheaf_objs > 0, "{filled:?}");
    kassert_eq!(c.flush_sheaves(), filled.sheaf_objs);
    let info = c.info_unflushed();
    kassert_eq!(info.sheaf_objs, 0, "{info:?}");
    kassert_eq!(info.active_objs, 0, "{info:?}");
    kassert_eq!(slab::sheaf_drain_giveups(), giveups);
    kassert!(
        slab::sheaf_remote_takes() >= takes + 2,
        "prefill and flush did not take the sheaves through `remote`"
    );
    c.destroy()
        .map_err(|e| fail(alloc::format!("destroy: {e:?}")))?;
    Ok(())
}

/// The data every slab and kmalloc fast path reads (the CPU's gs block,
/// the fast flags, the class table, the fast map) lies in the image's
/// fast-path section, whose pages are consecutive and fewer than QEMU's
/// smallest software TLB (64 entries): none of them can evict another
/// ([`kreclaim::arch::x86_64::hot_data_range`]). Fails when one of them is
/// taken out of the section (its page then lands anywhere in `.data`).
fn the_fast_paths_data_lies_on_consecutive_pages_of_its_own() -> TestResult {
    let (start, end) = kreclaim::arch::x86_64::hot_data_range();
    kassert!(
        start < end && end - start < 64 * PAGE_SIZE,
        "fast-path section {start:#x}..{end:#x} empty or 64 pages or more"
    );
    let mut data: Vec<(&str, usize)> = kreclaim::mm::slab::fast_path_data().to_vec();
    for n in 0..kreclaim::platform::NR_CPUS {
        if let Some(c) = kreclaim::arch::x86_64::smp::cpu(n) {
            data.push(("a CPU's gs block (CpuData)", c as *const _ as usize));
        }
    }
    for (name, at) in data {
        kassert!(
            (start..end).contains(&at),
            "{name} at {at:#x} is outside the fast-path section {start:#x}..{end:#x}"
        );
    }
    Ok(())
}
