//! Server backups: a tar archive of the server's directory, gzip-compressed, hashed (SHA-256)
//! while it is written, kept under `WINGS_DATA_DIR/backups/<server-id>/<backup-id>.tar.gz`.
//! The server's tree is read by descriptor ([`crate::beneath`]): a link the tenant swaps in
//! while the archive is made is archived as a link, never followed, and a file that is not
//! the server's own (a hard link to another user's file) is left out.
//!
//! Restoring trusts nothing in the archive. Its SHA-256 must be the one reported when it was
//! made; then every entry is checked before anything is written: only files, directories and
//! symbolic links; no absolute path, no `..`, and no link that resolves outside the server's
//! directory. Entries are unpacked by descriptor into a fresh root-only staging directory, each
//! given to the server's user as it is made (links last, so no file is ever written through one) that replaces the server's directory only when all went well: a
//! refused archive leaves the existing files exactly as they were.
//!
//! All of it is blocking file work, run on the blocking pool so heartbeats keep flowing.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use sha2::{Digest, Sha256};

use crate::beneath;

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

/// Archives `dir` into `out` (written as `out.part`, renamed when complete). The tree is
/// walked by descriptor ([`beneath::walk`]): links are archived as links, never followed, and
/// when `owner` is given, a regular file that is not that user's (a hard link to someone
/// else's file) is left out.
///
/// At most `budget` bytes of file content are archived (the server's disk quota): a sparse
/// file or a tree of hard links that would make an archive larger than the server may hold
/// fails the backup instead of filling the node's disk. A file with several links is archived
/// once.
pub fn create(dir: &Path, out: &Path, owner: Option<u32>, budget: u64) -> io::Result<Archive> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let root = beneath::open_root(dir)?;
    let part = out.with_extension("part");
    let file = File::create(&part)?;
    let hashing = Hashing {
        inner: BufWriter::new(file),
        hasher: Sha256::new(),
        written: 0,
    };
    let gz = flate2::write::GzEncoder::new(hashing, flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    let mut taken = Taken::new(budget);
    let walked = beneath::walk(root.as_fd(), &mut |path, node| {
        append(&mut builder, path, node, owner, &mut taken)
    });
    if let Err(e) = walked {
        drop(builder);
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
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

/// What a backup has taken so far.
pub(crate) struct Taken {
    bytes: u64,
    budget: u64,
    /// Files with several links already archived, by device and inode.
    linked: std::collections::HashSet<(u64, u64)>,
}

impl Taken {
    /// Nothing taken yet; at most `budget` bytes of file content.
    pub(crate) fn new(budget: u64) -> Taken {
        Taken {
            bytes: 0,
            budget,
            linked: std::collections::HashSet::new(),
        }
    }
}

/// Adds one entry, from its descriptor, to the archive.
pub(crate) fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    node: beneath::Node<'_>,
    owner: Option<u32>,
    taken: &mut Taken,
) -> io::Result<()> {
    let header_for = |stat: &rustix::fs::Stat, kind: tar::EntryType, size: u64| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        // Permission bits only: no setuid, setgid or sticky bit survives a round trip.
        header.set_mode(stat.st_mode & 0o777);
        header.set_mtime(u64::try_from(stat.st_mtime).unwrap_or(0));
        header.set_size(size);
        header
    };
    match node {
        beneath::Node::Dir(stat) => {
            let mut header = header_for(stat, tar::EntryType::Directory, 0);
            builder.append_data(&mut header, path, io::empty())
        }
        beneath::Node::File(file, stat) => {
            if owner.is_some_and(|uid| uid != stat.st_uid) {
                tracing::warn!(path = %path.display(), "left out of the backup: not the server's own file");
                return Ok(());
            }
            if stat.st_nlink > 1 && !taken.linked.insert((stat.st_dev, stat.st_ino)) {
                return Ok(());
            }
            let size = u64::try_from(stat.st_size).unwrap_or(0);
            taken.bytes = taken.bytes.saturating_add(size);
            if taken.bytes > taken.budget {
                return Err(io::Error::other(format!(
                    "the server's files exceed its disk quota of {} MiB",
                    taken.budget >> 20
                )));
            }
            let mut header = header_for(stat, tar::EntryType::Regular, size);
            // Exactly `size` bytes whatever the file does meanwhile: cut if it grew,
            // zero-padded if it shrank.
            let body = file.take(size).chain(io::repeat(0)).take(size);
            builder.append_data(&mut header, path, body)
        }
        beneath::Node::Symlink(target, stat) => {
            let mut header = header_for(stat, tar::EntryType::Symlink, 0);
            builder.append_link(&mut header, path, Path::new(&target))
        }
        beneath::Node::Other(_) => Ok(()),
    }
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
    /// Too many entries, or more bytes than allowed (a tenant's archive only).
    #[error("{0}")]
    TooLarge(String),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl From<rustix::io::Errno> for Refused {
    fn from(e: rustix::io::Errno) -> Refused {
        Refused::Io(e.into())
    }
}

/// The longest entry name an archive may hold, in bytes (a tenant's path is bounded alike).
pub(crate) const MAX_NAME_BYTES: usize = 4096;

/// The most components an entry name may have (a deeper tree is not unpacked).
pub(crate) const MAX_COMPONENTS: usize = 64;

/// `path` as a relative path of normal components only; `None` if it is absolute, has `..`,
/// or is longer than [`MAX_NAME_BYTES`] or deeper than [`MAX_COMPONENTS`].
fn contained(path: &Path) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().as_bytes().len() > MAX_NAME_BYTES
        || path.components().count() > MAX_COMPONENTS
    {
        return None;
    }
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

/// Whether a link at `at` (relative) pointing to `target` stays inside the root, judged by its
/// text alone: a chain of links inside the tree can still lead out (`q -> .`, then
/// `p -> q/q/../..`). That is harmless because Wings never follows a link in a server's tree
/// (see [`crate::beneath`]); it keeps restored trees from pointing outside at a glance.
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

/// Who restored entries belong to: the server's user and group when Wings is root.
pub type Owner = Option<(u32, u32)>;

/// Unpacks a checked archive into `staging` (which must not exist), by descriptor (see
/// [`Unpacker`]).
fn unpack(archive: &Path, staging: &Path, owner: Owner) -> Result<(), Refused> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(staging)?;
    let root = beneath::open_root(staging)?;
    give(root.as_fd(), owner)?;
    let mut unpacker = Unpacker::new(root, owner, None);
    unpack_tar(entries(archive)?, &mut unpacker)?;
    unpacker.finish()
}

