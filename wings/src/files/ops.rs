//! The blocking file operations, each on descriptors opened beneath the server's root
//! ([`super::paths`]): list, open for reading, mkdir, rename, delete, chmod. Uploads are in
//! [`super::upload`], archives in [`super::archive`].

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use proto::node::v1::{FileEntry, FileKind, FileRead, FileResult};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use super::paths::{self, Rel};
use super::{Etags, Fail, MAX_PAGE, Target};
use crate::beneath;

/// Opens the server's root (a link in its place is refused).
pub fn root(target: &Target) -> Result<OwnedFd, Fail> {
    beneath::open_root(&target.dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Fail::not_found("the server has no files on this node"),
        _ => Fail::failed(format!("cannot open the server's directory: {e}")),
    })
}

/// Refuses a file that is not the server's own (a hard link to another user's file).
pub fn own(target: &Target, stat: &Stat, rel: &Rel) -> Result<(), Fail> {
    match target.owner {
        Some((uid, _)) if stat.st_uid != uid => Err(Fail::not_found(format!(
            "{} is not the server's own file",
            rel.display()
        ))),
        _ => Ok(()),
    }
}

/// `statat` without following a link.
pub fn stat_at(dir: BorrowedFd<'_>, name: &str, rel: &Rel) -> Result<Stat, Fail> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| Fail::from_io(e.into(), rel))
}

/// One page of the directory `path`: entries after `cursor` in byte order, links shown as
/// links. FIFOs, sockets, devices and names that are not UTF-8 are not listed. The directory
/// is read as a stream keeping only the `limit + 1` smallest names after the cursor (a
/// bounded heap): a directory of millions of names costs a read of it per page, never their
/// memory.
pub fn list(target: &Target, path: &str, cursor: &str, limit: usize) -> Result<FileResult, Fail> {
    let rel = paths::parse(path)?;
    let root = root(target)?;
    let dir = paths::open_dir(root.as_fd(), &rel)?;
    let limit = limit.clamp(1, MAX_PAGE);
    let io = |e: std::io::Error| Fail::from_io(e, &rel);
    let mut smallest: BinaryHeap<String> = BinaryHeap::with_capacity(limit + 1);
    for name in beneath::Entries::of(dir.as_fd()).map_err(io)? {
        let Ok(name) = name.map_err(io)?.into_string() else {
            continue;
        };
        if name.as_str() <= cursor {
            continue;
        }
        if smallest.len() > limit {
            if smallest.peek().is_some_and(|largest| name >= *largest) {
                continue;
            }
            smallest.pop();
        }
        smallest.push(name);
    }
    let mut names = smallest.into_sorted_vec();
    let more = names.len() > limit;
    names.truncate(limit);
    let next_cursor = match names.last() {
        Some(last) if more => last.clone(),
        _ => String::new(),
    };
    let mut entries = Vec::with_capacity(names.len());
    for name in names {
        let Ok(stat) = rustix::fs::statat(dir.as_fd(), name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
        else {
            continue;
        };
        let kind = match beneath::kind(&stat) {
            FileType::RegularFile => FileKind::File,
            FileType::Directory => FileKind::Dir,
            FileType::Symlink => FileKind::Symlink,
            _ => continue,
        };
        entries.push(FileEntry {
            name,
            kind: kind as i32,
            size: u64::try_from(stat.st_size).unwrap_or(0),
            mode: stat.st_mode & 0o7777,
            modified_unix: stat.st_mtime,
        });
    }
    Ok(FileResult {
        entries,
        next_cursor,
        ..FileResult::default()
    })
}

/// Opens the regular file `rel` for reading (never through a link, never a FIFO or device).
pub fn open_file(target: &Target, root: BorrowedFd<'_>, rel: &Rel) -> Result<(File, Stat), Fail> {
    let (dir, name) = paths::parent_of(root, rel)?;
    // O_NONBLOCK: a FIFO swapped in is opened without waiting, then refused by its fstat.
    let fd = rustix::fs::openat(
        &dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Fail::from_io(e.into(), rel))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| Fail::from_io(e.into(), rel))?;
    match beneath::kind(&stat) {
        FileType::RegularFile => {}
        FileType::Directory => {
            return Err(Fail::conflict(format!("{} is a directory", rel.display())));
        }
        _ => {
            return Err(Fail::conflict(format!(
                "{} is not a regular file",
                rel.display()
            )));
        }
    }
    own(target, &stat, rel)?;
    Ok((File::from(fd), stat))
}

/// A file opened for a download, positioned at the first byte to send.
pub struct Reading {
    /// The file.
    pub file: File,
    /// What the panel is told first.
    pub header: FileResult,
}

/// Opens `read.path`, works out its ETag and the byte range to send, and seeks there.
pub fn open_read(target: &Target, etags: &Etags, read: &FileRead) -> Result<Reading, Fail> {
    let rel = paths::parse(&read.path)?;
    let root = root(target)?;
    let (mut file, stat) = open_file(target, root.as_fd(), &rel)?;
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    let etag = etags.for_download(&mut file, &stat, &target.dir, &rel)?;
    let (offset, length, partial) = range(read, size)?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| Fail::from_io(e, &rel))?;
    Ok(Reading {
        file,
        header: FileResult {
            size,
            etag,
            offset,
            length,
            partial,
            ..FileResult::default()
        },
    })
}

