//! Reading QEMU's PVH `hvm_start_info` (Xen's arch-x86/hvm/start_info.h).

use super::paging::kernel_image;
use crate::bootinfo::{BootInfo, Region, RegionKind};

const MAGIC: u32 = 0x336e_c578;
const PAGE: u64 = 4096;

#[repr(C)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

static RSDP_PADDR: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Physical address of the ACPI RSDP the start info named (0: none given).
pub fn rsdp_paddr() -> u64 {
    RSDP_PADDR.load(core::sync::atomic::Ordering::Relaxed)
}

/// Why the PVH start info could not be read.
#[derive(Debug)]
pub enum PvhError {
    /// The block's magic number is not PVH's.
    BadMagic(u32),
    /// The block has no memory map.
    NoMemoryMap,
}

/// Fills `info` from the start-info block at physical `paddr`. Runs on the
/// boot stub's identity map of the first GiB, where QEMU puts these blocks.
///
/// # Safety
/// `paddr` must be the value QEMU passed in EBX, identity mapped.
pub unsafe fn parse(paddr: u32, info: &mut BootInfo) -> Result<(), PvhError> {
    // SAFETY: caller guarantees the start info is mapped at `paddr`.
    let si = unsafe { &*(paddr as usize as *const StartInfo) };
    if si.magic != MAGIC {
        return Err(PvhError::BadMagic(si.magic));
    }
    if si.version == 0 || si.memmap_entries == 0 || si.memmap_paddr == 0 {
        return Err(PvhError::NoMemoryMap);
    }
    // SAFETY: QEMU's memmap, `memmap_entries` entries long.
    let entries = unsafe {
        core::slice::from_raw_parts(
            si.memmap_paddr as usize as *const MemmapEntry,
            si.memmap_entries as usize,
        )
    };
    for e in entries {
        info.firmware_map.push(Region {
            start: e.addr,
            end: e.addr.saturating_add(e.size),
            kind: RegionKind::from_e820(e.kind),
        });
    }
    RSDP_PADDR.store(si.rsdp_paddr, core::sync::atomic::Ordering::Relaxed);
    let mut cmd_end = 0;
    if si.cmdline_paddr != 0 {
        let p = si.cmdline_paddr as usize as *const u8;
        let mut n = 0;
        // SAFETY: a NUL-terminated string from QEMU; bounded scan.
        while n < 65536 && unsafe { *p.add(n) } != 0 {
            n += 1;
        }
        // SAFETY: the `n` bytes just scanned.
        info.set_cmdline(unsafe { core::slice::from_raw_parts(p, n) });
        cmd_end = si.cmdline_paddr + n as u64 + 1;
    }

    // Usable = RAM, page aligned inward, minus page 0, the kernel image and
    // every page holding a boot structure.
    for r in info.firmware_map.clone().regions() {
        if r.kind == RegionKind::Ram {
            let start = r.start.div_ceil(PAGE) * PAGE;
            let end = r.end / PAGE * PAGE;
            if end > start {
                info.usable.push(Region {
                    start,
                    end,
                    kind: RegionKind::Ram,
                });
            }
        }
    }
    let down = |a: u64| a / PAGE * PAGE;
    let up = |a: u64| a.div_ceil(PAGE) * PAGE;
    let (ks, ke) = kernel_image();
    info.usable.carve(0, PAGE);
    info.usable.carve(down(ks), up(ke));
    let si_start = paddr as u64;
    info.usable.carve(
        down(si_start),
        up(si_start + core::mem::size_of::<StartInfo>() as u64),
    );
    let mm_len = si.memmap_entries as u64 * core::mem::size_of::<MemmapEntry>() as u64;
    info.usable
        .carve(down(si.memmap_paddr), up(si.memmap_paddr + mm_len));
    if cmd_end != 0 {
        info.usable.carve(down(si.cmdline_paddr), up(cmd_end));
    }
    if si.nr_modules != 0 && si.modlist_paddr != 0 {
        info.usable.carve(
            down(si.modlist_paddr),
            up(si.modlist_paddr + 32 * si.nr_modules as u64),
        );
    }
    Ok(())
}
