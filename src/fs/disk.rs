//! A small synchronous filesystem API straight on the block device, with no
//! caches: allocate and free inodes and blocks, read and write inode cores
//! and file blocks, and edit directories. Tests use it directly; the
//! in-memory layer (inode and buffer caches) reuses its pieces.
//!
//! Nothing here allocates. Every call takes its scratch space from the
//! caller as one-block buffers (`&mut [u8]` of 4096 bytes; at most two per
//! call), so it is safe under reclaim and in NOFS scopes.
//!
//! There is no journal, so a multi-block update that fails part way (an IO
//! error) cannot always be undone. The order of writes keeps such failures
//! harmless: a block is written before anything points to it and is
//! unreferenced before it is freed, so a failure can leak a block (fsck
//! reports it) but never leaves a block both free and referenced. Simple
//! failures are rolled back, so fsck stays clean.
//!
//! Not thread-safe by itself: two callers updating the same AG header or
//! inode cluster at once would lose one update. The caching layer serialises
//! per AG and per inode; tests call it from one task.

use super::blockdev::BlockDevice;
use super::dir;
use super::format::{
    AgHeader, BLOCK_SIZE, FileType, Geometry, InodeCore, MapSlot, Mode, NDIRECT, PTRS_PER_INDIRECT,
    Superblock, indirect_entry, ino_to_ag, ino_to_agino, ino_to_cluster_block, make_ino, map_slot,
    set_indirect_entry,
};
use super::{FsError, Meta, check_buf};

/// An open filesystem on a device: the superblock, and the device.
pub struct Disk<'d> {
    dev: &'d dyn BlockDevice,
    sb: Superblock,
}

impl<'d> Disk<'d> {
    /// Reads and verifies the superblock.
    pub fn open(dev: &'d dyn BlockDevice, buf: &mut [u8]) -> Result<Self, FsError> {
        check_buf(buf.len())?;
        if dev.block_size() != BLOCK_SIZE {
            return Err(FsError::BadGeometry {
                reason: "device block size is not 4096",
            });
        }
        dev.read_block(0, buf)
            .map_err(|err| FsError::Io { blk: 0, err })?;
        let sb = Superblock::read_from(buf)?;
        if dev.nr_blocks() < sb.geometry.total_blocks {
            return Err(FsError::BadGeometry {
                reason: "device is smaller than the filesystem",
            });
        }
        Ok(Self { dev, sb })
    }

    /// The filesystem's geometry, from the superblock.
    pub fn geometry(&self) -> &Geometry {
        &self.sb.geometry
    }

