//! Notifications of files written, or renamed into place, under the asset root (inotify).
//!
//! Why not the `notify` crate: its inotify backend always asks the kernel for `IN_OPEN`, so every
//! open of any file in the library by any process (an nginx beside us, a backup, `rsync` reading
//! the tree) woke this thread once. In `shared/bench`, an idle server took about 30 % of a core
//! while nginx served 20,000 opens a second from the same folder. Here the kernel is asked only
//! for what can change what we serve: a file closed after writing, a name moved in, and folders
//! created (to watch them too). Reading a file costs the watcher nothing.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

/// What a watched folder reports.
fn mask() -> WatchMask {
    WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::CREATE | WatchMask::DONT_FOLLOW
}

/// Hidden names (uploads in progress, the index, dot-folders) are never served: not watched.
fn hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// A recursive watch of one folder tree.
pub struct LibraryWatch {
    inotify: Inotify,
    folders: HashMap<WatchDescriptor, PathBuf>,
    buffer: Vec<u8>,
}

/// What one batch of events asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Files written and closed, or moved into place (folders moved in count all their files).
    pub files: Vec<PathBuf>,
    /// Events the kernel reported, relevant or not.
    pub events: u64,
    /// The kernel's queue overflowed: some changes were not reported.
    pub overflowed: bool,
}

impl LibraryWatch {
    /// Watches `root` and every non-hidden folder under it (one inotify watch per folder).
    pub fn new(root: &Path) -> io::Result<LibraryWatch> {
        let mut watch = LibraryWatch {
            inotify: Inotify::init()?,
            folders: HashMap::new(),
            buffer: vec![0; 64 * 1024],
        };
        watch.add_tree(root, None)?;
        Ok(watch)
    }

    /// Watches `dir` and the folders under it; with `found`, also lists the files already in
    /// them (a folder moved or created in: its files were written before the watch existed).
    fn add_tree(&mut self, dir: &Path, mut found: Option<&mut Vec<PathBuf>>) -> io::Result<()> {
        let mut stack = vec![dir.to_path_buf()];
        let mut first = true;
        while let Some(dir) = stack.pop() {
            let wd = match self
                .inotify
                .watches()
                .add(&dir, mask() | WatchMask::ONLYDIR)
            {
                Ok(wd) => wd,
                // The tree's root must be watchable; a folder under it may vanish meanwhile.
                Err(e) if first => return Err(e),
                Err(_) => continue,
            };
            first = false;
            self.folders.insert(wd, dir.clone());
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if hidden(&entry.file_name()) {
                    continue;
                }
                // file_type does not follow symlinks: a linked folder is not walked (no loops).
                match entry.file_type() {
                    Ok(t) if t.is_dir() => stack.push(entry.path()),
                    Ok(t) if t.is_file() => {
                        if let Some(found) = found.as_deref_mut() {
                            found.push(entry.path());
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Blocks until the kernel reports events, and returns what they ask for.
    pub fn wait(&mut self) -> io::Result<Changes> {
        let mut changes = Changes::default();
        let mut new_folders = Vec::new();
        let events = self.inotify.read_events_blocking(&mut self.buffer)?;
        for event in events {
            changes.events += 1;
            if event.mask.contains(EventMask::Q_OVERFLOW) {
                changes.overflowed = true;
                continue;
            }
            if event.mask.contains(EventMask::IGNORED) {
                // The folder is gone (or was unmounted): the kernel dropped its watch.
                self.folders.remove(&event.wd);
                continue;
            }
            let (Some(folder), Some(name)) = (self.folders.get(&event.wd), event.name) else {
                continue;
            };
            if hidden(name) {
                continue;
            }
            let path = folder.join(name);
            if event.mask.contains(EventMask::ISDIR) {
                if event
                    .mask
                    .intersects(EventMask::CREATE | EventMask::MOVED_TO)
                {
                    new_folders.push(path);
                }
            } else if event
                .mask
                .intersects(EventMask::CLOSE_WRITE | EventMask::MOVED_TO)
            {
                changes.files.push(path);
            }
        }
        for folder in new_folders {
            // A folder that vanished again, or a watch limit: its files are hashed on request.
            let _ = self.add_tree(&folder, Some(&mut changes.files));
        }
        changes.files.sort();
        changes.files.dedup();
        Ok(changes)
    }

    /// Folders watched.
    pub fn folders(&self) -> usize {
        self.folders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(w: &mut LibraryWatch) -> Changes {
        w.wait().unwrap()
    }

    #[test]
    fn written_and_moved_files_are_reported_and_reads_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("old.mp4"), b"old").unwrap();
        std::fs::create_dir(root.join(".hidden")).unwrap();
        let mut w = LibraryWatch::new(&root).unwrap();
        assert_eq!(w.folders(), 1, "hidden folders are not watched");

        // Reads and opens raise nothing: the next batch is only the write below.
        for _ in 0..100 {
            std::fs::read(root.join("old.mp4")).unwrap();
        }
        std::fs::write(root.join("new.mp4"), b"new").unwrap();
        let c = next(&mut w);
        assert_eq!(c.files, vec![root.join("new.mp4")]);
        // CREATE then CLOSE_WRITE of the one file.
        assert_eq!(c.events, 2);

        std::fs::write(root.join(".incoming"), b"x").unwrap();
        std::fs::rename(root.join(".incoming"), root.join("moved.mp4")).unwrap();
        let c = next(&mut w);
        assert_eq!(c.files, vec![root.join("moved.mp4")]);
    }

    #[test]
    fn folders_created_or_moved_in_are_watched_and_their_files_reported() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let mut w = LibraryWatch::new(&root).unwrap();

        // A folder of segments prepared elsewhere and moved in at once.
        std::fs::create_dir_all(outside.path().join("show/hls")).unwrap();
        std::fs::write(outside.path().join("show/hls/a.ts"), b"a").unwrap();
        std::fs::write(outside.path().join("show/index.m3u8"), b"m").unwrap();
        std::fs::rename(outside.path().join("show"), root.join("show")).unwrap();
        let c = next(&mut w);
        assert_eq!(
            c.files,
            vec![root.join("show/hls/a.ts"), root.join("show/index.m3u8")]
        );
        assert_eq!(w.folders(), 3);

        // A file written later in the new folder is reported through the folder's own watch.
        std::fs::write(root.join("show/hls/b.ts"), b"b").unwrap();
        let c = next(&mut w);
        assert_eq!(c.files, vec![root.join("show/hls/b.ts")]);

        // A removed folder's watches are dropped (the kernel queues their IN_IGNORED as the
        // folders go, before remove_dir_all returns).
        std::fs::remove_dir_all(root.join("show")).unwrap();
        let c = next(&mut w);
        assert!(c.files.is_empty());
        assert_eq!(w.folders(), 1);
    }
}
