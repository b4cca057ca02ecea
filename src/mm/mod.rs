//! Memory management.

pub mod early_heap;
pub mod fs_reclaim;
pub mod gfp;
pub mod scope;
pub mod shrinker;