/// Unpacks every entry of a tar archive with `into`, checking each as it comes.
pub(crate) fn unpack_tar<R: Read>(
    mut archive: tar::Archive<R>,
    into: &mut Unpacker,
) -> Result<(), Refused> {
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let relative = contained(&entry.path()?).ok_or_else(|| Refused::Traversal(raw.clone()))?;
        let mode = entry.header().mode().unwrap_or(0o600) & 0o777;
        match entry.header().entry_type() {
            tar::EntryType::Directory => into.dir(&relative, mode)?,
            tar::EntryType::Regular => into.file(&relative, mode, &mut entry)?,
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| Refused::EntryType(raw.clone()))?
                    .into_owned();
                into.link(&raw, &relative, target)?;
            }
            _ => return Err(Refused::EntryType(raw)),
        }
    }
    Ok(())
}

/// `raw` (an archive entry's name) as a relative path of normal components; refused if it is
/// absolute or climbs out with `..`.
pub(crate) fn checked_path(raw: &str) -> Result<PathBuf, Refused> {
    contained(Path::new(raw)).ok_or_else(|| Refused::Traversal(raw.to_owned()))
}

/// Bounds on what an archive may unpack to (a tenant's archive; a backup has none).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Entries still allowed.
    pub entries: u64,
    /// Bytes of file content still allowed.
    pub bytes: u64,
}

/// Writes checked archive entries beneath a root directory's descriptor: each entry is
/// created relative to its parent's descriptor with `O_NOFOLLOW | O_EXCL`, given to `owner`
/// as it is made (so no ownership walk follows), and links come last, so no file is ever
/// written through one. With [`Limits`], the entry count and the bytes actually written
/// (not what headers claim) are bounded.
pub(crate) struct Unpacker {
    root: OwnedFd,
    owner: Owner,
    links: Vec<(PathBuf, std::ffi::OsString, PathBuf)>,
    limits: Option<Limits>,
}

