//! Memory management.

pub mod early_heap;
pub mod fault_inject;
pub mod gfp;
pub mod scope;
