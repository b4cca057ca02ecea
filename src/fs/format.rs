//! The on-disk format: superblock, allocation groups, inode cores, block
//! mapping. All integers are little-endian; every metadata structure carries
//! a magic number and a CRC32C (Castagnoli, the checksum XFS uses), so a
//! corrupt block is reported by name instead of being believed.
//!
//! Blocks are 4096 bytes. The filesystem is `ag_count` allocation groups
//! (AGs) of `ag_blocks` blocks each, laid out identically, like XFS:
//!
//! ```text
//!  AG 0                                  AG 1                    ...
//! +----+-----+---------------+---------+ +----+-----+---------------+------
//! | SB | AGH | inode clusters| data    | | SB | AGH | inode clusters| data
//! +----+-----+---------------+---------+ +----+-----+---------------+------
//!   0     1   2 .. 2+C-1      2+C ..       AG-relative block numbers
//!
//! SB   superblock: primary in AG 0 (fs block 0), copies in the other AGs
//!      written by mkfs (fsck checks they agree); only the primary changes.
//! AGH  AG header: counters, inode bitmap, free-block bitmap (one bit per
//!      AG block, set = used; SB, AGH and inode clusters are always set).
//! C    clusters_per_ag inode clusters; a cluster is one block of 16 inodes
//!      of 256 bytes. Inode slots exist from mkfs on (no dynamic chunks).
//! data file data, directory blocks and indirect blocks.
//! ```
//!
//! Superblock (first 512 bytes of its block, the rest zero):
//!
//! ```text
//!   0 magic "KRSB"     4 version 1       8 block size 4096  12 inode size 256
//!  16 total blocks u64                  24 AG count       28 blocks per AG
//!  32 inodes/cluster  36 clusters/AG    40 root ino       44 flags (bit 0: clean)
//! 508 CRC32C of bytes 0..508
//! ```
//!
//! AG header:
//!
//! ```text
//!   0 magic "KRAG"   4 AG number   8 blocks in AG   12 clusters
//!  16 free blocks    20 free inodes                 124 CRC32C of the block minus this field
//! 128 .. 640   inode bitmap   (4096 bits: at most 256 clusters per AG)
//! 640 .. 4096  block bitmap   (27648 bits: at most 27648 blocks = 108 MiB per AG)
//! ```
//!
//! Inode numbers are `ag << 24 | agino` (as XFS packs AG and AG-relative
//! inode number), agino = cluster * 16 + slot. Inode 0 is reserved (its bit
//! is set in AG 0 and its slot stays free) so that 0 can mean "no inode" in a
//! directory entry; the root directory is inode 1.
//!
//! Inode core (256 bytes):
//!
//! ```text
//!   0 magic "IN" u16   2 version u8   3 mode u8 (0 free, 1 file, 2 dir)
//!   4 nlink u32        8 size u64    16 atime  24 mtime  32 ctime (u64 ns)
//!  40 generation u32  44 nblocks u32 (data + indirect blocks held)
//!  48 ino u32 (its own number, catches misdirected writes)
//!  52 indirect block u32           56 direct[40] u32
//! 216 .. 252 zero    252 CRC32C of bytes 0..252
//! ```
//!
//! File block `n` maps through `direct[n]` for n < 40, else entry `n - 40` of
//! the single indirect block (1024 u32 entries, no header). Block number 0
//! means a hole. Largest file: (40 + 1024) * 4096 = 4 358 144 bytes.
//! Directory blocks are described in [`super::dir`].

pub use super::mode::{FileType, Mode};
use super::{FsError, Meta};

/// Filesystem block size in bytes (the only one supported).
pub const BLOCK_SIZE: usize = 4096;
/// Superblock format version this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Superblock magic number ("KRSB").
pub const SB_MAGIC: u32 = u32::from_le_bytes(*b"KRSB");
/// AG header magic number ("KRAG").
pub const AGH_MAGIC: u32 = u32::from_le_bytes(*b"KRAG");
/// Inode core magic number ("IN").
pub const INODE_MAGIC: u16 = u16::from_le_bytes(*b"IN");
/// Inode core format version.
pub const INODE_VERSION: u8 = 1;

/// Size of an on-disk inode core in bytes.
pub const INODE_SIZE: usize = 256;
/// Inodes per cluster: one block of inode cores.
pub const INODES_PER_CLUSTER: u32 = 16;
/// AG-relative inode numbers take the low 24 bits of an inode number.
pub const AG_INO_BITS: u32 = 24;
/// Inode numbers are u32, so the AG number has 8 bits.
pub const MAX_AGS: u32 = 256;

