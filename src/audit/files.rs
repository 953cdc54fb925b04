//! The audit files on disk: opening plain or gzip'd files, finding a live file's rotated
//! predecessors, reading a file's last complete record, and the live file as its writer
//! sees it (where the chain resumes, appending a line whole or not at all).

use super::chain::Link;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Opens an audit file for reading, plain or gzip'd (told by its first bytes, not its name).
pub fn open(path: &Path) -> io::Result<Box<dyn BufRead>> {
    let mut file = File::open(path)?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    let head = io::Cursor::new(magic[..n].to_vec()).chain(file);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(head),
        )))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 16, head)))
    }
}

/// The end of a live file: its last complete line, and where a trailing partial line (a write
/// cut short by a crash) begins.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tail {
    /// The last line that ends in a newline (without it).
    pub last_line: Option<Vec<u8>>,
    /// Offset of bytes after the last newline, when there are any.
    pub partial_from: Option<u64>,
}

/// Reads the tail of an open plain file without reading all of it.
pub fn tail(file: &File) -> io::Result<Tail> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Tail::default());
    }
    let mut window = len.min(1 << 16);
    loop {
        let start = len - window;
        let mut buf = vec![0; window as usize];
        file.read_exact_at(&mut buf, start)?;
        let end = match buf.iter().rposition(|&b| b == b'\n') {
            Some(i) => i,
            None if start == 0 => {
                return Ok(Tail {
                    last_line: None,
                    partial_from: Some(0),
                });
            }
            None => {
                window = (window * 4).min(len);
                continue;
            }
        };
        let partial_from = (end + 1 < buf.len()).then_some(start + end as u64 + 1);
        match buf[..end].iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                return Ok(Tail {
                    last_line: Some(buf[i + 1..end].to_vec()),
                    partial_from,
                });
            }
            None if start == 0 => {
                return Ok(Tail {
                    last_line: Some(buf[..end].to_vec()),
                    partial_from,
                });
            }
            None => window = (window * 4).min(len),
        }
    }
}

/// The last complete line of a closed audit file, plain or gzip'd (reads all of it).
pub fn last_line(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut reader = open(path)?;
    let (mut line, mut last) = (Vec::new(), None);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(last);
        }
        if let Some(complete) = line.strip_suffix(b"\n")
            && !complete.iter().all(u8::is_ascii_whitespace)
        {
            last = Some(complete.to_vec());
        }
    }
}

/// The rotated predecessors of a live file (`audit.log.1`, `audit.log.2.gz`,
/// `audit.log-20261201`, …: same directory, name begins with the live name and `.` or `-`),
/// oldest first by modification time.
pub fn rotated(live: &Path) -> io::Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (live.parent(), live.file_name().and_then(|n| n.to_str())) else {
        return Ok(Vec::new());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(other) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let rotated = other
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('-'));
        if rotated && entry.file_type()?.is_file() {
            found.push((entry.metadata()?.modified()?, entry.path()));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Appends `line` to `file`; on a short or failed write, truncates the file back to `before`.
/// If even that fails, returns `true` in the error's place so the caller starts the next
/// record on a fresh line.
pub(super) fn append(
    file: &mut File,
    before: u64,
    line: &[u8],
    fsync: bool,
) -> Result<(), (io::Error, bool)> {
    match file.write_all(line) {
        Ok(()) if fsync => file.sync_data().map_err(|e| (e, false)),
        Ok(()) => Ok(()),
        Err(e) => {
            let cut = file.set_len(before).is_ok();
            if !cut {
                tracing::error!(error = %e, "cannot cut a partial audit record off; the next record starts on a new line");
            }
            Err((e, !cut))
        }
    }
}

/// Where the chain stands in a freshly opened live file: after its last complete line; in an
/// empty file, after the last line of its newest rotated predecessor. A partial last line (a
/// write cut short by a crash) is cut off, and said so.
pub(super) fn resume(path: &std::path::Path, file: &File) -> (Link, Option<String>) {
    let (link, note, _) = resume_tail(path, file);
    (link, note)
}

/// [`resume`], and whether the file ends in a record no checkpoint seals (its writer did not
/// close it: killed, crashed, or a tool that writes no checkpoints).
pub(super) fn resume_tail(path: &std::path::Path, file: &File) -> (Link, Option<String>, bool) {
    let tail = match tail(file) {
        Ok(tail) => tail,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot read the end of the audit log; starting a new chain");
            return (Link::START, None, false);
        }
    };
    let mut note = None;
    if let Some(from) = tail.partial_from {
        let len = file.metadata().map(|m| m.len()).unwrap_or(from);
        match file.set_len(from) {
            Ok(()) => {
                tracing::warn!(file = %path.display(), bytes = len - from, "cut off a partial audit record left by a crash");
                note = Some(format!(
                    "cut off {} bytes of a partial record left at the end of {}",
                    len - from,
                    path.display()
                ));
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot cut off a partial audit record")
            }
        }
    }
    let unsealed = tail
        .last_line
        .as_ref()
        .is_some_and(|line| !line.starts_with(super::chain::CHECKPOINT_PREFIX));
    let link = match tail.last_line {
        Some(line) => link_after(&line),
        None => rotated(path)
            .ok()
            .and_then(|rotated| rotated.last().cloned())
            .and_then(|newest| last_line(&newest).ok().flatten())
            .map(|line| Link {
                seq: 0,
                hash: super::chain::Hash::of(&line),
            })
            .unwrap_or(Link::START),
    };
    (link, note, unsealed)
}

/// The link a line makes (an unsealed line, written before chaining, starts the count anew).
fn link_after(line: &[u8]) -> Link {
    Link {
        seq: super::chain::read_seal(line).map_or(0, |s| s.seq),
        hash: super::chain::Hash::of(line),
    }
}

/// Opens the live file for appending (readable too: at start the chain resumes from its
/// last record).
pub(super) fn open_append(path: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(content: &[u8]) -> Tail {
        let path =
            std::env::temp_dir().join(format!("rg-tail-{}-{}", std::process::id(), content.len()));
        std::fs::write(&path, content).unwrap();
        let t = tail(&File::open(&path).unwrap()).unwrap();
        std::fs::remove_file(path).unwrap();
        t
    }

    #[test]
    fn the_tail_finds_the_last_complete_line_and_a_partial_one() {
        assert_eq!(tail_of(b""), Tail::default());
        assert_eq!(
            tail_of(b"a\nbb\n"),
            Tail {
                last_line: Some(b"bb".to_vec()),
                partial_from: None
            }
        );
        assert_eq!(
            tail_of(b"a\nbb\ncc"),
            Tail {
                last_line: Some(b"bb".to_vec()),
                partial_from: Some(5)
            }
        );
        assert_eq!(
            tail_of(b"only"),
            Tail {
                last_line: None,
                partial_from: Some(0)
            }
        );
        let long = [vec![b'x'; 200_000], b"\n".to_vec(), vec![b'y'; 100_000]].concat();
        let t = tail_of(&long);
        assert_eq!(t.last_line.unwrap().len(), 200_000);
        assert_eq!(t.partial_from, Some(200_001));
    }
}
