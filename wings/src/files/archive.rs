//! `compress` (a tar.gz of some of a server's files) and `decompress` (tar, tar.gz or zip)
//! beneath its root.
//!
//! Compression walks each path by descriptor as backups do ([`crate::backup::append`]): links
//! are archived as links, never followed, a file that is not the server's own is left out,
//! and the content taken is bounded by the server's free quota. The archive is an unnamed file
//! linked into place when complete.
//!
//! Decompression checks every entry as restores do ([`crate::backup::Unpacker`]): no absolute
//! path, no `..`, no link leading outside, no device or FIFO; the entry count is bounded by
//! [`MAX_ENTRIES`] and the bytes written (those actually inflated, not what headers claim) by
//! the server's free quota and by [`MAX_RATIO`] times the archive's size (a zip bomb is
//! refused). Entries are unpacked into a fresh root-only directory inside the target, which
//! the tenant's processes cannot enter, and moved into place only when all went well: a
//! refused archive leaves nothing behind.

use crate::tar_guard::TarGuard;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use proto::node::v1::FileResult;
use rustix::fs::{AtFlags, FileType, Mode};

use super::ops::{open_file, root, stat_at};
use super::paths::{self, Rel};
use super::upload::Temp;
use super::{Fail, Reservation, Target};
use crate::backup::{self, Limits, Refused, Unpacker};
use crate::beneath;

/// Most entries an archive may hold.
pub const MAX_ENTRIES: u64 = 100_000;
/// An archive may unpack to at most this many times its own size…
pub const MAX_RATIO: u64 = 100;
/// …or this many bytes, whichever is more (small archives of repetitive text are fine).
pub const RATIO_FLOOR: u64 = 16 << 20;
/// Most paths one `compress` takes.
pub const MAX_PATHS: usize = 1000;

/// Archives `list` (files and directories) into the new tar.gz `into`.
pub fn compress(target: &Target, list: &[String], into: &str) -> Result<FileResult, Fail> {
    if list.is_empty() || list.len() > MAX_PATHS {
        return Err(Fail::invalid(
            "paths must name 1 to 1000 files or directories",
        ));
    }
    let into = paths::parse(into)?;
    let root = root(target)?;
    let (into_dir, into_name) = paths::parent_of(root.as_fd(), &into)?;
    if stat_at(into_dir.as_fd(), into_name, &into).is_ok() {
        return Err(Fail::conflict(format!("{} exists", into.display())));
    }
    let mut reservation = reserve(target, root.as_fd(), &into)?;
    let room = reservation.room();
    let mut temp =
        Temp::new(into_dir.as_fd(), target.owner).map_err(|e| Fail::from_io(e, &into))?;
    let capped = Capped {
        inner: io::BufWriter::new(&mut temp.file),
        reservation: &mut reservation,
        written: 0,
    };
    let gz = flate2::write::GzEncoder::new(capped, flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    let mut taken = backup::Taken::new(room);
    let owner = target.owner.map(|(uid, _)| uid);
    for path in list {
        let rel = paths::parse(path)?;
        let (dir, name) = paths::parent_of(root.as_fd(), &rel)?;
        let stat = stat_at(dir.as_fd(), name, &rel)?;
        let added = match beneath::kind(&stat) {
            FileType::Directory => {
                let inner = beneath::open_dir_at(dir.as_fd(), name.as_ref())
                    .map_err(|e| Fail::from_io(e, &rel))?;
                let top = PathBuf::from(name);
                backup::append(
                    &mut builder,
                    &top,
                    beneath::Node::Dir(&stat),
                    owner,
                    &mut taken,
                )
                .and_then(|()| {
                    beneath::walk(inner.as_fd(), &mut |path, node| {
                        backup::append(&mut builder, &top.join(path), node, owner, &mut taken)
                    })
                })
            }
            FileType::RegularFile => {
                let (file, stat) = open_file(target, root.as_fd(), &rel)?;
                let node = beneath::Node::File(file, &stat);
                backup::append(&mut builder, Path::new(name), node, owner, &mut taken)
            }
            FileType::Symlink => rustix::fs::readlinkat(&dir, name, Vec::new())
                .map_err(io::Error::from)
                .and_then(|link| {
                    let target = std::ffi::OsString::from(link.to_string_lossy().into_owned());
                    let node = beneath::Node::Symlink(target, &stat);
                    backup::append(&mut builder, Path::new(name), node, owner, &mut taken)
                }),
            _ => Err(io::Error::other(format!(
                "{} is not a file or directory",
                rel.display()
            ))),
        };
        added.map_err(|e| archive_io(e, &rel))?;
    }
    let finished = builder
        .into_inner()
        .and_then(|gz| gz.finish())
        .and_then(|mut capped| capped.flush().map(|()| capped.written));
    let written = finished.map_err(|e| archive_io(e, &into))?;
    temp.file.sync_all().map_err(|e| Fail::from_io(e, &into))?;
    rustix::fs::fchmod(&temp.file, Mode::from_raw_mode(0o644))
        .map_err(|e| Fail::from_io(e.into(), &into))?;
    temp.place(into_dir.as_fd(), into_name, false)
        .map_err(|e| Fail::from_io(e, &into))?;
    reservation.settle(written);
    Ok(super::done())
}

/// An I/O error of an archive being made: the quota's, or another.
fn archive_io(error: io::Error, rel: &Rel) -> Fail {
    let text = error.to_string();
    if text.contains("disk quota") {
        Fail::too_large(format!(
            "the archive would pass the server's disk quota ({text})"
        ))
    } else if error.kind() == io::ErrorKind::Other && text.contains("is not a file") {
        Fail::conflict(text)
    } else {
        Fail::from_io(error, rel)
    }
}

/// A reservation against the server's quota (what its other writes hold counts as used).
fn reserve(target: &Target, root: BorrowedFd<'_>, rel: &Rel) -> Result<Reservation, Fail> {
    target
        .lease
        .reserve(root, target.quota, 0)
        .map_err(|e| Fail::from_io(e, rel))
}

/// A writer holding each byte against the server's quota before it writes it (an archive
/// being made).
struct Capped<'a, W> {
    inner: W,
    reservation: &'a mut Reservation,
    written: u64,
}