/// Direct block pointers in an inode core (file blocks `0..NDIRECT`).
pub const NDIRECT: usize = 40;
/// Block pointers (u32) in the single indirect block.
pub const PTRS_PER_INDIRECT: usize = BLOCK_SIZE / 4;
/// Largest file in blocks: direct plus indirect pointers.
pub const MAX_FILE_BLOCKS: u64 = (NDIRECT + PTRS_PER_INDIRECT) as u64;
/// Largest file in bytes.
pub const MAX_FILE_SIZE: u64 = MAX_FILE_BLOCKS * BLOCK_SIZE as u64;

/// AG-relative positions of the fixed blocks.
pub const AG_SB_BLOCK: u32 = 0;
/// AG-relative block of the AG header.
pub const AG_HEADER_BLOCK: u32 = 1;
/// AG-relative block of the first inode cluster.
pub const AG_FIRST_CLUSTER: u32 = 2;

const AGH_CRC_OFF: usize = 124;
const AGH_IBITMAP_OFF: usize = 128;
const AGH_IBITMAP_BYTES: usize = 512;
const AGH_BBITMAP_OFF: usize = AGH_IBITMAP_OFF + AGH_IBITMAP_BYTES;
/// Most inodes per AG: one bit each in the AG header's inode bitmap.
pub const MAX_INODES_PER_AG: u32 = (AGH_IBITMAP_BYTES * 8) as u32;
/// Most inode clusters per AG.
pub const MAX_CLUSTERS_PER_AG: u32 = MAX_INODES_PER_AG / INODES_PER_CLUSTER;
/// Most blocks per AG: one bit each in the rest of the AG header block.
pub const MAX_AG_BLOCKS: u32 = ((BLOCK_SIZE - AGH_BBITMAP_OFF) * 8) as u32;
/// Smallest AG mkfs makes: room for the fixed blocks and some data.
pub const MIN_AG_BLOCKS: u32 = 64;

/// Inode 0 is never allocated: 0 marks an empty directory slot.
pub const RESERVED_INO: u32 = 0;
/// Inode number of the root directory.
pub const ROOT_INO: u32 = 1;

const SB_SIZE: usize = 512;
const SB_CRC_OFF: usize = SB_SIZE - 4;
const SB_FLAG_CLEAN: u32 = 1;
const INODE_CRC_OFF: usize = INODE_SIZE - 4;

// ---------------------------------------------------------------------------
// Little-endian fields and CRC32C

pub(crate) fn get_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
pub(crate) fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
pub(crate) fn get_u64(b: &[u8], off: usize) -> u64 {
    u64::from(get_u32(b, off)) | (u64::from(get_u32(b, off + 4)) << 32)
}
pub(crate) fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

const fn crc32c_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC32C_TABLE: [u32; 256] = crc32c_table();

/// Incremental CRC32C, for checksums over a block minus its checksum field.
#[derive(Clone, Copy)]
pub struct Crc32c(u32);

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32c {
    /// A checksum over no bytes yet.
    pub const fn new() -> Self {
        Self(!0)
    }
    /// Feeds `data` into the checksum.
    pub fn update(mut self, data: &[u8]) -> Self {
        for &b in data {
            self.0 = CRC32C_TABLE[((self.0 ^ u32::from(b)) & 0xff) as usize] ^ (self.0 >> 8);
        }
        self
    }
    /// The CRC32C of all bytes fed in.
    pub fn finish(self) -> u32 {
        !self.0
    }
}

/// CRC32C of `data` (`crc32c(b"123456789") == 0xe306_9283`).
pub fn crc32c(data: &[u8]) -> u32 {
    Crc32c::new().update(data).finish()
}

// ---------------------------------------------------------------------------
// Geometry and inode numbers

/// The shape of a filesystem: how many AGs, how big, how many inodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Blocks the filesystem uses: `ag_count * ag_blocks`.
    pub total_blocks: u64,
    /// Number of allocation groups (1..=[`MAX_AGS`]).
    pub ag_count: u32,
    /// Blocks per AG ([`MIN_AG_BLOCKS`]..=[`MAX_AG_BLOCKS`]).
    pub ag_blocks: u32,
    /// Inode clusters per AG (1..=[`MAX_CLUSTERS_PER_AG`]), fixed at mkfs.
    pub clusters_per_ag: u32,
}

impl Geometry {
    /// A validated geometry.
    pub fn new(ag_count: u32, ag_blocks: u32, clusters_per_ag: u32) -> Result<Self, FsError> {
        let g = Self {
            total_blocks: u64::from(ag_count) * u64::from(ag_blocks),
            ag_count,
            ag_blocks,
            clusters_per_ag,
        };
        g.validate()
            .map_err(|reason| FsError::BadGeometry { reason })?;
        Ok(g)
    }

