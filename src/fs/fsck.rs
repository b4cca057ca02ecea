//! fsck: reads a whole filesystem back and cross-checks it.
//!
//! Checked: every checksum and magic (superblocks, AG headers, inodes,
//! directory blocks); secondary superblocks agree with the primary; the
//! inode bitmap matches inode modes; every block pointer lies in a data
//! area, no block is referenced twice, every referenced block is marked used
//! and every used data block is referenced; each inode's block count; the AG
//! free counters; directory entries name allocated inodes of the recorded
//! type, once per name per directory; link counts (an inode's `nlink` is the
//! number of entries naming it, plus one for the root, which the superblock
//! names); every allocated inode is reachable from the root.
//!
//! fsck is a tool, not an IO path: it allocates its working memory (a map of
//! block owners, one record per inode slot), with `try_reserve`, so running
//! out is [`FsError::NoMemory`], not a panic. Every array that grows with
//! the filesystem (the block owner map, the inode records, the directories,
//! the directory entries, one directory's names) is a `PageArray`: chunks
//! of at most one page, so no allocation is above order 0 and each is "too
//! small to fail" for the page allocator. One contiguous owner map for a
//! 64 MiB device is 64 KiB, an order-4 allocation that the allocator does
//! not retry and that a fragmented 4 MiB machine often cannot serve right
//! after unmount.

use super::blockdev::BlockDevice;
use super::dir::{self, DIR_NAME_MAX};
pub use super::error::Problem;
use super::format::{
    AgHeader, BLOCK_SIZE, Geometry, INODES_PER_CLUSTER, InodeCore, Mode, PTRS_PER_INDIRECT,
    RESERVED_INO, Superblock, bmap, indirect_entry, ino_to_ag, ino_to_agino, ino_to_cluster_block,
    make_ino,
};
use super::{FsError, Meta};
use alloc::vec::Vec;

/// What fsck found: counts, and every problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsckReport {
    /// The geometry from the primary superblock.
    pub geometry: Geometry,
    /// Whether the superblock's clean flag was set (last unmount was clean).
    pub clean_unmount: bool,
    /// Allocated inodes (the reserved inode 0 not counted).
    pub inodes_used: u64,
    /// Allocated regular files.
    pub files: u64,
    /// Allocated directories (the root included).
    pub dirs: u64,
    /// Used directory entries, over all directories.
    pub dir_entries: u64,
    /// Blocks marked used in the AG bitmaps (metadata included).
    pub blocks_used: u64,
    /// Blocks marked free in the AG bitmaps.
    pub blocks_free: u64,
    /// Data and indirect blocks referenced by inodes.
    pub blocks_referenced: u64,
    /// Every inconsistency found, in the order found.
    pub problems: Vec<Problem>,
}

impl FsckReport {
    /// Whether fsck found no problems (says nothing about `clean_unmount`).
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks `dev` and fails unless it is consistent: the `Err` names the
/// first problem and how many there were (each is also logged).
pub fn check(dev: &dyn BlockDevice) -> Result<FsckReport, FsError> {
    let report = fsck(dev)?;
    match report.problems.first() {
        None => Ok(report),
        Some(first) => {
            for p in &report.problems {
                log::warn!("fsck: {p}");
            }
            Err(FsError::Inconsistent {
                problems: report.problems.len(),
                first: crate::mm::global_alloc::try_box(first.clone())
                    .map_err(|_| FsError::NoMemory)?,
            })
        }
    }
}

/// Owner of a block in fsck's map.
const NO_OWNER: u32 = 0;
const METADATA: u32 = u32::MAX;

#[derive(Clone, Copy, Default)]
struct InodeInfo {
    allocated: bool,
    mode: u8,
    nlink: u32,
    names: u32,
    reachable: bool,
}

fn try_vec<T: Clone>(n: usize, v: T) -> Result<Vec<T>, FsError> {
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(|_| FsError::NoMemory)?;
    out.resize(n, v);
    Ok(out)
}

/// Bytes of one [`PageArray`] chunk: a page, so a chunk is an order-0
/// allocation (kmalloc-4k and smaller caches have slabs of order 3 at most).
const CHUNK_BYTES: usize = 4096;

/// A growable array of `Copy` values in chunks of at most one page, indexed
/// like a slice: fsck's working memory never needs a high-order (costly)
/// allocation, however large the filesystem. The table of chunks is
/// 24 bytes per 4 KiB chunk (a page holds the table of a 680-chunk array).
pub(crate) struct PageArray<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T: Copy> PageArray<T> {
    /// Values per chunk (at least one, for values above a page).
    const PER_CHUNK: usize = {
        let n = CHUNK_BYTES / core::mem::size_of::<T>();
        if n == 0 { 1 } else { n }
    };

