//! Folders and files only this node's user can read. The data directory holds every command,
//! its output and the node's keys, so steward creates it (and its sub-folders) with mode 0700
//! and every file in it with mode 0600, and warns at start when an existing one is wider.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` and any missing parents with mode 0700 (existing ones are left as they are).
pub(crate) fn create_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Opens `path` for appending, creating it with mode 0600.
pub(crate) fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Creates (or truncates) `path` for writing, with mode 0600 when created.
pub(crate) fn create(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Writes `bytes` to `path`, creating it with mode 0600.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    create(path)?.write_all(bytes)
}

/// Warns once when the data directory can be read by other users.
pub(crate) fn warn_if_readable_by_others(dir: &Path) {
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            "the data directory {} has mode {mode:o}: other local users may read every command, \
             its output and the logs kept there; run `chmod 700 {}`",
            dir.display(),
            dir.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a").join("b");
        create_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        let f = dir.join("x.log");
        append(&f).unwrap().write_all(b"x").unwrap();
        assert_eq!(mode(&f), 0o600);
        write(&dir.join("y"), b"y").unwrap();
        assert_eq!(mode(&dir.join("y")), 0o600);
    }
}