    /// Why these numbers cannot describe a filesystem, if they cannot.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.ag_count == 0 || self.ag_count > MAX_AGS {
            return Err("AG count must be 1..=256");
        }
        if self.ag_blocks < MIN_AG_BLOCKS || self.ag_blocks > MAX_AG_BLOCKS {
            return Err("blocks per AG must be 64..=27648");
        }
        if self.clusters_per_ag == 0 || self.clusters_per_ag > MAX_CLUSTERS_PER_AG {
            return Err("inode clusters per AG must be 1..=256");
        }
        if self.data_start() >= self.ag_blocks {
            return Err("inode clusters leave no data blocks in the AG");
        }
        if self.total_blocks != u64::from(self.ag_count) * u64::from(self.ag_blocks) {
            return Err("total blocks is not AG count times blocks per AG");
        }
        Ok(())
    }

    /// Inode slots per AG.
    pub fn inodes_per_ag(&self) -> u32 {
        self.clusters_per_ag * INODES_PER_CLUSTER
    }

    /// AG-relative number of the first data block.
    pub fn data_start(&self) -> u32 {
        AG_FIRST_CLUSTER + self.clusters_per_ag
    }

    /// Blocks per AG available for data (after SB, AGH and clusters).
    pub fn data_blocks_per_ag(&self) -> u32 {
        self.ag_blocks - self.data_start()
    }

    /// Filesystem block number of AG `ag`'s first block (its superblock).
    pub fn ag_start(&self, ag: u32) -> u64 {
        u64::from(ag) * u64::from(self.ag_blocks)
    }

    /// Filesystem block number of AG `ag`'s header.
    pub fn ag_header_block(&self, ag: u32) -> u64 {
        self.ag_start(ag) + u64::from(AG_HEADER_BLOCK)
    }

    /// The AG holding `blk` (callers check `blk < total_blocks`).
    pub fn block_ag(&self, blk: u64) -> u32 {
        (blk / u64::from(self.ag_blocks)) as u32
    }

    /// `blk`'s position inside its AG.
    pub fn block_rel(&self, blk: u64) -> u32 {
        (blk % u64::from(self.ag_blocks)) as u32
    }

    /// Whether `blk` is inside the filesystem and in some AG's data area.
    pub fn is_data_block(&self, blk: u64) -> bool {
        blk < self.total_blocks && self.block_rel(blk) >= self.data_start()
    }

    /// [`is_data_block`](Self::is_data_block) as a `Result`, with the reason
    /// in [`FsError::BadBlockNumber`].
    pub fn check_data_block(&self, blk: u64) -> Result<(), FsError> {
        if blk >= self.total_blocks {
            Err(FsError::BadBlockNumber {
                blk,
                reason: "beyond the end of the filesystem",
            })
        } else if !self.is_data_block(blk) {
            Err(FsError::BadBlockNumber {
                blk,
                reason: "metadata block where a data block is expected",
            })
        } else {
            Ok(())
        }
    }

    /// Whether `ino` names an inode slot (the reserved inode 0 does not).
    pub fn is_valid_ino(&self, ino: u32) -> bool {
        ino != RESERVED_INO
            && ino_to_ag(ino) < self.ag_count
            && ino_to_agino(ino) < self.inodes_per_ag()
    }

    /// [`is_valid_ino`](Self::is_valid_ino) as a `Result`.
    pub fn check_ino(&self, ino: u32) -> Result<(), FsError> {
        if self.is_valid_ino(ino) {
            Ok(())
        } else {
            Err(FsError::BadInodeNumber { ino })
        }
    }
}

/// `ag << 24 | agino`.
pub fn make_ino(ag: u32, agino: u32) -> u32 {
    (ag << AG_INO_BITS) | agino
}

/// The AG number of `ino` (its top 8 bits).
pub fn ino_to_ag(ino: u32) -> u32 {
    ino >> AG_INO_BITS
}

/// The AG-relative inode number of `ino` (its low 24 bits).
pub fn ino_to_agino(ino: u32) -> u32 {
    ino & ((1 << AG_INO_BITS) - 1)
}

/// The filesystem block of the cluster holding `ino` (check `ino` first).
pub fn ino_to_cluster_block(geo: &Geometry, ino: u32) -> u64 {
    geo.ag_start(ino_to_ag(ino))
        + u64::from(AG_FIRST_CLUSTER + ino_to_agino(ino) / INODES_PER_CLUSTER)
}

/// Byte offset of `ino`'s 256-byte slot in its cluster block.
pub fn ino_offset_in_cluster(ino: u32) -> usize {
    (ino_to_agino(ino) % INODES_PER_CLUSTER) as usize * INODE_SIZE
}

