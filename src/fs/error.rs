//! What goes wrong in the filesystem, as values: [`FsError`] for every
//! operation, [`Meta`] for which metadata it is about, and [`Problem`] for
//! what fsck finds (an inconsistent filesystem carries its first problem, so
//! the two types live together, below everything that returns them).

use super::blockdev::IoError;
use super::mode::Mode;
use alloc::boxed::Box;
use core::fmt;

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

/// One inconsistency found by fsck.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The copy of the superblock at the start of AG `ag` is bad.
    SecondarySuperblock {
        /// The AG number.
        ag: u32,
        /// Why the copy is bad (decode error, or disagreement with the primary).
        err: FsError,
    },
    /// AG `ag`'s header cannot be used; its bitmaps were not checked.
    AgHeader {
        /// The AG number.
        ag: u32,
        /// The read or decode error.
        err: FsError,
    },
    /// A header counter disagrees with its bitmap.
    FreeCounter {
        /// The AG number.
        ag: u32,
        /// Which counter: `"blocks"` or `"inodes"`.
        what: &'static str,
        /// The free count stored in the header.
        header: u32,
        /// The free count the bitmap gives.
        bitmap: u32,
    },
    /// Bits set past the end of the AG's blocks or inodes.
    StrayBits {
        /// The AG number.
        ag: u32,
    },
    /// An inode core that does not decode.
    Inode {
        /// The inode number.
        ino: u32,
        /// The decode error.
        err: FsError,
    },
    /// The inode bitmap says `bitmap_used` but the slot's mode is `mode`
    /// (inode 0 must be marked used and stay free).
    InodeBitmap {
        /// The inode number.
        ino: u32,
        /// Whether the inode bitmap marks the slot used.
        bitmap_used: bool,
        /// The mode stored in the slot.
        mode: Mode,
    },
    /// A block pointer outside every data area.
    BadPointer {
        /// The inode holding the pointer.
        ino: u32,
        /// The disk block it points at.
        blk: u64,
    },
    /// Block `blk` is referenced by inode `first` and again by `second`.
    DoubleReference {
        /// Disk block number.
        blk: u64,
        /// The inode found referencing it first.
        first: u32,
        /// The inode found referencing it again.
        second: u32,
    },
    /// An inode's recorded block count differs from the blocks it maps.
    BlockCount {
        /// The inode number.
        ino: u32,
        /// `nblocks` stored in the inode.
        recorded: u32,
        /// Data and indirect blocks the inode maps.
        found: u32,
    },
    /// A block in use (by inode `owner`, or metadata when `owner` is 0) is
    /// marked free in its AG's bitmap.
    BlockMarkedFree {
        /// Disk block number.
        blk: u64,
        /// The inode using it, or 0 for metadata.
        owner: u32,
    },
    /// A block marked used that nothing references.
    BlockLeaked {
        /// Disk block number.
        blk: u64,
    },
    /// A directory block or mapping that cannot be read.
    Dir {
        /// The directory's inode number.
        dir: u32,
        /// The read, mapping or verify error.
        err: FsError,
    },
    /// A directory entry that is wrong in context.
    DirEntry {
        /// The directory's inode number.
        dir: u32,
        /// Disk block holding the entry.
        blk: u64,
        /// The entry's slot in the block.
        slot: usize,
        /// The inode number the entry names.
        ino: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The same name twice in one directory.
    DuplicateName {
        /// The directory's inode number.
        dir: u32,
    },
    /// `nlink` differs from the number of names found.
    LinkCount {
        /// The inode number.
        ino: u32,
        /// The link count stored in the inode.
        nlink: u32,
        /// Names found, counted as `nlink` counts them.
        found: u32,
    },
    /// A directory with more than one name.
    DirHardLink {
        /// The directory's inode number.
        ino: u32,
        /// Directory entries found naming it.
        names: u32,
    },
    /// An allocated inode not reachable from the root.
    Unreachable {
        /// The inode number.
        ino: u32,
    },
    /// The root inode is not an allocated directory.
    Root {
        /// The mode stored in the root inode's slot.
        mode: Mode,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::SecondarySuperblock { ag, err } => {
                write!(f, "superblock copy in AG {ag}: {err}")
            }
            Problem::AgHeader { ag, err } => write!(f, "AG {ag} header unusable: {err}"),
            Problem::FreeCounter {
                ag,
                what,
                header,
                bitmap,
            } => write!(
                f,
                "AG {ag}: header counts {header} free {what}, bitmap {bitmap}"
            ),
            Problem::StrayBits { ag } => {
                write!(f, "AG {ag}: bitmap bits set past the end of the AG")
            }
            Problem::Inode { ino, err } => write!(f, "inode {ino}: {err}"),
            Problem::InodeBitmap {
                ino,
                bitmap_used,
                mode,
            } => write!(
                f,
                "inode {ino}: bitmap says used={bitmap_used}, mode is {mode:?}"
            ),
            Problem::BadPointer { ino, blk } => {
                write!(
                    f,
                    "inode {ino} points at block {blk}, outside the data areas"
                )
            }
            Problem::DoubleReference { blk, first, second } => {
                write!(
                    f,
                    "block {blk} referenced by inode {first} and by inode {second}"
                )
            }
            Problem::BlockCount {
                ino,
                recorded,
                found,
            } => {
                write!(f, "inode {ino} records {recorded} blocks, maps {found}")
            }
            Problem::BlockMarkedFree { blk, owner: 0 } => {
                write!(f, "metadata block {blk} marked free")
            }
            Problem::BlockMarkedFree { blk, owner } => {
                write!(f, "block {blk} of inode {owner} marked free")
            }
            Problem::BlockLeaked { blk } => write!(f, "block {blk} marked used but unreferenced"),
            Problem::Dir { dir, err } => write!(f, "directory {dir}: {err}"),
            Problem::DirEntry {
                dir,
                blk,
                slot,
                ino,
                reason,
            } => write!(
                f,
                "directory {dir} block {blk} slot {slot} (inode {ino}): {reason}"
            ),
            Problem::DuplicateName { dir } => write!(f, "directory {dir} holds a name twice"),
            Problem::LinkCount { ino, nlink, found } => {
                write!(f, "inode {ino} has nlink {nlink}, {found} names found")
            }
            Problem::DirHardLink { ino, names } => write!(f, "directory {ino} has {names} names"),
            Problem::Unreachable { ino } => write!(f, "inode {ino} is not reachable from the root"),
            Problem::Root { mode } => write!(f, "root inode has mode {mode:?}"),
        }
    }
}
