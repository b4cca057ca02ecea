//! Block mapping (XFS's `xfs_bmap.c`, with direct and indirect pointers
//! instead of extents): file block to disk block, mapping new blocks,
//! writing one file block and truncating. Callers hold the inode's ILOCK.

use super::FsError;
use super::format::{
    BLOCK_SIZE, InodeCore, MapSlot, NDIRECT, PTRS_PER_INDIRECT, check_pointer, indirect_entry,
    ino_to_ag, map_slot, set_indirect_entry,
};
use super::state::Fs;

impl Fs {
    // -- Block mapping (under the inode's ILOCK) -----------------------------

    pub(super) fn bmap(&self, core: &InodeCore, fb: u64) -> Result<Option<u64>, FsError> {
        super::format::bmap(&self.sb.geometry, core, fb, |ind, idx| {
            let bp = self.buf_get(ind, self.gfp())?;
            let g = bp.lock_read()?;
            indirect_entry(g.data(), idx)
        })
    }

    pub(super) fn goal(&self, core: &InodeCore, fb: u64) -> u64 {
        let geo = &self.sb.geometry;
        if fb > 0
            && let Ok(Some(prev)) = self.bmap(core, fb - 1)
        {
            return prev + 1;
        }
        geo.ag_start(ino_to_ag(core.ino)) + u64::from(geo.data_start())
    }

    /// Points hole `fb` of `core` at `blk` (already written), allocating
    /// the indirect block if needed.
    pub(super) fn map_new(&self, core: &mut InodeCore, fb: u64, blk: u64) -> Result<(), FsError> {
        match map_slot(core.ino, fb)? {
            MapSlot::Direct(i) => {
                core.direct[i] = blk as u32;
                core.nblocks += 1;
            }
            MapSlot::Indirect(i) if core.indirect == 0 => {
                let ind = self.alloc_block(blk + 1)?;
                let r = self.buf_get(ind, self.gfp()).and_then(|bp| {
                    let mut g = bp.lock_new();
                    set_indirect_entry(g.data_mut(), i, blk as u32)?;
                    g.write()
                });
                if let Err(e) = r {
                    let _ = self.free_block(ind);
                    return Err(e);
                }
                core.indirect = ind as u32;
                core.nblocks += 2;
            }
            MapSlot::Indirect(i) => {
                let ind = u64::from(core.indirect);
                check_pointer(&self.sb.geometry, core.ino, ind)?;
                let bp = self.buf_get(ind, self.gfp())?;
                let mut g = bp.lock_read()?;
                set_indirect_entry(g.data_mut(), i, blk as u32)?;
                g.write()?;
                core.nblocks += 1;
            }
        }
        Ok(())
    }

    /// Writes file block `fb` of `core`: `fill` edits the block's data
    /// (zeros for a new block; the old contents unless `whole`).
    pub(super) fn write_file_block(
        &self,
        core: &mut InodeCore,
        fb: u64,
        whole: bool,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), FsError> {
        if let Some(blk) = self.bmap(core, fb)? {
            let bp = self.buf_get(blk, self.gfp())?;
            let mut g = if whole {
                bp.lock_new()
            } else {
                bp.lock_read()?
            };
            fill(g.data_mut());
            return g.write();
        }
        map_slot(core.ino, fb)?;
        let blk = self.alloc_block(self.goal(core, fb))?;
        let r = self
            .buf_get(blk, self.gfp())
            .and_then(|bp| {
                let mut g = bp.lock_new();
                fill(g.data_mut());
                g.write()
            })
            .and_then(|()| self.map_new(core, fb, blk));
        if let Err(e) = r {
            let _ = self.free_block(blk);
            return Err(e);
        }
        Ok(())
    }

    /// Frees the blocks wholly past `new_size` and sets the size. Pointers
    /// are cleared before blocks are freed, so an error leaks at worst.
    pub(super) fn truncate_blocks(
        &self,
        core: &mut InodeCore,
        new_size: u64,
    ) -> Result<(), FsError> {
        let bs = BLOCK_SIZE as u64;
        let keep = new_size.div_ceil(bs);
        if new_size < core.size
            && !new_size.is_multiple_of(bs)
            && let Some(blk) = self.bmap(core, keep - 1)?
        {
            // Zero the tail so that growing the file again reads zeros.
            let bp = self.buf_get(blk, self.gfp_nofail())?;
            let mut g = bp.lock_read()?;
            g.data_mut()[(new_size % bs) as usize..].fill(0);
            g.write()?;
        }
        let from = keep.min(NDIRECT as u64) as usize;
        for i in from..NDIRECT {
            let b = core.direct[i];
            if b != 0 {
                core.direct[i] = 0;
                core.nblocks = core.nblocks.saturating_sub(1);
                self.free_block(b.into())?;
            }
        }
        if core.indirect != 0 {
            let ind = u64::from(core.indirect);
            check_pointer(&self.sb.geometry, core.ino, ind)?;
            let first = keep
                .saturating_sub(NDIRECT as u64)
                .min(PTRS_PER_INDIRECT as u64) as usize;
            let mut ents = [0u32; PTRS_PER_INDIRECT];
            {
                let bp = self.buf_get(ind, self.gfp_nofail())?;
                let mut g = bp.lock_read()?;
                for (idx, e) in ents.iter_mut().enumerate().skip(first) {
                    *e = indirect_entry(g.data(), idx)?;
                }
                if first > 0 && ents[first..].iter().any(|&e| e != 0) {
                    for idx in first..PTRS_PER_INDIRECT {
                        set_indirect_entry(g.data_mut(), idx, 0)?;
                    }
                    g.write()?;
                }
            }
            if first == 0 {
                core.indirect = 0;
                core.nblocks = core.nblocks.saturating_sub(1);
            }
            for &e in &ents[first..] {
                if e != 0 {
                    core.nblocks = core.nblocks.saturating_sub(1);
                    self.free_block(e.into())?;
                }
            }
            if first == 0 {
                self.free_block(ind)?;
            }
        }
        core.size = new_size;
        Ok(())
    }
}