impl Unpacker {
    /// Unpacks beneath `root`.
    pub(crate) fn new(root: OwnedFd, owner: Owner, limits: Option<Limits>) -> Unpacker {
        Unpacker {
            root,
            owner,
            links: Vec::new(),
            limits,
        }
    }

    /// Charges an entry at `relative` against the entry limit: one per component, as each
    /// may be a directory made for it (a deep name costs what the directories it makes do).
    fn count(&mut self, relative: &Path) -> Result<(), Refused> {
        if let Some(limits) = &mut self.limits {
            let cost = relative.components().count().max(1) as u64;
            if limits.entries < cost {
                return Err(Refused::TooLarge("the archive has too many entries".into()));
            }
            limits.entries -= cost;
        }
        Ok(())
    }

    /// A directory (and its parents).
    pub(crate) fn dir(&mut self, relative: &Path, mode: u32) -> Result<(), Refused> {
        self.count(relative)?;
        if relative.as_os_str().is_empty() {
            return Ok(());
        }
        let dir = make_dirs(self.root.as_fd(), relative, self.owner)?;
        rustix::fs::fchmod(&dir, Mode::from_raw_mode((mode & 0o777) | 0o700))?;
        Ok(())
    }

    /// A regular file with `body`'s bytes.
    pub(crate) fn file(
        &mut self,
        relative: &Path,
        mode: u32,
        body: &mut dyn Read,
    ) -> Result<(), Refused> {
        self.count(relative)?;
        let Some(name) = relative.file_name() else {
            return Ok(());
        };
        let parent = relative.parent().unwrap_or(Path::new(""));
        let dir = make_dirs(self.root.as_fd(), parent, self.owner)?;
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        give(fd.as_fd(), self.owner)?;
        let mut out = File::from(fd);
        match &mut self.limits {
            None => {
                io::copy(body, &mut out)?;
            }
            Some(limits) => {
                let copied = io::copy(&mut body.take(limits.bytes.saturating_add(1)), &mut out)?;
                if copied > limits.bytes {
                    return Err(Refused::TooLarge(
                        "the archive unpacks to more than is allowed".into(),
                    ));
                }
                limits.bytes -= copied;
            }
        }
        rustix::fs::fchmod(&out, Mode::from_raw_mode(mode & 0o777))?;
        Ok(())
    }

    /// A symbolic link, made by [`Unpacker::finish`]; refused when it points outside.
    pub(crate) fn link(
        &mut self,
        raw: &str,
        relative: &Path,
        target: PathBuf,
    ) -> Result<(), Refused> {
        self.count(relative)?;
        if !link_stays_inside(relative, &target) {
            return Err(Refused::LinkEscape(raw.to_owned()));
        }
        if let Some(name) = relative.file_name() {
            let parent = relative.parent().unwrap_or(Path::new("")).to_path_buf();
            self.links.push((parent, name.to_owned(), target));
        }
        Ok(())
    }

