//! Writes under the asset root that cannot leave it, whatever symlinks lie in the way.
//!
//! Every operation starts from a descriptor of the root. The longest existing ancestor of a
//! target folder is opened with `openat2(RESOLVE_BENEATH)`, which follows symlinks only while
//! they stay below the root (an escape fails with `EXDEV` before anything is touched); each
//! missing folder is then made with `mkdirat` and opened with `O_NOFOLLOW` relative to its
//! parent's descriptor. Files are created, renamed and removed relative to the same folder
//! descriptor, so swapping a folder for a symlink between a check and a write redirects
//! nothing. Blocking: call from the blocking pool.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, ResolveFlags};

use crate::storage::path::AssetPath;

/// Why a folder or file under the root cannot be used for a write (answered with 400/404).
#[derive(Debug)]
pub enum WriteRefusal {
    /// A folder on the way resolves outside the root (through a symlink).
    Escapes,
    /// A file (or a symlink that must not be followed) stands where a folder should be.
    NotAFolder,
    /// Nothing there (delete of a missing asset).
    Missing,
    /// An IO error: the server's fault.
    Io(io::Error),
}

impl std::fmt::Display for WriteRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteRefusal::Escapes => {
                f.write_str("a folder on the way resolves outside the asset root")
            }
            WriteRefusal::NotAFolder => {
                f.write_str("a file or symlink stands where a folder should be")
            }
            WriteRefusal::Missing => f.write_str("no such asset"),
            WriteRefusal::Io(e) => write!(f, "{}", e.kind()),
        }
    }
}

fn refusal(e: rustix::io::Errno) -> WriteRefusal {
    match e {
        rustix::io::Errno::XDEV => WriteRefusal::Escapes,
        rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP => WriteRefusal::NotAFolder,
        rustix::io::Errno::NOENT => WriteRefusal::Missing,
        e => WriteRefusal::Io(e.into()),
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

/// The folder `asset` lives in, opened for `*at` calls, and the file's name in it.
pub struct Folder {
    pub fd: OwnedFd,
    pub name: String,
}

/// The root, opened once per operation.
pub struct Beneath {
    root: OwnedFd,
}

impl Beneath {
    pub fn open(root: &Path) -> io::Result<Beneath> {
        let root = rustix::fs::open(root, DIR_FLAGS, Mode::empty())?;
        Ok(Beneath { root })
    }

    fn open_beneath(&self, rel: &str) -> Result<OwnedFd, rustix::io::Errno> {
        let rel = if rel.is_empty() { "." } else { rel };
        rustix::fs::openat2(
            &self.root,
            rel,
            DIR_FLAGS,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// The folder of `asset`. With `create`, missing folders are made (0755) without
    /// following symlinks; the longest existing ancestor is checked to be inside the root
    /// before anything is created.
    pub fn folder(&self, asset: &AssetPath, create: bool) -> Result<Folder, WriteRefusal> {
        let mut parts: Vec<&str> = asset.as_str().split('/').collect();
        let name = parts.pop().unwrap_or_default().to_owned();
        // Longest existing ancestor first.
        let mut have = parts.len();
        let mut fd = loop {
            match self.open_beneath(&parts[..have].join("/")) {
                Ok(fd) => break fd,
                Err(rustix::io::Errno::NOENT) if create && have > 0 => have -= 1,
                Err(e) => return Err(refusal(e)),
            }
        };
        for part in &parts[have..] {
            match rustix::fs::mkdirat(&fd, *part, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(refusal(e)),
            }
            // Made by us a moment ago; if it was swapped for a symlink since, NOFOLLOW refuses.
            fd = rustix::fs::openat(&fd, *part, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())
                .map_err(refusal)?;
        }
        Ok(Folder { fd, name })
    }
}

impl Folder {
    /// What is at `name` now, without following a symlink there.
    pub fn kind(&self, name: &str) -> Option<FileType> {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            .map(|st| FileType::from_raw_mode(st.st_mode))
    }

    /// Creates `name` exclusively (never through a symlink) and locks it, so a sweep by
    /// another process can tell an upload in progress from one a crash left behind.
    pub fn create_locked(&self, name: &str) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )?;
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            // A filesystem without locks still takes the upload; the sweep then goes by age.
            Ok(()) | Err(rustix::io::Errno::NOLCK) | Err(rustix::io::Errno::OPNOTSUPP) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(File::from(fd))
    }

    /// Renames `from` over `to` in this folder and makes the rename durable.
    pub fn commit(&self, from: &str, to: &str) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, from, &self.fd, to)?;
        rustix::fs::fsync(&self.fd)?;
        Ok(())
    }

    /// Removes `name` from this folder (a file or a symlink, never a folder).
    pub fn remove(&self, name: &str) -> Result<(), WriteRefusal> {
        match self.kind(name) {
            None => return Err(WriteRefusal::Missing),
            Some(FileType::Directory) => return Err(WriteRefusal::Missing),
            Some(_) => {}
        }
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()).map_err(refusal)?;
        rustix::fs::fsync(&self.fd).map_err(|e| WriteRefusal::Io(e.into()))
    }

    /// Removes `name` quietly (a failed upload's temporary file).
    pub fn discard(&self, name: &str) {
        let _ = rustix::fs::unlinkat(&self.fd, name, AtFlags::empty());
    }
}

