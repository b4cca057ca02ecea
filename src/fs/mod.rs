//! The filesystem, phase 1: the block device and the on-disk format.
//!
//! - [`blockdev`]: the [`BlockDevice`](blockdev::BlockDevice) trait and a
//!   RAM disk with IO counters and injectable errors.

pub mod blockdev;

pub use blockdev::{BlockDevice, ErrorInjection, IoError, IoStats, RamDisk};
