//! The outbox's file: private to its owner, and an older file format is a
//! start-up error that says so, never taken for damage.
#![allow(clippy::unwrap_used)]

use flow_events_core::StoreErrorKind;
use flow_events_outbox::RedbStore;

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[test]
fn a_new_outbox_is_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let outbox_dir = dir.path().join("state").join("outbox");
    let path = outbox_dir.join("outbox.redb");
    let store = RedbStore::open(&path).unwrap();
    drop(store);
    assert_eq!(mode(&path), 0o600, "file");
    assert_eq!(mode(&outbox_dir), 0o700, "directory");
    assert_eq!(mode(&dir.path().join("state")), 0o700, "parent directory");
}

#[cfg(unix)]
#[test]
fn a_fresh_file_after_moving_a_damaged_one_aside_is_private_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    std::fs::write(&path, vec![0x5a_u8; 10_000]).unwrap();
    let store = RedbStore::open(&path).unwrap();
    drop(store);
    assert_eq!(mode(&path), 0o600);
}

/// redb's header: two commit slots of 128 bytes from byte 64, each starting
/// with its file format version.
const SLOT_VERSION_OFFSETS: [usize; 2] = [64, 192];

#[test]
fn a_file_in_an_older_format_is_an_error_that_says_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    drop(RedbStore::open(&path).unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    for offset in SLOT_VERSION_OFFSETS {
        bytes[offset] = 1;
    }
    std::fs::write(&path, &bytes).unwrap();

    let err = RedbStore::open(&path).unwrap_err();
    assert_ne!(err.kind(), StoreErrorKind::Corrupt, "{err}");
    let text = err.to_string();
    assert!(text.contains("format upgrade"), "{text}");
    assert!(!text.contains("corrupt"), "{text}");
    // Nothing was moved aside or rewritten.
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let err = flow_events_outbox::read(&path).unwrap_err();
    assert!(err.to_string().contains("format upgrade"), "{err}");
}
