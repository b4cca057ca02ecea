//! The file operations of a mounted filesystem: root/iget/stat, lookup,
//! readdir, create, read, write, truncate and unlink (the VFS-facing part
//! of XFS, `xfs_iops.c`/`xfs_inode.c`'s callers, over the inode cache,
//! buffer cache and transactions).
//!
//! Locking, top down: a modifying operation allocates its `Transaction`
//! (GFP_KERNEL, nothing held; then the NOFS scope if the policy has one),
//! takes the ILOCK of the inode(s) it works on (exclusive; the second inode
//! of create/unlink with subclass [`ILOCK_CHILD`]), then per-AG `xfs_agf`
//! for allocations, then one buffer lock at a time. Read-only operations
//! (lookup, readdir, read, stat) take the ILOCK shared. Every allocation made
//! while an ILOCK is held uses `policy.gfp_under_ilock` — buffer pages and
//! objects on a cache miss, in-core inodes — so lockdep's `might_alloc`
//! sees exactly what the policy does.
//!
//! Deviations from XFS, on purpose:
//! - No log. Data, directory, indirect and AG-header blocks are written
//!   through when changed; inode cores are written back later by the
//!   flusher, a cluster at a time. Only a clean unmount leaves a consistent
//!   disk (fsck-clean); a crash can lose inode updates.
//! - No page cache: file data goes through the buffer cache.
//! - Two of XFS's three inode locks: the IOLOCK (`i_rwsem`) serialises data
//!   IO (reads shared, writes and truncates exclusive) and the ILOCK guards
//!   the inode's core and block map; there is no MMAPLOCK, as there is no
//!   mmap.
//! - Unlinked inodes are freed on disk when their last reference goes
//!   (inactivation in `InodeRef`'s drop); an error there is printed and
//!   counted and the inode stays allocated (fsck would report it). Lack of
//!   memory is never that error: freeing allocates with `__GFP_NOFAIL`.
//! - The flusher walks the per-AG indexes for dirty clusters instead of
//!   keeping an AIL.

use super::dir::{self};
use super::format::{BLOCK_SIZE, FileType, InodeCore, MAX_FILE_SIZE, Mode, ino_to_ag};
use super::icache::{I_UNLINKED, ILOCK_CHILD, InodeRef, RacePoint};
use super::state::Fs;
use super::trans::Transaction;
use super::{FsError, Meta};
use core::sync::atomic::Ordering;

/// What [`Fs::stat`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Inode number.
    pub ino: u32,
    /// File or directory.
    pub ftype: FileType,
    /// Size in bytes.
    pub size: u64,
    /// Link count.
    pub nlink: u32,
    /// Data and indirect blocks held.
    pub nblocks: u32,
    /// The slot's generation (see [`InodeCore::generation`](super::InodeCore::generation)).
    pub generation: u32,
    /// Last access time, in nanoseconds.
    pub atime: u64,
    /// Last data modification time, in nanoseconds.
    pub mtime: u64,
    /// Last inode change time, in nanoseconds.
    pub ctime: u64,
}

fn now() -> u64 {
    crate::time::now_ns()
}

impl Fs {
    // -- Inodes --------------------------------------------------------------

    /// A reference to the root directory.
    pub fn root(&self) -> Result<InodeRef, FsError> {
        self.iget(self.sb.root_ino)
    }

    /// A reference to inode `ino`; `InodeNotAllocated` for a free slot.
    /// Call it with no ILOCK held.
    pub fn iget(&self, ino: u32) -> Result<InodeRef, FsError> {
        let r = self.make_ref(self.iget_inner(ino, self.gfp(), None)?);
        if r.inode().ilock.down_read().mode == Mode::Free {
            return Err(FsError::InodeNotAllocated { ino });
        }
        Ok(r)
    }

    /// The inode's attributes, read under a shared ILOCK.
    pub fn stat(&self, inode: &InodeRef) -> Result<Stat, FsError> {
        self.check_live()?;
        let c = inode.inode().ilock.down_read();
        let ftype = c
            .mode
            .file_type()
            .ok_or(FsError::InodeNotAllocated { ino: c.ino })?;
        Ok(Stat {
            ino: c.ino,
            ftype,
            size: c.size,
            nlink: c.nlink,
            nblocks: c.nblocks,
            generation: c.generation,
            atime: c.atime,
            mtime: c.mtime,
            ctime: c.ctime,
        })
    }

    fn want_dir(c: &InodeCore) -> Result<(), FsError> {
        match c.mode {
            Mode::Dir => Ok(()),
            Mode::File => Err(FsError::NotADirectory { ino: c.ino }),
            Mode::Free => Err(FsError::InodeNotAllocated { ino: c.ino }),
        }
    }

    fn want_file(c: &InodeCore) -> Result<(), FsError> {
        match c.mode {
            Mode::File => Ok(()),
            Mode::Dir => Err(FsError::IsADirectory { ino: c.ino }),
            Mode::Free => Err(FsError::InodeNotAllocated { ino: c.ino }),
        }
    }

    // -- Operations ----------------------------------------------------------