// ---------------------------------------------------------------------------
// Superblock

/// The superblock: geometry, root inode and whether the last unmount was clean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// The filesystem's shape.
    pub geometry: Geometry,
    /// Inode number of the root directory.
    pub root_ino: u32,
    /// Set by a clean unmount, cleared while mounted: if clear at mount, the
    /// last mount did not unmount cleanly.
    pub clean: bool,
}

impl Superblock {
    /// Decodes and verifies a superblock block.
    pub fn read_from(buf: &[u8]) -> Result<Superblock, FsError> {
        check_buf(buf.len())?;
        let bad = |reason| FsError::Corrupt {
            what: Meta::Superblock,
            reason,
        };
        let magic = get_u32(buf, 0);
        if magic != SB_MAGIC {
            return Err(FsError::BadMagic {
                what: Meta::Superblock,
                found: magic,
            });
        }
        let stored = get_u32(buf, SB_CRC_OFF);
        let computed = crc32c(&buf[..SB_CRC_OFF]);
        if stored != computed {
            return Err(FsError::BadChecksum {
                what: Meta::Superblock,
                stored,
                computed,
            });
        }
        if get_u32(buf, 4) != FORMAT_VERSION {
            return Err(bad("unknown format version"));
        }
        if get_u32(buf, 8) as usize != BLOCK_SIZE {
            return Err(bad("block size is not 4096"));
        }
        if get_u32(buf, 12) as usize != INODE_SIZE {
            return Err(bad("inode size is not 256"));
        }
        if get_u32(buf, 32) != INODES_PER_CLUSTER {
            return Err(bad("inodes per cluster is not 16"));
        }
        let geometry = Geometry {
            total_blocks: get_u64(buf, 16),
            ag_count: get_u32(buf, 24),
            ag_blocks: get_u32(buf, 28),
            clusters_per_ag: get_u32(buf, 36),
        };
        geometry.validate().map_err(bad)?;
        let root_ino = get_u32(buf, 40);
        if root_ino != ROOT_INO {
            return Err(bad("root inode is not inode 1"));
        }
        let flags = get_u32(buf, 44);
        if flags & !SB_FLAG_CLEAN != 0 {
            return Err(bad("unknown flags"));
        }
        Ok(Superblock {
            geometry,
            root_ino,
            clean: flags & SB_FLAG_CLEAN != 0,
        })
    }

    /// Encodes into a whole block (the rest of the block is zeroed).
    pub fn write_to(&self, buf: &mut [u8]) -> Result<(), FsError> {
        check_buf(buf.len())?;
        buf.fill(0);
        let g = &self.geometry;
        put_u32(buf, 0, SB_MAGIC);
        put_u32(buf, 4, FORMAT_VERSION);
        put_u32(buf, 8, BLOCK_SIZE as u32);
        put_u32(buf, 12, INODE_SIZE as u32);
        put_u64(buf, 16, g.total_blocks);
        put_u32(buf, 24, g.ag_count);
        put_u32(buf, 28, g.ag_blocks);
        put_u32(buf, 32, INODES_PER_CLUSTER);
        put_u32(buf, 36, g.clusters_per_ag);
        put_u32(buf, 40, self.root_ino);
        put_u32(buf, 44, if self.clean { SB_FLAG_CLEAN } else { 0 });
        let crc = crc32c(&buf[..SB_CRC_OFF]);
        put_u32(buf, SB_CRC_OFF, crc);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Inode cores

/// One inode's on-disk core, decoded. `ino` is not a free field: it is the
/// slot's own number, checked against the copy stored on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InodeCore {
    /// This slot's inode number.
    pub ino: u32,
    /// Free, file or directory.
    pub mode: Mode,
    /// Link count: directory entries naming this inode, plus one for the
    /// root (which the superblock names).
    pub nlink: u32,
    /// Size in bytes.
    pub size: u64,
    /// Last access time, in nanoseconds.
    pub atime: u64,
    /// Last data modification time, in nanoseconds.
    pub mtime: u64,
    /// Last inode change time, in nanoseconds.
    pub ctime: u64,
    /// Bumped each time the slot is freed, so a stale handle can be told
    /// from a new inode in the same slot.
    pub generation: u32,
    /// Data and indirect blocks this inode holds.
    pub nblocks: u32,
    /// Disk blocks of file blocks `0..NDIRECT`; 0 is a hole.
    pub direct: [u32; NDIRECT],
    /// Disk block of the indirect block mapping the file blocks after the
    /// direct ones; 0 if there is none.
    pub indirect: u32,
}

impl InodeCore {
    /// A free slot.
    pub fn free(ino: u32, generation: u32) -> Self {
        Self {
            ino,
            mode: Mode::Free,
            nlink: 0,
            size: 0,
            atime: 0,
            mtime: 0,
            ctime: 0,
            generation,
            nblocks: 0,
            direct: [0; NDIRECT],
            indirect: 0,
        }
    }

