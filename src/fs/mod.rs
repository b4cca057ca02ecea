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
//!
//! In-memory layer (a mounted [`Fs`]):
//!
//! - [`state`]: the per-mount state [`Fs`] (XFS's `struct xfs_mount`) and
//!   [`FsStats`]; every layer below takes `&Fs`.
//! - `buf`: the buffer cache (slab `xfs_buf`, data pages from
//!   `alloc_pages` with the caller's gfp, intrusive hash, LRU, the
//!   `xfs_buf` shrinker); blocks are written through.
//! - [`icache`]: in-core inodes (slab `xfs_inode`), per-AG indexes, the
//!   XFS inode states, ILOCK (`xfs_ilock`), [`InodeRef`], and the inode
//!   shrinker with `super_cache_count`/`super_cache_scan` semantics.
//! - `inactive`: freeing an unlinked inode on disk at its last reference.
//! - `bmap`: file block to disk block, mapping and truncating.
//! - `ag_alloc`: block and inode allocation in the AG bitmaps.
//! - `dir_ops`: directory entries through the buffer cache.
//! - `trans`: transactions (scoped NOFS under policies that ask for it).
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
//! caches as fields, so `state` still names `buf`'s and `icache`'s types.

#![deny(missing_docs)]

mod ag_alloc;
pub mod blockdev;
mod bmap;
pub(crate) mod buf;
pub mod dir;
mod dir_ops;
pub mod disk;
pub mod flush;
pub mod format;
pub mod fsck;
pub mod icache;
mod inactive;
pub mod mkfs;
pub mod mount;
pub mod ops;
pub mod policy;
pub mod state;
pub(crate) mod trans;

use alloc::boxed::Box;
use core::fmt;

pub use blockdev::{BlockDevice, DiskModel, ErrorInjection, IoError, IoStats, RamDisk};
pub use disk::Disk;
pub use format::{FileType, Geometry, InodeCore, Mode, Superblock};
pub use fsck::{FsckReport, Problem, check, fsck};
pub use icache::{IlockGuard, InodeRef, RaceHook, RacePoint};
pub use mkfs::{MkfsOptions, mkfs};
pub use ops::Stat;
pub use policy::{IlockMode, Policy, ReclaimWriteback};
pub use state::{Fs, FsStats};

/// Which piece of metadata an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meta {
    /// The superblock (block 0, or a secondary copy checked by fsck).
    Superblock,
    /// The header block of allocation group `.0`.
    AgHeader(u32),
    /// Inode `.0`'s 256-byte core.
    Inode(u32),
    /// Directory data block `blk` of directory inode `dir`.
    DirBlock {
        /// Inode number of the directory.
        dir: u32,
        /// Disk block number.
        blk: u64,
    },
    /// Entry `slot` of a directory block (helpers that see only the buffer).
    DirEntry {
        /// Entry index within the block.
        slot: usize,
    },
}

impl fmt::Display for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Meta::Superblock => write!(f, "superblock"),
            Meta::AgHeader(ag) => write!(f, "AG {ag} header"),
            Meta::Inode(ino) => write!(f, "inode {ino}"),
            Meta::DirBlock { dir, blk } => write!(f, "directory block {blk} of inode {dir}"),
            Meta::DirEntry { slot } => write!(f, "directory entry slot {slot}"),
        }
    }
}