    /// Looks `name` up in `dir` (ILOCK shared; a directory block that is
    /// not cached is read into a buffer allocated with `gfp_under_ilock`).
    /// The inode is taken after the directory's ILOCK is dropped, so an
    /// unlink can remove the name and free the inode in between; then the
    /// name is looked up again (`None` if it is gone). An entry that names
    /// a free inode twice in a row is corruption, reported as the error.
    pub fn lookup(&self, dir: &InodeRef, name: &str) -> Result<Option<InodeRef>, FsError> {
        self.check_live()?;
        dir::check_name(name.as_bytes())?;
        let mut freed = None;
        loop {
            let found = {
                let g = dir.inode().ilock.down_read();
                Self::want_dir(&g)?;
                self.dir_lookup(&g, name.as_bytes())?
            };
            let Some((ino, _)) = found else {
                return Ok(None);
            };
            self.run_race_hook(ino, RacePoint::LookupFound);
            match self.iget(ino) {
                Err(FsError::InodeNotAllocated { .. }) if freed != Some(ino) => freed = Some(ino),
                r => return r.map(Some),
            }
        }
    }

    /// Calls `f(name, ino, type)` for every entry of `dir`; returns the
    /// number of entries. The seed's path: for each directory block the
    /// directory's ILOCK is taken shared and, if the block is not in the
    /// buffer cache, a buffer is allocated with `gfp_under_ilock` while it
    /// is held. As XFS's getdents, the ILOCK is dropped before the entries
    /// of a block are handed to `f` (filldir may fault and allocate), so `f`
    /// runs with no filesystem lock held. Entries added or removed while it
    /// runs may or may not be seen.
    pub fn readdir(
        &self,
        dir: &InodeRef,
        f: &mut dyn FnMut(&str, u32, FileType),
    ) -> Result<usize, FsError> {
        self.check_live()?;
        let mut n = 0;
        let mut copy = [0u8; BLOCK_SIZE];
        let mut fb = 0;
        loop {
            let ino = {
                let g = dir.inode().ilock.down_read();
                Self::want_dir(&g)?;
                if fb >= g.size_blocks() {
                    return Ok(n);
                }
                let bp = self.dir_buf(&g, fb)?;
                let bg = self.dir_lock(&bp, g.ino)?;
                copy.copy_from_slice(bg.data());
                g.ino
            };
            for e in dir::dir_entries(&copy) {
                let e = e?;
                let name = core::str::from_utf8(e.name).map_err(|_| FsError::Corrupt {
                    what: Meta::Inode(ino),
                    reason: "directory entry name is not UTF-8",
                })?;
                f(name, e.ino, e.ftype);
                n += 1;
            }
            fb += 1;
        }
    }

