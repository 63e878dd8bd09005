//! Asset path → open file under the root, without ever touching a file outside it: resolve
//! symlinks, refuse any path whose real location lies outside the root, then open that real
//! path and check it is a regular file. What it must never do: open (or even stat the target
//! of) a path it has not first proven to be inside the root.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::storage::path::AssetPath;

/// Why [`open_under_root`] could not give a file.
#[derive(Debug)]
pub enum OpenError {
    /// Missing, a directory, not a regular file, or outside the root: answer 404.
    NotFound,
    /// Real location is outside the root (logged; answered as 404).
    Escapes(PathBuf),
    /// Any other IO error (EMFILE/ENFILE among them: the caller answers 503).
    Io(io::Error),
}

impl OpenError {
    /// The same error, for each of the requests that shared one open (the OS error code is kept,
    /// so descriptor exhaustion is still recognised).
    pub fn copy(&self) -> OpenError {
        match self {
            OpenError::NotFound => OpenError::NotFound,
            OpenError::Escapes(real) => OpenError::Escapes(real.clone()),
            OpenError::Io(e) => OpenError::Io(match e.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(e.kind(), e.to_string()),
            }),
        }
    }
}

/// Resolves `asset` under `root` (which must already be canonical) and opens it.
/// Blocking: call from the blocking pool.
pub fn open_under_root(
    root: &Path,
    asset: &AssetPath,
) -> Result<(File, std::fs::Metadata), OpenError> {
    let joined = root.join(asset.as_str());
    let real = match std::fs::canonicalize(&joined) {
        Ok(p) => p,
        Err(e) if is_not_found(&e) => return Err(OpenError::NotFound),
        Err(e) => return Err(OpenError::Io(e)),
    };
    if !real.starts_with(root) {
        return Err(OpenError::Escapes(real));
    }
    // `real` has no symlinks left, so O_NOFOLLOW only bites if the last component was swapped
    // for a symlink since canonicalize: then we refuse rather than follow it.
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&real)
    };
    let file = match file {
        Ok(f) => f,
        Err(e) if is_not_found(&e) => return Err(OpenError::NotFound),
        Err(e) => return Err(OpenError::Io(e)),
    };
    let meta = file.metadata().map_err(OpenError::Io)?;
    if !meta.is_file() {
        return Err(OpenError::NotFound);
    }
    Ok((file, meta))
}

fn is_not_found(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::PermissionDenied
    ) || e.raw_os_error() == Some(libc::ELOOP)
}

/// True when an IO error means the process or system ran out of file descriptors.
pub fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENFILE) | Some(libc::EMFILE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::path::normalize;

    #[test]
    fn symlink_out_of_root_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("in.mp4"), b"ok").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("link.mp4"))
            .unwrap();
        std::os::unix::fs::symlink("in.mp4", root.path().join("inner-link.mp4")).unwrap();
        std::fs::create_dir(root.path().join("dir")).unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        let open = |p: &str| open_under_root(&root, &normalize(p).unwrap());
        assert!(open("in.mp4").is_ok());
        assert!(
            open("inner-link.mp4").is_ok(),
            "symlinks inside the root are fine"
        );
        assert!(matches!(open("link.mp4"), Err(OpenError::Escapes(_))));
        assert!(matches!(open("dir"), Err(OpenError::NotFound)));
        assert!(matches!(open("missing.mp4"), Err(OpenError::NotFound)));
        assert!(matches!(open("in.mp4/x"), Err(OpenError::NotFound)));
    }
}
