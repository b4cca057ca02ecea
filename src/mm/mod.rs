//! Memory management.

#![deny(missing_docs)]

pub mod early_heap;
pub mod fallible;
pub mod fault_inject;
pub mod fs_reclaim;
pub mod gfp;
pub mod global_alloc;
pub mod inline_name;
pub mod list_lru;
pub mod memstall;
pub mod oom_kill;
pub mod page;
pub mod page_alloc;
pub mod scope;
pub mod shrinker;
pub mod slab;
pub mod vmscan;
pub mod zone;
