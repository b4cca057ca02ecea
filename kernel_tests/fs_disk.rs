//! The filesystem's block device and on-disk format: RAM disk, superblock,
//! inode and directory encodings, corruption handling.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use core::ops::Deref;
use kreclaim::fs::blockdev::{BlockDevice, ErrorInjection, IoError, RamDisk};
use kreclaim::fs::dir::{
    DIRENT_SIZE, DIRENTS_PER_BLOCK, dir_add, dir_entries, dir_free_slots, dir_init, dir_lookup,
    dir_remove, dir_verify,
};
use kreclaim::fs::format::*;
use kreclaim::fs::{FsError, Meta};
use kreclaim::harness::TestResult;
use kreclaim::{kassert, kassert_eq};

kreclaim::kernel_tests!(
    crc32c_matches_the_standard_check_value,
    superblock_round_trip_and_corruption,
    inode_round_trip_and_corruption,
    directory_block_helpers,
    corrupt_contents_give_errors_not_panics,
    ramdisk_counters_count,
    injected_errors_fail_io_and_leave_the_device_unchanged,
);

const MIB: usize = 1 << 20;

/// A RAM disk over heap memory that it outlives (fields drop in order).
struct TestDisk {
    rd: RamDisk,
    _mem: Vec<u8>,
}

impl TestDisk {
    fn new(bytes: usize) -> Self {
        let mut mem = vec![0u8; bytes];
        // SAFETY: `mem`'s heap buffer never moves and is dropped after `rd`.
        let rd = unsafe { RamDisk::new(mem.as_mut_ptr(), mem.len(), BLOCK_SIZE) };
        Self { rd, _mem: mem }
    }
}

impl Deref for TestDisk {
    type Target = RamDisk;
    fn deref(&self) -> &RamDisk {
        &self.rd
    }
}

fn block() -> Vec<u8> {
    vec![0u8; BLOCK_SIZE]
}

/// Turns an `Err` into a test failure that shows it.
macro_rules! ok {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                return Err(kreclaim::harness::TestFailure::new(alloc::format!(
                    "{} failed: {:?}",
                    stringify!($e),
                    e
                )))
            }
        }
    };
}

fn ramdisk_counters_count() -> TestResult {
    let d = TestDisk::new(MIB);
    kassert_eq!(d.nr_blocks(), 256);
    let mut buf = block();
    for blk in 0..3 {
        ok!(d.write_block(blk, &buf));
    }
    for blk in 0..5 {
        ok!(d.read_block(blk, &mut buf));
    }
    kassert_eq!(
        d.read_block(256, &mut buf),
        Err(IoError::OutOfRange {
            blk: 256,
            nr_blocks: 256
        })
    );
    kassert!(matches!(
        d.write_block(0, &buf[..100]),
        Err(IoError::BadBufferSize { .. })
    ));
    ok!(d.flush());
    let s = d.stats();
    kassert_eq!((s.write_calls, s.write_blocks, s.write_errors), (4, 3, 1));
    kassert_eq!((s.read_calls, s.read_blocks, s.read_errors), (6, 5, 1));
    kassert_eq!(s.flushes, 1);
    Ok(())
}

