//! Server backups: a tar archive of the server's directory, gzip-compressed, hashed (SHA-256)
//! while it is written, kept under `WINGS_DATA_DIR/backups/<server-id>/<backup-id>.tar.gz`.
//!
//! Restoring trusts nothing in the archive. Its SHA-256 must be the one reported when it was
//! made; then every entry is checked before anything is written: only files, directories and
//! symbolic links; no absolute path, no `..`, and no link that resolves outside the server's
//! directory. Entries are unpacked into a fresh staging directory (links last, so no file is
//! ever written through one) that replaces the server's directory only when all went well: a
//! refused archive leaves the existing files exactly as they were.
//!
//! All of it is blocking file work, run on the blocking pool so heartbeats keep flowing.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// What a finished backup is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
}

/// A writer that hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Archives `dir` into `out` (written as `out.part`, renamed when complete).
pub fn create(dir: &Path, out: &Path) -> io::Result<Archive> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let part = out.with_extension("part");
    let file = File::create(&part)?;
    let hashing = Hashing {
        inner: BufWriter::new(file),
        hasher: Sha256::new(),
        written: 0,
    };
    let gz = flate2::write::GzEncoder::new(hashing, flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    // Links are archived as links: following one could pull in files outside the server.
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    builder.append_dir_all(".", dir)?;
    let gz = builder.into_inner()?;
    let mut hashing = gz.finish()?;
    hashing.flush()?;
    let file = hashing.inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&part, out)?;
    Ok(Archive {
        size_bytes: hashing.written,
        sha256: hex::encode(hashing.hasher.finalize()),
    })
}

/// The lowercase hex SHA-256 of a file.
pub fn sha256_of(path: &Path) -> io::Result<String> {
    let mut file = BufReader::new(File::open(path)?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The file is not the one that was made.
    #[error("checksum mismatch: the archive is not the backup that was made")]
    Checksum,
    /// An entry's path is absolute or climbs out with `..`.
    #[error("path traversal: entry {0:?} would land outside the server's directory")]
    Traversal(String),
    /// A link points outside the server's directory.
    #[error("path traversal: link {0:?} points outside the server's directory")]
    LinkEscape(String),
    /// Devices, FIFOs, hard links and the like.
    #[error("unsupported entry {0:?}: only files, directories and symbolic links are restored")]
    EntryType(String),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// `path` as a relative path of normal components only; `None` if it is absolute or has `..`.
fn contained(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Whether a link at `at` (relative) pointing to `target` stays inside the root.
fn link_stays_inside(at: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: Vec<&std::ffi::OsStr> = Vec::new();
    if let Some(parent) = at.parent() {
        for component in parent.components() {
            if let Component::Normal(part) = component {
                depth.push(part);
            }
        }
    }
    for component in target.components() {
        match component {
            Component::Normal(part) => depth.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn entries(archive: &Path) -> io::Result<tar::Archive<flate2::read::GzDecoder<BufReader<File>>>> {
    Ok(tar::Archive::new(flate2::read::GzDecoder::new(
        BufReader::new(File::open(archive)?),
    )))
}

/// Checks every entry of `archive`; nothing is written.
pub fn check(archive: &Path) -> Result<(), Refused> {
    for entry in entries(archive)?.entries()? {
        let entry = entry?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = entry.path()?;
        let relative = contained(&path).ok_or_else(|| Refused::Traversal(raw.clone()))?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Directory => {}
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| Refused::EntryType(raw.clone()))?;
                if !link_stays_inside(&relative, &target) {
                    return Err(Refused::LinkEscape(raw));
                }
            }
            _ => return Err(Refused::EntryType(raw)),
        }
    }
    Ok(())
}

/// Unpacks a checked archive into `staging` (which must not exist). Links come last.
fn unpack(archive: &Path, staging: &Path) -> Result<(), Refused> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(staging)?;
    std::fs::set_permissions(staging, std::fs::Permissions::from_mode(0o700))?;
    let mut links = Vec::new();
    for entry in entries(archive)?.entries()? {
        let mut entry = entry?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let relative = contained(&entry.path()?).ok_or_else(|| Refused::Traversal(raw.clone()))?;
        if relative.as_os_str().is_empty() {
            continue;
        }
        let dest = staging.join(&relative);
        let mode = entry.header().mode().unwrap_or(0o600) & 0o777;
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&dest)?;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode | 0o700))?;
            }
            tar::EntryType::Regular => {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let mut out = File::create(&dest)?;
                io::copy(&mut entry, &mut out)?;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| Refused::EntryType(raw.clone()))?
                    .into_owned();
                if !link_stays_inside(&relative, &target) {
                    return Err(Refused::LinkEscape(raw));
                }
                links.push((dest, target));
            }
            _ => return Err(Refused::EntryType(raw)),
        }
    }
    for (at, target) in links {
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(target, at)?;
    }
    Ok(())
}

/// Restores `archive` over `server_dir`: checksum, entry checks, unpack into a staging
/// directory beside it, then swap. On any failure `server_dir` is untouched.
pub fn restore(archive: &Path, expected_sha256: &str, server_dir: &Path) -> Result<(), Refused> {
    if !sha256_of(archive)?.eq_ignore_ascii_case(expected_sha256) {
        return Err(Refused::Checksum);
    }
    check(archive)?;
    let name = server_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = server_dir.parent().unwrap_or(Path::new("."));
    let staging = parent.join(format!(".restore-{name}"));
    let old = parent.join(format!(".old-{name}"));
    for leftover in [&staging, &old] {
        if leftover.exists() {
            std::fs::remove_dir_all(leftover)?;
        }
    }
    if let Err(e) = unpack(archive, &staging) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if server_dir.exists() {
        std::fs::rename(server_dir, &old)?;
    }
    if let Err(e) = std::fs::rename(&staging, server_dir) {
        let _ = std::fs::rename(&old, server_dir);
        return Err(e.into());
    }
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_files_and_inner_links() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("server");
        std::fs::create_dir_all(dir.join("world/region")).unwrap();
        std::fs::write(dir.join("server.properties"), "motd=hi\n").unwrap();
        std::fs::write(dir.join("world/region/r.0.0"), vec![7u8; 100_000]).unwrap();
        std::os::unix::fs::symlink("world/region/r.0.0", dir.join("latest")).unwrap();
        let out = tmp.path().join("backups/b.tar.gz");
        let made = create(&dir, &out).unwrap();
        assert_eq!(made.sha256, sha256_of(&out).unwrap());
        assert_eq!(made.size_bytes, std::fs::metadata(&out).unwrap().len());
        std::fs::write(dir.join("server.properties"), "motd=changed\n").unwrap();
        std::fs::remove_dir_all(dir.join("world")).unwrap();
        std::fs::write(dir.join("new-file"), "x").unwrap();
        restore(&out, &made.sha256, &dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("server.properties")).unwrap(),
            "motd=hi\n"
        );
        assert_eq!(std::fs::read(dir.join("latest")).unwrap().len(), 100_000);
        assert!(!dir.join("new-file").exists());
        assert!(matches!(
            restore(&out, &"0".repeat(64), &dir),
            Err(Refused::Checksum)
        ));
    }

    #[test]
    fn link_containment() {
        assert!(link_stays_inside(Path::new("a/b"), Path::new("../c")));
        assert!(!link_stays_inside(Path::new("a/b"), Path::new("../../c")));
        assert!(!link_stays_inside(Path::new("b"), Path::new("/etc/passwd")));
        assert!(link_stays_inside(Path::new("b"), Path::new("./x/../y")));
        assert!(!link_stays_inside(Path::new("b"), Path::new("x/../../y")));
    }
}