    /// An empty array (allocates nothing).
    pub(crate) const fn new() -> Self {
        PageArray {
            chunks: Vec::new(),
            len: 0,
        }
    }

    /// `n` copies of `v`.
    pub(crate) fn filled(n: usize, v: T) -> Result<Self, FsError> {
        let mut a = Self::new();
        a.chunks
            .try_reserve_exact(n.div_ceil(Self::PER_CHUNK))
            .map_err(|_| FsError::NoMemory)?;
        while a.len < n {
            let k = (n - a.len).min(Self::PER_CHUNK);
            a.chunks.push(try_vec(k, v)?);
            a.len += k;
        }
        Ok(a)
    }

    /// Number of values.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `v`; `NoMemory` if a new chunk cannot be allocated.
    pub(crate) fn push(&mut self, v: T) -> Result<(), FsError> {
        if self.len.is_multiple_of(Self::PER_CHUNK) {
            let mut c = Vec::new();
            c.try_reserve_exact(Self::PER_CHUNK)
                .map_err(|_| FsError::NoMemory)?;
            self.chunks.try_reserve(1).map_err(|_| FsError::NoMemory)?;
            self.chunks.push(c);
        }
        // The last chunk has room: it was reserved with PER_CHUNK slots.
        if let Some(last) = self.chunks.last_mut() {
            last.push(v);
        }
        self.len += 1;
        Ok(())
    }

    /// Removes and returns the last value (keeps the chunks for reuse).
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        let v = self.chunks[self.len / Self::PER_CHUNK].pop();
        if self.len.is_multiple_of(Self::PER_CHUNK) {
            self.chunks.pop();
        }
        v
    }

    /// Empties the array, keeping no chunk.
    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }

    /// The values in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    /// Swaps values `a` and `b`.
    fn swap(&mut self, a: usize, b: usize) {
        let t = self[a];
        self[a] = self[b];
        self[b] = t;
    }
}

impl<T: Copy + Ord> PageArray<T> {
    /// Sorts in place without allocating (heapsort: the chunks are not one
    /// slice, so `sort_unstable` cannot be used).
    pub(crate) fn sort_unstable(&mut self) {
        fn sift_down<T: Copy + Ord>(a: &mut PageArray<T>, mut root: usize, end: usize) {
            loop {
                let mut child = 2 * root + 1;
                if child >= end {
                    return;
                }
                if child + 1 < end && a[child] < a[child + 1] {
                    child += 1;
                }
                if a[root] >= a[child] {
                    return;
                }
                a.swap(root, child);
                root = child;
            }
        }
        let n = self.len;
        for start in (0..n / 2).rev() {
            sift_down(self, start, n);
        }
        for end in (1..n).rev() {
            self.swap(0, end);
            sift_down(self, 0, end);
        }
    }

    /// Whether two neighbours are equal (after [`sort_unstable`](Self::sort_unstable):
    /// whether any value occurs twice).
    pub(crate) fn has_adjacent_duplicate(&self) -> bool {
        (1..self.len).any(|i| self[i - 1] == self[i])
    }
}

impl<T: Copy> PageArray<T> {
    /// The first index whose value does not satisfy `pred`, for an array
    /// partitioned by `pred` (as `slice::partition_point`).
    pub(crate) fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self[mid]) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

impl<T: Copy> Default for PageArray<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy> core::ops::Index<usize> for PageArray<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        assert!(
            i < self.len,
            "PageArray index {i} out of range ({})",
            self.len
        );
        &self.chunks[i / Self::PER_CHUNK][i % Self::PER_CHUNK]
    }
}

impl<T: Copy> core::ops::IndexMut<usize> for PageArray<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        assert!(
            i < self.len,
            "PageArray index {i} out of range ({})",
            self.len
        );
        &mut self.chunks[i / Self::PER_CHUNK][i % Self::PER_CHUNK]
    }
}