    /// Creates `name` in `dir` as a new empty file or directory. The inode
    /// goes to `dir`'s AG (a new directory to the next AG in turn), then
    /// the following AGs.
    pub fn create(&self, dir: &InodeRef, name: &str, ftype: FileType) -> Result<InodeRef, FsError> {
        self.check_live()?;
        let name = name.as_bytes();
        dir::check_name(name)?;
        let mut tp = Transaction::alloc(self)?;
        let dip = dir.inode();
        let mut dg = dip.ilock.down_write();
        Self::want_dir(&dg)?;
        if self.dir_lookup(&dg, name)?.is_some() {
            return Err(FsError::NameExists);
        }
        let ag = match ftype {
            FileType::Dir => {
                self.dir_rotor.fetch_add(1, Ordering::Relaxed) % self.sb.geometry.ag_count
            }
            FileType::File => ino_to_ag(dg.ino),
        };
        let ino = self.alloc_inode(ag)?;
        let ip_ptr = match self.iget_inner(ino, self.gfp(), Some(ftype)) {
            Ok(p) => p,
            Err(e) => {
                let _ = self.free_inode_bit(ino);
                return Err(e);
            }
        };
        let iref = self.make_ref(ip_ptr);
        let ip = iref.inode();
        let mut ig = ip.ilock.down_write_nested(ILOCK_CHILD);
        if ig.mode != Mode::Free {
            return Err(FsError::Corrupt {
                what: Meta::Inode(ino),
                reason: "in use but free in the inode bitmap",
            });
        }
        let generation = ig.generation;
        let t = now();
        *ig = InodeCore::new(ino, ftype.mode(), generation, t);
        ig.nlink = 1;
        ip.clear(I_UNLINKED);
        tp.log_inode(ip);
        let r = self.dir_add(&mut dg, name, ino, ftype);
        if r.is_err() {
            *ig = InodeCore::free(ino, generation);
            let _ = self.free_inode_bit(ino);
        } else {
            dg.mtime = t;
            dg.ctime = t;
        }
        tp.log_inode(dip);
        tp.commit();
        drop(ig);
        drop(dg);
        r.map(|()| iref)
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns the number read
    /// (0 at or past the end). Holes read as zeros. As XFS: the IOLOCK is
    /// held shared for the whole read (writes and truncates hold it
    /// exclusive) and the ILOCK only while mapping a block, so the data
    /// buffers are allocated and read with no ILOCK held.
    pub fn read(&self, file: &InodeRef, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        self.check_live()?;
        let _io = file.inode().iolock.down_read();
        let size = {
            let g = file.inode().ilock.down_read();
            Self::want_file(&g)?;
            g.size
        };
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let n = (size - offset).min(buf.len() as u64) as usize;
        let bs = BLOCK_SIZE as u64;
        let mut done = 0;
        while done < n {
            let pos = offset + done as u64;
            let (fb, off) = (pos / bs, (pos % bs) as usize);
            let len = (BLOCK_SIZE - off).min(n - done);
            let out = &mut buf[done..done + len];
            let mapped = {
                let g = file.inode().ilock.down_read();
                self.bmap(&g, fb)?
            };
            match mapped {
                None => out.fill(0),
                Some(blk) => {
                    let bp = self.buf_get(blk, self.gfp())?;
                    let bg = bp.lock_read()?;
                    out.copy_from_slice(&bg.data()[off..off + len]);
                }
            }
            done += len;
        }
        Ok(n)
    }

    /// Writes `data` at `offset`, allocating blocks as needed (written
    /// through); the size grows to cover it. Returns the bytes written: all
    /// of them, or fewer if an error stopped it part way (`Err` if none).
    pub fn write(&self, file: &InodeRef, offset: u64, data: &[u8]) -> Result<usize, FsError> {
        self.check_live()?;
        if data.is_empty() {
            return Ok(0);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooBig {
                ino: file.ino(),
                file_block: (offset + data.len() as u64).div_ceil(BLOCK_SIZE as u64),
            })?;
        let _ = end;
        let ip = file.inode();
        let _io = ip.iolock.down_write();
        let mut tp = Transaction::alloc(self)?;
        let mut g = ip.ilock.down_write();
        Self::want_file(&g)?;
        let bs = BLOCK_SIZE as u64;
        let mut done = 0;
        let mut err = None;
        while done < data.len() {
            let pos = offset + done as u64;
            let (fb, off) = (pos / bs, (pos % bs) as usize);
            let len = (BLOCK_SIZE - off).min(data.len() - done);
            let src = &data[done..done + len];
            let r = self.write_file_block(&mut g, fb, off == 0 && len == BLOCK_SIZE, |b| {
                b[off..off + len].copy_from_slice(src)
            });
            if let Err(e) = r {
                err = Some(e);
                break;
            }
            done += len;
        }
        if done > 0 {
            let t = now();
            g.size = g.size.max(offset + done as u64);
            g.mtime = t;
            g.ctime = t;
        }
        tp.log_inode(ip);
        tp.commit();
        drop(g);
        match err {
            Some(e) if done == 0 => Err(e),
            _ => Ok(done),
        }
    }

    /// Sets the size; blocks wholly past a smaller size are freed.
    pub fn truncate(&self, file: &InodeRef, size: u64) -> Result<(), FsError> {
        self.check_live()?;
        if size > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig {
                ino: file.ino(),
                file_block: size.div_ceil(BLOCK_SIZE as u64),
            });
        }
        let ip = file.inode();
        let _io = ip.iolock.down_write();
        let mut tp = Transaction::alloc(self)?;
        let mut g = ip.ilock.down_write();
        Self::want_file(&g)?;
        let r = if size < g.size {
            self.truncate_blocks(&mut g, size)
        } else {
            g.size = size;
            Ok(())
        };
        let t = now();
        g.mtime = t;
        g.ctime = t;
        tp.log_inode(ip);
        tp.commit();
        r
    }

    /// Removes `name` from `dir` and drops a link; the inode and its blocks
    /// are freed on disk when no link and no reference is left. A directory
    /// must be empty.
    pub fn unlink(&self, dir: &InodeRef, name: &str) -> Result<(), FsError> {
        self.check_live()?;
        let name = name.as_bytes();
        dir::check_name(name)?;
        let mut tp = Transaction::alloc(self)?;
        let dip = dir.inode();
        let dg = dip.ilock.down_write();
        Self::want_dir(&dg)?;
        let (ino, _) = self.dir_lookup(&dg, name)?.ok_or(FsError::NotFound)?;
        let iref = self.make_ref(self.iget_inner(ino, self.gfp(), None)?);
        let r = (|| -> Result<(), FsError> {
            let ip = iref.inode();
            let mut ig = ip.ilock.down_write_nested(ILOCK_CHILD);
            if ig.mode == Mode::Dir && !self.dir_is_empty(&ig)? {
                return Err(FsError::DirNotEmpty { ino });
            }
            self.dir_remove(&dg, name)?;
            let t = now();
            ig.nlink = ig.nlink.saturating_sub(1);
            ig.ctime = t;
            if ig.nlink == 0 {
                ip.set(I_UNLINKED);
            }
            tp.log_inode(dip);
            tp.log_inode(ip);
            Ok(())
        })();
        if r.is_ok() {
            tp.commit();
        } else {
            drop(tp);
        }
        drop(dg);
        // The last reference (usually this one) frees the inode on disk.
        drop(iref);
        r
    }
}
