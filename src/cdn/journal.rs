//! The outbox journal: one line per record, `<checksum> <json>\n`, appended and fsynced before
//! the admin call that caused it is answered. Reading it back tolerates a crash mid-write: an
//! unfinished last line (no newline, or a checksum that does not match) is dropped and
//! reported, a damaged line in the middle is skipped and reported, and the rest is replayed.
//! Nothing here ever refuses to start the server over the journal's content.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::config::CdnKind;

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Record {
    /// A job: these paths are to be invalidated on `cdn` (written before the admin answer).
    Queued {
        job: String,
        cdn: CdnKind,
        paths: Vec<String>,
        at: u64,
    },
    /// These jobs go out as one request whose idempotency reference is `batch` (written before
    /// the request, so a replay sends the same batch with the same reference).
    Batch {
        batch: String,
        cdn: CdnKind,
        jobs: Vec<String>,
    },
    /// The CDN accepted `batch` (`cdn_ref`: its id for it); `completed` when nothing is left to
    /// wait for (Cloudflare purges at once; CloudFront may say InProgress).
    Sent {
        batch: String,
        cdn_ref: String,
        completed: bool,
    },
    /// The CDN finished these jobs.
    Completed { jobs: Vec<String> },
    /// The CDN refused these jobs for good (authentication, a malformed request): not retried
    /// until the process restarts (when configuration may have been fixed).
    Failed {
        jobs: Vec<String>,
        error: String,
        attempts: u32,
    },
}

fn checksum(json: &[u8]) -> String {
    hex::encode(&sha2::Sha256::digest(json)[..4])
}

/// One record as a journal line.
pub fn encode(r: &Record) -> Vec<u8> {
    let json = serde_json::to_vec(r).unwrap_or_default();
    let mut line = checksum(&json).into_bytes();
    line.push(b' ');
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

/// What reading a journal found besides the records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadReport {
    /// Bytes of an unfinished last record (a crash mid-write), dropped.
    pub torn_bytes: usize,
    /// 1-based line numbers of damaged complete lines, skipped.
    pub damaged_lines: Vec<usize>,
}

/// Every intact record of `bytes`, in order.
pub fn decode(bytes: &[u8]) -> (Vec<Record>, ReadReport) {
    let mut report = ReadReport::default();
    let mut records = Vec::new();
    let mut rest = bytes;
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            report.torn_bytes = rest.len();
            break;
        };
        let line = &rest[..end];
        rest = &rest[end + 1..];
        let parsed = line
            .split_first_chunk::<8>()
            .filter(|(sum, tail)| {
                tail.first() == Some(&b' ') && checksum(&tail[1..]).as_bytes() == *sum
            })
            .and_then(|(_, tail)| serde_json::from_slice::<Record>(&tail[1..]).ok());
        match parsed {
            Some(r) => records.push(r),
            // A damaged final line is a torn write too, only one that reached its newline.
            None if rest.is_empty() => report.torn_bytes = line.len() + 1,
            None => report.damaged_lines.push(line_no),
        }
    }
    (records, report)
}

/// Journal files in a shared folder: `<PREFIX><process name><SUFFIX>`, each with a lock file
/// (`…journal.lock`) its process holds locked while it lives. The lock lives in its own file
/// because a rewrite renames a new journal over the old one.
pub const PREFIX: &str = ".video-origin-invalidations-";
pub const SUFFIX: &str = ".journal";

/// The open journal file (append only; rewritten whole by [`Journal::rewrite`]).
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    /// Bytes written since the last rewrite, to know when a rewrite is worth it.
    pub len: u64,
    /// Held (locked) for the life of the process.
    _lock: std::fs::File,
}