struct Fsck<'a> {
    dev: &'a dyn BlockDevice,
    geo: Geometry,
    problems: Vec<Problem>,
    owners: PageArray<u32>,
    inodes: PageArray<InodeInfo>,
    /// Copies of the usable AG headers (`None`: unusable).
    headers: Vec<Option<Vec<u8>>>,
    /// Allocated directories, from the inode pass.
    dirs: PageArray<InodeCore>,
    /// (parent, child) for every directory entry.
    edges: PageArray<(u32, u32)>,
    buf: Vec<u8>,
    ibuf: Vec<u8>,
    dir_entries: u64,
    blocks_referenced: u64,
    /// A problem could not be recorded for lack of memory: the check
    /// fails with `NoMemory` rather than report fewer problems.
    oom: bool,
}

/// Records a problem (`try_reserve`; sets `oom` if there is no room).
fn note(problems: &mut Vec<Problem>, oom: &mut bool, p: Problem) {
    if problems.try_reserve(1).is_ok() {
        problems.push(p);
    } else {
        *oom = true;
    }
}

/// Reads everything and collects every problem. `Err` only when the
/// filesystem cannot be checked at all: no valid primary superblock, a
/// device IO error, or no memory.
pub fn fsck(dev: &dyn BlockDevice) -> Result<FsckReport, FsError> {
    let mut buf = try_vec(BLOCK_SIZE, 0u8)?;
    if dev.block_size() != BLOCK_SIZE {
        return Err(FsError::BadGeometry {
            reason: "device block size is not 4096",
        });
    }
    dev.read_block(0, &mut buf)
        .map_err(|err| FsError::Io { blk: 0, err })?;
    let sb = Superblock::read_from(&buf)?;
    let geo = sb.geometry;
    if dev.nr_blocks() < geo.total_blocks {
        return Err(FsError::BadGeometry {
            reason: "device is smaller than the filesystem",
        });
    }
    let nr_inodes = geo.ag_count as usize * geo.inodes_per_ag() as usize;
    let mut f = Fsck {
        dev,
        geo,
        problems: Vec::new(),
        owners: PageArray::filled(geo.total_blocks as usize, NO_OWNER)?,
        inodes: PageArray::filled(nr_inodes, InodeInfo::default())?,
        headers: Vec::new(),
        dirs: PageArray::new(),
        edges: PageArray::new(),
        buf,
        ibuf: try_vec(BLOCK_SIZE, 0u8)?,
        dir_entries: 0,
        blocks_referenced: 0,
        oom: false,
    };
    f.superblock_copies()?;
    f.ag_headers()?;
    f.inode_pass()?;
    f.directory_pass(sb.root_ino)?;
    f.link_pass(sb.root_ino);
    let (used, free) = f.bitmap_pass();
    if f.oom {
        return Err(FsError::NoMemory);
    }
    let count = |m: Mode| {
        f.inodes
            .iter()
            .filter(|i| i.allocated && i.mode == m as u8)
            .count() as u64
    };
    Ok(FsckReport {
        geometry: geo,
        clean_unmount: sb.clean,
        inodes_used: f.inodes.iter().filter(|i| i.allocated).count() as u64,
        files: count(Mode::File),
        dirs: count(Mode::Dir),
        dir_entries: f.dir_entries,
        blocks_used: used,
        blocks_free: free,
        blocks_referenced: f.blocks_referenced,
        problems: f.problems,
    })
}