    /// A new empty inode with no links and all times `now_ns`.
    pub fn new(ino: u32, mode: Mode, generation: u32, now_ns: u64) -> Self {
        Self {
            mode,
            atime: now_ns,
            mtime: now_ns,
            ctime: now_ns,
            ..Self::free(ino, generation)
        }
    }

    /// Whether the slot holds a file or directory (mode not `Free`).
    pub fn is_allocated(&self) -> bool {
        self.mode != Mode::Free
    }

    /// Blocks covered by `size`, rounded up.
    pub fn size_blocks(&self) -> u64 {
        self.size.div_ceil(BLOCK_SIZE as u64)
    }

    fn check(&self) -> Result<(), FsError> {
        let bad = |reason| FsError::Corrupt {
            what: Meta::Inode(self.ino),
            reason,
        };
        if self.mode == Mode::Free {
            if self.nlink != 0 || self.size != 0 || self.nblocks != 0 {
                return Err(bad("free inode with links, size or blocks"));
            }
            if self.indirect != 0 || self.direct.iter().any(|&b| b != 0) {
                return Err(bad("free inode with block pointers"));
            }
            return Ok(());
        }
        if self.size > MAX_FILE_SIZE {
            return Err(bad("size beyond the maximum file size"));
        }
        if u64::from(self.nblocks) > MAX_FILE_BLOCKS + 1 {
            return Err(bad("more blocks than a file can map"));
        }
        if self.mode == Mode::Dir && !self.size.is_multiple_of(BLOCK_SIZE as u64) {
            return Err(bad("directory size is not a whole number of blocks"));
        }
        Ok(())
    }

    /// Decodes and verifies the 256-byte slot of inode `ino`.
    pub fn decode(slot: &[u8], ino: u32) -> Result<Self, FsError> {
        let what = Meta::Inode(ino);
        if slot.len() != INODE_SIZE {
            return Err(FsError::BufferSize {
                expected: INODE_SIZE,
                got: slot.len(),
            });
        }
        let magic = get_u16(slot, 0);
        if magic != INODE_MAGIC {
            return Err(FsError::BadMagic {
                what,
                found: magic.into(),
            });
        }
        let stored = get_u32(slot, INODE_CRC_OFF);
        let computed = crc32c(&slot[..INODE_CRC_OFF]);
        if stored != computed {
            return Err(FsError::BadChecksum {
                what,
                stored,
                computed,
            });
        }
        let bad = |reason| FsError::Corrupt { what, reason };
        if slot[2] != INODE_VERSION {
            return Err(bad("unknown inode version"));
        }
        let mode = Mode::from_u8(slot[3]).ok_or(bad("unknown mode"))?;
        if get_u32(slot, 48) != ino {
            return Err(bad("slot holds another inode's number (misdirected write)"));
        }
        let mut direct = [0u32; NDIRECT];
        for (i, d) in direct.iter_mut().enumerate() {
            *d = get_u32(slot, 56 + 4 * i);
        }
        let core = Self {
            ino,
            mode,
            nlink: get_u32(slot, 4),
            size: get_u64(slot, 8),
            atime: get_u64(slot, 16),
            mtime: get_u64(slot, 24),
            ctime: get_u64(slot, 32),
            generation: get_u32(slot, 40),
            nblocks: get_u32(slot, 44),
            direct,
            indirect: get_u32(slot, 52),
        };
        core.check()?;
        Ok(core)
    }

    /// Encodes into a 256-byte slot. Refuses a core that `decode` would
    /// reject, so nothing unreadable is ever written.
    pub fn encode(&self, slot: &mut [u8]) -> Result<(), FsError> {
        if slot.len() != INODE_SIZE {
            return Err(FsError::BufferSize {
                expected: INODE_SIZE,
                got: slot.len(),
            });
        }
        self.check()?;
        slot.fill(0);
        put_u16(slot, 0, INODE_MAGIC);
        slot[2] = INODE_VERSION;
        slot[3] = self.mode as u8;
        put_u32(slot, 4, self.nlink);
        put_u64(slot, 8, self.size);
        put_u64(slot, 16, self.atime);
        put_u64(slot, 24, self.mtime);
        put_u64(slot, 32, self.ctime);
        put_u32(slot, 40, self.generation);
        put_u32(slot, 44, self.nblocks);
        put_u32(slot, 48, self.ino);
        put_u32(slot, 52, self.indirect);
        for (i, &d) in self.direct.iter().enumerate() {
            put_u32(slot, 56 + 4 * i, d);
        }
        let crc = crc32c(&slot[..INODE_CRC_OFF]);
        put_u32(slot, INODE_CRC_OFF, crc);
        Ok(())
    }

