//! Unpacking the xz-compressed images of the corpus into a cache under target/.
use std::path::{Path, PathBuf};
use std::process::Command;

/// Unpack `archive` (`.tar.xz` or `.img.xz`) once into the test cache; return the directory.
pub fn unpack(archive: &Path) -> PathBuf {
    let name = archive.file_name().unwrap().to_string_lossy().replace('.', "_");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("corpus").join(name);
    let done = dir.join(".unpacked");
    if done.exists() {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let file = archive.to_string_lossy();
    let status = if file.ends_with(".tar.xz") {
        Command::new("tar").arg("-xJf").arg(archive).arg("-C").arg(&dir).status()
    } else {
        let out_name = archive.file_stem().unwrap(); // x.img.xz -> x.img
        let out = std::fs::File::create(dir.join(out_name)).unwrap();
        Command::new("xz").arg("-dc").arg(archive).stdout(out).status()
    }
    .unwrap_or_else(|e| panic!("cannot run tar/xz to unpack {file}: {e} (install xz-utils)"));
    assert!(status.success(), "unpacking {file} failed");
    std::fs::write(&done, b"").unwrap();
    dir
}

/// Find a file by name anywhere under `dir`.
pub fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if path.is_dir()
            && let Some(p) = find(&path, name)
        {
            return Some(p);
        }
    }
    None
}