impl Fsck<'_> {
    fn read(&self, blk: u64, buf: &mut [u8]) -> Result<(), FsError> {
        self.dev
            .read_block(blk, buf)
            .map_err(|err| FsError::Io { blk, err })
    }

    fn inode_index(&self, ino: u32) -> usize {
        ino_to_ag(ino) as usize * self.geo.inodes_per_ag() as usize + ino_to_agino(ino) as usize
    }

    fn superblock_copies(&mut self) -> Result<(), FsError> {
        let mut buf = core::mem::take(&mut self.buf);
        for ag in 1..self.geo.ag_count {
            self.read(self.geo.ag_start(ag), &mut buf)?;
            match Superblock::read_from(&buf) {
                Err(err) => note(
                    &mut self.problems,
                    &mut self.oom,
                    Problem::SecondarySuperblock { ag, err },
                ),
                Ok(copy) if copy.geometry != self.geo => note(
                    &mut self.problems,
                    &mut self.oom,
                    Problem::SecondarySuperblock {
                        ag,
                        err: FsError::Corrupt {
                            what: Meta::Superblock,
                            reason: "geometry differs from the primary",
                        },
                    },
                ),
                Ok(_) => {}
            }
        }
        self.buf = buf;
        Ok(())
    }

    fn ag_headers(&mut self) -> Result<(), FsError> {
        for ag in 0..self.geo.ag_count {
            let start = self.geo.ag_start(ag);
            for rel in 0..self.geo.data_start() {
                self.owners[(start + u64::from(rel)) as usize] = METADATA;
            }
            let mut copy = try_vec(BLOCK_SIZE, 0u8)?;
            self.read(self.geo.ag_header_block(ag), &mut copy)?;
            match AgHeader::load(&copy[..], &self.geo, ag) {
                Ok(h) => {
                    let bitmap = h.count_free_blocks();
                    if h.free_blocks() != bitmap {
                        note(
                            &mut self.problems,
                            &mut self.oom,
                            Problem::FreeCounter {
                                ag,
                                what: "blocks",
                                header: h.free_blocks(),
                                bitmap,
                            },
                        );
                    }
                    let bitmap = h.count_free_inodes();
                    if h.free_inodes() != bitmap {
                        note(
                            &mut self.problems,
                            &mut self.oom,
                            Problem::FreeCounter {
                                ag,
                                what: "inodes",
                                header: h.free_inodes(),
                                bitmap,
                            },
                        );
                    }
                    if h.stray_bits() {
                        note(&mut self.problems, &mut self.oom, Problem::StrayBits { ag });
                    }
                    self.headers.try_reserve(1).map_err(|_| FsError::NoMemory)?;
                    self.headers.push(Some(copy));
                }
                Err(err) => {
                    note(
                        &mut self.problems,
                        &mut self.oom,
                        Problem::AgHeader { ag, err },
                    );
                    self.headers.try_reserve(1).map_err(|_| FsError::NoMemory)?;
                    self.headers.push(None);
                }
            }
        }
        Ok(())
    }

    fn header(&self, ag: u32) -> Option<AgHeader<&[u8]>> {
        let bytes = self.headers.get(ag as usize)?.as_deref()?;
        Some(AgHeader::view(bytes, &self.geo, ag))
    }

    /// Records that `ino` references `blk`; false if `blk` is not a data block.
    fn claim(&mut self, ino: u32, blk: u64) -> bool {
        if !self.geo.is_data_block(blk) {
            note(
                &mut self.problems,
                &mut self.oom,
                Problem::BadPointer { ino, blk },
            );
            return false;
        }
        self.blocks_referenced += 1;
        let owner = &mut self.owners[blk as usize];
        if *owner == NO_OWNER {
            *owner = ino;
        } else {
            let first = *owner;
            note(
                &mut self.problems,
                &mut self.oom,
                Problem::DoubleReference {
                    blk,
                    first,
                    second: ino,
                },
            );
        }
        true
    }

    fn inode_pass(&mut self) -> Result<(), FsError> {
        let mut buf = core::mem::take(&mut self.buf);
        let mut dirs_cores = PageArray::new();
        for ag in 0..self.geo.ag_count {
            for cluster in 0..self.geo.clusters_per_ag {
                let first = make_ino(ag, cluster * INODES_PER_CLUSTER);
                self.read(ino_to_cluster_block(&self.geo, first), &mut buf)?;
                for slot in 0..INODES_PER_CLUSTER {
                    let ino = first + slot;
                    let core = match InodeCore::decode_in_cluster(&buf, ino) {
                        Ok(c) => c,
                        Err(err) => {
                            note(
                                &mut self.problems,
                                &mut self.oom,
                                Problem::Inode { ino, err },
                            );
                            continue;
                        }
                    };
                    let bitmap_used = self.header(ag).map(|h| h.inode_used(ino_to_agino(ino)));
                    let expect_used = core.is_allocated() || ino == RESERVED_INO;
                    let reserved_bad = ino == RESERVED_INO && core.is_allocated();
                    if bitmap_used.is_some_and(|u| u != expect_used) || reserved_bad {
                        note(
                            &mut self.problems,
                            &mut self.oom,
                            Problem::InodeBitmap {
                                ino,
                                bitmap_used: bitmap_used.unwrap_or(false),
                                mode: core.mode,
                            },
                        );
                    }
                    if !core.is_allocated() || ino == RESERVED_INO {
                        continue;
                    }
                    let idx = self.inode_index(ino);
                    self.inodes[idx] = InodeInfo {
                        allocated: true,
                        mode: core.mode as u8,
                        nlink: core.nlink,
                        names: 0,
                        reachable: false,
                    };
                    self.inode_blocks(&core)?;
                    if core.mode == Mode::Dir {
                        dirs_cores.push(core)?;
                    }
                }
            }
        }
        self.buf = buf;
        self.dirs = dirs_cores;
        Ok(())
    }

    fn inode_blocks(&mut self, core: &InodeCore) -> Result<(), FsError> {
        let ino = core.ino;
        let mut found = 0u32;
        for &d in &core.direct {
            if d != 0 {
                found += 1;
                self.claim(ino, d.into());
            }
        }
        if core.indirect != 0 {
            found += 1;
            if self.claim(ino, core.indirect.into()) {
                let mut ibuf = core::mem::take(&mut self.ibuf);
                self.read(core.indirect.into(), &mut ibuf)?;
                for idx in 0..PTRS_PER_INDIRECT {
                    let e = indirect_entry(&ibuf, idx)?;
                    if e != 0 {
                        found += 1;
                        self.claim(ino, e.into());
                    }
                }
                self.ibuf = ibuf;
            }
        }
        if found != core.nblocks {
            note(
                &mut self.problems,
                &mut self.oom,
                Problem::BlockCount {
                    ino,
                    recorded: core.nblocks,
                    found,
                },
            );
        }
        Ok(())
    }
}