/// Locks `path` (creating it); `None` when another live process holds it.
fn try_lock(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

fn lock_path(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// A name for this process's journal: the host name (a pod's name in Kubernetes), letters,
/// digits, `-`, `_` and `.` only.
pub fn process_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    if name.is_empty() {
        "host".into()
    } else {
        name
    }
}

/// A journal of a process that is gone, taken over: its records, what reading them found, and
/// its files (removed by [`Orphan::remove`] once the records are safe elsewhere).
pub struct Orphan {
    pub path: PathBuf,
    pub records: Vec<Record>,
    pub report: ReadReport,
    lock: std::fs::File,
}

impl Orphan {
    pub fn remove(self) -> std::io::Result<()> {
        std::fs::remove_file(&self.path)?;
        let _ = std::fs::remove_file(lock_path(&self.path));
        drop(self.lock);
        Ok(())
    }
}

/// Journals in `dir` whose process is gone (their lock is free), other than `own`, locked.
pub fn orphans(dir: &Path, own: &Path) -> std::io::Result<Vec<Orphan>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !name.starts_with(PREFIX) || !name.ends_with(SUFFIX) || path == own {
            continue;
        }
        let lock_at = lock_path(&path);
        let Some(lock) = try_lock(&lock_at)? else {
            continue; // alive
        };
        // Another process may have taken it over and removed it meanwhile, or a new process
        // of that name may have made new files: only the files this lock still guards count.
        let same = match (lock.metadata(), std::fs::metadata(&lock_at)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if !same {
            continue;
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let (records, report) = decode(&bytes);
        out.push(Orphan {
            path,
            records,
            report,
            lock,
        });
    }
    Ok(out)
}

impl Journal {
    /// Opens (creating) this process's journal in `dir`, `<PREFIX><name><SUFFIX>`, locked, and
    /// reads what it holds (after a restart of a process of the same name). When a live process
    /// already holds that name, `<name>-<pid>` is used. Errors are IO errors on the folder (an
    /// unusable journal location is a configuration error).
    pub fn open_in(dir: &Path, name: &str) -> std::io::Result<(Journal, Vec<Record>, ReadReport)> {
        std::fs::create_dir_all(dir)?;
        let mut path = dir.join(format!("{PREFIX}{name}{SUFFIX}"));
        let lock = match try_lock(&lock_path(&path))? {
            Some(l) => l,
            None => {
                path = dir.join(format!("{PREFIX}{name}-{}{SUFFIX}", std::process::id()));
                try_lock(&lock_path(&path))?.ok_or_else(|| {
                    std::io::Error::other(format!(
                        "{} is locked by another process",
                        path.display()
                    ))
                })?
            }
        };
        Self::open_locked(&path, lock)
    }

    fn open_locked(
        path: &Path,
        lock: std::fs::File,
    ) -> std::io::Result<(Journal, Vec<Record>, ReadReport)> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (records, report) = decode(&bytes);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let mut journal = Journal {
            path: path.to_owned(),
            file,
            len: bytes.len() as u64,
            _lock: lock,
        };
        if report.torn_bytes > 0 || !report.damaged_lines.is_empty() {
            // Start from a clean file holding exactly the intact records.
            journal.rewrite(&records)?;
        }
        Ok((journal, records, report))
    }

    /// Appends records and waits until they are on disk.
    pub fn append(&mut self, records: &[Record]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for r in records {
            buf.extend_from_slice(&encode(r));
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Replaces the journal with `records` (a temporary file, fsynced, renamed over it, and
    /// the directory fsynced): a crash leaves either the old journal or the new one.
    pub fn rewrite(&mut self, records: &[Record]) -> std::io::Result<()> {
        let tmp = self.path.with_extension("rewrite");
        let mut buf = Vec::new();
        for r in records {
            buf.extend_from_slice(&encode(r));
        }
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        self.file = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        self.len = buf.len() as u64;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(job: &str) -> Record {
        Record::Queued {
            job: job.into(),
            cdn: CdnKind::Cloudfront,
            paths: vec!["/video/a.mp4".into()],
            at: 1,
        }
    }

    #[test]
    fn round_trip_and_a_torn_tail() {
        let mut bytes = encode(&queued("j1"));
        bytes.extend(encode(&Record::Completed {
            jobs: vec!["j1".into()],
        }));
        let (records, report) = decode(&bytes);
        assert_eq!(records.len(), 2);
        assert_eq!(report, ReadReport::default());
        // A crash mid-write: half a record, no newline.
        let third = encode(&queued("j2"));
        let mut torn = bytes.clone();
        torn.extend_from_slice(&third[..third.len() / 2]);
        let (records, report) = decode(&torn);
        assert_eq!(records.len(), 2);
        assert_eq!(report.torn_bytes, third.len() / 2);
        // A last line whose bytes were not all written (garbage reached the newline).
        let mut bad_tail = bytes.clone();
        bad_tail.extend_from_slice(b"0000 {\"op\":\n");
        let (records, report) = decode(&bad_tail);
        assert_eq!((records.len(), report.torn_bytes), (2, 12));
    }

    #[test]
    fn a_damaged_line_in_the_middle_is_skipped_and_named() {
        let mut bytes = encode(&queued("j1"));
        let mut flipped = encode(&queued("j2"));
        flipped[20] ^= 1;
        bytes.extend(flipped);
        bytes.extend(encode(&queued("j3")));
        let (records, report) = decode(&bytes);
        assert_eq!(records, vec![queued("j1"), queued("j3")]);
        assert_eq!(report.damaged_lines, vec![2]);
    }

    #[test]
    fn a_dead_process_journal_is_an_orphan_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (mut mine, _, _) = Journal::open_in(dir.path(), "pod-a").unwrap();
        mine.append(&[queued("a1")]).unwrap();
        // Same name while pod-a lives: this process gets a name of its own.
        let (other, _, _) = Journal::open_in(dir.path(), "pod-a").unwrap();
        assert_ne!(other.path(), mine.path());
        // A journal whose process died (its lock is free).
        let (mut dead, _, _) = Journal::open_in(dir.path(), "pod-b").unwrap();
        dead.append(&[queued("b1")]).unwrap();
        drop(dead);
        let found = orphans(dir.path(), mine.path()).unwrap();
        let names: Vec<String> = found
            .iter()
            .map(|o| o.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec![format!("{PREFIX}pod-b{SUFFIX}")],
            "the live ones are not orphans"
        );
        assert_eq!(found[0].records, vec![queued("b1")]);
        for o in found {
            o.remove().unwrap();
        }
        assert!(orphans(dir.path(), mine.path()).unwrap().is_empty());
        drop(other);
    }

    #[test]
    fn open_repairs_the_file_and_appends_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        let (mut j, records, _) = Journal::open_in(&sub, "pod").unwrap();
        assert!(records.is_empty());
        let path = j.path().to_owned();
        j.append(&[queued("j1")]).unwrap();
        drop(j);
        // Simulate a crash mid-append.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"abcd1234 {\"op\":\"que").unwrap();
        drop(f);
        let (mut j, records, report) = Journal::open_in(&sub, "pod").unwrap();
        assert_eq!(records, vec![queued("j1")]);
        assert!(report.torn_bytes > 0);
        j.append(&[queued("j2")]).unwrap();
        drop(j);
        let (_, records, report) = Journal::open_in(&sub, "pod").unwrap();
        assert_eq!(records, vec![queued("j1"), queued("j2")]);
        assert_eq!(report, ReadReport::default());
    }
}
