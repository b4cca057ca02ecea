//! Slab caches (`kmem_cache`), SLUB-like in behaviour on one CPU.
//!
//! A slab is a block of 2^order pages from the page allocator holding objects
//! of one size. Each slab starts with a `SlabHeader` (kreclaim keeps slab
//! metadata on the slab itself rather than in `struct page` as SLUB does;
//! the header costs 128 bytes per slab, about 3% of a 4 KiB slab) and is
//! on one of three lists: partial, full or empty. Empty slabs beyond
//! `min_partial` go back to the page allocator at once; [`KmemCache::shrink`]
//! releases all of them.
//!
//! In front of each cache without poison or red zones sits a per-CPU list
//! of free objects (SLUB's fast path): alloc and free pop and push it with
//! interrupts masked only; it is refilled and drained in batches under the
//! cache's list lock, and drained by `info`, `shrink` and `destroy`.
//!
//! Debugging (per cache, or `slab_debug=` on the command line with Linux's
//! letters F, Z, P): poisoning (0x6b, last byte 0xa5; checked on allocation),
//! red zones (0xcc active / 0xbb inactive; checked on free and allocation),
//! consistency checks (pointer belongs to this cache and sits on an object
//! boundary). Double frees are caught always, through a per-slab allocation
//! bitmap. Free pointers are stored XORed with a per-cache random cookie and
//! their own address (SLAB_FREELIST_HARDENED).

mod cache;
mod debug;
pub mod kmalloc;
mod typed;

pub use cache::{
    CreateError, DestroyError, KmemCache, MAX_CPUS, MAX_EMPTY_SHEAVES, MAX_FULL_SHEAVES,
    MIN_PARTIAL, SlabFlags, SlabInconsistency, SlabInfo, flush_all_sheaves, kmem_cache_alloc_bulk,
    kmem_cache_create, kmem_cache_free_bulk, list_lock_class, set_global_debug, sheaf_pages,
    show_slabinfo, slab_debug_parse, slabinfo, slabinfo_header, slabinfo_row, try_slabinfo,
    write_slabinfo,
};
pub use debug::{SlabBug, SlabReport, reports};
pub use typed::{SlabBox, TypedCache};
