//! Files in and out: every file the library writes goes through a temp file in the same
//! directory and a rename, so a killed run never leaves a half-written file; every file
//! it reads whole must be a regular file, so a FIFO or a device is refused instead of
//! blocking forever.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

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
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    // Valid UTF-8 can still be binary (a file of NUL bytes scores as a "text" with
    // perplexity 7.8e7): no text a user means holds a NUL.
    if let Some(at) = text.find('\0') {
        return Err(Error::format(
            path,
            format!("NUL byte at offset {at}: not a text file"),
        ));
    }
    Ok(text)
}

/// The absolute path a write to `path` lands on, whether or not it exists yet: the longest
/// existing prefix with its links and `..` resolved by the file system, the rest (not yet
/// made, so no links) resolved by name. `None` when no prefix can be resolved.
pub fn landing_path(path: &Path) -> Option<PathBuf> {
    let abs = match path.is_absolute() {
        true => path.to_path_buf(),
        false => std::env::current_dir().ok()?.join(path),
    };
    let parts: Vec<Component> = abs.components().collect();
    let mut split = parts.len();
    let base = loop {
        let prefix: PathBuf = parts[..split].iter().collect();
        if let Ok(c) = prefix.canonicalize() {
            break c;
        }
        split = split.checked_sub(1)?;
    };
    let mut out = base;
    for c in &parts[split..] {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Some(out)
}

/// Whether writing `out` would write over `input` or into it (the input itself, or a
/// directory input's inside), with both resolved as `landing_path` resolves them.
pub fn writes_over(out: &Path, input: &Path) -> bool {
    match (landing_path(out), landing_path(input)) {
        (Some(o), Some(i)) => o == i || (i.is_dir() && o.starts_with(&i)),
        _ => false,
    }
}

/// Refuses an output that would write over, or into, one of `inputs` (the model, its
/// texts, a plan), naming both, before any work is done.
pub fn refuse_overwriting_inputs(out: &Path, inputs: &[&Path]) -> Result<()> {
    match inputs.iter().find(|i| writes_over(out, i)) {
        Some(input) => Err(Error::Invalid(format!(
            "output {} would overwrite the input {}",
            out.display(),
            input.display()
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_of_nul_bytes_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("zeros.txt");
        std::fs::write(&p, [0u8; 64]).unwrap();
        let e = read_text_file(&p).unwrap_err().to_string();
        assert!(
            e.contains("zeros.txt") && e.contains("NUL byte at offset 0"),
            "{e}"
        );
    }

    /// A disk that fills up mid-write: a clear error naming the file, and neither a
    /// partial file nor the temporary one left behind.
    #[test]
    fn disk_full_while_writing_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("front.json");
        let e = write_atomic_with(&p, |w| {
            w.write_all(&[b'x'; 10_000])?;
            Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "No space left on device",
            ))
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("front.json") && e.contains("No space left"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

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
