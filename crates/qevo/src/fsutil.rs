//! Files in and out: every file the library writes goes through a temp file in the same
//! directory and a rename, so a killed run never leaves a half-written file; every file
//! it reads whole must be a regular file, so a FIFO or a device is refused instead of
//! blocking forever.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Streams into a temp file next to `path`, fsyncs, then renames it over `path`
/// (`evo::checkpoint::write_atomic_with`, the workspace's one atomic write).
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    evo::checkpoint::write_atomic_with(path, fill).map_err(|e| Error::io(path, e))
}

/// Refuses anything but a regular file (a FIFO would block the reader forever, a device
/// never ends, a directory is not a file).
pub fn check_regular_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        return Ok(());
    }
    let what = if meta.is_dir() {
        "a directory"
    } else {
        "not a regular file (a FIFO, socket or device)"
    };
    Err(Error::io(
        path,
        std::io::Error::new(std::io::ErrorKind::InvalidInput, what),
    ))
}

/// Reads a whole text file, refusing anything but a regular file.
pub fn read_text_file(path: &Path) -> Result<String> {
    check_regular_file(path)?;
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn write_atomic_into_missing_dir_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope").join("out.txt");
        let err = write_atomic(&p, b"x").unwrap_err().to_string();
        assert!(err.contains("out.txt"), "{err}");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("SKIP: mkfifo is not available");
            return;
        }
        let e = read_text_file(&fifo).unwrap_err().to_string();
        assert!(
            e.contains("pipe") && e.contains("not a regular file"),
            "{e}"
        );
        let e = read_text_file(dir.path()).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
    }
}
