//! Platforms kreclaim runs on as a kernel.

pub mod x86_64;
