//! Directory data blocks: 64 fixed slots of 64 bytes. Slot 0 is a header
//! (so a directory block names its owner and carries a checksum, like XFS v5
//! directory blocks); slots 1..64 are entries, so a block holds 63 names.
//!
//! ```text
//! header (slot 0):  0 magic "KRDR"  4 owner ino u32  8 CRC32C of the block minus this field
//! entry  (1..64):   0 ino u32 (0 = empty slot)  4 name_len u8 (1..=58)
//!                   5 file type u8 (1 file, 2 dir)  6..64 name bytes, zero padded
//! ```
//!
//! Names are 1..=58 bytes, without `/` or NUL, and not `.` or `..` (this
//! format stores no dot entries). The helpers here work on one block in a
//! caller's buffer and keep its checksum current; they check entries as they
//! read them, so a corrupt block gives an error, never an out-of-bounds
//! access. [`dir_verify`] is the full check to run on a block read from disk.

use super::format::{Crc32c, FileType, get_u32, put_u32};
use super::{FsError, Meta, check_buf};

/// Magic number at offset 0 of a directory block's header ("KRDR").
pub const DIR_MAGIC: u32 = u32::from_le_bytes(*b"KRDR");
/// Size of one slot (header or entry) in bytes.
pub const DIRENT_SIZE: usize = 64;
/// Longest name in bytes: a slot minus the 6-byte entry header.
pub const DIR_NAME_MAX: usize = DIRENT_SIZE - 6;
/// Slots per block, the header included.
pub const DIR_SLOTS: usize = super::format::BLOCK_SIZE / DIRENT_SIZE;
/// Names per block.
pub const DIRENTS_PER_BLOCK: usize = DIR_SLOTS - 1;

const CRC_OFF: usize = 8;

/// One used directory entry, borrowed from its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirEntry<'a> {
    /// Slot index within the block (1..64; slot 0 is the header).
    pub slot: usize,
    /// Inode number the name refers to (never 0: 0 marks an empty slot).
    pub ino: u32,
    /// File type recorded in the entry (saves reading the inode).
    pub ftype: FileType,
    /// The name's bytes, without padding.
    pub name: &'a [u8],
}

/// Checks that `name` can be stored in an entry.
pub fn check_name(name: &[u8]) -> Result<(), FsError> {
    let bad = |reason| Err(FsError::InvalidName { reason });
    if name.is_empty() {
        return bad("empty name");
    }
    if name.len() > DIR_NAME_MAX {
        return bad("longer than 58 bytes");
    }
    if name.iter().any(|&c| c == b'/' || c == 0) {
        return bad("contains '/' or NUL");
    }
    if name == b"." || name == b".." {
        return bad("'.' and '..' are not stored");
    }
    Ok(())
}

fn crc(block: &[u8]) -> u32 {
    Crc32c::new()
        .update(&block[..CRC_OFF])
        .update(&block[CRC_OFF + 4..])
        .finish()
}

fn seal(block: &mut [u8]) {
    let c = crc(block);
    put_u32(block, CRC_OFF, c);
}

/// Formats an empty directory block owned by directory inode `owner`.
pub fn dir_init(block: &mut [u8], owner: u32) -> Result<(), FsError> {
    check_buf(block.len())?;
    block.fill(0);
    put_u32(block, 0, DIR_MAGIC);
    put_u32(block, 4, owner);
    seal(block);
    Ok(())
}

/// Decodes slot `slot` (1..64): `None` for an empty slot.
fn entry(block: &[u8], slot: usize) -> Result<Option<DirEntry<'_>>, FsError> {
    let e = &block[slot * DIRENT_SIZE..(slot + 1) * DIRENT_SIZE];
    let bad = |reason| FsError::Corrupt {
        what: Meta::DirEntry { slot },
        reason,
    };
    let ino = get_u32(e, 0);
    let len = e[4] as usize;
    if ino == 0 {
        if len != 0 || e[5] != 0 {
            return Err(bad("empty slot with a name"));
        }
        return Ok(None);
    }
    if len == 0 || len > DIR_NAME_MAX {
        return Err(bad("name length out of range"));
    }
    let ftype = FileType::from_u8(e[5]).ok_or(bad("unknown file type"))?;
    let name = &e[6..6 + len];
    if check_name(name).is_err() {
        return Err(bad("invalid name"));
    }
    Ok(Some(DirEntry {
        slot,
        ino,
        ftype,
        name,
    }))
}

