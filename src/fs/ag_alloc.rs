//! Block and inode allocation (XFS's `xfs_alloc.c` and `xfs_ialloc.c`,
//! much simplified): data blocks and inodes are bits in each AG header's
//! bitmaps, changed under the per-AG lock `xfs_agf` and written through.

use super::FsError;
use super::format::{AgHeader, ino_to_ag, make_ino};
use super::state::Fs;
use crate::mm::gfp::Gfp;

impl Fs {
    // -- AG allocation (under xfs_agf) ---------------------------------------

    pub(super) fn agh_update<R>(
        &self,
        ag: u32,
        f: impl FnOnce(&mut AgHeader<&mut [u8]>) -> Result<R, FsError>,
    ) -> Result<R, FsError> {
        self.agh_update_gfp(ag, self.gfp(), f)
    }

    pub(super) fn agh_update_gfp<R>(
        &self,
        ag: u32,
        gfp: Gfp,
        f: impl FnOnce(&mut AgHeader<&mut [u8]>) -> Result<R, FsError>,
    ) -> Result<R, FsError> {
        let geo = self.sb.geometry;
        let _agf = self.perags[ag as usize].agf.lock();
        let bp = self.buf_get(geo.ag_header_block(ag), gfp)?;
        let mut g = bp.lock_read()?;
        let r = {
            let mut h = AgHeader::load(g.data_mut(), &geo, ag)?;
            f(&mut h)?
        };
        g.write()?;
        Ok(r)
    }

    pub(super) fn alloc_block(&self, goal: u64) -> Result<u64, FsError> {
        let geo = self.sb.geometry;
        let first = if goal < geo.total_blocks {
            geo.block_ag(goal)
        } else {
            0
        };
        for i in 0..geo.ag_count {
            let ag = (first + i) % geo.ag_count;
            let rel_goal = if ag == first && goal < geo.total_blocks {
                geo.block_rel(goal)
            } else {
                0
            };
            match self.agh_update(ag, |h| h.alloc_block(rel_goal)) {
                Err(FsError::NoSpace { .. }) => continue,
                Err(e) => return Err(e),
                Ok(rel) => return Ok(geo.ag_start(ag) + u64::from(rel)),
            }
        }
        Err(FsError::FsFull)
    }

    pub(super) fn free_block(&self, blk: u64) -> Result<(), FsError> {
        let geo = self.sb.geometry;
        geo.check_data_block(blk)?;
        self.agh_update_gfp(geo.block_ag(blk), self.gfp_nofail(), |h| {
            h.free_block(geo.block_rel(blk), blk)
        })
    }

    pub(super) fn alloc_inode(&self, start: u32) -> Result<u32, FsError> {
        let n = self.sb.geometry.ag_count;
        for i in 0..n {
            let ag = (start % n + i) % n;
            match self.agh_update(ag, |h| h.alloc_inode()) {
                Err(FsError::NoFreeInodes { .. }) => continue,
                Err(e) => return Err(e),
                Ok(agino) => return Ok(make_ino(ag, agino)),
            }
        }
        Err(FsError::NoFreeInodes { ag: start % n })
    }

    pub(super) fn free_inode_bit(&self, ino: u32) -> Result<(), FsError> {
        self.agh_update_gfp(ino_to_ag(ino), self.gfp_nofail(), |h| {
            h.free_inode(super::format::ino_to_agino(ino))
        })
    }
}
