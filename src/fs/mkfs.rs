//! mkfs: lays a fresh filesystem on a device.
//!
//! Like mkfs.xfs, the AG count follows the size: 4 AGs when the device holds
//! at least four minimum-size AGs (64 blocks each), fewer on smaller devices,
//! more when 4 would exceed the largest AG a header bitmap can describe. AGs
//! are all the same size; the few blocks left over at the end are unused.
//! Inode clusters default to one per 32 AG blocks (one inode per 8 KiB).

use super::blockdev::BlockDevice;
use super::dir;
use super::format::{
    AG_FIRST_CLUSTER, AgHeader, BLOCK_SIZE, Geometry, INODES_PER_CLUSTER, InodeCore, MAX_AG_BLOCKS,
    MAX_AGS, MAX_CLUSTERS_PER_AG, MIN_AG_BLOCKS, Mode, RESERVED_INO, ROOT_INO, Superblock,
    ino_to_agino, make_ino,
};
use super::{FsError, check_buf};

/// Choices mkfs would otherwise make from the device size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MkfsOptions {
    /// Use only this many blocks of the device.
    pub blocks: Option<u64>,
    /// Number of AGs; by default up to 4, more if the device needs them.
    pub ag_count: Option<u32>,
    /// Inode clusters per AG; by default one per 32 AG blocks.
    pub clusters_per_ag: Option<u32>,
}

/// The geometry mkfs picks for `blocks` blocks.
pub fn choose_geometry(blocks: u64, opts: &MkfsOptions) -> Result<Geometry, FsError> {
    let too_small = FsError::BadGeometry {
        reason: "device smaller than one minimum-size AG (64 blocks)",
    };
    let fitting = blocks / u64::from(MIN_AG_BLOCKS);
    if fitting == 0 {
        return Err(too_small);
    }
    let needed = blocks.div_ceil(u64::from(MAX_AG_BLOCKS));
    let ag_count = match opts.ag_count {
        Some(n) => u64::from(n),
        None => fitting.min(4).max(needed),
    };
    if ag_count == 0 || ag_count > u64::from(MAX_AGS) {
        return Err(FsError::BadGeometry {
            reason: "AG count must be 1..=256",
        });
    }
    let ag_blocks = (blocks / ag_count).min(u64::from(MAX_AG_BLOCKS)) as u32;
    let clusters = opts
        .clusters_per_ag
        .unwrap_or((ag_blocks / 32).clamp(1, MAX_CLUSTERS_PER_AG));
    Geometry::new(ag_count as u32, ag_blocks, clusters)
}

/// Makes a filesystem on `dev`: superblock (and a copy at the start of each
/// AG), AG headers, every inode cluster (all slots free), and the root
/// directory (inode 1, one empty block). The primary superblock is written
/// last, so an interrupted mkfs does not leave a mountable filesystem.
pub fn mkfs(dev: &dyn BlockDevice, opts: MkfsOptions) -> Result<Geometry, FsError> {
    if dev.block_size() != BLOCK_SIZE {
        return Err(FsError::BadGeometry {
            reason: "device block size is not 4096",
        });
    }
    let blocks = match opts.blocks {
        Some(b) if b > dev.nr_blocks() => {
            return Err(FsError::BadGeometry {
                reason: "more blocks requested than the device has",
            });
        }
        Some(b) => b,
        None => dev.nr_blocks(),
    };
    let geo = choose_geometry(blocks, &opts)?;
    let mut buf = [0u8; BLOCK_SIZE];
    let write = |blk: u64, buf: &[u8]| {
        dev.write_block(blk, buf)
            .map_err(|err| FsError::Io { blk, err })
    };

    let mut root_blk = 0;
    for ag in 0..geo.ag_count {
        let mut h = AgHeader::format(&mut buf[..], &geo, ag)?;
        if ag == 0 {
            h.mark_inode_used(ino_to_agino(RESERVED_INO));
            h.mark_inode_used(ino_to_agino(ROOT_INO));
            root_blk = geo.ag_start(0) + u64::from(h.alloc_block(geo.data_start())?);
        }
        write(geo.ag_header_block(ag), &buf)?;

        for cluster in 0..geo.clusters_per_ag {
            for slot in 0..INODES_PER_CLUSTER {
                let ino = make_ino(ag, cluster * INODES_PER_CLUSTER + slot);
                let core = if ino == ROOT_INO {
                    let mut root = InodeCore::new(ino, Mode::Dir, 0, crate::time::now_ns());
                    root.nlink = 1;
                    root.size = BLOCK_SIZE as u64;
                    root.nblocks = 1;
                    root.direct[0] = root_blk as u32;
                    root
                } else {
                    InodeCore::free(ino, 0)
                };
                core.encode_in_cluster(&mut buf)?;
            }
            write(
                geo.ag_start(ag) + u64::from(AG_FIRST_CLUSTER + cluster),
                &buf,
            )?;
        }
    }

    dir::dir_init(&mut buf, ROOT_INO)?;
    write(root_blk, &buf)?;

    let sb = Superblock {
        geometry: geo,
        root_ino: ROOT_INO,
        clean: true,
    };
    sb.write_to(&mut buf)?;
    for ag in (0..geo.ag_count).rev() {
        write(geo.ag_start(ag), &buf)?;
    }
    dev.flush().map_err(|err| FsError::Io { blk: 0, err })?;
    Ok(geo)
}

/// Reads the primary superblock of `dev` (a convenience for tools and tests).
pub fn read_superblock(dev: &dyn BlockDevice, buf: &mut [u8]) -> Result<Superblock, FsError> {
    check_buf(buf.len())?;
    dev.read_block(0, buf)
        .map_err(|err| FsError::Io { blk: 0, err })?;
    Superblock::read_from(buf)
}
