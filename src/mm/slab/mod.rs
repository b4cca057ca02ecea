//! Slab caches (`kmem_cache`), SLUB-like in behaviour, with per-CPU sheaves.
//!
//! A slab is a block of 2^order pages from the page allocator holding objects
//! of one size. Each slab starts with a `SlabHeader` (kreclaim keeps slab
//! metadata on the slab itself rather than in `struct page` as SLUB does;
//! the header costs 128 bytes per slab, about 3% of a 4 KiB slab) and is
//! on one of three lists: partial, full or empty. A slab that goes empty
//! while the node already holds `min_partial` partial slabs (empty ones
//! included, as on Linux's one partial list) goes back to the page allocator
//! at once; [`KmemCache::shrink`] releases all empty slabs.
//!
//! In front of each cache without debug flags sit Linux 6.18's sheaves: per
//! CPU a main and a spare array of free objects, per node a barn of full and
//! empty ones. Alloc and free pop and push the main sheaf under the CPU's
//! sheaf lock, a `local_trylock` (one exchange, never waited for:
//! interrupts stay enabled, and a context that finds it held goes to the
//! slabs instead; no lockdep); sheaves
//! are swapped, exchanged with the barn, refilled and flushed in batches
//! under the node's list lock, and flushed by `shrink`, `info`, `validate`,
//! `destroy` and reclaim. Objects in sheaves count as taken for their slabs
//! but are reported apart from the objects handed out
//! ([`SlabInfo::sheaf_objs`]).
//!
//! Debugging (per cache, or `slab_debug=` on the command line with Linux's
//! letters F, Z, P): poisoning (0x6b, last byte 0xa5; checked on allocation),
//! red zones (0xcc active / 0xbb inactive; checked on free and allocation),
//! consistency checks (pointer belongs to this cache and sits on an object
//! boundary). With red zones each object has one on both sides (Linux's
//! `red_left_pad` before it). Double frees are caught through a per-slab
//! allocation bitmap: at once in debug caches (no sheaves); with sheaves, at
//! once when the object is on its slab's free list or was this CPU's last
//! free, else when its sheaf is flushed. Free pointers sit in the middle of
//! free objects (after them where contents matter) and are stored XORed with
//! a per-cache random cookie and their own address (SLAB_FREELIST_HARDENED);
//! every decoded one is checked against its slab before it is followed.
//! `docs/slab.md` describes the layout.

mod cache;
mod debug;
pub mod kmalloc;
mod typed;

pub use cache::{
    CreateError, DestroyError, KmemCache, MAX_CPUS, MAX_EMPTY_SHEAVES, MAX_FULL_SHEAVES,
    MAX_PARTIAL, MIN_PARTIAL, SlabFlags, SlabInconsistency, SlabInfo, fast_path_data,
    flush_all_sheaves, kmem_cache_alloc_bulk, kmem_cache_create, kmem_cache_free_bulk,
    list_lock_class, prefill_sheaves, set_global_debug, sheaf_drain_giveups, sheaf_drain_waits,
    sheaf_pages, sheaf_remote_takes, sheaves_locked_by_owner, show_slabinfo, slab_debug_parse,
    slabinfo, slabinfo_header, slabinfo_row, try_slabinfo, with_own_sheaves_held,
    with_sheaves_held, write_slabinfo,
};
pub use debug::{SlabBug, SlabReport, reports};
pub use typed::{SlabBox, TypedCache};
