//! [`InlineName`]: a cache's or shrinker's name carried in an error value
//! without allocating, so that reporting "out of memory" cannot itself run
//! out of memory (a `String` there would abort the kernel instead).

use core::fmt;

/// Bytes kept of a name; longer names are cut at a character boundary and
/// shown with a trailing `...`.
pub const INLINE_NAME_LEN: usize = 40;

/// A copy of a name, inline and bounded (see the module documentation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InlineName {
    buf: [u8; INLINE_NAME_LEN],
    len: u8,
    truncated: bool,
}

impl InlineName {
    /// Copies `name`, cut to [`INLINE_NAME_LEN`] bytes.
    pub fn new(name: &str) -> Self {
        let mut len = name.len().min(INLINE_NAME_LEN);
        while !name.is_char_boundary(len) {
            len -= 1;
        }
        let mut buf = [0; INLINE_NAME_LEN];
        buf[..len].copy_from_slice(&name.as_bytes()[..len]);
        Self {
            buf,
            len: len as u8,
            truncated: len < name.len(),
        }
    }

    /// The kept part of the name.
    pub fn as_str(&self) -> &str {
        // The bytes were copied from a `str` up to a character boundary.
        core::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }

    /// Whether the name was longer than [`INLINE_NAME_LEN`] bytes.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl PartialEq<str> for InlineName {
    fn eq(&self, other: &str) -> bool {
        !self.truncated && self.as_str() == other
    }
}

impl PartialEq<&str> for InlineName {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl fmt::Display for InlineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Debug for InlineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}
