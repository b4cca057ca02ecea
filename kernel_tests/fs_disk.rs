//! The filesystem's block device and on-disk format: RAM disk, mkfs, fsck,
//! superblock/inode/directory encodings, allocation bitmaps, file mapping.

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
use kreclaim::fs::mkfs::{MkfsOptions, choose_geometry, mkfs};
use kreclaim::fs::{Disk, FsError, Meta, Problem, check, fsck};
use kreclaim::harness::TestResult;
use kreclaim::{kassert, kassert_eq};

kreclaim::kernel_tests!(
    crc32c_matches_the_standard_check_value,
    geometry_follows_device_size,
    mkfs_then_check_is_clean,
    superblock_round_trip_and_corruption,
    inode_round_trip_and_corruption,
    block_allocation_until_full,
    inode_allocation_until_full,
    directory_block_helpers,
    directory_with_200_names,
    file_data_direct_and_indirect,
    fsck_catches_a_doubly_referenced_block,
    fsck_catches_bitmap_inconsistencies,
    fsck_catches_link_and_pointer_errors,
    ramdisk_counters_count,
    injected_errors_fail_io_and_leave_the_device_unchanged,
    io_errors_inside_fs_operations_are_rolled_back,
    corrupt_contents_give_errors_not_panics,
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

    fn formatted(bytes: usize) -> Result<Self, FsError> {
        let d = Self::new(bytes);
        mkfs(&d.rd, MkfsOptions::default())?;
        Ok(d)
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

fn crc32c_matches_the_standard_check_value() -> TestResult {
    kassert_eq!(crc32c(b"123456789"), 0xe306_9283);
    kassert_eq!(
        Crc32c::new().update(b"1234").update(b"56789").finish(),
        0xe306_9283
    );
    Ok(())
}

fn geometry_follows_device_size() -> TestResult {
    let opts = MkfsOptions::default();
    // 32 MiB: 4 AGs of 2048 blocks, one inode cluster per 32 blocks.
    let g = ok!(choose_geometry(8192, &opts));
    kassert_eq!((g.ag_count, g.ag_blocks, g.clusters_per_ag), (4, 2048, 64));
    kassert_eq!(g.total_blocks, 8192);
    kassert_eq!(g.inodes_per_ag(), 1024);
    // Small devices get fewer AGs of at least 64 blocks.
    let g = ok!(choose_geometry(130, &opts));
    kassert_eq!((g.ag_count, g.ag_blocks), (2, 65));
    kassert!(matches!(
        choose_geometry(63, &opts),
        Err(FsError::BadGeometry { .. })
    ));
    // Big ones get more AGs rather than AGs the bitmap cannot describe.
    let g = ok!(choose_geometry(200_000, &opts));
    kassert_eq!(g.ag_count, 8);
    kassert!(g.ag_blocks <= MAX_AG_BLOCKS);
    // Leftover blocks at the end are not used.
    let g = ok!(choose_geometry(1027, &opts));
    kassert_eq!((g.ag_count, g.ag_blocks, g.total_blocks), (4, 256, 1024));
    // Explicit options are validated.
    let bad = MkfsOptions {
        clusters_per_ag: Some(300),
        ..opts
    };
    kassert!(matches!(
        choose_geometry(8192, &bad),
        Err(FsError::BadGeometry { .. })
    ));
    // Inode numbers pack (AG, index) like XFS.
    let ino = make_ino(3, 37);
    kassert_eq!(ino, 3 << 24 | 37);
    kassert_eq!((ino_to_ag(ino), ino_to_agino(ino)), (3, 37));
    kassert_eq!(ino_to_cluster_block(&g, ino), g.ag_start(3) + 2 + 2);
    kassert_eq!(ino_offset_in_cluster(ino), 5 * INODE_SIZE);
    Ok(())
}

fn mkfs_then_check_is_clean() -> TestResult {
    let d = TestDisk::new(4 * MIB);
    // An unformatted device is refused by name.
    kassert!(matches!(
        fsck(&d.rd),
        Err(FsError::BadMagic {
            what: Meta::Superblock,
            ..
        })
    ));
    let geo = ok!(mkfs(&d.rd, MkfsOptions::default()));
    kassert_eq!(geo.ag_count, 4);
    let r = ok!(check(&d.rd));
    kassert!(r.clean_unmount);
    kassert_eq!((r.inodes_used, r.dirs, r.files), (1, 1, 0));
    kassert_eq!(r.blocks_referenced, 1);
    let metadata = u64::from(geo.ag_count) * u64::from(geo.data_start());
    kassert_eq!(r.blocks_used, metadata + 1);
    kassert_eq!(r.blocks_used + r.blocks_free, geo.total_blocks);

    let mut buf = block();
    let disk = ok!(Disk::open(&d.rd, &mut buf));
    kassert_eq!(*disk.geometry(), geo);
    let root = ok!(disk.read_inode(ROOT_INO, &mut buf));
    kassert_eq!(
        (root.mode, root.nlink, root.size, root.nblocks),
        (Mode::Dir, 1, 4096, 1)
    );
    kassert_eq!(ok!(disk.lookup(&root, b"anything", &mut buf)), None);
    kassert!(ok!(disk.dir_is_empty(&root, &mut buf)));
    // Inode 0 is reserved: not a valid number, and its slot stays free.
    kassert_eq!(
        disk.read_inode(0, &mut buf),
        Err(FsError::BadInodeNumber { ino: 0 })
    );
    let h = ok!(disk.read_ag_header(0, &mut buf));
    kassert!(h.inode_used(0) && h.inode_used(1) && !h.inode_used(2));
    kassert_eq!(h.free_inodes(), geo.inodes_per_ag() - 2);
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

    // On a device: a corrupt primary stops open and fsck; a corrupt copy is
    // a problem fsck names by AG.
    let d = ok!(TestDisk::formatted(2 * MIB));
    let geo = *ok!(Disk::open(&d.rd, &mut buf)).geometry();
    ok!(d.read_block(geo.ag_start(2), &mut buf));
    buf[30] ^= 1;
    ok!(d.write_block(geo.ag_start(2), &buf));
    let r = ok!(fsck(&d.rd));
    kassert!(
        matches!(
            r.problems.as_slice(),
            [Problem::SecondarySuperblock {
                ag: 2,
                err: FsError::BadChecksum { .. }
            }]
        ),
        "{:?}",
        r.problems
    );
    ok!(d.read_block(0, &mut buf));
    buf[100] ^= 1;
    ok!(d.write_block(0, &buf));
    kassert!(matches!(
        Disk::open(&d.rd, &mut buf),
        Err(FsError::BadChecksum { .. })
    ));
    kassert!(matches!(check(&d.rd), Err(FsError::BadChecksum { .. })));
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

    // Through the device: corrupt one inode on disk; reads and fsck name it.
    let d = ok!(TestDisk::formatted(2 * MIB));
    let (mut a, mut b) = (block(), block());
    let disk = ok!(Disk::open(&d.rd, &mut a));
    let mut root = ok!(disk.read_inode(ROOT_INO, &mut a));
    let f = ok!(disk.create(&mut root, b"victim", Mode::File, &mut a));
    kassert_eq!(ok!(disk.read_inode(f.ino, &mut a)), f);
    let cblk = ino_to_cluster_block(disk.geometry(), f.ino);
    ok!(d.read_block(cblk, &mut b));
    b[ino_offset_in_cluster(f.ino) + 8] ^= 0xff;
    ok!(d.write_block(cblk, &b));
    kassert!(matches!(
        disk.read_inode(f.ino, &mut a),
        Err(FsError::BadChecksum { what: Meta::Inode(n), .. }) if n == f.ino
    ));
    let r = ok!(fsck(&d.rd));
    kassert!(
        r.problems
            .iter()
            .any(|p| matches!(p, Problem::Inode { ino, .. } if *ino == f.ino)),
        "{:?}",
        r.problems
    );
    match check(&d.rd) {
        Err(FsError::Inconsistent { problems, .. }) => kassert!(problems >= 1),
        other => kassert!(false, "check gave {other:?}"),
    }
    Ok(())
}

fn block_allocation_until_full() -> TestResult {
    // 2 MiB: 4 AGs of 128 blocks, 4 inode clusters, data from block 6.
    let d = ok!(TestDisk::formatted(2 * MIB));
    let (mut a, mut b) = (block(), block());
    let disk = ok!(Disk::open(&d.rd, &mut a));
    let geo = *disk.geometry();
    kassert_eq!((geo.ag_count, geo.ag_blocks, geo.data_start()), (4, 128, 6));

    let mut got = Vec::new();
    let err = loop {
        match disk.alloc_block_in_ag(2, 0, &mut a) {
            Ok(blk) => got.push(blk),
            Err(e) => break e,
        }
    };
    kassert_eq!(err, FsError::NoSpace { ag: 2 });
    kassert_eq!(got.len() as u32, geo.data_blocks_per_ag());
    kassert!(
        got.iter()
            .all(|&blk| geo.block_ag(blk) == 2 && geo.is_data_block(blk))
    );
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    kassert_eq!(sorted.len(), got.len(), "a block was handed out twice");
    kassert_eq!(ok!(disk.read_ag_header(2, &mut a)).free_blocks(), 0);

    // Free three; reallocating near a goal gets the goal back first.
    let (x, y, z) = (got[10], got[50], got[90]);
    for blk in [x, y, z] {
        ok!(disk.free_block(blk, &mut a));
    }
    kassert_eq!(ok!(disk.read_ag_header(2, &mut a)).free_blocks(), 3);
    kassert_eq!(
        disk.free_block(y, &mut a),
        Err(FsError::BlockNotAllocated { blk: y })
    );
    kassert_eq!(ok!(disk.alloc_block_in_ag(2, y, &mut a)), y);
    kassert_eq!(
        ok!(disk.alloc_block_in_ag(2, y, &mut a)),
        z,
        "search goes on after the goal"
    );
    kassert_eq!(ok!(disk.alloc_block_in_ag(2, y, &mut a)), x, "then wraps");
    kassert_eq!(
        disk.alloc_block_in_ag(2, y, &mut a),
        Err(FsError::NoSpace { ag: 2 })
    );
    // Metadata and out-of-range blocks cannot be freed.
    kassert!(matches!(
        disk.free_block(geo.ag_header_block(2), &mut a),
        Err(FsError::BadBlockNumber { .. })
    ));
    kassert!(matches!(
        disk.free_block(geo.total_blocks, &mut a),
        Err(FsError::BadBlockNumber { .. })
    ));
    kassert_eq!(
        disk.alloc_block_in_ag(9, 0, &mut a),
        Err(FsError::BadAg { ag: 9 })
    );

    // A full AG sends a goal there on to the next AG; a full fs says so.
    let next = ok!(disk.alloc_block(got[0], &mut a));
    kassert_eq!(geo.block_ag(next), 3);
    got.push(next);
    let err = loop {
        match disk.alloc_block(0, &mut a) {
            Ok(blk) => got.push(blk),
            Err(e) => break e,
        }
    };
    kassert_eq!(err, FsError::FsFull);
    // Every data block but the root directory's was handed out, once.
    kassert_eq!(
        got.len() as u64,
        u64::from(geo.ag_count * geo.data_blocks_per_ag()) - 1
    );

    // Leaked blocks are what fsck sees now; freeing them all makes it clean.
    let r = ok!(fsck(&d.rd));
    kassert_eq!(r.problems.len(), got.len());
    kassert!(
        r.problems
            .iter()
            .all(|p| matches!(p, Problem::BlockLeaked { .. }))
    );
    for &blk in &got {
        ok!(disk.free_block(blk, &mut b));
    }
    ok!(check(&d.rd));
    Ok(())
}

fn inode_allocation_until_full() -> TestResult {
    let d = ok!(TestDisk::formatted(2 * MIB));
    let mut a = block();
    let disk = ok!(Disk::open(&d.rd, &mut a));
    let geo = *disk.geometry();
    let mut got = Vec::new();
    let err = loop {
        match disk.alloc_inode(1, Mode::File, &mut a) {
            Ok(i) => got.push(i),
            Err(e) => break e,
        }
    };
    kassert_eq!(err, FsError::NoFreeInodes { ag: 1 });
    kassert_eq!(got.len() as u32, geo.inodes_per_ag());
    kassert!(
        got.iter()
            .all(|i| ino_to_ag(i.ino) == 1 && i.mode == Mode::File && i.nlink == 0)
    );
    kassert_eq!(ok!(disk.read_inode(got[7].ino, &mut a)), got[7]);

    // Freeing bumps the generation; the slot comes back.
    let victim = got[7];
    ok!(disk.free_inode(victim.ino, &mut a));
    kassert_eq!(
        disk.free_inode(victim.ino, &mut a),
        Err(FsError::InodeNotAllocated { ino: victim.ino })
    );
    let again = ok!(disk.alloc_inode(1, Mode::Dir, &mut a));
    kassert_eq!(again.ino, victim.ino);
    kassert_eq!(again.generation, victim.generation + 1);
    kassert_eq!(again.mode, Mode::Dir);
    got[7] = again;

    // AG 0 has inode 0 reserved and the root taken.
    let mut n0 = 0;
    while disk.alloc_inode(0, Mode::File, &mut a).is_ok() {
        n0 += 1;
    }
    kassert_eq!(n0, geo.inodes_per_ag() - 2);
    let h = ok!(disk.read_ag_header(0, &mut a));
    kassert_eq!(h.free_inodes(), 0);
    kassert_eq!(h.count_free_inodes(), 0);
    for agino in 2..geo.inodes_per_ag() {
        ok!(disk.free_inode(make_ino(0, agino), &mut a));
    }
    for i in &got {
        ok!(disk.free_inode(i.ino, &mut a));
    }
    kassert!(matches!(
        disk.free_inode(0, &mut a),
        Err(FsError::BadInodeNumber { ino: 0 })
    ));
    kassert_eq!(
        disk.alloc_inode(0, Mode::Free, &mut a),
        Err(FsError::InvalidMode)
    );
    ok!(check(&d.rd));
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

fn directory_with_200_names() -> TestResult {
    let d = ok!(TestDisk::formatted(4 * MIB));
    let (mut a, mut b) = (block(), block());
    let disk = ok!(Disk::open(&d.rd, &mut a));
    let mut root = ok!(disk.read_inode(ROOT_INO, &mut a));
    let name = |i: usize| alloc::format!("file-{i:03}");
    let mut inos = Vec::new();
    for i in 0..200 {
        let mode = if i % 10 == 0 { Mode::Dir } else { Mode::File };
        let f = ok!(disk.create(&mut root, name(i).as_bytes(), mode, &mut a));
        inos.push(f.ino);
    }
    // 200 names need 4 blocks of 63; the inodes spill over several AGs.
    kassert_eq!(root.size_blocks(), 4);
    kassert_eq!(
        ok!(disk.read_inode(ROOT_INO, &mut a)),
        root,
        "root inode on disk"
    );
    kassert!(inos.iter().any(|&i| ino_to_ag(i) > 0));
    for (i, &ino) in inos.iter().enumerate() {
        let (found, ft) = ok!(disk.lookup(&root, name(i).as_bytes(), &mut a)).ok_or_else(|| {
            kreclaim::harness::TestFailure::new(alloc::format!("{} not found", name(i)))
        })?;
        kassert_eq!(found, ino);
        kassert_eq!(
            ft,
            if i % 10 == 0 {
                FileType::Dir
            } else {
                FileType::File
            }
        );
    }
    kassert_eq!(
        disk.create(&mut root, b"file-123", Mode::File, &mut a),
        Err(FsError::NameExists)
    );
    kassert_eq!(ok!(check(&d.rd)).files, 180);

    // Remove every fourth name (their inodes are freed).
    for i in (0..200).step_by(4) {
        ok!(disk.remove(&root, name(i).as_bytes(), &mut a, &mut b));
    }
    for (i, &ino) in inos.iter().enumerate() {
        let found = ok!(disk.lookup(&root, name(i).as_bytes(), &mut a));
        if i % 4 == 0 {
            kassert_eq!(found, None, "{} was removed", name(i));
            kassert!(!ok!(disk.read_inode(ino, &mut a)).is_allocated());
        } else {
            kassert_eq!(found.map(|f| f.0), Some(ino));
        }
    }
    kassert_eq!(
        disk.unlink(&root, b"file-000", &mut a),
        Err(FsError::NotFound)
    );
    kassert_eq!(
        disk.link(&mut root, b"file-199", inos[1], FileType::File, &mut a),
        Err(FsError::NameExists),
        "the first block has room now, the name is in the last"
    );
    let r = ok!(check(&d.rd));
    kassert_eq!((r.dir_entries, r.inodes_used), (150, 151));

    // A non-empty directory cannot be removed; subdirectories work.
    let found = ok!(disk.lookup(&root, b"file-010", &mut a));
    let Some((sub, FileType::Dir)) = found else {
        kassert!(false, "file-010: {found:?}");
        return Ok(());
    };
    let mut subdir = ok!(disk.read_inode(sub, &mut a));
    ok!(disk.create(&mut subdir, b"inner", Mode::File, &mut a));
    kassert_eq!(
        disk.remove(&root, b"file-010", &mut a, &mut b),
        Err(FsError::DirNotEmpty { ino: sub })
    );
    // Names reuse freed slots: the root does not grow.
    for i in (0..200).step_by(4) {
        ok!(disk.create(&mut root, name(i).as_bytes(), Mode::File, &mut a));
    }
    kassert_eq!(root.size_blocks(), 4);
    ok!(check(&d.rd));
    Ok(())
}

/// The byte at `i` of file block `fb` in the test pattern.
fn pattern(fb: u64, i: usize) -> u8 {
    (fb as u8).wrapping_mul(31) ^ (i as u8).wrapping_mul(7) ^ (i >> 8) as u8
}

fn file_data_direct_and_indirect() -> TestResult {
    let d = ok!(TestDisk::formatted(4 * MIB));
    let (mut a, mut data) = (block(), block());
    let free_before = ok!(check(&d.rd)).blocks_free;
    let disk = ok!(Disk::open(&d.rd, &mut a));
    let mut root = ok!(disk.read_inode(ROOT_INO, &mut a));
    let mut f = ok!(disk.create(&mut root, b"big", Mode::File, &mut a));

    // 1 MiB: 40 direct blocks and 216 through the indirect block.
    let nblocks = (MIB / BLOCK_SIZE) as u64;
    for fb in 0..nblocks {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = pattern(fb, i);
        }
        ok!(disk.write_file_block(&mut f, fb, &data, &mut a));
    }
    f.size = MIB as u64;
    ok!(disk.write_inode(&f, &mut a));
    kassert_eq!(
        f.nblocks as u64,
        nblocks + 1,
        "data blocks plus the indirect block"
    );
    kassert!(f.indirect != 0);
    kassert!(f.direct.iter().all(|&p| p != 0));

    // Read back through a fresh open and a fresh inode read.
    let disk = ok!(Disk::open(&d.rd, &mut a));
    let f2 = ok!(disk.read_inode(f.ino, &mut a));
    kassert_eq!(f2, f);
    for fb in 0..nblocks {
        kassert!(
            ok!(disk.read_file_block(&f2, fb, &mut data)),
            "block {fb} mapped"
        );
        if let Some(i) = (0..BLOCK_SIZE).find(|&i| data[i] != pattern(fb, i)) {
            kassert!(false, "file block {fb} byte {i}: {:#x}", data[i]);
        }
    }
    // Past the data: a hole reads as zeros.
    data.fill(0xee);
    kassert!(!ok!(disk.read_file_block(&f2, nblocks, &mut data)));
    kassert!(data.iter().all(|&x| x == 0));
    // Mapping is contiguous where the allocator could keep it so.
    let b0 = ok!(disk.bmap(&f2, 0, &mut a)).unwrap_or(0);
    kassert_eq!(ok!(disk.bmap(&f2, 1, &mut a)), Some(b0 + 1));
    let r = ok!(check(&d.rd));
    kassert_eq!(
        r.blocks_referenced,
        nblocks + 1 + 1,
        "file + indirect + root dir"
    );

    // The last mappable block works; one more is too big.
    ok!(disk.write_file_block(&mut f, MAX_FILE_BLOCKS - 1, &data, &mut a));
    kassert_eq!(
        disk.write_file_block(&mut f, MAX_FILE_BLOCKS, &data, &mut a),
        Err(FsError::FileTooBig {
            ino: f.ino,
            file_block: MAX_FILE_BLOCKS
        })
    );
    ok!(check(&d.rd));

    // Truncate inside the indirect range keeps the indirect block.
    ok!(disk.truncate(&mut f, 50 * BLOCK_SIZE as u64, &mut a, &mut data));
    kassert_eq!(f.nblocks, 40 + 10 + 1);
    kassert!(f.indirect != 0);
    kassert_eq!(ok!(disk.bmap(&f, 50, &mut a)), None);
    kassert_eq!(ok!(disk.bmap(&f, MAX_FILE_BLOCKS - 1, &mut a)), None);
    for fb in [0, 39, 40, 49] {
        kassert!(ok!(disk.read_file_block(&f, fb, &mut data)));
        kassert!(
            data[100] == pattern(fb, 100) && data[4000] == pattern(fb, 4000),
            "block {fb}"
        );
    }
    ok!(check(&d.rd));

    // Truncate into the direct range drops the indirect block.
    ok!(disk.truncate(&mut f, 100 * 1024, &mut a, &mut data));
    kassert_eq!((f.nblocks, f.indirect), (25, 0));
    kassert_eq!(ok!(disk.read_inode(f.ino, &mut a)), f);
    ok!(check(&d.rd));
    ok!(disk.remove(&root, b"big", &mut a, &mut data));
    let r = ok!(check(&d.rd));
    kassert_eq!(r.blocks_free, free_before, "every block came back");
    Ok(())
}

fn fsck_catches_a_doubly_referenced_block() -> TestResult {
    let d = ok!(TestDisk::formatted(2 * MIB));
    let (mut a, data) = (block(), vec![0x5au8; BLOCK_SIZE]);
    let disk = ok!(Disk::open(&d.rd, &mut a));
    let mut root = ok!(disk.read_inode(ROOT_INO, &mut a));
    let mut fa = ok!(disk.create(&mut root, b"a", Mode::File, &mut a));
    let mut fb = ok!(disk.create(&mut root, b"b", Mode::File, &mut a));
    let shared = ok!(disk.write_file_block(&mut fa, 0, &data, &mut a));
    let own = ok!(disk.write_file_block(&mut fb, 0, &data, &mut a));
    ok!(check(&d.rd));

    fb.direct[0] = shared as u32;
    ok!(disk.write_inode(&fb, &mut a));
    let r = ok!(fsck(&d.rd));
    kassert!(
        r.problems.contains(&Problem::DoubleReference {
            blk: shared,
            first: fa.ino,
            second: fb.ino
        }),
        "{:?}",
        r.problems
    );
    kassert!(r.problems.contains(&Problem::BlockLeaked { blk: own }));
    kassert!(matches!(
        check(&d.rd),
        Err(FsError::Inconsistent { problems: 2, .. })
    ));
    Ok(())
}

fn fsck_catches_bitmap_inconsistencies() -> TestResult {
    let d = ok!(TestDisk::formatted(2 * MIB));
    let (mut a, data) = (block(), vec![1u8; BLOCK_SIZE]);
    let disk = ok!(Disk::open(&d.rd, &mut a));
    let mut root = ok!(disk.read_inode(ROOT_INO, &mut a));
    let mut f = ok!(disk.create(&mut root, b"f", Mode::File, &mut a));
    let blk = ok!(disk.write_file_block(&mut f, 0, &data, &mut a));
    ok!(check(&d.rd));

    // A referenced block marked free.
    ok!(disk.free_block(blk, &mut a));
    let r = ok!(fsck(&d.rd));
    kassert_eq!(r.problems, [Problem::BlockMarkedFree { blk, owner: f.ino }]);
    kassert_eq!(ok!(disk.alloc_block(blk, &mut a)), blk);
    ok!(check(&d.rd));

    // A used block nothing references.
    let leak = ok!(disk.alloc_block(0, &mut a));
    kassert_eq!(
        ok!(fsck(&d.rd)).problems,
        [Problem::BlockLeaked { blk: leak }]
    );
    ok!(disk.free_block(leak, &mut a));

    // An inode marked used in the bitmap whose slot is free.
    let mut h = ok!(disk.read_ag_header(2, &mut a));
    let agino = ok!(h.alloc_inode());
    ok!(disk.write_ag_header(&h));
    let ino = make_ino(2, agino);
    kassert_eq!(
        ok!(fsck(&d.rd)).problems,
        [Problem::InodeBitmap {
            ino,
            bitmap_used: true,
            mode: Mode::Free
        }]
    );
    let mut h = ok!(disk.read_ag_header(2, &mut a));
    ok!(h.free_inode(agino));
    ok!(disk.write_ag_header(&h));
    ok!(check(&d.rd));

    // A wrong link count, and an entry naming a freed inode.
    f.nlink = 2;
    ok!(disk.write_inode(&f, &mut a));
    kassert_eq!(
        ok!(fsck(&d.rd)).problems,
        [Problem::LinkCount {
            ino: f.ino,
            nlink: 2,
            found: 1
        }]
    );
    let mut g = ok!(disk.create(&mut root, b"g", Mode::File, &mut a));
    g.nlink = 0;
    ok!(disk.write_inode(&g, &mut a));
    ok!(disk.free_inode(g.ino, &mut a));
    let r = ok!(fsck(&d.rd));
    kassert!(
        r.problems
            .iter()
            .any(|p| matches!(p, Problem::DirEntry { ino, .. } if *ino == g.ino)),
        "{:?}",
        r.problems
    );
    Ok(())
}

/// Rewrites the CRC of a directory block after a raw edit.
fn reseal_dir_block(b: &mut [u8]) {
    let crc = Crc32c::new().update(&b[..8]).update(&b[12..]).finish();
    b[8..12].copy_from_slice(&crc.to_le_bytes());
}

fn fsck_catches_link_and_pointer_errors() -> TestResult {
    let d = ok!(TestDisk::formatted(2 * MIB));
    let (mut a, mut b, data) = (block(), block(), vec![9u8; BLOCK_SIZE]);
    let disk = ok!(Disk::open(&d.rd, &mut a));
    let geo = *disk.geometry();
    let mut root = ok!(disk.read_inode(ROOT_INO, &mut a));
    let mut f = ok!(disk.create(&mut root, b"f", Mode::File, &mut a));
    ok!(disk.write_file_block(&mut f, 0, &data, &mut a));
    let good = f;

    // A pointer into metadata: fsck and bmap refuse it.
    let agh = geo.ag_header_block(1);
    f.direct[1] = agh as u32;
    f.nblocks = 2;
    ok!(disk.write_inode(&f, &mut a));
    kassert_eq!(
        ok!(fsck(&d.rd)).problems,
        [Problem::BadPointer {
            ino: f.ino,
            blk: agh
        }]
    );
    kassert!(matches!(
        disk.bmap(&f, 1, &mut a),
        Err(FsError::Corrupt { .. })
    ));
    // A wrong block count.
    f = good;
    f.nblocks = 3;
    ok!(disk.write_inode(&f, &mut a));
    kassert_eq!(
        ok!(fsck(&d.rd)).problems,
        [Problem::BlockCount {
            ino: f.ino,
            recorded: 3,
            found: 1
        }]
    );
    ok!(disk.write_inode(&good, &mut a));
    ok!(check(&d.rd));

    // An allocated inode no directory names.
    let orphan = ok!(disk.alloc_inode(1, Mode::File, &mut a));
    kassert_eq!(
        ok!(fsck(&d.rd)).problems,
        [Problem::Unreachable { ino: orphan.ino }]
    );
    ok!(disk.free_inode(orphan.ino, &mut a));

    // Two directories naming each other, out of the root's reach; then the
    // root names one of them too, giving it two names.
    let mut x = ok!(disk.alloc_inode(2, Mode::Dir, &mut a));
    let mut y = ok!(disk.alloc_inode(2, Mode::Dir, &mut a));
    ok!(disk.link(&mut x, b"y", y.ino, FileType::Dir, &mut a));
    ok!(disk.link(&mut y, b"x", x.ino, FileType::Dir, &mut a));
    x.nlink = 1;
    y.nlink = 1;
    ok!(disk.write_inode(&x, &mut a));
    ok!(disk.write_inode(&y, &mut a));
    let p = ok!(fsck(&d.rd)).problems;
    kassert_eq!(
        p,
        [
            Problem::Unreachable { ino: x.ino },
            Problem::Unreachable { ino: y.ino }
        ]
    );
    ok!(disk.link(&mut root, b"x", x.ino, FileType::Dir, &mut a));
    let p = ok!(fsck(&d.rd)).problems;
    kassert_eq!(
        p,
        [
            Problem::LinkCount {
                ino: x.ino,
                nlink: 1,
                found: 2
            },
            Problem::DirHardLink {
                ino: x.ino,
                names: 2
            }
        ]
    );
    ok!(disk.unlink(&y, b"x", &mut a));
    ok!(check(&d.rd));

    // One name twice in a directory (written behind the helpers' back).
    let rblk = u64::from(root.direct[0]);
    ok!(d.read_block(rblk, &mut b));
    let (src, dst) = (DIRENT_SIZE, 10 * DIRENT_SIZE);
    kassert!(
        b[dst..dst + DIRENT_SIZE].iter().all(|&x| x == 0),
        "slot 10 is empty"
    );
    b.copy_within(src..src + DIRENT_SIZE, dst);
    reseal_dir_block(&mut b);
    ok!(dir_verify(&b, ROOT_INO, rblk));
    ok!(d.write_block(rblk, &b));
    let p = ok!(fsck(&d.rd)).problems;
    kassert!(
        p.contains(&Problem::DuplicateName { dir: ROOT_INO }),
        "{p:?}"
    );
    kassert!(
        p.iter()
            .any(|q| matches!(q, Problem::LinkCount { found: 2, .. })),
        "{p:?}"
    );
    b[dst..dst + DIRENT_SIZE].fill(0);
    reseal_dir_block(&mut b);
    ok!(d.write_block(rblk, &b));
    ok!(check(&d.rd));

    // An AG header counter that disagrees with its bitmap.
    let hblk = geo.ag_header_block(3);
    ok!(d.read_block(hblk, &mut b));
    let free = u32::from_le_bytes([b[16], b[17], b[18], b[19]]);
    b[16..20].copy_from_slice(&(free - 1).to_le_bytes());
    let crc = Crc32c::new().update(&b[..124]).update(&b[128..]).finish();
    b[124..128].copy_from_slice(&crc.to_le_bytes());
    ok!(d.write_block(hblk, &b));
    kassert_eq!(
        ok!(fsck(&d.rd)).problems,
        [Problem::FreeCounter {
            ag: 3,
            what: "blocks",
            header: free - 1,
            bitmap: free
        }]
    );
    Ok(())
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

    // mkfs writes each AG's superblock copy, header and clusters, plus the
    // root directory block, and reads nothing.
    d.reset_stats();
    kassert_eq!(d.stats(), Default::default());
    let geo = ok!(mkfs(&d.rd, MkfsOptions::default()));
    let expect = u64::from(geo.ag_count) * u64::from(2 + geo.clusters_per_ag) + 1;
    let s = d.stats();
    kassert_eq!((s.write_blocks, s.read_calls), (expect, 0));
    // Reading an inode is one block read.
    d.reset_stats();
    let disk = ok!(Disk::open(&d.rd, &mut buf));
    ok!(disk.read_inode(ROOT_INO, &mut buf));
    kassert_eq!(d.stats().read_blocks, 2, "superblock + one inode cluster");
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

    // The filesystem reports the failing block.
    let d = ok!(TestDisk::formatted(2 * MIB));
    let disk = ok!(Disk::open(&d.rd, &mut buf));
    let cblk = ino_to_cluster_block(disk.geometry(), ROOT_INO);
    d.inject_read_errors(ErrorInjection::FailBlock(cblk));
    kassert_eq!(
        disk.read_inode(ROOT_INO, &mut buf),
        Err(FsError::Io {
            blk: cblk,
            err: IoError::Injected
        })
    );
    d.clear_injection();
    ok!(disk.read_inode(ROOT_INO, &mut buf));
    Ok(())
}

fn io_errors_inside_fs_operations_are_rolled_back() -> TestResult {
    let d = ok!(TestDisk::formatted(2 * MIB));
    let (mut a, data) = (block(), vec![0x3cu8; BLOCK_SIZE]);
    let disk = ok!(Disk::open(&d.rd, &mut a));
    let mut root = ok!(disk.read_inode(ROOT_INO, &mut a));
    let mut f = ok!(disk.create(&mut root, b"f", Mode::File, &mut a));
    // Fill the root's first block so the next create must grow it.
    for i in 1..63 {
        ok!(disk.create(
            &mut root,
            alloc::format!("n{i}").as_bytes(),
            Mode::File,
            &mut a
        ));
    }
    ok!(check(&d.rd));

    // Fail the k-th write of each operation in turn: each failure must come
    // back as an error and leave fsck clean; finally the operation succeeds.
    let mut failures = 0;
    for k in 0.. {
        d.inject_write_errors(ErrorInjection::FailAfter { ok: k, fail: 1 });
        // File block 40 is the first behind the indirect block.
        let res = disk.write_file_block(&mut f, 40, &data, &mut a);
        d.clear_injection();
        match res {
            Ok(_) => break,
            Err(FsError::Io { .. }) => failures += 1,
            Err(e) => kassert!(false, "write {k}: {e:?}"),
        }
        ok!(check(&d.rd));
        kassert_eq!(
            ok!(disk.read_inode(f.ino, &mut a)),
            f,
            "in-memory inode rolled back"
        );
        kassert!(k < 20, "never succeeded");
    }
    kassert!(
        failures >= 4,
        "data, two AG headers, indirect, inode: {failures}"
    );
    ok!(check(&d.rd));

    // With the indirect block in place: AG header, data, indirect, inode.
    let mut failures = 0;
    for k in 0.. {
        d.inject_write_errors(ErrorInjection::FailAfter { ok: k, fail: 1 });
        let res = disk.write_file_block(&mut f, 41, &data, &mut a);
        d.clear_injection();
        match res {
            Ok(_) => break,
            Err(FsError::Io { .. }) => failures += 1,
            Err(e) => kassert!(false, "write {k}: {e:?}"),
        }
        ok!(check(&d.rd));
        kassert_eq!(ok!(disk.read_inode(f.ino, &mut a)), f);
        kassert_eq!(ok!(disk.bmap(&f, 41, &mut a)), None, "entry cleared again");
        kassert!(k < 20, "never succeeded");
    }
    kassert_eq!(failures, 4);
    kassert_eq!(f.nblocks, 3);

    let mut failures = 0;
    for k in 0.. {
        d.inject_write_errors(ErrorInjection::FailAfter { ok: k, fail: 1 });
        let res = disk.create(&mut root, b"grows-the-root", Mode::File, &mut a);
        d.clear_injection();
        match res {
            Ok(_) => break,
            Err(FsError::Io { .. }) => failures += 1,
            Err(e) => kassert!(false, "write {k}: {e:?}"),
        }
        ok!(check(&d.rd));
        kassert_eq!(ok!(disk.read_inode(ROOT_INO, &mut a)), root);
        kassert!(k < 20, "never succeeded");
    }
    kassert!(failures >= 4, "{failures}");
    kassert_eq!(root.size_blocks(), 2);
    ok!(check(&d.rd));
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