impl<W: Write> Write for Capped<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let total = self.written.saturating_add(buf.len() as u64);
        if !self.reservation.take(total) {
            return Err(io::Error::other(
                "the archive passes the server's disk quota",
            ));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What an archive is, by its first bytes.
enum Format {
    Zip,
    Gzip,
    Tar,
}

/// Unpacks the archive `path` into the directory `into` (made if missing). Existing names
/// are never replaced (409).
pub fn decompress(target: &Target, path: &str, into: &str) -> Result<FileResult, Fail> {
    let rel = paths::parse(path)?;
    let into = paths::parse(into)?;
    let root = root(target)?;
    let (mut archive, stat) = open_file(target, root.as_fd(), &rel)?;
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    let mut magic = [0u8; 4];
    let read = archive
        .read(&mut magic)
        .map_err(|e| Fail::from_io(e, &rel))?;
    archive.rewind().map_err(|e| Fail::from_io(e, &rel))?;
    let format = match &magic[..read] {
        [b'P', b'K', 3, 4] | [b'P', b'K', 5, 6] => Format::Zip,
        [0x1f, 0x8b, ..] => Format::Gzip,
        _ => Format::Tar,
    };
    let mut reservation = reserve(target, root.as_fd(), &rel)?;
    let limits = Limits {
        entries: MAX_ENTRIES,
        bytes: reservation
            .room()
            .min(size.saturating_mul(MAX_RATIO).max(RATIO_FLOOR)),
    };
    // What it may unpack is held for the whole decompression.
    if !reservation.take(limits.bytes) {
        return Err(Fail::too_large("the server's disk quota is full"));
    }
    // The deepest part of `into` that exists: what is missing is made in the staging
    // directory and moved into place with the entries, so a refused archive leaves nothing.
    let (existing, base) = (0..=into.depth())
        .rev()
        .find_map(|n| match paths::open_dir(root.as_fd(), &into.prefix(n)) {
            Ok(fd) => Some(Ok((n, fd))),
            Err(fail) if fail.kind == proto::node::v1::FileError::NotFound => None,
            Err(fail) => Some(Err(fail)),
        })
        .unwrap_or_else(|| Err(Fail::not_found("the server has no files on this node")))?;
    let staging = Staging::new(base.as_fd()).map_err(|e| Fail::from_io(e, &into))?;
    let unpack_into = if existing == into.depth() {
        staging.dup().map_err(|e| Fail::from_io(e, &into))?
    } else {
        backup::make_dirs(staging.dir.as_fd(), &into.suffix(existing), target.owner)
            .map_err(|e| Fail::from_io(e, &into))?
    };
    let mut unpacker = Unpacker::new(unpack_into, target.owner, Some(limits));
    let unpacked = match format {
        Format::Zip => unzip(archive, &mut unpacker, limits),
        Format::Gzip => backup::unpack_tar(
            tar::Archive::new(TarGuard::new(
                flate2::read::GzDecoder::new(BufReader::new(archive)),
                tar_budget(limits),
            )),
            &mut unpacker,
        ),
        Format::Tar => backup::unpack_tar(
            tar::Archive::new(TarGuard::new(BufReader::new(archive), tar_budget(limits))),
            &mut unpacker,
        ),
    }
    .and_then(|()| unpacker.finish());
    unpacked.map_err(|e| refused(e, &rel))?;
    if existing == into.depth() {
        staging.move_into(base.as_fd(), &into)?;
    } else {
        let first = into.prefix(existing + 1);
        let name = first.name().unwrap_or_default();
        rustix::fs::renameat_with(
            &staging.dir,
            name,
            &base,
            name,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| Fail::from_io(e.into(), &first))?;
    }
    reservation.settle(limits.bytes);
    Ok(super::done())
}

/// What a tar stream may hold in all: the file bytes allowed, a header block (and a padding
/// block) per entry allowed, and room for long names.
fn tar_budget(limits: Limits) -> u64 {
    limits
        .bytes
        .saturating_add(limits.entries.saturating_mul(1024))
        .saturating_add(1 << 20)
}

/// A refused archive, as the tenant is told.
fn refused(error: Refused, rel: &Rel) -> Fail {
    match error {
        Refused::Traversal(_) | Refused::LinkEscape(_) => {
            Fail::invalid_path(format!("{}: unsafe archive: {error}", rel.display()))
        }
        Refused::EntryType(_) => Fail::invalid(format!("{}: {error}", rel.display())),
        Refused::TooLarge(_) => Fail::too_large(format!("{}: {error}", rel.display())),
        Refused::Io(e) if e.kind() == io::ErrorKind::FileTooLarge => {
            Fail::too_large(format!("{}: {e}", rel.display()))
        }
        Refused::Io(e) if e.kind() == io::ErrorKind::AlreadyExists => Fail::invalid(format!(
            "{}: the archive holds an entry twice",
            rel.display()
        )),
        Refused::Io(e)
            if e.kind() == io::ErrorKind::InvalidData
                || e.kind() == io::ErrorKind::UnexpectedEof =>
        {
            Fail::invalid(format!("{}: not a readable archive ({e})", rel.display()))
        }
        Refused::Io(e) => Fail::from_io(e, rel),
        Refused::Checksum => Fail::invalid(format!("{}: {error}", rel.display())),
    }
}

/// Unpacks a zip archive: the sizes its central directory declares are checked against the
/// limits before anything is written, and what is inflated is bounded again as it is written.
fn unzip(archive: File, into: &mut Unpacker, limits: Limits) -> Result<(), Refused> {
    let mut zip = zip::ZipArchive::new(BufReader::new(archive))
        .map_err(|e| Refused::Io(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    let invalid =
        |e: zip::result::ZipError| Refused::Io(io::Error::new(io::ErrorKind::InvalidData, e));
    if zip.len() as u64 > limits.entries {
        return Err(Refused::TooLarge("the archive has too many entries".into()));
    }
    let mut declared = 0u64;
    for i in 0..zip.len() {
        declared = declared.saturating_add(zip.by_index_raw(i).map_err(invalid)?.size());
    }
    if declared > limits.bytes {
        return Err(Refused::TooLarge(
            "the archive unpacks to more than is allowed".into(),
        ));
    }
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(invalid)?;
        let raw = entry.name().to_owned();
        let relative = backup::checked_path(&raw)?;
        let mode = entry.unix_mode().unwrap_or(0o644);
        if entry.is_dir() {
            into.dir(&relative, mode)?;
        } else if entry.is_symlink() {
            let mut link = Vec::new();
            (&mut entry).take(4096).read_to_end(&mut link)?;
            let target = PathBuf::from(String::from_utf8_lossy(&link).into_owned());
            into.link(&raw, &relative, target)?;
        } else if entry.is_file() {
            into.file(&relative, mode, &mut entry)?;
        } else {
            return Err(Refused::EntryType(raw));
        }
    }
    Ok(())
}

/// A root-only directory inside the target, removed (by descriptor) unless emptied into it.
struct Staging {
    dir: OwnedFd,
    parent: OwnedFd,
    name: String,
}

impl Staging {
    fn new(parent: BorrowedFd<'_>) -> io::Result<Staging> {
        let mut attempt = 0;
        loop {
            let name = format!(".mamba-unpack-{:016x}", rand::random::<u64>());
            match rustix::fs::mkdirat(parent, name.as_str(), Mode::from_raw_mode(0o700)) {
                Ok(()) => {
                    let dir = beneath::open_dir_at(parent, name.as_ref())?;
                    return Ok(Staging {
                        dir,
                        parent: rustix::io::fcntl_dupfd_cloexec(parent, 0)?,
                        name,
                    });
                }
                Err(rustix::io::Errno::EXIST) if attempt < 8 => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn dup(&self) -> io::Result<OwnedFd> {
        Ok(rustix::io::fcntl_dupfd_cloexec(&self.dir, 0)?)
    }

    /// Moves every top-level entry into `into` (none may exist there already).
    fn move_into(&self, into: BorrowedFd<'_>, rel: &Rel) -> Result<(), Fail> {
        let names = beneath::names(self.dir.as_fd()).map_err(|e| Fail::from_io(e, rel))?;
        for name in &names {
            if rustix::fs::statat(into, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                return Err(Fail::conflict(format!(
                    "{}/{} exists",
                    rel.display().trim_end_matches('/'),
                    name.to_string_lossy()
                )));
            }
        }
        for name in &names {
            rustix::fs::renameat_with(
                &self.dir,
                name.as_os_str(),
                into,
                name.as_os_str(),
                rustix::fs::RenameFlags::NOREPLACE,
            )
            .map_err(|e| Fail::from_io(e.into(), rel))?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = beneath::remove_contents(self.dir.as_fd());
        let _ = rustix::fs::unlinkat(&self.parent, self.name.as_str(), AtFlags::REMOVEDIR);
    }
}