/// Everything that can go wrong in the filesystem, as a value. Variants name
/// the block, inode or AG concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsError {
    /// The device failed a read or write of block `blk`.
    Io {
        /// Disk block number.
        blk: u64,
        /// What the device reported.
        err: IoError,
    },
    /// A caller-provided buffer is not one block long.
    BufferSize {
        /// The block size in bytes.
        expected: usize,
        /// The buffer's length in bytes.
        got: usize,
    },
    /// A block number that is outside the filesystem, or metadata where a
    /// data block was expected.
    BadBlockNumber {
        /// The offending disk block number.
        blk: u64,
        /// Why it is not acceptable here.
        reason: &'static str,
    },
    /// An inode number that does not name an inode slot of this filesystem.
    BadInodeNumber {
        /// The offending inode number.
        ino: u32,
    },
    /// An AG number at or beyond the AG count.
    BadAg {
        /// The offending AG number.
        ag: u32,
    },
    /// Metadata with the wrong magic number.
    BadMagic {
        /// The metadata read.
        what: Meta,
        /// The magic number found on disk.
        found: u32,
    },
    /// Metadata whose checksum does not match its contents.
    BadChecksum {
        /// The metadata read.
        what: Meta,
        /// The checksum stored on disk.
        stored: u32,
        /// The checksum computed over the contents read.
        computed: u32,
    },
    /// Metadata with a valid checksum but impossible contents.
    Corrupt {
        /// The metadata read.
        what: Meta,
        /// Which check failed.
        reason: &'static str,
    },
    /// Device size or mkfs options that give no valid filesystem.
    BadGeometry {
        /// Which constraint is violated.
        reason: &'static str,
    },
    /// No free data block in AG `ag`.
    NoSpace {
        /// The full AG.
        ag: u32,
    },
    /// No free inode in AG `ag`.
    NoFreeInodes {
        /// The AG whose inode bitmap is full.
        ag: u32,
    },
    /// No free data block in any AG.
    FsFull,
    /// Freeing a block that is not allocated (double free).
    BlockNotAllocated {
        /// Disk block number.
        blk: u64,
    },
    /// Freeing or using an inode that is not allocated.
    InodeNotAllocated {
        /// The inode number.
        ino: u32,
    },
    /// Freeing an inode that still maps data blocks (truncate it first).
    InodeHasBlocks {
        /// The inode number.
        ino: u32,
        /// How many blocks it still maps.
        nblocks: u32,
    },
    /// A file block beyond the largest file the format can map.
    FileTooBig {
        /// The file's inode number.
        ino: u32,
        /// The block index within the file that cannot be mapped.
        file_block: u64,
    },
    /// A directory operation on an inode that is not a directory.
    NotADirectory {
        /// The inode number.
        ino: u32,
    },
    /// Mode `Free` where a file or directory is needed.
    InvalidMode,
    /// Removing a directory that still has entries.
    DirNotEmpty {
        /// The directory's inode number.
        ino: u32,
    },
    /// A name that cannot be stored in a directory entry.
    InvalidName {
        /// What is wrong with the name (empty, too long, ...).
        reason: &'static str,
    },
    /// The name is already in the directory.
    NameExists,
    /// The name is not in the directory.
    NotFound,
    /// An allocation failed (fsck's working memory, or a cache object or
    /// buffer page on an operation path).
    NoMemory,
    /// A file operation on a directory.
    IsADirectory {
        /// The directory's inode number.
        ino: u32,
    },
    /// Unmount while inode `ino` is still referenced.
    Busy {
        /// The first still-referenced inode found.
        ino: u32,
    },
    /// The filesystem is unmounted or shut down.
    Shutdown,
    /// fsck found `problems` inconsistencies; `first` is the first of them.
    Inconsistent {
        /// How many problems fsck reported.
        problems: usize,
        /// The first problem reported.
        first: Box<Problem>,
    },
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsError::Io { blk, err } => write!(f, "IO error at block {blk}: {err}"),
            FsError::BufferSize { expected, got } => {
                write!(
                    f,
                    "buffer of {got} bytes where one block ({expected}) is needed"
                )
            }
            FsError::BadBlockNumber { blk, reason } => {
                write!(f, "bad block number {blk}: {reason}")
            }
            FsError::BadInodeNumber { ino } => write!(f, "bad inode number {ino}"),
            FsError::BadAg { ag } => write!(f, "no AG {ag}"),
            FsError::BadMagic { what, found } => write!(f, "bad magic {found:#x} in {what}"),
            FsError::BadChecksum {
                what,
                stored,
                computed,
            } => write!(
                f,
                "checksum mismatch in {what} (stored {stored:#010x}, computed {computed:#010x})"
            ),
            FsError::Corrupt { what, reason } => write!(f, "corrupt {what}: {reason}"),
            FsError::BadGeometry { reason } => write!(f, "bad geometry: {reason}"),
            FsError::NoSpace { ag } => write!(f, "no space in AG {ag}"),
            FsError::NoFreeInodes { ag } => write!(f, "no free inodes in AG {ag}"),
            FsError::FsFull => write!(f, "no space left in any AG"),
            FsError::BlockNotAllocated { blk } => write!(f, "block {blk} is not allocated"),
            FsError::InodeNotAllocated { ino } => write!(f, "inode {ino} is not allocated"),
            FsError::InodeHasBlocks { ino, nblocks } => {
                write!(f, "inode {ino} still maps {nblocks} blocks")
            }
            FsError::FileTooBig { ino, file_block } => {
                write!(
                    f,
                    "file block {file_block} of inode {ino} is beyond the maximum file size"
                )
            }
            FsError::NotADirectory { ino } => write!(f, "inode {ino} is not a directory"),
            FsError::InvalidMode => write!(f, "mode Free where a file or directory is needed"),
            FsError::DirNotEmpty { ino } => write!(f, "directory inode {ino} is not empty"),
            FsError::InvalidName { reason } => write!(f, "invalid name: {reason}"),
            FsError::NameExists => write!(f, "name exists"),
            FsError::NotFound => write!(f, "name not found"),
            FsError::NoMemory => write!(f, "out of memory"),
            FsError::IsADirectory { ino } => write!(f, "inode {ino} is a directory"),
            FsError::Busy { ino } => write!(f, "inode {ino} is still referenced"),
            FsError::Shutdown => write!(f, "filesystem unmounted or shut down"),
            FsError::Inconsistent { problems, first } => {
                write!(
                    f,
                    "filesystem inconsistent: {problems} problems, first: {first}"
                )
            }
        }
    }
}

/// Checks that `buf` is exactly one block.
pub(crate) fn check_buf(len: usize) -> Result<(), FsError> {
    if len == format::BLOCK_SIZE {
        Ok(())
    } else {
        Err(FsError::BufferSize {
            expected: format::BLOCK_SIZE,
            got: len,
        })
    }
}