fn injected_errors_fail_io_and_leave_the_device_unchanged() -> TestResult {
    let d = TestDisk::new(MIB);
    let old = vec![0x11u8; BLOCK_SIZE];
    let new = vec![0x22u8; BLOCK_SIZE];
    let mut buf = block();
    ok!(d.write_block(10, &old));

    d.inject_write_errors(ErrorInjection::FailNext(2));
    kassert_eq!(d.write_block(10, &new), Err(IoError::Injected));
    kassert_eq!(d.write_block(10, &new), Err(IoError::Injected));
    ok!(d.read_block(10, &mut buf));
    kassert!(buf == old, "failed writes changed the block");
    ok!(d.write_block(10, &new));
    ok!(d.read_block(10, &mut buf));
    kassert!(buf == new);

    d.inject_write_errors(ErrorInjection::FailBlock(10));
    for _ in 0..3 {
        kassert_eq!(d.write_block(10, &old), Err(IoError::Injected));
    }
    ok!(d.write_block(11, &old));
    ok!(d.read_block(10, &mut buf));
    kassert!(buf == new);
    d.clear_injection();
    ok!(d.write_block(10, &old));
    ok!(d.read_block(10, &mut buf));
    kassert!(buf == old);

    // FailAfter hits one write in the middle of a run.
    d.inject_write_errors(ErrorInjection::FailAfter { ok: 2, fail: 1 });
    ok!(d.write_block(1, &new));
    ok!(d.write_block(2, &new));
    kassert_eq!(d.write_block(3, &new), Err(IoError::Injected));
    ok!(d.write_block(4, &new));
    kassert_eq!(d.injection().1, ErrorInjection::Off);

    // Random failures, reproducible, and the block only ever holds a
    // completely written value.
    d.inject_write_errors(ErrorInjection::Random {
        percent: 30,
        seed: 42,
    });
    let (mut fails, mut last) = (0, 0u8);
    for i in 0..1000u32 {
        let v = vec![i as u8; BLOCK_SIZE];
        match d.write_block(20, &v) {
            Ok(()) => last = i as u8,
            Err(_) => fails += 1,
        }
        ok!(d.read_block(20, &mut buf));
        kassert!(buf.iter().all(|&x| x == last), "write {i}");
    }
    kassert!((200..400).contains(&fails), "{fails} of 1000 failed at 30%");
    d.clear_injection();

    // Reads fail without touching the caller's buffer.
    d.inject_read_errors(ErrorInjection::FailNext(1));
    buf.fill(0x77);
    kassert_eq!(d.read_block(10, &mut buf), Err(IoError::Injected));
    kassert!(buf.iter().all(|&x| x == 0x77));
    ok!(d.read_block(10, &mut buf));
    kassert!(buf == old);
    kassert!(d.stats().write_errors >= 6);
    Ok(())
}

fn crc32c_matches_the_standard_check_value() -> TestResult {
    kassert_eq!(crc32c(b"123456789"), 0xe306_9283);
    kassert_eq!(
        Crc32c::new().update(b"1234").update(b"56789").finish(),
        0xe306_9283
    );
    Ok(())
}

fn superblock_round_trip_and_corruption() -> TestResult {
    let geo = ok!(Geometry::new(4, 256, 8));
    let sb = Superblock {
        geometry: geo,
        root_ino: ROOT_INO,
        clean: false,
    };
    let mut buf = block();
    ok!(sb.write_to(&mut buf));
    kassert_eq!(ok!(Superblock::read_from(&buf)), sb);
    kassert_eq!(&buf[..4], b"KRSB");

    for off in [5, 17, 28, 44, 300] {
        let mut bad = buf.clone();
        bad[off] ^= 0x10;
        kassert!(
            matches!(
                Superblock::read_from(&bad),
                Err(FsError::BadChecksum {
                    what: Meta::Superblock,
                    ..
                })
            ),
            "flipped byte {off}"
        );
    }
    let mut bad = buf.clone();
    bad[0] = b'X';
    kassert!(matches!(
        Superblock::read_from(&bad),
        Err(FsError::BadMagic { .. })
    ));
    kassert!(matches!(
        Superblock::read_from(&buf[..512]),
        Err(FsError::BufferSize { .. })
    ));
    Ok(())
}

fn inode_round_trip_and_corruption() -> TestResult {
    let ino = make_ino(1, 21);
    let mut core = InodeCore::new(ino, Mode::File, 7, 123_456_789);
    core.nlink = 3;
    core.size = 1_000_000;
    core.mtime = 987_654_321;
    core.nblocks = 5;
    core.direct[0] = 100;
    core.direct[39] = 200;
    core.indirect = 300;
    let mut cluster = vec![0xaau8; BLOCK_SIZE];
    ok!(core.encode_in_cluster(&mut cluster));
    let off = ino_offset_in_cluster(ino);
    kassert_eq!(off, 5 * INODE_SIZE);
    kassert!(
        cluster[..off].iter().all(|&b| b == 0xaa),
        "bytes before the slot"
    );
    kassert!(
        cluster[off + INODE_SIZE..].iter().all(|&b| b == 0xaa),
        "bytes after"
    );
    kassert_eq!(ok!(InodeCore::decode_in_cluster(&cluster, ino)), core);

    // A flipped byte is named by inode number.
    for i in [3, 9, 45, 60, 215, 230] {
        let mut bad = cluster.clone();
        bad[off + i] ^= 0x04;
        kassert!(
            matches!(
                InodeCore::decode_in_cluster(&bad, ino),
                Err(FsError::BadChecksum { what: Meta::Inode(n), .. }) if n == ino
            ),
            "byte {i}"
        );
    }
    // The slot of another inode (a misdirected write) is caught.
    let other = make_ino(1, 22);
    let mut moved = cluster.clone();
    moved.copy_within(off..off + INODE_SIZE, off + INODE_SIZE);
    kassert!(matches!(
        InodeCore::decode_in_cluster(&moved, other),
        Err(FsError::Corrupt { what: Meta::Inode(n), .. }) if n == other
    ));
    // Impossible contents are refused on encode too.
    let mut free_with_blocks = InodeCore::free(ino, 0);
    free_with_blocks.nblocks = 1;
    kassert!(matches!(
        free_with_blocks.encode_in_cluster(&mut cluster),
        Err(FsError::Corrupt { .. })
    ));
    Ok(())
}