/// A name as a sortable key: length, then bytes.
type NameKey = (u8, [u8; DIR_NAME_MAX]);

impl Fsck<'_> {
    fn directory_pass(&mut self, root: u32) -> Result<(), FsError> {
        let dirs = core::mem::take(&mut self.dirs);
        let mut buf = core::mem::take(&mut self.buf);
        let mut ibuf = core::mem::take(&mut self.ibuf);
        let mut names: PageArray<NameKey> = PageArray::new();
        for d in dirs.iter() {
            names.clear();
            for fb in 0..d.size_blocks() {
                let mapped = bmap(&self.geo, d, fb, |ind, idx| {
                    self.read(ind, &mut ibuf)?;
                    indirect_entry(&ibuf, idx)
                });
                let blk = match mapped {
                    Ok(Some(b)) => b,
                    Ok(None) => {
                        note(
                            &mut self.problems,
                            &mut self.oom,
                            Problem::Dir {
                                dir: d.ino,
                                err: FsError::Corrupt {
                                    what: Meta::Inode(d.ino),
                                    reason: "hole in a directory",
                                },
                            },
                        );
                        continue;
                    }
                    Err(err @ FsError::Io { .. }) => return Err(err),
                    Err(err) => {
                        note(
                            &mut self.problems,
                            &mut self.oom,
                            Problem::Dir { dir: d.ino, err },
                        );
                        continue;
                    }
                };
                self.read(blk, &mut buf)?;
                if let Err(err) = dir::dir_verify(&buf, d.ino, blk) {
                    note(
                        &mut self.problems,
                        &mut self.oom,
                        Problem::Dir { dir: d.ino, err },
                    );
                    continue;
                }
                for e in dir::dir_entries(&buf).flatten() {
                    self.dir_entries += 1;
                    let bad = |reason| Problem::DirEntry {
                        dir: d.ino,
                        blk,
                        slot: e.slot,
                        ino: e.ino,
                        reason,
                    };
                    if !self.geo.is_valid_ino(e.ino) {
                        note(
                            &mut self.problems,
                            &mut self.oom,
                            bad("names an inode number that does not exist"),
                        );
                        continue;
                    }
                    let idx = self.inode_index(e.ino);
                    let info = self.inodes[idx];
                    if !info.allocated {
                        note(
                            &mut self.problems,
                            &mut self.oom,
                            bad("names a free or unreadable inode"),
                        );
                        continue;
                    }
                    if info.mode != e.ftype as u8 {
                        note(
                            &mut self.problems,
                            &mut self.oom,
                            bad("file type differs from the inode's mode"),
                        );
                    }
                    self.inodes[idx].names += 1;
                    self.edges.push((d.ino, e.ino))?;
                    let mut key = (e.name.len() as u8, [0u8; DIR_NAME_MAX]);
                    key.1[..e.name.len()].copy_from_slice(e.name);
                    names.push(key)?;
                }
            }
            names.sort_unstable();
            if names.has_adjacent_duplicate() {
                note(
                    &mut self.problems,
                    &mut self.oom,
                    Problem::DuplicateName { dir: d.ino },
                );
            }
        }
        self.buf = buf;
        self.ibuf = ibuf;

        // Reachability: walk the entries from the root.
        self.edges.sort_unstable();
        let root_idx = self.inode_index(root);
        if self.geo.is_valid_ino(root) && self.inodes[root_idx].allocated {
            self.inodes[root_idx].reachable = true;
            // Only directories have entries: the stack holds directories
            // not yet walked, each once.
            let mut stack = PageArray::new();
            stack.push(root)?;
            while let Some(p) = stack.pop() {
                let start = self.edges.partition_point(|&(q, _)| q < p);
                for i in start..self.edges.len() {
                    let (q, c) = self.edges[i];
                    if q != p {
                        break;
                    }
                    let ci = self.inode_index(c);
                    if !self.inodes[ci].reachable {
                        self.inodes[ci].reachable = true;
                        if self.inodes[ci].mode == Mode::Dir as u8 {
                            stack.push(c)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn link_pass(&mut self, root: u32) {
        let per_ag = self.geo.inodes_per_ag() as usize;
        let root_info = self.inodes[self.inode_index(root)];
        if !root_info.allocated || root_info.mode != Mode::Dir as u8 {
            note(
                &mut self.problems,
                &mut self.oom,
                Problem::Root {
                    mode: Mode::from_u8(root_info.mode).unwrap_or(Mode::Free),
                },
            );
        }
        for (idx, info) in self.inodes.iter().enumerate() {
            if !info.allocated {
                continue;
            }
            let ino = make_ino((idx / per_ag) as u32, (idx % per_ag) as u32);
            let found = info.names + u32::from(ino == root);
            if info.nlink != found {
                note(
                    &mut self.problems,
                    &mut self.oom,
                    Problem::LinkCount {
                        ino,
                        nlink: info.nlink,
                        found,
                    },
                );
            }
            if info.mode == Mode::Dir as u8 && found > 1 {
                note(
                    &mut self.problems,
                    &mut self.oom,
                    Problem::DirHardLink { ino, names: found },
                );
            }
            if !info.reachable {
                note(
                    &mut self.problems,
                    &mut self.oom,
                    Problem::Unreachable { ino },
                );
            }
        }
    }

    /// Compares the block bitmaps with the owner map; returns (used, free).
    fn bitmap_pass(&mut self) -> (u64, u64) {
        let (mut used, mut free) = (0, 0);
        let mut found = Vec::new();
        let mut oom = false;
        for ag in 0..self.geo.ag_count {
            let Some(h) = self.header(ag) else {
                continue;
            };
            let start = self.geo.ag_start(ag);
            for rel in 0..self.geo.ag_blocks {
                let blk = start + u64::from(rel);
                let in_use = h.block_used(rel);
                if in_use {
                    used += 1;
                } else {
                    free += 1;
                }
                match (self.owners[blk as usize], in_use) {
                    (NO_OWNER, true) => note(&mut found, &mut oom, Problem::BlockLeaked { blk }),
                    (METADATA, false) => note(
                        &mut found,
                        &mut oom,
                        Problem::BlockMarkedFree { blk, owner: 0 },
                    ),
                    (NO_OWNER, false) | (_, true) => {}
                    (owner, false) => note(
                        &mut found,
                        &mut oom,
                        Problem::BlockMarkedFree { blk, owner },
                    ),
                }
            }
        }
        self.oom |= oom;
        if self.problems.try_reserve(found.len()).is_ok() {
            self.problems.append(&mut found);
        } else {
            self.oom = true;
        }
        (used, free)
    }
}
