//! What an inode slot holds and what a directory entry says it points at:
//! the two type codes of the on-disk format, on their own so that the error
//! types (which name a mode) sit below the format code (which returns
//! errors).

/// What an inode slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Unallocated slot.
    Free = 0,
    /// Regular file.
    File = 1,
    /// Directory.
    Dir = 2,
}

impl Mode {
    /// Decodes the on-disk mode byte; `None` for an unknown value.
    pub fn from_u8(v: u8) -> Option<Mode> {
        match v {
            0 => Some(Mode::Free),
            1 => Some(Mode::File),
            2 => Some(Mode::Dir),
            _ => None,
        }
    }

    /// The directory-entry type for this mode; `None` for [`Mode::Free`].
    pub fn file_type(self) -> Option<FileType> {
        match self {
            Mode::Free => None,
            Mode::File => Some(FileType::File),
            Mode::Dir => Some(FileType::Dir),
        }
    }
}

/// The type a directory entry records for its inode (same codes as [`Mode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    /// Regular file.
    File = 1,
    /// Directory.
    Dir = 2,
}

impl FileType {
    /// Decodes a directory entry's type byte; `None` for an unknown value.
    pub fn from_u8(v: u8) -> Option<FileType> {
        match v {
            1 => Some(FileType::File),
            2 => Some(FileType::Dir),
            _ => None,
        }
    }

    /// The inode mode an entry of this type must point at.
    pub fn mode(self) -> Mode {
        match self {
            FileType::File => Mode::File,
            FileType::Dir => Mode::Dir,
        }
    }
}
