//! Just enough ACPI to find the CPUs: RSDP -> XSDT (or RSDT) -> MADT, and
//! the MADT's local APIC entries.
//!
//! Parsed by hand rather than with the `acpi` crate: the walk is a few
//! dozen lines of safe slice reading, needs no allocator (it runs before
//! the page allocator exists) and no handler trait for mapping tables.
//! Every length and checksum is checked; a table that fails a check is
//! refused with an [`AcpiError`] (boot then runs on the boot CPU alone).

use core::fmt;

/// Most CPUs the MADT walk records (more are counted, not kept).
pub const MAX_MADT_CPUS: usize = 64;

/// Why the CPUs could not be read from ACPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiError {
    /// The boot loader gave no RSDP and none is in the BIOS area.
    NoRsdp,
    /// A table (named by its signature) is not mapped RAM.
    Unreachable(&'static str),
    /// A table's checksum is wrong.
    BadChecksum(&'static str),
    /// A table's signature is not what was expected.
    BadSignature(&'static str),
    /// A table or MADT entry is shorter than its format needs.
    Truncated(&'static str),
    /// Neither the XSDT nor the RSDT lists a MADT ("APIC").
    NoMadt,
    /// A table claims more than [`MAX_TABLE_BYTES`].
    TooLarge(&'static str),
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRsdp => {
                f.write_str("no ACPI RSDP (neither in the PVH start info nor the BIOS area)")
            }
            Self::Unreachable(t) => write!(f, "the {t} table is not in mapped RAM"),
            Self::BadChecksum(t) => write!(f, "the {t} table's checksum is wrong"),
            Self::BadSignature(t) => write!(f, "the {t} table has the wrong signature"),
            Self::Truncated(t) => write!(f, "the {t} table is truncated"),
            Self::NoMadt => f.write_str("no MADT (APIC) table in the XSDT/RSDT"),
            Self::TooLarge(t) => {
                write!(f, "the {t} table claims more than {MAX_TABLE_BYTES} bytes")
            }
        }
    }
}

/// One processor the MADT lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MadtCpu {
    /// Its local APIC id (the IPI destination).
    pub apic_id: u32,
    /// Flags bit 0: usable now. Disabled entries are hot-pluggable slots.
    pub enabled: bool,
}

/// What the MADT says about the CPUs.
#[derive(Debug, Clone, Copy)]
pub struct Madt {
    /// Physical address of the local APICs' registers.
    pub lapic_base: u64,
    cpus: [MadtCpu; MAX_MADT_CPUS],
    len: usize,
    /// Processor entries beyond [`MAX_MADT_CPUS`], not kept.
    pub dropped: usize,
}

impl Madt {
    /// The processor entries, in table order (the boot CPU first on QEMU).
    pub fn cpus(&self) -> &[MadtCpu] {
        &self.cpus[..self.len]
    }

    fn push(&mut self, cpu: MadtCpu) {
        if self.len == MAX_MADT_CPUS {
            self.dropped += 1;
        } else {
            self.cpus[self.len] = cpu;
            self.len += 1;
        }
    }
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

fn checksum_ok(b: &[u8]) -> bool {
    b.iter().fold(0u8, |s, &x| s.wrapping_add(x)) == 0
}

/// Length of an SDT header.
const SDT_HEADER: usize = 36;

/// Checks an SDT (signature, length, checksum) and returns it cut to its length.
fn check_sdt<'a>(b: &'a [u8], sig: &'static str) -> Result<&'a [u8], AcpiError> {
    if b.get(..4) != Some(sig.as_bytes()) {
        return Err(AcpiError::BadSignature(sig));
    }
    let len = u32_at(b, 4).ok_or(AcpiError::Truncated(sig))? as usize;
    if len < SDT_HEADER || len > b.len() {
        return Err(AcpiError::Truncated(sig));
    }
    let t = &b[..len];
    if !checksum_ok(t) {
        return Err(AcpiError::BadChecksum(sig));
    }
    Ok(t)
}

/// Parses a MADT (signature "APIC", checked like every SDT): the local APIC
/// address (and its 64-bit override) and every processor-local APIC and
/// x2APIC entry.
pub fn parse_madt(table: &[u8]) -> Result<Madt, AcpiError> {
    const NAME: &str = "APIC";
    let t = check_sdt(table, NAME)?;
    let mut madt = Madt {
        lapic_base: u32_at(t, SDT_HEADER).ok_or(AcpiError::Truncated(NAME))? as u64,
        cpus: [MadtCpu {
            apic_id: 0,
            enabled: false,
        }; MAX_MADT_CPUS],
        len: 0,
        dropped: 0,
    };
    let mut off = SDT_HEADER + 8;
    while off < t.len() {
        let e = &t[off..];
        let (kind, len) = match e {
            [k, l, ..] if *l >= 2 && (*l as usize) <= e.len() => (*k, *l as usize),
            _ => return Err(AcpiError::Truncated(NAME)),
        };
        let e = &e[..len];
        let short = AcpiError::Truncated(NAME);
        match kind {
            // Processor local APIC: uid, APIC id, flags.
            0 => {
                let flags = u32_at(e, 4).ok_or(short)?;
                madt.push(MadtCpu {
                    apic_id: e[3] as u32,
                    enabled: flags & 1 != 0,
                });
            }
            // Local APIC address override.
            5 => madt.lapic_base = u64_at(e, 4).ok_or(short)?,
            // Processor local x2APIC: reserved, x2APIC id, flags, uid.
            9 => {
                let id = u32_at(e, 4).ok_or(short)?;
                let flags = u32_at(e, 8).ok_or(short)?;
                madt.push(MadtCpu {
                    apic_id: id,
                    enabled: flags & 1 != 0,
                });
            }
            _ => {}
        }
        off += len;
    }
    Ok(madt)
}

/// Reads `len` bytes of physical memory at `pa`, or `None` if they are not
/// RAM the kernel can reach (the platform decides).
pub type PhysReader = fn(pa: u64, len: usize) -> Option<&'static [u8]>;

/// Checks an RSDP at `pa`: its signature and checksums; returns the XSDT
/// address (revision 2+) or the RSDT address, with whether it is the XSDT.
fn check_rsdp(read: PhysReader, pa: u64) -> Result<(u64, bool), AcpiError> {
    const NAME: &str = "RSDP";
    let b = read(pa, 20).ok_or(AcpiError::Unreachable(NAME))?;
    if &b[..8] != b"RSD PTR " {
        return Err(AcpiError::BadSignature(NAME));
    }
    if !checksum_ok(b) {
        return Err(AcpiError::BadChecksum(NAME));
    }
    if b[15] >= 2 {
        let b = read(pa, 36).ok_or(AcpiError::Unreachable(NAME))?;
        let len = (u32_at(b, 20).ok_or(AcpiError::Truncated(NAME))? as usize).min(36);
        let xsdt = u64_at(b, 24).ok_or(AcpiError::Truncated(NAME))?;
        if len >= 33 && checksum_ok(&b[..len]) && xsdt != 0 {
            return Ok((xsdt, true));
        }
    }
    Ok((
        u32_at(b, 16).ok_or(AcpiError::Truncated(NAME))? as u64,
        false,
    ))
}

/// Longest table read: a corrupt length must not make boot map gigabytes.
pub const MAX_TABLE_BYTES: usize = 1 << 20;

/// Reads a whole SDT at `pa` (header first, to learn its length).
fn read_sdt(read: PhysReader, pa: u64, sig: &'static str) -> Result<&'static [u8], AcpiError> {
    let h = read(pa, SDT_HEADER).ok_or(AcpiError::Unreachable(sig))?;
    let len = u32_at(h, 4).ok_or(AcpiError::Truncated(sig))? as usize;
    if len < SDT_HEADER {
        return Err(AcpiError::Truncated(sig));
    }
    if len > MAX_TABLE_BYTES {
        return Err(AcpiError::TooLarge(sig));
    }
    let b = read(pa, len).ok_or(AcpiError::Unreachable(sig))?;
    check_sdt(b, sig)
}

/// Looks for the RSDP in the BIOS read-only area (0xE0000..0x100000, on
/// 16-byte boundaries), as ACPI says for legacy systems.
fn find_rsdp_in_bios(read: PhysReader) -> Option<u64> {
    let area = read(0xE0000, 0x20000)?;
    (0..area.len() - 20)
        .step_by(16)
        .find(|&o| &area[o..o + 8] == b"RSD PTR " && checksum_ok(&area[o..o + 20]))
        .map(|o| 0xE0000 + o as u64)
}

/// Finds and parses the MADT, starting from the RSDP at `rsdp` (0: search
/// the BIOS area).
pub fn read_madt(read: PhysReader, rsdp: u64) -> Result<Madt, AcpiError> {
    let rsdp = match rsdp {
        0 => find_rsdp_in_bios(read).ok_or(AcpiError::NoRsdp)?,
        pa => pa,
    };
    let (root, xsdt) = check_rsdp(read, rsdp)?;
    let (sig, width) = if xsdt { ("XSDT", 8) } else { ("RSDT", 4) };
    let t = read_sdt(read, root, sig)?;
    for entry in t[SDT_HEADER..].chunks_exact(width) {
        let pa = if xsdt {
            u64_at(entry, 0)
        } else {
            u32_at(entry, 0).map(u64::from)
        }
        .unwrap_or(0);
        let Some(h) = read(pa, 4) else { continue };
        if h == b"APIC" {
            return parse_madt(read_sdt(read, pa, "APIC")?);
        }
    }
    Err(AcpiError::NoMadt)
}
