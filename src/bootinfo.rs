//! What the kernel learns at boot: the firmware memory map, the RAM left for
//! the page allocator, and the command line. Fixed-capacity, so it can be
//! filled before any allocator exists.

#![deny(missing_docs)]

use core::fmt;

/// Most regions a [`MemoryMap`] holds.
pub const MAX_REGIONS: usize = 64;
/// Longest command line kept, in bytes.
pub const MAX_CMDLINE: usize = 4096;

/// What a memory-map region holds (E820 types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// Usable RAM (type 1).
    Ram,
    /// Reserved by firmware or devices (type 2).
    Reserved,
    /// ACPI tables, reusable once read (type 3).
    AcpiReclaimable,
    /// ACPI non-volatile storage (type 4).
    AcpiNvs,
    /// Memory with errors (type 5).
    Unusable,
    /// Disabled memory (type 6).
    Disabled,
    /// Persistent memory (type 7).
    Persistent,
    /// Any other E820 type.
    Other(u32),
}

impl RegionKind {
    /// From an E820 / PVH memmap type.
    pub fn from_e820(t: u32) -> Self {
        match t {
            1 => Self::Ram,
            2 => Self::Reserved,
            3 => Self::AcpiReclaimable,
            4 => Self::AcpiNvs,
            5 => Self::Unusable,
            6 => Self::Disabled,
            7 => Self::Persistent,
            t => Self::Other(t),
        }
    }
}

impl fmt::Display for RegionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ram => f.write_str("RAM"),
            Self::Reserved => f.write_str("reserved"),
            Self::AcpiReclaimable => f.write_str("ACPI data"),
            Self::AcpiNvs => f.write_str("ACPI NVS"),
            Self::Unusable => f.write_str("unusable"),
            Self::Disabled => f.write_str("disabled"),
            Self::Persistent => f.write_str("persistent"),
            Self::Other(t) => write!(f, "type {t}"),
        }
    }
}

/// A physical range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// What the range holds.
    pub kind: RegionKind,
}

impl Region {
    /// An empty reserved region (fills unused slots).
    pub const EMPTY: Region = Region {
        start: 0,
        end: 0,
        kind: RegionKind::Reserved,
    };

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range holds no byte.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether it shares a byte with `[start, end)`.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }
}

/// A sorted list of regions with a fixed capacity.
#[derive(Clone)]
pub struct MemoryMap {
    regions: [Region; MAX_REGIONS],
    len: usize,
}

impl Default for MemoryMap {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryMap {
    /// An empty map.
    pub const fn new() -> Self {
        Self {
            regions: [Region::EMPTY; MAX_REGIONS],
            len: 0,
        }
    }

    /// A map of one RAM range `[start, end)` (a platform whose RAM is one
    /// block, e.g. a static array in a hobby kernel).
    pub fn from_ram(start: u64, end: u64) -> Self {
        let mut map = Self::new();
        map.push(Region {
            start,
            end,
            kind: RegionKind::Ram,
        });
        map
    }

    /// The regions, sorted by start.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    /// Adds a region, keeping the list sorted by start. Entries past the
    /// capacity are dropped (and reported by the caller via the return value).
    pub fn push(&mut self, r: Region) -> bool {
        if r.is_empty() {
            return true;
        }
        if self.len == MAX_REGIONS {
            return false;
        }
        let pos = self.regions[..self.len]
            .iter()
            .position(|x| x.start > r.start)
            .unwrap_or(self.len);
        self.regions.copy_within(pos..self.len, pos + 1);
        self.regions[pos] = r;
        self.len += 1;
        true
    }

    /// Removes `[start, end)` from every region, splitting where needed.
    pub fn carve(&mut self, start: u64, end: u64) {
        let old = self.clone();
        self.len = 0;
        for r in old.regions() {
            if !r.overlaps(start, end) {
                self.push(*r);
                continue;
            }
            if r.start < start {
                self.push(Region { end: start, ..*r });
            }
            if r.end > end {
                self.push(Region { start: end, ..*r });
            }
        }
    }

    /// Total bytes of regions of `kind`.
    pub fn total(&self, kind: RegionKind) -> u64 {
        self.regions()
            .iter()
            .filter(|r| r.kind == kind)
            .map(Region::len)
            .sum()
    }
}

/// Why boot cannot use the command line it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdlineProblem {
    /// `len` bytes, more than [`MAX_CMDLINE`].
    TooLong {
        /// The command line's length, in bytes.
        len: usize,
    },
    /// `byte` at `offset` does not start (or continue) a UTF-8 character.
    NotUtf8 {
        /// Where the byte is, from the start of the command line.
        offset: usize,
        /// The offending byte.
        byte: u8,
    },
}

