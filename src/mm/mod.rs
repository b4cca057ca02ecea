//! Memory management.

pub mod early_heap;
