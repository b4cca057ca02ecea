//! The filesystem: an XFS-like filesystem on a block device, with an inode
//! cache and a buffer cache that memory reclaim shrinks.
//!
//! On-disk layer (pure, synchronous, no caches: callers pass one-block
//! buffers, so nothing on an IO path allocates):
//!
//! - [`blockdev`]: the [`BlockDevice`] trait and a
//!   RAM disk with IO counters and injectable errors.
//! - [`format`]: the on-disk layout (superblock, AG headers, inode cores,
//!   block mapping) with a layout diagram; [`dir`]: directory blocks.
//! - [`mkfs`](mod@mkfs) makes a filesystem; [`fsck`](mod@fsck) checks one (both are tools and
//!   allocate).
//! - [`disk`]: a small cache-free API for tests.
//! - [`error`]: [`FsError`], [`Meta`] and fsck's [`Problem`]; [`mode`]: inode
//!   modes and entry types. Both sit below everything that returns errors.
//!
//! In-memory layer (a mounted [`Fs`]):
//!
//! - [`state`]: the per-mount state [`Fs`] (XFS's `struct xfs_mount`) and
//!   [`FsStats`]; every layer below takes `&Fs`.
//! - `buf`: the buffer cache (slab `xfs_buf`, data pages from
//!   `alloc_pages` with the caller's gfp, intrusive hash, LRU, the
//!   `xfs_buf` shrinker); blocks are written through.
//! - `inode`: the in-core inode (XFS's `struct xfs_inode`: state flags,
//!   ILOCK) and per-AG state (`struct xfs_perag`: the inode index), which
//!   [`Fs`] holds.
//! - [`icache`]: the inode cache (slab `xfs_inode`): lookup, the XFS inode
//!   state changes, ILOCK guards, [`InodeRef`], and the inode shrinker with
//!   `super_cache_count`/`super_cache_scan` semantics.
//! - `inactive`: freeing an unlinked inode on disk at its last reference.
//! - `bmap`: file block to disk block, mapping and truncating.
//! - `ag_alloc`: block and inode allocation in the AG bitmaps.
//! - `dir_ops`: directory entries through the buffer cache.
//! - `trans`: transactions (scoped NOFS under policies that ask for it);
//!   commits pin the logged inodes in the [`log`] until a log force.
//! - [`log`]: the log for its timing (XFS's CIL and log forces): pins and
//!   checkpoint writes on the modelled device; no contents, no recovery.
//! - [`flush`]: cluster writeback and the flusher thread `xfsaild`.
//! - [`mount`]: mount/unmount/shutdown; [`ops`]: the file operations.
//! - [`policy`]: how allocations under ILOCK and reclaim's inode locking
//!   behave; five policies replay the seed mail's history (docs/seed.md).
//!
//! Dependencies point one way: `mount` and `ops` sit on top and nothing
//! else imports them; `icache`, `inactive`, `bmap`, `ag_alloc`, `dir_ops`,
//! `trans` and `flush` take `&state::Fs`; `buf` names nothing of the
//! mounted filesystem (its shrinker reaches the cache through the
//! `BufCacheOwner` trait). `.ci/run` checks this. `state::Fs` holds the
//! caches as fields, so `state` names `buf`'s and `inode`'s types (never
//! `icache`'s: `tools/modcycles` checks that no module cycle remains).

#![deny(missing_docs)]

mod ag_alloc;
pub mod blockdev;
mod bmap;
pub(crate) mod buf;
pub mod dir;
mod dir_ops;
pub mod disk;
pub mod error;
pub mod flush;
pub mod format;
pub mod fsck;
pub mod icache;
mod inactive;
pub(crate) mod inode;
pub mod log;
pub mod mkfs;
pub mod mode;
pub mod mount;
pub mod ops;
pub mod policy;
pub mod state;
pub(crate) mod trans;

pub use blockdev::{BlockDevice, DiskModel, ErrorInjection, IoError, IoStats, RamDisk};
pub use disk::Disk;
pub use error::{FsError, Meta, Problem};
pub(crate) use format::check_buf;
pub use format::{FileType, Geometry, InodeCore, Mode, Superblock};
pub use fsck::{FsckReport, check, fsck};
pub use icache::{IlockGuard, InodeRef, RaceHook, RacePoint};
pub use inode::{dir_ilock_class, nondir_ilock_class};
pub use mkfs::{MkfsOptions, mkfs};
pub use ops::Stat;
pub use policy::{IlockMode, Policy, ReclaimPinned, ReclaimWriteback};
pub use state::{Fs, FsStats};