/// Full check of a block read from disk: magic, owner, checksum and every
/// entry. `dir` and `blk` name the block in errors.
pub fn dir_verify(block: &[u8], dir: u32, blk: u64) -> Result<(), FsError> {
    check_buf(block.len())?;
    let what = Meta::DirBlock { dir, blk };
    let magic = get_u32(block, 0);
    if magic != DIR_MAGIC {
        return Err(FsError::BadMagic { what, found: magic });
    }
    let stored = get_u32(block, CRC_OFF);
    let computed = crc(block);
    if stored != computed {
        return Err(FsError::BadChecksum {
            what,
            stored,
            computed,
        });
    }
    if get_u32(block, 4) != dir {
        return Err(FsError::Corrupt {
            what,
            reason: "block belongs to another directory",
        });
    }
    for e in dir_entries(block) {
        match e {
            Ok(_) => {}
            // Name the block rather than just the slot.
            Err(FsError::Corrupt { reason, .. }) => return Err(FsError::Corrupt { what, reason }),
            Err(other) => return Err(other),
        }
    }
    Ok(())
}

/// Iterator over the used entries of a block (see [`dir_entries`]).
pub struct DirEntries<'a> {
    block: &'a [u8],
    slot: usize,
}

impl<'a> Iterator for DirEntries<'a> {
    type Item = Result<DirEntry<'a>, FsError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.slot < DIR_SLOTS {
            let slot = self.slot;
            self.slot += 1;
            match entry(self.block, slot) {
                Ok(None) => continue,
                Ok(Some(e)) => return Some(Ok(e)),
                Err(e) => {
                    self.slot = DIR_SLOTS;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// The used entries of `block`, in slot order; stops after the first
/// corrupt entry (yielded as an error).
pub fn dir_entries(block: &[u8]) -> DirEntries<'_> {
    // A block of the wrong size yields nothing rather than reading past it.
    let slot = if block.len() == super::format::BLOCK_SIZE {
        1
    } else {
        DIR_SLOTS
    };
    DirEntries { block, slot }
}

/// The inode and type `name` refers to in this block.
pub fn dir_lookup(block: &[u8], name: &[u8]) -> Result<Option<(u32, FileType)>, FsError> {
    check_buf(block.len())?;
    for e in dir_entries(block) {
        let e = e?;
        if e.name == name {
            return Ok(Some((e.ino, e.ftype)));
        }
    }
    Ok(None)
}

/// Number of empty slots.
pub fn dir_free_slots(block: &[u8]) -> Result<usize, FsError> {
    check_buf(block.len())?;
    let mut used = 0;
    for e in dir_entries(block) {
        e?;
        used += 1;
    }
    Ok(DIRENTS_PER_BLOCK - used)
}

/// Adds `name -> ino` to this block: `Ok(false)` if the block is full,
/// `Err(NameExists)` if the name is already here.
pub fn dir_add(block: &mut [u8], name: &[u8], ino: u32, ftype: FileType) -> Result<bool, FsError> {
    check_buf(block.len())?;
    check_name(name)?;
    if ino == 0 {
        return Err(FsError::BadInodeNumber { ino });
    }
    let mut free = None;
    for slot in 1..DIR_SLOTS {
        match entry(block, slot)? {
            None => {
                free.get_or_insert(slot);
            }
            Some(e) if e.name == name => return Err(FsError::NameExists),
            Some(_) => {}
        }
    }
    let Some(slot) = free else {
        return Ok(false);
    };
    let e = &mut block[slot * DIRENT_SIZE..(slot + 1) * DIRENT_SIZE];
    e.fill(0);
    put_u32(e, 0, ino);
    e[4] = name.len() as u8;
    e[5] = ftype as u8;
    e[6..6 + name.len()].copy_from_slice(name);
    seal(block);
    Ok(true)
}

/// Removes `name` from this block, returning what it referred to.
pub fn dir_remove(block: &mut [u8], name: &[u8]) -> Result<Option<(u32, FileType)>, FsError> {
    check_buf(block.len())?;
    let mut found = None;
    for e in dir_entries(block) {
        let e = e?;
        if e.name == name {
            found = Some((e.slot, e.ino, e.ftype));
            break;
        }
    }
    let Some((slot, ino, ftype)) = found else {
        return Ok(None);
    };
    block[slot * DIRENT_SIZE..(slot + 1) * DIRENT_SIZE].fill(0);
    seal(block);
    Ok(Some((ino, ftype)))
}