    /// The superblock as read (and verified) by [`open`](Self::open).
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The underlying device.
    pub fn device(&self) -> &'d dyn BlockDevice {
        self.dev
    }

    /// Reads filesystem block `blk` (range-checked).
    pub fn read_block(&self, blk: u64, buf: &mut [u8]) -> Result<(), FsError> {
        check_buf(buf.len())?;
        self.check_blk(blk)?;
        self.dev
            .read_block(blk, buf)
            .map_err(|err| FsError::Io { blk, err })
    }

    /// Writes filesystem block `blk` (range-checked).
    pub fn write_block(&self, blk: u64, buf: &[u8]) -> Result<(), FsError> {
        check_buf(buf.len())?;
        self.check_blk(blk)?;
        self.dev
            .write_block(blk, buf)
            .map_err(|err| FsError::Io { blk, err })
    }

    fn check_blk(&self, blk: u64) -> Result<(), FsError> {
        if blk < self.sb.geometry.total_blocks {
            Ok(())
        } else {
            Err(FsError::BadBlockNumber {
                blk,
                reason: "beyond the end of the filesystem",
            })
        }
    }

    /// Sets the clean-unmount flag in the primary superblock.
    pub fn set_clean(&mut self, clean: bool, buf: &mut [u8]) -> Result<(), FsError> {
        let sb = Superblock { clean, ..self.sb };
        sb.write_to(buf)?;
        self.write_block(0, buf)?;
        self.dev
            .flush()
            .map_err(|err| FsError::Io { blk: 0, err })?;
        self.sb = sb;
        Ok(())
    }

    // -- AG headers ---------------------------------------------------------

    /// Reads and verifies AG `ag`'s header into `buf`.
    pub fn read_ag_header<'b>(
        &self,
        ag: u32,
        buf: &'b mut [u8],
    ) -> Result<AgHeader<&'b mut [u8]>, FsError> {
        let geo = self.sb.geometry;
        if ag >= geo.ag_count {
            return Err(FsError::BadAg { ag });
        }
        self.read_block(geo.ag_header_block(ag), buf)?;
        AgHeader::load(buf, &geo, ag)
    }

    /// Writes back a header read with [`read_ag_header`](Self::read_ag_header).
    pub fn write_ag_header(&self, h: &AgHeader<&mut [u8]>) -> Result<(), FsError> {
        self.write_block(self.sb.geometry.ag_header_block(h.ag()), h.as_bytes())
    }

    // -- Inodes -------------------------------------------------------------

    /// Reads inode `ino`'s core (free or not).
    pub fn read_inode(&self, ino: u32, buf: &mut [u8]) -> Result<InodeCore, FsError> {
        let geo = &self.sb.geometry;
        geo.check_ino(ino)?;
        self.read_block(ino_to_cluster_block(geo, ino), buf)?;
        InodeCore::decode_in_cluster(buf, ino)
    }

    /// Writes `inode` into its slot (read-modify-write of its cluster).
    pub fn write_inode(&self, inode: &InodeCore, buf: &mut [u8]) -> Result<(), FsError> {
        let geo = &self.sb.geometry;
        geo.check_ino(inode.ino)?;
        let blk = ino_to_cluster_block(geo, inode.ino);
        self.read_block(blk, buf)?;
        inode.encode_in_cluster(buf)?;
        self.write_block(blk, buf)
    }

    /// Allocates an inode in AG `ag` and writes it as a new empty inode of
    /// `mode` with no links. The caller links it into a directory.
    pub fn alloc_inode(&self, ag: u32, mode: Mode, buf: &mut [u8]) -> Result<InodeCore, FsError> {
        if mode == Mode::Free {
            return Err(FsError::InvalidMode);
        }
        let mut h = self.read_ag_header(ag, buf)?;
        let agino = h.alloc_inode()?;
        self.write_ag_header(&h)?;
        let ino = make_ino(ag, agino);
        let res = self.read_inode(ino, buf).and_then(|old| {
            if old.is_allocated() {
                return Err(FsError::Corrupt {
                    what: Meta::Inode(ino),
                    reason: "in use but free in the inode bitmap",
                });
            }
            let new = InodeCore::new(ino, mode, old.generation, crate::time::now_ns());
            self.write_inode(&new, buf)?;
            Ok(new)
        });
        if res.is_err() {
            let _ = self.unmark_inode(ino, buf);
        }
        res
    }

    /// [`alloc_inode`](Self::alloc_inode) in AG `start`, then in the others
    /// in turn; `Err(NoFreeInodes { ag: start })` when every AG is full.
    pub fn alloc_inode_any(
        &self,
        start: u32,
        mode: Mode,
        buf: &mut [u8],
    ) -> Result<InodeCore, FsError> {
        let n = self.sb.geometry.ag_count;
        for i in 0..n {
            match self.alloc_inode((start % n + i) % n, mode, buf) {
                Err(FsError::NoFreeInodes { .. }) => continue,
                other => return other,
            }
        }
        Err(FsError::NoFreeInodes { ag: start % n })
    }

    fn unmark_inode(&self, ino: u32, buf: &mut [u8]) -> Result<(), FsError> {
        let mut h = self.read_ag_header(ino_to_ag(ino), buf)?;
        h.free_inode(ino_to_agino(ino))?;
        self.write_ag_header(&h)
    }

    /// Frees inode `ino`, which must be allocated and hold no blocks
    /// ([`truncate`](Self::truncate) it to 0 first). Its generation is bumped.
    pub fn free_inode(&self, ino: u32, buf: &mut [u8]) -> Result<(), FsError> {
        let old = self.read_inode(ino, buf)?;
        if !old.is_allocated() {
            return Err(FsError::InodeNotAllocated { ino });
        }
        if old.nblocks != 0 {
            return Err(FsError::InodeHasBlocks {
                ino,
                nblocks: old.nblocks,
            });
        }
        self.write_inode(&InodeCore::free(ino, old.generation.wrapping_add(1)), buf)?;
        if let Err(e) = self.unmark_inode(ino, buf) {
            let _ = self.write_inode(&old, buf);
            return Err(e);
        }
        Ok(())
    }

    // -- Blocks -------------------------------------------------------------

    /// Allocates a data block in AG `ag`, at or after `goal` if `goal` is in
    /// that AG. `Err(NoSpace { ag })` when the AG is full.
    pub fn alloc_block_in_ag(&self, ag: u32, goal: u64, buf: &mut [u8]) -> Result<u64, FsError> {
        let geo = self.sb.geometry;
        let goal_rel = if goal < geo.total_blocks && geo.block_ag(goal) == ag {
            geo.block_rel(goal)
        } else {
            geo.data_start()
        };
        let mut h = self.read_ag_header(ag, buf)?;
        let rel = h.alloc_block(goal_rel)?;
        self.write_ag_header(&h)?;
        Ok(geo.ag_start(ag) + u64::from(rel))
    }

    /// Allocates a data block as close after `goal` as possible: in goal's
    /// AG, then in the following AGs. `Err(FsFull)` when every AG is full.
    pub fn alloc_block(&self, goal: u64, buf: &mut [u8]) -> Result<u64, FsError> {
        let geo = self.sb.geometry;
        let first = if goal < geo.total_blocks {
            geo.block_ag(goal)
        } else {
            0
        };
        for i in 0..geo.ag_count {
            let ag = (first + i) % geo.ag_count;
            match self.alloc_block_in_ag(ag, goal, buf) {
                Err(FsError::NoSpace { .. }) => continue,
                other => return other,
            }
        }
        Err(FsError::FsFull)
    }

    /// Frees data block `blk`; `Err(BlockNotAllocated)` on a double free.
    pub fn free_block(&self, blk: u64, buf: &mut [u8]) -> Result<(), FsError> {
        let geo = self.sb.geometry;
        geo.check_data_block(blk)?;
        let mut h = self.read_ag_header(geo.block_ag(blk), buf)?;
        h.free_block(geo.block_rel(blk), blk)?;
        self.write_ag_header(&h)
    }

    // -- File data ----------------------------------------------------------

    /// The block mapping `file_block` of `inode` (`None`: a hole). `buf`
    /// holds the indirect block if one is read.
    pub fn bmap(
        &self,
        inode: &InodeCore,
        file_block: u64,
        buf: &mut [u8],
    ) -> Result<Option<u64>, FsError> {
        super::format::bmap(&self.sb.geometry, inode, file_block, |ind, idx| {
            self.read_block(ind, buf)?;
            indirect_entry(buf, idx)
        })
    }

    /// Reads file block `file_block` into `buf`; a hole reads as zeros and
    /// returns `false`.
    pub fn read_file_block(
        &self,
        inode: &InodeCore,
        file_block: u64,
        buf: &mut [u8],
    ) -> Result<bool, FsError> {
        check_buf(buf.len())?;
        match self.bmap(inode, file_block, buf)? {
            Some(blk) => {
                self.read_block(blk, buf)?;
                Ok(true)
            }
            None => {
                buf.fill(0);
                Ok(false)
            }
        }
    }

    /// Where to look for a new block for `file_block`: after the block
    /// before it, else at the start of the inode's AG.
    fn goal(&self, inode: &InodeCore, file_block: u64, buf: &mut [u8]) -> u64 {
        let geo = &self.sb.geometry;
        if file_block > 0
            && let Ok(Some(prev)) = self.bmap(inode, file_block - 1, buf)
        {
            return prev + 1;
        }
        geo.ag_start(ino_to_ag(inode.ino)) + u64::from(geo.data_start())
    }

    /// Writes one block of file data, allocating it (and the indirect block)
    /// if `file_block` is a hole; the mapping change is written to the inode
    /// and to `inode`. Returns the filesystem block. Does not change `size`.
    pub fn write_file_block(
        &self,
        inode: &mut InodeCore,
        file_block: u64,
        data: &[u8],
        scratch: &mut [u8],
    ) -> Result<u64, FsError> {
        check_buf(data.len())?;
        check_buf(scratch.len())?;
        if !inode.is_allocated() {
            return Err(FsError::InodeNotAllocated { ino: inode.ino });
        }
        map_slot(inode.ino, file_block)?;
        if let Some(blk) = self.bmap(inode, file_block, scratch)? {
            self.write_block(blk, data)?;
            return Ok(blk);
        }
        let goal = self.goal(inode, file_block, scratch);
        let blk = self.alloc_block(goal, scratch)?;
        let res = self
            .write_block(blk, data)
            .and_then(|()| self.map_new_block(inode, file_block, blk, scratch));
        if let Err(e) = res {
            let _ = self.free_block(blk, scratch);
            return Err(e);
        }
        Ok(blk)
    }

    /// Points `file_block` (a hole) of `inode` at `blk`, whose contents are
    /// already written, allocating the indirect block if needed, and writes
    /// the inode. On error nothing refers to `blk` (the caller frees it) and
    /// `inode` is unchanged.
    fn map_new_block(
        &self,
        inode: &mut InodeCore,
        file_block: u64,
        blk: u64,
        buf: &mut [u8],
    ) -> Result<(), FsError> {
        let old = *inode;
        let mut new_indirect = None;
        match map_slot(inode.ino, file_block)? {
            MapSlot::Direct(i) => {
                inode.direct[i] = blk as u32;
                inode.nblocks += 1;
            }
            MapSlot::Indirect(i) if inode.indirect == 0 => {
                let ind = self.alloc_block(blk + 1, buf)?;
                buf.fill(0);
                set_indirect_entry(buf, i, blk as u32)?;
                if let Err(e) = self.write_block(ind, buf) {
                    let _ = self.free_block(ind, buf);
                    return Err(e);
                }
                new_indirect = Some(ind);
                inode.indirect = ind as u32;
                inode.nblocks += 2;
            }
            MapSlot::Indirect(i) => {
                let ind = u64::from(inode.indirect);
                self.read_block(ind, buf)?;
                set_indirect_entry(buf, i, blk as u32)?;
                self.write_block(ind, buf)?;
                inode.nblocks += 1;
            }
        }
        if let Err(e) = self.write_inode(inode, buf) {
            *inode = old;
            match (new_indirect, map_slot(old.ino, file_block)) {
                (Some(ind), _) => {
                    let _ = self.free_block(ind, buf);
                }
                (None, Ok(MapSlot::Indirect(i))) => {
                    let ind = u64::from(old.indirect);
                    let _ = self
                        .read_block(ind, buf)
                        .and_then(|()| set_indirect_entry(buf, i, 0))
                        .and_then(|()| self.write_block(ind, buf));
                }
                _ => {}
            }
            return Err(e);
        }
        Ok(())
    }

    /// Sets `inode`'s size to `new_size` and frees the blocks wholly past
    /// it; writes the inode. Pointers are cleared on disk before the blocks
    /// are freed, so an IO error part way leaks blocks at worst. On error
    /// `inode` may be stale: read it again.
    pub fn truncate(
        &self,
        inode: &mut InodeCore,
        new_size: u64,
        a: &mut [u8],
        b: &mut [u8],
    ) -> Result<(), FsError> {
        check_buf(a.len())?;
        check_buf(b.len())?;
        if !inode.is_allocated() {
            return Err(FsError::InodeNotAllocated { ino: inode.ino });
        }
        if new_size > super::format::MAX_FILE_SIZE {
            return Err(FsError::FileTooBig {
                ino: inode.ino,
                file_block: new_size.div_ceil(BLOCK_SIZE as u64),
            });
        }
        let keep = new_size.div_ceil(BLOCK_SIZE as u64);
        let old_direct = inode.direct;
        for i in (keep.min(NDIRECT as u64) as usize)..NDIRECT {
            if inode.direct[i] != 0 {
                inode.direct[i] = 0;
                inode.nblocks = inode.nblocks.saturating_sub(1);
            }
        }
        // Indirect: `b` keeps the old entries to free afterwards.
        let ind = u64::from(inode.indirect);
        let first = keep
            .saturating_sub(NDIRECT as u64)
            .min(PTRS_PER_INDIRECT as u64) as usize;
        let mut drop_indirect = false;
        let mut drop_entries = false;
        if ind != 0 {
            super::format::check_pointer(&self.sb.geometry, inode.ino, ind)?;
            self.read_block(ind, b)?;
            let mut n = 0;
            for idx in first..PTRS_PER_INDIRECT {
                if indirect_entry(b, idx)? != 0 {
                    n += 1;
                }
            }
            if first == 0 {
                drop_indirect = true;
                inode.indirect = 0;
                inode.nblocks = inode.nblocks.saturating_sub(n + 1);
            } else if n > 0 {
                drop_entries = true;
                a.copy_from_slice(b);
                for idx in first..PTRS_PER_INDIRECT {
                    set_indirect_entry(a, idx, 0)?;
                }
                self.write_block(ind, a)?;
                inode.nblocks = inode.nblocks.saturating_sub(n);
            }
        }
        inode.size = new_size;
        self.write_inode(inode, a)?;
        // Everything below is unreferenced now.
        for &blk in &old_direct[(keep.min(NDIRECT as u64) as usize)..] {
            if blk != 0 {
                self.free_block(blk.into(), a)?;
            }
        }
        if drop_indirect || drop_entries {
            for idx in first..PTRS_PER_INDIRECT {
                let e = indirect_entry(b, idx)?;
                if e != 0 {
                    self.free_block(e.into(), a)?;
                }
            }
        }
        if drop_indirect {
            self.free_block(ind, a)?;
        }
        Ok(())
    }

    // -- Directories --------------------------------------------------------

    /// Reads directory block `file_block` of `dir` into `buf` and verifies
    /// it; returns its filesystem block.
    fn read_dir_block(
        &self,
        dir: &InodeCore,
        file_block: u64,
        buf: &mut [u8],
    ) -> Result<u64, FsError> {
        let blk = self.bmap(dir, file_block, buf)?.ok_or(FsError::Corrupt {
            what: Meta::Inode(dir.ino),
            reason: "hole in a directory",
        })?;
        self.read_block(blk, buf)?;
        dir::dir_verify(buf, dir.ino, blk)?;
        Ok(blk)
    }

    fn check_dir(dir: &InodeCore) -> Result<(), FsError> {
        if dir.mode == Mode::Dir {
            Ok(())
        } else {
            Err(FsError::NotADirectory { ino: dir.ino })
        }
    }

    /// Looks `name` up in directory `dir`.
    pub fn lookup(
        &self,
        dir: &InodeCore,
        name: &[u8],
        buf: &mut [u8],
    ) -> Result<Option<(u32, FileType)>, FsError> {
        Self::check_dir(dir)?;
        for fb in 0..dir.size_blocks() {
            self.read_dir_block(dir, fb, buf)?;
            if let Some(found) = dir::dir_lookup(buf, name)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Adds `name -> ino` to directory `dir`, growing it by a block if every
    /// block is full (the new size is written to `dir`'s inode). Does not
    /// touch `ino`'s link count.
    pub fn link(
        &self,
        dir: &mut InodeCore,
        name: &[u8],
        ino: u32,
        ftype: FileType,
        buf: &mut [u8],
    ) -> Result<(), FsError> {
        Self::check_dir(dir)?;
        dir::check_name(name)?;
        self.sb.geometry.check_ino(ino)?;
        let mut room = None;
        for fb in 0..dir.size_blocks() {
            let blk = self.read_dir_block(dir, fb, buf)?;
            if dir::dir_lookup(buf, name)?.is_some() {
                return Err(FsError::NameExists);
            }
            if room.is_none() && dir::dir_free_slots(buf)? > 0 {
                room = Some(blk);
            }
        }
        if let Some(blk) = room {
            self.read_block(blk, buf)?;
            dir::dir_add(buf, name, ino, ftype)?;
            return self.write_block(blk, buf);
        }
        let fb = dir.size_blocks();
        map_slot(dir.ino, fb)?;
        let goal = self.goal(dir, fb, buf);
        let blk = self.alloc_block(goal, buf)?;
        let old_size = dir.size;
        let res = dir::dir_init(buf, dir.ino)
            .and_then(|()| dir::dir_add(buf, name, ino, ftype))
            .and_then(|_| self.write_block(blk, buf))
            .and_then(|()| {
                dir.size = (fb + 1) * BLOCK_SIZE as u64;
                self.map_new_block(dir, fb, blk, buf)
            });
        if let Err(e) = res {
            dir.size = old_size;
            let _ = self.free_block(blk, buf);
            return Err(e);
        }
        Ok(())
    }

    /// Removes `name` from directory `dir`; returns what it named. Does not
    /// touch that inode's link count. Emptied blocks stay in the directory.
    pub fn unlink(
        &self,
        dir: &InodeCore,
        name: &[u8],
        buf: &mut [u8],
    ) -> Result<(u32, FileType), FsError> {
        Self::check_dir(dir)?;
        for fb in 0..dir.size_blocks() {
            let blk = self.read_dir_block(dir, fb, buf)?;
            if let Some(found) = dir::dir_remove(buf, name)? {
                self.write_block(blk, buf)?;
                return Ok(found);
            }
        }
        Err(FsError::NotFound)
    }

    /// Whether directory `dir` has no entries.
    pub fn dir_is_empty(&self, dir: &InodeCore, buf: &mut [u8]) -> Result<bool, FsError> {
        Self::check_dir(dir)?;
        for fb in 0..dir.size_blocks() {
            self.read_dir_block(dir, fb, buf)?;
            if dir::dir_free_slots(buf)? != dir::DIRENTS_PER_BLOCK {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Creates `name` in `dir` as a new inode of `mode` (in `dir`'s AG if it
    /// has room) with one link. A new directory has no blocks until its
    /// first entry.
    pub fn create(
        &self,
        dir: &mut InodeCore,
        name: &[u8],
        mode: Mode,
        buf: &mut [u8],
    ) -> Result<InodeCore, FsError> {
        Self::check_dir(dir)?;
        dir::check_name(name)?;
        if self.lookup(dir, name, buf)?.is_some() {
            return Err(FsError::NameExists);
        }
        let ftype = mode.file_type().ok_or(FsError::InvalidMode)?;
        let mut inode = self.alloc_inode_any(ino_to_ag(dir.ino), mode, buf)?;
        inode.nlink = 1;
        let res = self
            .write_inode(&inode, buf)
            .and_then(|()| self.link(dir, name, inode.ino, ftype, buf));
        if let Err(e) = res {
            let _ = self.write_inode(&InodeCore { nlink: 0, ..inode }, buf);
            let _ = self.free_inode(inode.ino, buf);
            return Err(e);
        }
        Ok(inode)
    }

    /// Removes `name` from `dir` and drops a link from its inode, freeing
    /// the inode and its blocks when no link is left. A directory must be
    /// empty.
    pub fn remove(
        &self,
        dir: &InodeCore,
        name: &[u8],
        a: &mut [u8],
        b: &mut [u8],
    ) -> Result<(), FsError> {
        Self::check_dir(dir)?;
        let (ino, _) = self.lookup(dir, name, a)?.ok_or(FsError::NotFound)?;
        let mut inode = self.read_inode(ino, a)?;
        if inode.mode == Mode::Dir && !self.dir_is_empty(&inode, a)? {
            return Err(FsError::DirNotEmpty { ino });
        }
        self.unlink(dir, name, a)?;
        inode.nlink = inode.nlink.saturating_sub(1);
        if inode.nlink > 0 {
            return self.write_inode(&inode, a);
        }
        self.truncate(&mut inode, 0, a, b)?;
        self.free_inode(ino, a)
    }
}