fn directory_block_helpers() -> TestResult {
    let mut blk = block();
    ok!(dir_init(&mut blk, 5));
    ok!(dir_verify(&blk, 5, 77));
    kassert_eq!(ok!(dir_free_slots(&blk)), DIRENTS_PER_BLOCK);
    let name = |i: usize| alloc::format!("entry-{i:02}");
    for i in 0..DIRENTS_PER_BLOCK {
        let ft = if i % 3 == 0 {
            FileType::Dir
        } else {
            FileType::File
        };
        kassert!(ok!(dir_add(
            &mut blk,
            name(i).as_bytes(),
            100 + i as u32,
            ft
        )));
    }
    kassert!(
        !ok!(dir_add(&mut blk, b"one-too-many", 999, FileType::File)),
        "full block"
    );
    kassert_eq!(
        dir_add(&mut blk, b"entry-05", 1, FileType::File),
        Err(FsError::NameExists)
    );
    for i in 0..DIRENTS_PER_BLOCK {
        let ft = if i % 3 == 0 {
            FileType::Dir
        } else {
            FileType::File
        };
        kassert_eq!(
            ok!(dir_lookup(&blk, name(i).as_bytes())),
            Some((100 + i as u32, ft))
        );
    }
    for i in (0..DIRENTS_PER_BLOCK).step_by(6) {
        kassert!(ok!(dir_remove(&mut blk, name(i).as_bytes())).is_some());
    }
    kassert_eq!(ok!(dir_remove(&mut blk, b"entry-00")), None);
    kassert_eq!(ok!(dir_lookup(&blk, b"entry-00")), None);
    kassert_eq!(
        ok!(dir_lookup(&blk, b"entry-01")),
        Some((101, FileType::File))
    );
    kassert_eq!(dir_entries(&blk).count(), DIRENTS_PER_BLOCK - 11);
    kassert!(dir_entries(&blk).all(|e| e.is_ok()));
    ok!(dir_verify(&blk, 5, 77));
    // A freed slot is reused.
    kassert!(ok!(dir_add(&mut blk, b"late", 500, FileType::File)));

    // Bad names are refused.
    let long = [b'x'; 59];
    let bad_names: [&[u8]; 6] = [b"", b".", b"..", b"a/b", b"nul\0", &long];
    for bad in bad_names {
        kassert!(matches!(
            dir_add(&mut blk, bad, 1, FileType::File),
            Err(FsError::InvalidName { .. })
        ));
    }
    kassert!(ok!(dir_add(&mut blk, &[b'y'; 58], 1, FileType::File)));
    kassert_eq!(
        ok!(dir_lookup(&blk, &[b'y'; 58])),
        Some((1, FileType::File))
    );

    // Checksum, owner and entry checks.
    let mut bad = blk.clone();
    bad[3 * DIRENT_SIZE + 10] ^= 1;
    kassert!(matches!(
        dir_verify(&bad, 5, 77),
        Err(FsError::BadChecksum {
            what: Meta::DirBlock { dir: 5, blk: 77 },
            ..
        })
    ));
    kassert!(matches!(
        dir_verify(&blk, 6, 77),
        Err(FsError::Corrupt { .. })
    ));
    // A name length past the slot is an error, not an out-of-bounds read.
    let mut bad = blk.clone();
    bad[2 * DIRENT_SIZE + 4] = 200;
    kassert!(matches!(
        dir_lookup(&bad, b"zzz"),
        Err(FsError::Corrupt {
            what: Meta::DirEntry { slot: 2 },
            ..
        })
    ));
    Ok(())
}

