//! Files `veil` writes (`--out`, `--svg`, the init-data beside an image): never over an
//! existing file unless the user said `--force`, never half-written (the bytes go to a
//! temporary file in the same directory, renamed into place only when complete), and mode
//! 0600 for anything that holds plaintext or keys.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tempfile::NamedTempFile;

/// Who may read what the file holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// Public data (measurements, reports, headers): 0644 less the umask.
    Public,
    /// Plaintext of an encrypted volume, keys or secrets: 0600.
    Private,
}

/// Fail before any work when `path` exists and `force` is not set, or when its directory
/// does not exist: what a command checks before it creates anything.
pub fn check_free(path: &Path, force: bool, flag: &str) -> Result<()> {
    if !force && std::fs::symlink_metadata(path).is_ok() {
        bail!("{} already exists; {flag} replaces it", path.display());
    }
    let dir = parent(path);
    if !dir.is_dir() {
        bail!("cannot create {}: {} is not a directory", path.display(), dir.display());
    }
    Ok(())
}

/// The directory a path is in (`.` for a bare file name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A file being written: a temporary file beside `path` until [`Output::commit`] renames it
/// there. Dropped without a commit, it disappears.
pub struct Output {
    tmp: NamedTempFile,
    path: PathBuf,
    force: bool,
}

impl Output {
    /// Start writing `path`; `flag` names the option that allows replacing it (`--force`).
    pub fn create(path: &Path, force: bool, access: Access, flag: &str) -> Result<Output> {
        check_free(path, force, flag)?;
        let mode = match access {
            Access::Public => 0o644,
            Access::Private => 0o600,
        };
        let tmp = tempfile::Builder::new()
            .prefix(".veil-")
            .permissions(std::fs::Permissions::from_mode(mode))
            .tempfile_in(parent(path))
            .with_context(|| format!("cannot create a file beside {}", path.display()))?;
        Ok(Output { tmp, path: path.to_path_buf(), force })
    }

    /// The file being written.
    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// Sync and move the file into place; without `force`, fails if something appeared at
    /// the path meanwhile.
    pub fn commit(self) -> Result<()> {
        self.tmp.as_file().sync_all().with_context(|| format!("writing {}", self.path.display()))?;
        let result = if self.force { self.tmp.persist(&self.path) } else { self.tmp.persist_noclobber(&self.path) };
        result.map(drop).map_err(|e| e.error).with_context(|| format!("cannot create {}", self.path.display()))
    }
}

/// Write `bytes` to `path` as a whole (see [`Output`]).
pub fn write(path: &Path, force: bool, access: Access, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let out = Output::create(path, force, access, "--force")?;
    out.file().write_all(bytes).with_context(|| format!("writing {}", path.display()))?;
    out.commit()
}
