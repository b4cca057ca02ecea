//! Platforms kreclaim runs on as a kernel.

#![deny(missing_docs)]

pub mod x86_64;
