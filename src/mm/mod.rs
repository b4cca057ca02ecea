//! Memory management.

pub mod early_heap;
pub mod gfp;
pub mod scope;
pub mod shrinker;