    /// Makes the links, last.
    pub(crate) fn finish(self) -> Result<(), Refused> {
        for (parent, name, target) in self.links {
            let dir = make_dirs(self.root.as_fd(), &parent, self.owner)?;
            rustix::fs::symlinkat(target.as_path(), &dir, name.as_os_str())?;
            if let Some((uid, gid)) = self.owner {
                rustix::fs::chownat(
                    &dir,
                    name.as_os_str(),
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
        }
        Ok(())
    }
}

/// Opens (making what is missing, given to `owner`) each directory of `relative` in turn
/// beneath `root`, one component at a time, never through a link.
pub(crate) fn make_dirs(
    root: BorrowedFd<'_>,
    relative: &Path,
    owner: Owner,
) -> io::Result<OwnedFd> {
    let mut dir = rustix::io::fcntl_dupfd_cloexec(root, 0)?;
    for component in relative.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {
                let made = beneath::open_dir_at(dir.as_fd(), name)?;
                give(made.as_fd(), owner)?;
                dir = made;
            }
            Err(rustix::io::Errno::EXIST) => dir = beneath::open_dir_at(dir.as_fd(), name)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(dir)
}

fn give(fd: BorrowedFd<'_>, owner: Owner) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )?;
    }
    Ok(())
}

/// Restores `archive` over `server_dir`: checksum, entry checks, unpack into a root-only
/// staging directory beside it (entries owned by `owner` as they are made), then swap; the
/// old tree is removed by descriptor. On any failure `server_dir` is untouched.
pub fn restore(
    archive: &Path,
    expected_sha256: &str,
    server_dir: &Path,
    owner: Owner,
) -> Result<(), Refused> {
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
        beneath::remove_tree(leftover)?;
    }
    if let Err(e) = unpack(archive, &staging, owner) {
        let _ = beneath::remove_tree(&staging);
        return Err(e);
    }
    match std::fs::rename(server_dir, &old) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    if let Err(e) = std::fs::rename(&staging, server_dir) {
        let _ = std::fs::rename(&old, server_dir);
        return Err(e.into());
    }
    if let Err(e) = beneath::remove_tree(&old) {
        // The restore itself is done; the next one clears what is left.
        tracing::warn!(path = %old.display(), error = %e, "cannot remove the replaced tree");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_or_long_names_are_refused_and_deep_ones_cost_their_depth() {
        assert!(checked_path(&"a/".repeat(MAX_COMPONENTS)).is_ok());
        assert!(checked_path(&"a/".repeat(MAX_COMPONENTS + 1)).is_err());
        assert!(checked_path(&"x".repeat(MAX_NAME_BYTES + 1)).is_err());
        let tmp = tempfile::tempdir().unwrap();
        let root = beneath::open_root(tmp.path()).unwrap();
        let limits = Limits {
            entries: 10,
            bytes: 1 << 20,
        };
        let mut unpacker = Unpacker::new(root, None, Some(limits));
        // Ten directories made by one entry use the whole allowance.
        unpacker
            .dir(Path::new("1/2/3/4/5/6/7/8/9/10"), 0o755)
            .unwrap();
        assert!(matches!(
            unpacker.dir(Path::new("x"), 0o755),
            Err(Refused::TooLarge(_))
        ));
    }

    #[test]
    fn round_trip_keeps_files_and_inner_links() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("server");
        std::fs::create_dir_all(dir.join("world/region")).unwrap();
        std::fs::write(dir.join("server.properties"), "motd=hi\n").unwrap();
        std::fs::write(dir.join("world/region/r.0.0"), vec![7u8; 100_000]).unwrap();
        std::os::unix::fs::symlink("world/region/r.0.0", dir.join("latest")).unwrap();
        let out = tmp.path().join("backups/b.tar.gz");
        let made = create(&dir, &out, None, 1 << 30).unwrap();
        assert_eq!(made.sha256, sha256_of(&out).unwrap());
        assert_eq!(made.size_bytes, std::fs::metadata(&out).unwrap().len());
        std::fs::write(dir.join("server.properties"), "motd=changed\n").unwrap();
        std::fs::remove_dir_all(dir.join("world")).unwrap();
        std::fs::write(dir.join("new-file"), "x").unwrap();
        restore(&out, &made.sha256, &dir, None).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("server.properties")).unwrap(),
            "motd=hi\n"
        );
        assert_eq!(std::fs::read(dir.join("latest")).unwrap().len(), 100_000);
        assert!(!dir.join("new-file").exists());
        assert!(matches!(
            restore(&out, &"0".repeat(64), &dir, None),
            Err(Refused::Checksum)
        ));
        // Hard links are archived once; more content than the quota fails the backup and
        // leaves nothing behind.
        for i in 0..50 {
            std::fs::hard_link(
                dir.join("world/region/r.0.0"),
                dir.join(format!("link-{i}")),
            )
            .unwrap();
        }
        let linked = tmp.path().join("backups/linked.tar.gz");
        create(&dir, &linked, None, 200_000).unwrap();
        let over = tmp.path().join("backups/over.tar.gz");
        let error = create(&dir, &over, None, 50_000).unwrap_err();
        assert!(error.to_string().contains("disk quota"), "{error}");
        assert!(!over.exists() && !over.with_extension("part").exists());
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
