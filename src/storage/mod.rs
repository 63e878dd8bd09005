//! IO at the edge: safe path resolution, file metadata with content digests, and bodies.

pub mod beneath;
pub mod body;
pub mod files;
pub mod metadata;
pub mod path;

use std::path::{Path, PathBuf};

/// Relative paths (`/`-separated) of every servable regular file under `root`, skipping
/// dotfiles and dot-directories. Unreadable directories are skipped.
pub fn walk_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for ent in entries.flatten() {
            if ent.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(ft) = ent.file_type() else { continue };
            let p = ent.path();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                if let Some(rel) = p.strip_prefix(root).ok().and_then(Path::to_str) {
                    out.push(rel.to_owned());
                }
            }
        }
    }
    out.sort();
    out
}
