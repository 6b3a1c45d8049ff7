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
        Some(input) => Err(Error::Overwrite {
            out: out.to_path_buf(),
            what: "input",
            input: input.to_path_buf(),
        }),
        None => Ok(()),
    }
}

/// Refuses an output directory that is, or is inside, one of `inputs`, or whose files
/// `names` (what the command writes there) would write over one of them.
pub fn refuse_dir_over_inputs(dir: &Path, names: &[&str], inputs: &[&Path]) -> Result<()> {
    refuse_overwriting_inputs(dir, inputs)?;
    names
        .iter()
        .try_for_each(|n| refuse_overwriting_inputs(&dir.join(n), inputs))
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

/// A run's claim on an output directory: `DIR/.qevo.lock`, created exclusively and
/// holding the process id, removed when dropped. A second run on the same directory is
/// refused while the first lives (their checkpoints and outputs would interleave); a
/// lock whose process is gone (killed) is taken over.
#[derive(Debug)]
pub struct OutLock {
    path: PathBuf,
}

impl OutLock {
    pub fn acquire(dir: &Path) -> Result<OutLock> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(".qevo.lock");
        for _ in 0..2 {
            match std::fs::File::create_new(&path) {
                Ok(mut f) => {
                    write!(f, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
                    return Ok(OutLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok());
                    match holder {
                        Some(pid) if process_alive(pid) => {
                            return Err(Error::Locked {
                                dir: dir.to_path_buf(),
                                pid,
                            })
                        }
                        // A killed run's lock (or an unreadable one): take it over.
                        _ => std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?,
                    }
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::Invalid(format!(
            "{}: could not take the lock",
            path.display()
        )))
    }
}

impl Drop for OutLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether process `pid` runs: its `/proc` entry exists and is not a zombie. Without
/// `/proc` (not Linux) every holder counts as alive: the lock is then only removed by
/// hand, never silently.
fn process_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn a_second_run_on_a_locked_output_is_refused_and_a_dead_runs_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let first = OutLock::acquire(dir.path()).unwrap();
        let e = OutLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains("in use by another qevo run"), "{e}");
        drop(first);
        let again = OutLock::acquire(dir.path()).unwrap();
        drop(again);
        // A lock left by a process that no longer exists.
        std::fs::write(dir.path().join(".qevo.lock"), "999999999").unwrap();
        let taken = OutLock::acquire(dir.path());
        assert!(taken.is_ok(), "{taken:?}");
    }
}
