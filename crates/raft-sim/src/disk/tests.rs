//! Tests of the durability model.

use std::collections::BTreeSet;
use std::path::Path;

use super::*;

/// Number of seeds for tests that need both outcomes of a random choice.
const SEEDS: u64 = 200;

/// SplitMix64, so that these tests do not depend on the simulator's
/// generator.
fn generator(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn crash(disk: &SimDisk, seed: u64) {
    disk.crash(&mut generator(seed));
}

/// Returns a disk with the durable directory `/d`.
fn disk_with_dir() -> SimDisk {
    let disk = SimDisk::new();
    disk.create_dir_all(Path::new("/d")).unwrap();
    disk.sync_all();
    disk
}

/// Creates `path` with `data` and makes both the file and its entry durable.
fn durable_file(disk: &SimDisk, path: &str, data: &[u8]) -> SimFile {
    let path = Path::new(path);
    let mut file = disk.create_new(path).unwrap();
    disk.write(&mut file, data).unwrap();
    disk.sync_file(&mut file).unwrap();
    disk.sync_dir(path.parent().unwrap()).unwrap();
    file
}

fn read(disk: &SimDisk, path: &str) -> Vec<u8> {
    disk.read_file(Path::new(path)).unwrap()
}

#[test]
fn unsynced_write_lost_kept_or_torn() {
    let data: Vec<u8> = (0..100).collect();
    let mut lengths = BTreeSet::new();
    for seed in 0..SEEDS {
        let disk = disk_with_dir();
        let mut file = durable_file(&disk, "/d/f", b"synced");
        disk.write(&mut file, &data).unwrap();
        assert_eq!(disk.unsynced_bytes(), 100);

        crash(&disk, seed);
        let content = read(&disk, "/d/f");
        assert!(content.starts_with(b"synced"), "seed {seed}: {content:?}");
        let tail = &content[6..];
        assert_eq!(tail, &data[..tail.len()], "seed {seed}: not a prefix");
        lengths.insert(tail.len());
    }
    assert!(lengths.contains(&0), "no seed lost the whole write");
    assert!(lengths.contains(&100), "no seed kept the whole write");
    assert!(
        lengths.iter().any(|&len| 0 < len && len < 100),
        "no seed tore the write"
    );
}

#[test]
fn unsynced_writes_keep_order() {
    for seed in 0..SEEDS {
        let disk = disk_with_dir();
        let mut file = durable_file(&disk, "/d/f", b"");
        for chunk in [b"aaaa", b"bbbb", b"cccc"] {
            disk.write(&mut file, chunk).unwrap();
        }
        crash(&disk, seed);
        let content = read(&disk, "/d/f");
        assert_eq!(content[..], b"aaaabbbbcccc"[..content.len()], "seed {seed}");
    }
}

#[test]
fn synced_write_survives_crash() {
    for seed in 0..SEEDS {
        let disk = disk_with_dir();
        let mut file = durable_file(&disk, "/d/f", b"one");
        disk.write(&mut file, b"two").unwrap();
        disk.sync_file(&mut file).unwrap();
        assert_eq!(disk.unsynced_bytes(), 0);

        crash(&disk, seed);
        assert_eq!(read(&disk, "/d/f"), b"onetwo", "seed {seed}");
    }
}

#[test]
fn unsynced_truncate_may_roll_back() {
    let mut contents = BTreeSet::new();
    for seed in 0..SEEDS {
        let disk = disk_with_dir();
        let mut file = durable_file(&disk, "/d/f", b"abcdef");
        disk.truncate(Path::new("/d/f"), 2).unwrap();
        disk.write(&mut file, b"XY").unwrap();
        assert_eq!(read(&disk, "/d/f"), b"abXY");

        crash(&disk, seed);
        contents.insert(read(&disk, "/d/f"));
    }
    let expected: BTreeSet<Vec<u8>> = [&b"abcdef"[..], b"ab", b"abX", b"abXY"]
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(contents, expected);
}

#[test]
fn synced_truncate_survives_crash() {
    for seed in 0..SEEDS {
        let disk = disk_with_dir();
        let mut file = durable_file(&disk, "/d/f", b"abcdef");
        disk.truncate(Path::new("/d/f"), 2).unwrap();
        disk.sync_file(&mut file).unwrap();
        crash(&disk, seed);
        assert_eq!(read(&disk, "/d/f"), b"ab", "seed {seed}");
    }
}

#[test]
fn truncate_extends_with_zeros() {
    let disk = disk_with_dir();
    durable_file(&disk, "/d/f", b"ab");
    disk.truncate(Path::new("/d/f"), 4).unwrap();
    assert_eq!(read(&disk, "/d/f"), b"ab\0\0");
}

#[test]
fn create_without_dir_sync_may_vanish() {
    let mut seeds_kept = 0;
    for seed in 0..SEEDS {
        let disk = disk_with_dir();
        let mut file = disk.create_new(Path::new("/d/f")).unwrap();
        disk.write(&mut file, b"data").unwrap();
        disk.sync_file(&mut file).unwrap();
        assert_eq!(disk.unsynced_bytes(), 4, "the entry is not durable");

        crash(&disk, seed);
        if disk.exists("/d/f") {
            seeds_kept += 1;
            assert_eq!(read(&disk, "/d/f"), b"data", "seed {seed}");
        }
    }
    assert!(seeds_kept > 0, "no seed kept the file");
    assert!(seeds_kept < SEEDS, "no seed removed the file");
}

#[test]
fn created_file_kept_from_empty_content() {
    let mut lengths = BTreeSet::new();
    for seed in 0..SEEDS {
        let disk = disk_with_dir();
        let mut file = disk.create_new(Path::new("/d/f")).unwrap();
        disk.write(&mut file, b"data").unwrap();
        crash(&disk, seed);
        if let Some(len) = disk.file_len("/d/f") {
            assert_eq!(read(&disk, "/d/f"), &b"data"[..len as usize]);
            lengths.insert(len);
        }
    }
    assert!(lengths.contains(&0), "no seed kept an empty file");
    assert!(lengths.contains(&4), "no seed kept the whole file");
}

#[test]
fn dir_sync_makes_create_durable() {
    for seed in 0..SEEDS {
        let disk = disk_with_dir();
        durable_file(&disk, "/d/f", b"data");
        crash(&disk, seed);
        assert_eq!(read(&disk, "/d/f"), b"data", "seed {seed}");
    }
}

#[test]
fn created_dir_may_vanish_with_files() {
    let mut seeds_kept = 0;
    for seed in 0..SEEDS {
        let disk = SimDisk::new();
        disk.create_dir_all(Path::new("/a/b")).unwrap();
        // `/a/b` and its file are durable inside `/a`, but `/a` is not
        // durable inside `/`.
        disk.sync_dir(Path::new("/a")).unwrap();
        durable_file(&disk, "/a/b/f", b"data");

        crash(&disk, seed);
        if disk.exists("/a") {
            seeds_kept += 1;
            assert_eq!(read(&disk, "/a/b/f"), b"data", "seed {seed}");
        } else {
            assert!(!disk.exists("/a/b/f"), "seed {seed}: orphan file");
            assert_eq!(
                disk.list_dir(Path::new("/")).unwrap(),
                Vec::<OsString>::new()
            );
        }
    }
    assert!(seeds_kept > 0, "no seed kept the directory");
    assert!(seeds_kept < SEEDS, "no seed removed the directory");
}

#[test]
fn rename_without_dir_sync_may_roll_back() {
    let mut seeds_renamed = 0;
    for seed in 0..SEEDS {
        let disk = disk_with_dir();
        durable_file(&disk, "/d/old", b"old");
        durable_file(&disk, "/d/new", b"replaced");
        disk.rename(Path::new("/d/old"), Path::new("/d/new"))
            .unwrap();
        assert!(!disk.exists("/d/old"));
        assert_eq!(read(&disk, "/d/new"), b"old");

        crash(&disk, seed);
        // A rename within a directory is atomic.
        if disk.exists("/d/old") {
            assert_eq!(read(&disk, "/d/old"), b"old", "seed {seed}");
            assert_eq!(read(&disk, "/d/new"), b"replaced", "seed {seed}");
        } else {
            seeds_renamed += 1;
            assert_eq!(read(&disk, "/d/new"), b"old", "seed {seed}");
        }
    }
    assert!(seeds_renamed > 0, "no seed kept the rename");
    assert!(seeds_renamed < SEEDS, "no seed rolled the rename back");
}

#[test]
fn rename_with_dir_sync_survives_crash() {
    for seed in 0..SEEDS {
        let disk = disk_with_dir();
        durable_file(&disk, "/d/old", b"data");
        disk.rename(Path::new("/d/old"), Path::new("/d/new"))
            .unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        crash(&disk, seed);
        assert!(!disk.exists("/d/old"), "seed {seed}");
        assert_eq!(read(&disk, "/d/new"), b"data", "seed {seed}");
    }
}

#[test]
fn remove_without_dir_sync_may_roll_back() {
    let mut seeds_removed = 0;
    for seed in 0..SEEDS {
        let disk = disk_with_dir();
        durable_file(&disk, "/d/f", b"data");
        disk.remove_file(Path::new("/d/f")).unwrap();
        assert!(!disk.exists("/d/f"));

        crash(&disk, seed);
        if disk.exists("/d/f") {
            assert_eq!(read(&disk, "/d/f"), b"data", "seed {seed}");
        } else {
            seeds_removed += 1;
        }
    }
    assert!(seeds_removed > 0, "no seed kept the removal");
    assert!(seeds_removed < SEEDS, "no seed rolled the removal back");
}

#[test]
fn directory_operations_keep_order() {
    // A crash keeps a prefix of a directory's operations, so `b` never
    // exists without `a`.
    for seed in 0..SEEDS {
        let disk = disk_with_dir();
        disk.create_new(Path::new("/d/a")).unwrap();
        disk.create_new(Path::new("/d/b")).unwrap();
        crash(&disk, seed);
        if disk.exists("/d/b") {
            assert!(disk.exists("/d/a"), "seed {seed}");
        }
    }
}

#[test]
fn stale_handle_fails_after_crash() {
    let disk = disk_with_dir();
    let mut file = durable_file(&disk, "/d/f", b"data");
    crash(&disk, 1);

    let write = disk.write(&mut file, b"more").unwrap_err();
    assert!(write.to_string().contains("stale"), "{write}");
    assert!(disk.sync_file(&mut file).is_err());
    assert_eq!(read(&disk, "/d/f"), b"data");

    let mut reopened = disk.open_append(Path::new("/d/f")).unwrap();
    disk.write(&mut reopened, b"more").unwrap();
    assert_eq!(read(&disk, "/d/f"), b"datamore");
}

#[test]
fn handle_outlives_rename_and_remove() {
    let disk = disk_with_dir();
    let mut file = durable_file(&disk, "/d/f", b"a");
    disk.rename(Path::new("/d/f"), Path::new("/d/g")).unwrap();
    disk.write(&mut file, b"b").unwrap();
    assert_eq!(read(&disk, "/d/g"), b"ab");

    disk.remove_file(Path::new("/d/g")).unwrap();
    disk.write(&mut file, b"c").unwrap();
    disk.sync_file(&mut file).unwrap();
    assert!(!disk.exists("/d/g"));
}

#[test]
fn crash_is_deterministic() {
    let build = || {
        let disk = disk_with_dir();
        let mut synced = durable_file(&disk, "/d/synced", b"0123");
        disk.write(&mut synced, &[7; 50]).unwrap();
        let mut created = disk.create_new(Path::new("/d/created")).unwrap();
        disk.write(&mut created, &[8; 50]).unwrap();
        durable_file(&disk, "/d/renamed", b"r");
        disk.rename(Path::new("/d/renamed"), Path::new("/d/target"))
            .unwrap();
        disk.create_dir_all(Path::new("/d/sub/dir")).unwrap();
        disk
    };
    let mut outcomes = BTreeSet::new();
    for seed in 0..SEEDS {
        let first = build();
        let second = build();
        crash(&first, seed);
        crash(&second, seed);
        assert_eq!(first.snapshot(), second.snapshot(), "seed {seed}");
        outcomes.insert(first.snapshot());
    }
    assert!(outcomes.len() > 10, "crashes vary too little across seeds");
}

#[test]
fn crash_leaves_everything_durable() {
    for seed in 0..SEEDS {
        let disk = disk_with_dir();
        let mut file = disk.create_new(Path::new("/d/f")).unwrap();
        disk.write(&mut file, b"data").unwrap();
        crash(&disk, seed);
        assert_eq!(disk.unsynced_bytes(), 0, "seed {seed}");

        let after_first = disk.snapshot();
        crash(&disk, seed + 1);
        assert_eq!(disk.snapshot(), after_first, "seed {seed}");
    }
}

#[test]
fn failed_sync_makes_nothing_durable() {
    let disk = disk_with_dir();
    let mut file = durable_file(&disk, "/d/f", b"a");
    disk.write(&mut file, b"b").unwrap();
    disk.set_fail_next_sync(true);

    let error = disk.sync_file(&mut file).unwrap_err();
    assert!(error.to_string().contains("injected"), "{error}");
    assert_eq!(disk.unsynced_bytes(), 1);

    disk.sync_file(&mut file).unwrap();
    assert_eq!(disk.unsynced_bytes(), 0, "only the next sync fails");
}

#[test]
fn missing_paths_are_not_found() {
    let disk = SimDisk::new();
    let missing = Path::new("/missing");
    let kinds = [
        ("list_dir", disk.list_dir(missing).unwrap_err().kind()),
        ("read_file", disk.read_file(missing).unwrap_err().kind()),
        ("open_append", disk.open_append(missing).unwrap_err().kind()),
        ("sync_dir", disk.sync_dir(missing).unwrap_err().kind()),
        ("truncate", disk.truncate(missing, 0).unwrap_err().kind()),
        ("remove_file", disk.remove_file(missing).unwrap_err().kind()),
        (
            "rename",
            disk.rename(missing, Path::new("/x")).unwrap_err().kind(),
        ),
        (
            "create_new in missing dir",
            disk.create_new(Path::new("/missing/f")).unwrap_err().kind(),
        ),
    ];
    for (call, kind) in kinds {
        assert_eq!(kind, io::ErrorKind::NotFound, "{call}");
    }
}

#[test]
fn create_new_existing_already_exists() {
    let disk = disk_with_dir();
    durable_file(&disk, "/d/f", b"");
    let file = disk.create_new(Path::new("/d/f")).unwrap_err();
    assert_eq!(file.kind(), io::ErrorKind::AlreadyExists);
    let dir = disk.create_new(Path::new("/d")).unwrap_err();
    assert_eq!(dir.kind(), io::ErrorKind::AlreadyExists);
}

#[test]
fn current_dir_paths_share_root() {
    let disk = SimDisk::new();
    disk.create_dir_all(Path::new("wal")).unwrap();
    disk.create_new(Path::new("./wal/./f")).unwrap();
    assert_eq!(
        disk.list_dir(Path::new(".")).unwrap(),
        vec![OsString::from("wal")]
    );
    assert_eq!(
        disk.list_dir(Path::new("wal")).unwrap(),
        vec![OsString::from("f")]
    );
    let parent = disk.read_file(Path::new("../f")).unwrap_err();
    assert_eq!(parent.kind(), io::ErrorKind::InvalidInput);
}