/// The bytes `read` asks for within a file of `size`: (offset, length, partial).
fn range(read: &FileRead, size: u64) -> Result<(u64, u64, bool), Fail> {
    let unsatisfiable = || Fail::new_range(size);
    match (read.range_start, read.range_end, read.suffix) {
        (None, None, None) => Ok((0, size, false)),
        (_, _, Some(suffix)) => {
            if suffix == 0 || size == 0 {
                return Err(unsatisfiable());
            }
            let length = suffix.min(size);
            Ok((size - length, length, true))
        }
        (Some(start), end, None) => {
            if start >= size {
                return Err(unsatisfiable());
            }
            let last = end.unwrap_or(u64::MAX).min(size - 1);
            if last < start {
                return Err(unsatisfiable());
            }
            Ok((start, last - start + 1, true))
        }
        (None, Some(_), None) => Err(unsatisfiable()),
    }
}

impl Fail {
    /// A range outside a file of `size` bytes (the size travels in the message).
    fn new_range(size: u64) -> Fail {
        Fail {
            kind: proto::node::v1::FileError::Range,
            message: size.to_string(),
        }
    }
}

/// Makes the directory `path` and any missing parent, given to the server's user; `path`
/// itself must not exist.
pub fn mkdir(target: &Target, path: &str) -> Result<FileResult, Fail> {
    let rel = paths::parse(path)?;
    let root = root(target)?;
    if rel.is_root() {
        return Err(Fail::conflict("/ exists"));
    }
    if let Ok((dir, name)) = paths::parent_of(root.as_fd(), &rel)
        && rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
    {
        return Err(Fail::conflict(format!("{} exists", rel.display())));
    }
    crate::backup::make_dirs(root.as_fd(), &rel.path(), target.owner)
        .map_err(|e| paths::dir_error(root.as_fd(), &rel, e))?;
    Ok(super::done())
}

/// Moves `from` to `to` (which must not exist), both beneath the root.
pub fn rename(target: &Target, from: &str, to: &str) -> Result<FileResult, Fail> {
    let (from, to) = (paths::parse(from)?, paths::parse(to)?);
    if from.contains(&to) {
        return Err(Fail::invalid(format!(
            "{} cannot move into itself",
            from.display()
        )));
    }
    let root = root(target)?;
    let (from_dir, from_name) = paths::parent_of(root.as_fd(), &from)?;
    let (to_dir, to_name) = paths::parent_of(root.as_fd(), &to)?;
    stat_at(from_dir.as_fd(), from_name, &from)?;
    rustix::fs::renameat_with(
        &from_dir,
        from_name,
        &to_dir,
        to_name,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .map_err(|e| Fail::from_io(e.into(), &to))?;
    Ok(super::done())
}

/// Removes each of `paths` (directories with everything in them, by descriptor). All must
/// exist, or nothing is removed.
pub fn delete(target: &Target, list: &[String]) -> Result<FileResult, Fail> {
    let root = root(target)?;
    let mut found = Vec::with_capacity(list.len());
    for path in list {
        let rel = paths::parse(path)?;
        let (dir, name) = paths::parent_of(root.as_fd(), &rel)?;
        let stat = stat_at(dir.as_fd(), name, &rel)?;
        let name = name.to_owned();
        found.push((rel, dir, name, stat));
    }
    for (rel, dir, name, stat) in found {
        let removed = if beneath::kind(&stat) == FileType::Directory {
            beneath::open_dir_at(dir.as_fd(), name.as_ref())
                .and_then(|inner| beneath::remove_contents(inner.as_fd()))
                .and_then(|()| {
                    rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::REMOVEDIR)
                        .map_err(Into::into)
                })
        } else {
            rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty()).map_err(Into::into)
        };
        match removed {
            Ok(()) => {}
            // Gone meanwhile: what was asked is true.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Fail::from_io(e, &rel)),
        }
    }
    Ok(super::done())
}

/// Sets the permission bits of a file or directory (no setuid, setgid or sticky bit; a link
/// has none of its own).
pub fn chmod(target: &Target, path: &str, mode: u32) -> Result<FileResult, Fail> {
    if mode & !0o777 != 0 {
        return Err(Fail::invalid(
            "mode may hold permission bits only (no setuid, setgid or sticky bit)",
        ));
    }
    let rel = paths::parse(path)?;
    let root = root(target)?;
    let fd = if rel.is_root() {
        rustix::io::fcntl_dupfd_cloexec(&root, 0).map_err(|e| Fail::from_io(e.into(), &rel))?
    } else {
        let (dir, name) = paths::parent_of(root.as_fd(), &rel)?;
        let stat = stat_at(dir.as_fd(), name, &rel)?;
        match beneath::kind(&stat) {
            FileType::Directory => beneath::open_dir_at(dir.as_fd(), name.as_ref())
                .map_err(|e| Fail::from_io(e, &rel))?,
            FileType::RegularFile => open_file(target, root.as_fd(), &rel)?.0.into(),
            FileType::Symlink => {
                return Err(Fail::conflict(format!(
                    "{} is a symbolic link, which has no mode of its own",
                    rel.display()
                )));
            }
            _ => {
                return Err(Fail::conflict(format!(
                    "{} is not a file or directory",
                    rel.display()
                )));
            }
        }
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| Fail::from_io(e.into(), &rel))?;
    own(target, &stat, &rel)?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
        .map_err(|e| Fail::from_io(e.into(), &rel))?;
    Ok(super::done())
}