    /// Decodes inode `ino` from its cluster block.
    pub fn decode_in_cluster(cluster: &[u8], ino: u32) -> Result<Self, FsError> {
        check_buf(cluster.len())?;
        let off = ino_offset_in_cluster(ino);
        Self::decode(&cluster[off..off + INODE_SIZE], ino)
    }

    /// Encodes this inode into its slot of a cluster block.
    pub fn encode_in_cluster(&self, cluster: &mut [u8]) -> Result<(), FsError> {
        check_buf(cluster.len())?;
        let off = ino_offset_in_cluster(self.ino);
        self.encode(&mut cluster[off..off + INODE_SIZE])
    }
}

// ---------------------------------------------------------------------------
// Block mapping

/// Where the pointer for a file block lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapSlot {
    /// Index into [`InodeCore::direct`].
    Direct(usize),
    /// Index of the u32 pointer in the indirect block.
    Indirect(usize),
}

/// Which pointer maps `file_block` of inode `ino`.
pub fn map_slot(ino: u32, file_block: u64) -> Result<MapSlot, FsError> {
    if file_block < NDIRECT as u64 {
        Ok(MapSlot::Direct(file_block as usize))
    } else if file_block < MAX_FILE_BLOCKS {
        Ok(MapSlot::Indirect(file_block as usize - NDIRECT))
    } else {
        Err(FsError::FileTooBig { ino, file_block })
    }
}

/// Entry `idx` of an indirect block.
pub fn indirect_entry(buf: &[u8], idx: usize) -> Result<u32, FsError> {
    check_buf(buf.len())?;
    if idx >= PTRS_PER_INDIRECT {
        return Err(FsError::BadBlockNumber {
            blk: idx as u64,
            reason: "index beyond the indirect block",
        });
    }
    Ok(get_u32(buf, idx * 4))
}

/// Sets entry `idx` of an indirect block.
pub fn set_indirect_entry(buf: &mut [u8], idx: usize, blk: u32) -> Result<(), FsError> {
    check_buf(buf.len())?;
    if idx >= PTRS_PER_INDIRECT {
        return Err(FsError::BadBlockNumber {
            blk: idx as u64,
            reason: "index beyond the indirect block",
        });
    }
    put_u32(buf, idx * 4, blk);
    Ok(())
}

/// Checks a block pointer held by `ino` (indirect blocks have no header of
/// their own, so a pointer outside the data area is how their corruption
/// shows).
pub fn check_pointer(geo: &Geometry, ino: u32, blk: u64) -> Result<(), FsError> {
    if geo.is_data_block(blk) {
        Ok(())
    } else {
        Err(FsError::Corrupt {
            what: Meta::Inode(ino),
            reason: "block pointer outside the data area",
        })
    }
}

/// Maps `file_block` of `inode` to a filesystem block, `None` for a hole.
/// `read_indirect(blk, idx)` returns entry `idx` of indirect block `blk`; it
/// is called only for file blocks past the direct pointers, so the caller
/// decides how (and whether) to read the block: from the device, from a
/// buffer cache, without allocating.
pub fn bmap(
    geo: &Geometry,
    inode: &InodeCore,
    file_block: u64,
    read_indirect: impl FnOnce(u64, usize) -> Result<u32, FsError>,
) -> Result<Option<u64>, FsError> {
    let ptr = match map_slot(inode.ino, file_block)? {
        MapSlot::Direct(i) => inode.direct[i],
        MapSlot::Indirect(i) => {
            if inode.indirect == 0 {
                return Ok(None);
            }
            check_pointer(geo, inode.ino, inode.indirect.into())?;
            read_indirect(inode.indirect.into(), i)?
        }
    };
    if ptr == 0 {
        return Ok(None);
    }
    check_pointer(geo, inode.ino, ptr.into())?;
    Ok(Some(ptr.into()))
}

// ---------------------------------------------------------------------------
// AG headers

fn bit(bits: &[u8], i: u32) -> bool {
    bits[(i / 8) as usize] & (1 << (i % 8)) != 0
}

fn set_bit(bits: &mut [u8], i: u32, v: bool) {
    let b = &mut bits[(i / 8) as usize];
    if v {
        *b |= 1 << (i % 8);
    } else {
        *b &= !(1 << (i % 8));
    }
}