/// The name of the temporary file an upload of `name` writes to (a dotfile: never served).
pub fn upload_temp_name(name: &str) -> String {
    format!(
        ".{name}.upload-{}",
        &crate::http::multipart::random_boundary()[..12]
    )
}

fn is_upload_temp(file_name: &str) -> bool {
    file_name.starts_with('.') && file_name.contains(".upload-")
}

/// Removes temporary upload files that no process is writing any more (a crash mid-upload),
/// anywhere under `root`. An upload in progress holds a lock on its file; one whose lock can
/// be taken has no writer left. Where the filesystem has no locks, files untouched for
/// `unlocked_age` count as abandoned. Returns how many were removed.
pub fn remove_abandoned_uploads(root: &Path, unlocked_age: std::time::Duration) -> usize {
    let mut removed = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for ent in entries.flatten() {
            let Ok(ft) = ent.file_type() else { continue };
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if ft.is_dir() && !name.starts_with('.') {
                stack.push(ent.path());
            } else if ft.is_file()
                && is_upload_temp(&name)
                && abandoned(&ent.path(), unlocked_age)
                && std::fs::remove_file(ent.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    removed
}

fn abandoned(path: &Path, unlocked_age: std::time::Duration) -> bool {
    let Ok(fd) = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    match rustix::fs::flock(fd.as_fd(), FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => true,
        Err(rustix::io::Errno::NOLCK) | Err(rustix::io::Errno::OPNOTSUPP) => {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= unlocked_age)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::path::normalize;

    fn root() -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = std::fs::canonicalize(d.path()).unwrap();
        (d, p)
    }

    #[test]
    fn creates_missing_folders_inside_the_root() {
        let (_d, root) = root();
        let b = Beneath::open(&root).unwrap();
        let f = b.folder(&normalize("a/b/c.mp4").unwrap(), true).unwrap();
        assert_eq!(f.name, "c.mp4");
        assert!(root.join("a/b").is_dir());
        // A symlink inside the root to a folder inside the root is fine.
        std::os::unix::fs::symlink("a", root.join("alias")).unwrap();
        assert!(b.folder(&normalize("alias/b/d.mp4").unwrap(), true).is_ok());
    }

    #[test]
    fn never_creates_a_folder_outside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let (_d, root) = root();
        std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
        let b = Beneath::open(&root).unwrap();
        let r = b.folder(&normalize("out/new/deeper/x.mp4").unwrap(), true);
        assert!(matches!(r, Err(WriteRefusal::Escapes)), "{:?}", r.err());
        assert!(!outside.path().join("new").exists(), "nothing made outside");
        // An absolute symlink pointing back inside is still refused (it leaves the tree).
        std::os::unix::fs::symlink(&root, root.join("abs")).unwrap();
        assert!(b.folder(&normalize("abs/x.mp4").unwrap(), true).is_err());
    }

    #[test]
    fn a_file_in_the_way_is_refused() {
        let (_d, root) = root();
        std::fs::write(root.join("f"), b"x").unwrap();
        let b = Beneath::open(&root).unwrap();
        assert!(matches!(
            b.folder(&normalize("f/x.mp4").unwrap(), true),
            Err(WriteRefusal::NotAFolder)
        ));
    }

    #[test]
    fn remove_works_on_the_folder_descriptor() {
        let (_d, root) = root();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/a.mp4"), b"x").unwrap();
        let b = Beneath::open(&root).unwrap();
        let f = b.folder(&normalize("d/a.mp4").unwrap(), false).unwrap();
        // The folder is swapped for a symlink to elsewhere after it was opened.
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("a.mp4"), b"keep").unwrap();
        std::fs::rename(root.join("d"), root.join("d-old")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), root.join("d")).unwrap();
        f.remove("a.mp4").unwrap();
        assert!(
            elsewhere.path().join("a.mp4").exists(),
            "the swap redirected nothing"
        );
        assert!(!root.join("d-old/a.mp4").exists());
    }

    #[test]
    fn abandoned_uploads_are_swept_and_live_ones_kept() {
        let (_d, root) = root();
        let b = Beneath::open(&root).unwrap();
        let f = b.folder(&normalize("s/a.mp4").unwrap(), true).unwrap();
        let live = f.create_locked(".a.mp4.upload-live").unwrap();
        drop(f.create_locked(".a.mp4.upload-dead").unwrap());
        std::fs::write(root.join("s/.hidden"), b"x").unwrap();
        let n = remove_abandoned_uploads(&root, std::time::Duration::from_secs(600));
        assert_eq!(n, 1);
        assert!(root.join("s/.a.mp4.upload-live").exists());
        assert!(!root.join("s/.a.mp4.upload-dead").exists());
        assert!(
            root.join("s/.hidden").exists(),
            "other dotfiles are left alone"
        );
        drop(live);
    }
}