impl fmt::Display for CmdlineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { len } => write!(
                f,
                "the kernel command line is {len} bytes (built-in part included); \
                 kreclaim takes at most {MAX_CMDLINE}"
            ),
            Self::NotUtf8 { offset, byte } => write!(
                f,
                "the kernel command line is not UTF-8: byte {byte:#04x} at offset {offset}"
            ),
        }
    }
}

/// Everything the platform hands to the kernel's main function.
pub struct BootInfo {
    /// The map as the firmware (QEMU) reported it.
    pub firmware_map: MemoryMap,
    /// Page-aligned RAM free for the page allocator: firmware RAM minus page
    /// 0, the kernel image and the boot structures.
    pub usable: MemoryMap,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    /// Length of the command line as given, before cutting to
    /// [`MAX_CMDLINE`]: boot refuses a command line it cannot keep whole.
    cmdline_given: usize,
    /// Memory reserved at boot for the RAM disk (`ramdisk=`), outside the
    /// page allocator.
    pub ramdisk: Option<Region>,
}

impl Default for BootInfo {
    fn default() -> Self {
        Self::new()
    }
}

impl BootInfo {
    /// Empty boot information, filled in by the platform's boot code.
    pub const fn new() -> Self {
        Self {
            firmware_map: MemoryMap::new(),
            usable: MemoryMap::new(),
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            cmdline_given: 0,
            ramdisk: None,
        }
    }

    /// Keeps the first [`MAX_CMDLINE`] bytes of `bytes` and remembers how
    /// long it was, for [`BootInfo::cmdline_problem`].
    pub fn set_cmdline(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(MAX_CMDLINE);
        self.cmdline[..n].copy_from_slice(&bytes[..n]);
        self.cmdline_len = n;
        self.cmdline_given = bytes.len();
    }

    /// Puts `builtin` and a space in front of the command line (Linux's
    /// CONFIG_CMDLINE); the result counts as given at its full length, so a
    /// built-in part that pushes it past [`MAX_CMDLINE`] is a problem too.
    pub fn prepend_cmdline(&mut self, builtin: &str) {
        let mut buf = [0u8; MAX_CMDLINE];
        let mut n = 0;
        for part in [builtin.as_bytes(), b" ", self.cmdline_bytes()] {
            let take = part.len().min(MAX_CMDLINE - n);
            buf[n..n + take].copy_from_slice(&part[..take]);
            n += take;
        }
        let given = builtin.len() + 1 + self.cmdline_given;
        self.set_cmdline(&buf[..n]);
        self.cmdline_given = given;
    }

    /// The command line's bytes as kept (at most [`MAX_CMDLINE`]).
    pub fn cmdline_bytes(&self) -> &[u8] {
        &self.cmdline[..self.cmdline_len]
    }

    /// Why the command line cannot be used as given: too long to keep whole,
    /// or not UTF-8. Boot refuses such a command line instead of running
    /// with part of it.
    pub fn cmdline_problem(&self) -> Option<CmdlineProblem> {
        if self.cmdline_given > MAX_CMDLINE {
            return Some(CmdlineProblem::TooLong {
                len: self.cmdline_given,
            });
        }
        match core::str::from_utf8(self.cmdline_bytes()) {
            Ok(_) => None,
            Err(e) => Some(CmdlineProblem::NotUtf8 {
                offset: e.valid_up_to(),
                byte: self.cmdline[e.valid_up_to()],
            }),
        }
    }

    /// The kernel command line (QEMU's `-append`). Boot refuses a command
    /// line with a [`cmdline_problem`](BootInfo::cmdline_problem); should
    /// one get here anyway, only its UTF-8 prefix is returned.
    pub fn cmdline(&self) -> &str {
        let b = &self.cmdline[..self.cmdline_len];
        match core::str::from_utf8(b) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    /// Bytes of RAM given to the page allocator.
    pub fn usable_bytes(&self) -> u64 {
        self.usable.total(RegionKind::Ram)
    }

    /// Bytes of RAM the firmware reported.
    pub fn ram_bytes(&self) -> u64 {
        self.firmware_map.total(RegionKind::Ram)
    }
}