/// First clear bit in `from..to`, skipping full bytes.
fn find_clear(bits: &[u8], from: u32, to: u32) -> Option<u32> {
    let mut i = from;
    while i < to {
        let byte = bits[(i / 8) as usize];
        if i.is_multiple_of(8) && byte == 0xff {
            i += 8;
            continue;
        }
        if byte & (1 << (i % 8)) == 0 {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn count_clear(bits: &[u8], n: u32) -> u32 {
    (0..n).filter(|&i| !bit(bits, i)).count() as u32
}

/// An AG header block, viewed in place in a caller's buffer. Mutating
/// methods keep the free counters and the checksum up to date, so the buffer
/// can be written back as it is.
pub struct AgHeader<B> {
    buf: B,
    ag: u32,
    ag_blocks: u32,
    inodes: u32,
    data_start: u32,
}

impl<B: AsRef<[u8]>> AgHeader<B> {
    /// Views a header without verifying it (for one already verified).
    pub(crate) fn view(buf: B, geo: &Geometry, ag: u32) -> Self {
        Self {
            buf,
            ag,
            ag_blocks: geo.ag_blocks,
            inodes: geo.inodes_per_ag(),
            data_start: geo.data_start(),
        }
    }

    fn crc(b: &[u8]) -> u32 {
        Crc32c::new()
            .update(&b[..AGH_CRC_OFF])
            .update(&b[AGH_CRC_OFF + 4..])
            .finish()
    }

    /// Verifies the header of AG `ag` in `buf` and views it.
    pub fn load(buf: B, geo: &Geometry, ag: u32) -> Result<Self, FsError> {
        let what = Meta::AgHeader(ag);
        let b = buf.as_ref();
        check_buf(b.len())?;
        let magic = get_u32(b, 0);
        if magic != AGH_MAGIC {
            return Err(FsError::BadMagic { what, found: magic });
        }
        let stored = get_u32(b, AGH_CRC_OFF);
        let computed = Self::crc(b);
        if stored != computed {
            return Err(FsError::BadChecksum {
                what,
                stored,
                computed,
            });
        }
        let bad = |reason| FsError::Corrupt { what, reason };
        if get_u32(b, 4) != ag {
            return Err(bad("header of another AG"));
        }
        if get_u32(b, 8) != geo.ag_blocks || get_u32(b, 12) != geo.clusters_per_ag {
            return Err(bad("AG size disagrees with the superblock"));
        }
        if get_u32(b, 16) > geo.data_blocks_per_ag() || get_u32(b, 20) > geo.inodes_per_ag() {
            return Err(bad("free counter larger than the AG"));
        }
        Ok(Self::view(buf, geo, ag))
    }

    /// The AG number this header belongs to.
    pub fn ag(&self) -> u32 {
        self.ag
    }

    fn ibits(&self) -> &[u8] {
        &self.buf.as_ref()[AGH_IBITMAP_OFF..AGH_BBITMAP_OFF]
    }

    fn bbits(&self) -> &[u8] {
        &self.buf.as_ref()[AGH_BBITMAP_OFF..]
    }

    /// The free-block counter in the header.
    pub fn free_blocks(&self) -> u32 {
        get_u32(self.buf.as_ref(), 16)
    }

    /// The free-inode counter in the header.
    pub fn free_inodes(&self) -> u32 {
        get_u32(self.buf.as_ref(), 20)
    }

    /// Whether AG-relative block `rel` is marked used (false beyond the AG).
    pub fn block_used(&self, rel: u32) -> bool {
        rel < self.ag_blocks && bit(self.bbits(), rel)
    }

    /// Whether AG-relative inode `agino` is marked used (false beyond the AG).
    pub fn inode_used(&self, agino: u32) -> bool {
        agino < self.inodes && bit(self.ibits(), agino)
    }

    /// Free blocks counted in the bitmap (fsck compares with the counter).
    pub fn count_free_blocks(&self) -> u32 {
        count_clear(self.bbits(), self.ag_blocks)
    }

    /// Free inodes counted in the bitmap.
    pub fn count_free_inodes(&self) -> u32 {
        count_clear(self.ibits(), self.inodes)
    }

    /// Whether any bit past the end of the AG's blocks or inodes is set.
    pub fn stray_bits(&self) -> bool {
        let over = |bits: &[u8], n: u32| (n..(bits.len() * 8) as u32).any(|i| bit(bits, i));
        over(self.bbits(), self.ag_blocks) || over(self.ibits(), self.inodes)
    }

    /// The header block as it stands, to write back.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Gives back the buffer the header was viewed in.
    pub fn into_inner(self) -> B {
        self.buf
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> AgHeader<B> {
    /// Formats a fresh header for AG `ag`: everything free except the
    /// superblock, header and inode cluster blocks.
    pub fn format(mut buf: B, geo: &Geometry, ag: u32) -> Result<Self, FsError> {
        let b = buf.as_mut();
        check_buf(b.len())?;
        b.fill(0);
        put_u32(b, 0, AGH_MAGIC);
        put_u32(b, 4, ag);
        put_u32(b, 8, geo.ag_blocks);
        put_u32(b, 12, geo.clusters_per_ag);
        put_u32(b, 16, geo.data_blocks_per_ag());
        put_u32(b, 20, geo.inodes_per_ag());
        for rel in 0..geo.data_start() {
            set_bit(&mut b[AGH_BBITMAP_OFF..], rel, true);
        }
        let mut h = Self::view(buf, geo, ag);
        h.seal();
        Ok(h)
    }

    fn seal(&mut self) {
        let crc = Self::crc(self.buf.as_ref());
        put_u32(self.buf.as_mut(), AGH_CRC_OFF, crc);
    }

    fn add_counter(&mut self, off: usize, delta: i32) {
        let b = self.buf.as_mut();
        let v = get_u32(b, off).wrapping_add_signed(delta);
        put_u32(b, off, v);
    }

    /// Finds a free data block at or after AG-relative `goal` (wrapping to
    /// the start of the data area), marks it used and returns it.
    pub fn alloc_block(&mut self, goal: u32) -> Result<u32, FsError> {
        let (start, end) = (self.data_start, self.ag_blocks);
        let goal = if (start..end).contains(&goal) {
            goal
        } else {
            start
        };
        let bits = &self.buf.as_ref()[AGH_BBITMAP_OFF..];
        let rel = find_clear(bits, goal, end)
            .or_else(|| find_clear(bits, start, goal))
            .ok_or(FsError::NoSpace { ag: self.ag })?;
        set_bit(&mut self.buf.as_mut()[AGH_BBITMAP_OFF..], rel, true);
        self.add_counter(16, -1);
        self.seal();
        Ok(rel)
    }

    /// Marks a used data block free. `blk` is the absolute number, for errors.
    pub fn free_block(&mut self, rel: u32, blk: u64) -> Result<(), FsError> {
        if rel < self.data_start || rel >= self.ag_blocks {
            return Err(FsError::BadBlockNumber {
                blk,
                reason: "not a data block of this AG",
            });
        }
        if !self.block_used(rel) {
            return Err(FsError::BlockNotAllocated { blk });
        }
        set_bit(&mut self.buf.as_mut()[AGH_BBITMAP_OFF..], rel, false);
        self.add_counter(16, 1);
        self.seal();
        Ok(())
    }

    /// Finds a free inode, marks it used and returns its AG-relative number.
    pub fn alloc_inode(&mut self) -> Result<u32, FsError> {
        let bits = &self.buf.as_ref()[AGH_IBITMAP_OFF..AGH_BBITMAP_OFF];
        let agino =
            find_clear(bits, 0, self.inodes).ok_or(FsError::NoFreeInodes { ag: self.ag })?;
        self.mark_inode_used(agino);
        Ok(agino)
    }

    /// Marks a used inode free.
    pub fn free_inode(&mut self, agino: u32) -> Result<(), FsError> {
        let ino = make_ino(self.ag, agino);
        if agino >= self.inodes || ino == RESERVED_INO {
            return Err(FsError::BadInodeNumber { ino });
        }
        if !self.inode_used(agino) {
            return Err(FsError::InodeNotAllocated { ino });
        }
        set_bit(
            &mut self.buf.as_mut()[AGH_IBITMAP_OFF..AGH_BBITMAP_OFF],
            agino,
            false,
        );
        self.add_counter(20, 1);
        self.seal();
        Ok(())
    }

    /// Marks a free inode used (mkfs reserves inode 0 and the root this way).
    pub(crate) fn mark_inode_used(&mut self, agino: u32) {
        if agino < self.inodes && !self.inode_used(agino) {
            set_bit(
                &mut self.buf.as_mut()[AGH_IBITMAP_OFF..AGH_BBITMAP_OFF],
                agino,
                true,
            );
            self.add_counter(20, -1);
            self.seal();
        }
    }
}

/// Checks that `buf` is exactly one block.
pub(crate) fn check_buf(len: usize) -> Result<(), FsError> {
    if len == BLOCK_SIZE {
        Ok(())
    } else {
        Err(FsError::BufferSize {
            expected: BLOCK_SIZE,
            got: len,
        })
    }
}
