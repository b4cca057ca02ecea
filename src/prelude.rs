//! What an embedder uses daily, in one `use kreclaim::prelude::*;`: GFP
//! flags and scopes, slab caches, kmalloc's boxes and vectors, shrinkers
//! and their registration, the page allocator's entry points.

pub use crate::mm::gfp::{GFP_ATOMIC, GFP_KERNEL, GFP_NOFS, GFP_NOIO, GFP_NOWAIT, GFP_USER, Gfp};
pub use crate::mm::page::PhysAddr;
pub use crate::mm::page_alloc::{AllocError, alloc_pages, free_pages};
pub use crate::mm::scope::{MemallocScope, current_gfp_context};
pub use crate::mm::shrinker::{
    CountObjects, ScanObjects, ShrinkControl, Shrinker, ShrinkerBuilder, ShrinkerRegistration,
};
pub use crate::mm::slab::kmalloc::{KBox, KVec, kfree, kmalloc, kzalloc};
pub use crate::mm::slab::{KmemCache, SlabBox, SlabFlags, TypedCache};
pub use crate::sync::{Mutex, SpinLock};
pub use crate::{lock_class, println};