/// xorshift for the corruption test.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn corrupt_contents_give_errors_not_panics() -> TestResult {
    let geo = ok!(Geometry::new(4, 256, 8));
    let mut rng = 0x1234_5678_9abc_def0u64;

    // Inodes: corrupt a field, fix the checksum, decode, map every block.
    let mut core = InodeCore::new(ROOT_INO, Mode::File, 1, 5);
    core.size = 50 * BLOCK_SIZE as u64;
    core.direct[0] = geo.data_start() + 1;
    core.indirect = geo.data_start() + 2;
    let mut slot = [0u8; INODE_SIZE];
    ok!(core.encode(&mut slot));
    let indirect = vec![0xffu8; BLOCK_SIZE];
    let mut decoded = 0;
    for _ in 0..2000 {
        let mut s = slot;
        for _ in 0..(1 + next(&mut rng) % 3) {
            let r = next(&mut rng);
            s[(r % 252) as usize] = (r >> 16) as u8;
        }
        let crc = crc32c(&s[..252]);
        s[252..].copy_from_slice(&crc.to_le_bytes());
        if let Ok(c) = InodeCore::decode(&s, ROOT_INO) {
            decoded += 1;
            for fb in [0, 1, 39, 40, 41, 1063, 1064, u64::MAX] {
                let _ = bmap(&geo, &c, fb, |_, idx| indirect_entry(&indirect, idx));
            }
        }
    }
    kassert!(decoded > 0, "some mutations are legal and were mapped");
    // An all-ones indirect block points outside the data area.
    kassert!(matches!(
        bmap(&geo, &core, 45, |_, idx| indirect_entry(&indirect, idx)),
        Err(FsError::Corrupt { .. })
    ));

    // Directory blocks: corrupt bytes anywhere, reseal, use every helper.
    let mut dblk = block();
    ok!(dir_init(&mut dblk, 1));
    for i in 0..40 {
        ok!(dir_add(
            &mut dblk,
            alloc::format!("n{i}").as_bytes(),
            10 + i,
            FileType::File
        ));
    }
    let mut errors = 0;
    for _ in 0..500 {
        let mut b = dblk.clone();
        for _ in 0..(1 + next(&mut rng) % 4) {
            let r = next(&mut rng);
            b[DIRENT_SIZE + (r % (BLOCK_SIZE - DIRENT_SIZE) as u64) as usize] = (r >> 20) as u8;
        }
        let crc = Crc32c::new().update(&b[..8]).update(&b[12..]).finish();
        b[8..12].copy_from_slice(&crc.to_le_bytes());
        let v = dir_verify(&b, 1, 9);
        errors += usize::from(v.is_err());
        let _ = dir_lookup(&b, b"n7");
        let _ = dir_free_slots(&b);
        let _ = dir_entries(&b).count();
        let _ = dir_add(&mut b, b"new", 5, FileType::File);
        let _ = dir_remove(&mut b, b"n3");
    }
    kassert!(errors > 0);

    // AG headers and superblocks: random blocks are refused.
    let mut b = block();
    for _ in 0..50 {
        for x in b.iter_mut() {
            *x = next(&mut rng) as u8;
        }
        kassert!(AgHeader::load(&b[..], &geo, 0).is_err());
        kassert!(Superblock::read_from(&b).is_err());
    }
    // A header with a valid checksum but a counter beyond the AG is refused.
    let mut h = ok!(AgHeader::format(&mut b[..], &geo, 1));
    ok!(h.alloc_block(0));
    b[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    let crc = Crc32c::new().update(&b[..124]).update(&b[128..]).finish();
    b[124..128].copy_from_slice(&crc.to_le_bytes());
    kassert!(matches!(
        AgHeader::load(&b[..], &geo, 1),
        Err(FsError::Corrupt {
            what: Meta::AgHeader(1),
            ..
        })
    ));
    kassert!(matches!(
        AgHeader::load(&b[..], &geo, 2),
        Err(FsError::Corrupt { .. })
    ));
    Ok(())
}
