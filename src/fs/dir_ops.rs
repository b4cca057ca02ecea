//! Directory entries of a mounted filesystem (XFS's `xfs_dir2.c`): lookup,
//! add and remove a name and check emptiness over the directory blocks of
//! [`super::dir`], read through the buffer cache. Callers hold the
//! directory's ILOCK.

use super::buf::{BufGuard, BufRef};
use super::dir::{self, DIRENTS_PER_BLOCK};
use super::format::{BLOCK_SIZE, FileType, InodeCore, map_slot};
use super::state::Fs;
use super::{FsError, Meta};

impl Fs {
    // -- Directories (under the directory's ILOCK) ----------------------------

    pub(super) fn dir_buf(&self, dir: &InodeCore, fb: u64) -> Result<BufRef<'_>, FsError> {
        let blk = self.bmap(dir, fb)?.ok_or(FsError::Corrupt {
            what: Meta::Inode(dir.ino),
            reason: "hole in a directory",
        })?;
        self.buf_get(blk, self.gfp())
    }

    pub(super) fn dir_lock<'b>(
        &self,
        bp: &'b BufRef<'_>,
        dir: u32,
    ) -> Result<BufGuard<'b>, FsError> {
        let mut g = bp.lock_read()?;
        if !g.verified() {
            dir::dir_verify(g.data(), dir, bp.blkno())?;
            g.set_verified();
        }
        Ok(g)
    }

    pub(super) fn dir_lookup(
        &self,
        dir: &InodeCore,
        name: &[u8],
    ) -> Result<Option<(u32, FileType)>, FsError> {
        for fb in 0..dir.size_blocks() {
            let bp = self.dir_buf(dir, fb)?;
            let g = self.dir_lock(&bp, dir.ino)?;
            if let Some(found) = dir::dir_lookup(g.data(), name)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    pub(super) fn dir_add(
        &self,
        dir: &mut InodeCore,
        name: &[u8],
        ino: u32,
        ftype: FileType,
    ) -> Result<(), FsError> {
        for fb in 0..dir.size_blocks() {
            let bp = self.dir_buf(dir, fb)?;
            let mut g = self.dir_lock(&bp, dir.ino)?;
            if dir::dir_free_slots(g.data())? > 0 {
                dir::dir_add(g.data_mut(), name, ino, ftype)?;
                return g.write();
            }
        }
        let fb = dir.size_blocks();
        map_slot(dir.ino, fb)?;
        let blk = self.alloc_block(self.goal(dir, fb))?;
        let owner = dir.ino;
        let r = self.buf_get(blk, self.gfp()).and_then(|bp| {
            let mut g = bp.lock_new();
            dir::dir_init(g.data_mut(), owner)?;
            dir::dir_add(g.data_mut(), name, ino, ftype)?;
            g.write()?;
            g.set_verified();
            Ok(())
        });
        let old = dir.size;
        let r = r.and_then(|()| {
            dir.size = (fb + 1) * BLOCK_SIZE as u64;
            self.map_new(dir, fb, blk)
        });
        if let Err(e) = r {
            dir.size = old;
            let _ = self.free_block(blk);
            return Err(e);
        }
        Ok(())
    }

    pub(super) fn dir_remove(
        &self,
        dir: &InodeCore,
        name: &[u8],
    ) -> Result<(u32, FileType), FsError> {
        for fb in 0..dir.size_blocks() {
            let bp = self.dir_buf(dir, fb)?;
            let mut g = self.dir_lock(&bp, dir.ino)?;
            if let Some(found) = dir::dir_remove(g.data_mut(), name)? {
                g.write()?;
                return Ok(found);
            }
        }
        Err(FsError::NotFound)
    }

    pub(super) fn dir_is_empty(&self, dir: &InodeCore) -> Result<bool, FsError> {
        for fb in 0..dir.size_blocks() {
            let bp = self.dir_buf(dir, fb)?;
            let g = self.dir_lock(&bp, dir.ino)?;
            if dir::dir_free_slots(g.data())? != DIRENTS_PER_BLOCK {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
