//! An upload (or an edit): checked before a byte is taken, written to an unnamed file in the
//! target's directory (`O_TMPFILE`, given to the server's user by descriptor at once), and
//! linked into place with a rename only when every byte arrived: a broken upload, a Wings
//! killed midway or a node that went away leaves nothing behind, and readers see the old
//! file or the new one, never half of it. On a file system without `O_TMPFILE` the file is a
//! hidden name beside the target, removed on any failure.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use proto::node::v1::{FileResult, FileWrite};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use sha2::{Digest, Sha256};

use super::etag::{Identity, identity};
use super::ops::{open_file, root, stat_at};
use super::owner::AsOwner;
use super::paths::{self, Rel};
use super::{Etags, Fail, Lease, Reservation, Target};
use crate::beneath;

/// A write under way.
pub struct Upload {
    rel: Rel,
    dir: OwnedFd,
    name: String,
    temp: Temp,
    existed: bool,
    mode: u32,
    cap: u64,
    over_cap: String,
    written: u64,
    hasher: Sha256,
    /// What the target was when `If-Match` held: checked again just before the rename.
    expected: Option<Expected>,
    owner: Option<(u32, u32)>,
    reservation: Reservation,
    /// Held until the upload ends: a restore waits for it.
    lease: Lease,
}

/// The target `If-Match` was checked against.
enum Expected {
    /// `*`: any regular file.
    Any,
    /// The file that had the ETag, as long as it is unchanged.
    Same(Identity),
}

/// Checks an upload before any byte is taken: the path, what is there now (a directory or
/// anything but a regular file is a conflict), `If-Match`, and the declared size against the
/// cap and the server's free quota (the file replaced counts as free, the bytes other writes
/// to the server hold do not: [`Reservation`]); then opens the unnamed file it is written to.
pub fn prepare(target: &Target, etags: &Etags, write: &FileWrite) -> Result<Upload, Fail> {
    let rel = paths::parse(&write.path)?;
    let root = root(target)?;
    let (dir, name) = paths::parent_of(root.as_fd(), &rel)?;
    let (existed, mode, old_size) = match stat_at(dir.as_fd(), name, &rel) {
        Ok(stat) => match beneath::kind(&stat) {
            FileType::RegularFile => (
                true,
                stat.st_mode & 0o777,
                u64::try_from(stat.st_size).unwrap_or(0),
            ),
            FileType::Directory => {
                return Err(Fail::conflict(format!("{} is a directory", rel.display())));
            }
            _ => {
                return Err(Fail::conflict(format!(
                    "{} is not a regular file",
                    rel.display()
                )));
            }
        },
        Err(fail) if fail.kind == proto::node::v1::FileError::NotFound => (false, 0o644, 0),
        Err(fail) => return Err(fail),
    };
    let mut expected = None;
    if !write.if_match.is_empty() {
        if !existed {
            return Err(Fail::conflict(format!(
                "If-Match: {} does not exist",
                rel.display()
            )));
        }
        expected = Some(Expected::Any);
        if write.if_match != "*" {
            let (mut file, stat) = open_file(target, root.as_fd(), &rel)?;
            let etag = etags.strong(&mut file, &stat, &target.dir, &rel)?;
            if etag.as_deref() != Some(write.if_match.as_str()) {
                return Err(changed(&rel));
            }
            expected = Some(Expected::Same(identity(&stat)));
        }
    }
    let mut reservation = target
        .lease
        .reserve(root.as_fd(), target.quota, old_size)
        .map_err(|e| Fail::from_io(e, &rel))?;
    let room = reservation.room();
    let (cap, over_cap) = if write.max_bytes > 0 && write.max_bytes <= room {
        (
            write.max_bytes,
            format!(
                "the upload is over the cap of {} MiB",
                write.max_bytes >> 20
            ),
        )
    } else {
        (room, over_quota(room))
    };
    if write.size.is_some_and(|size| size > cap) {
        return Err(Fail::too_large(over_cap));
    }
    // The declared length is held at once: concurrent uploads cannot each count on it.
    if let Some(size) = write.size
        && !reservation.take(size)
    {
        return Err(Fail::too_large(over_quota(reservation.room())));
    }
    let temp = Temp::new(dir.as_fd(), target.owner).map_err(|e| Fail::from_io(e, &rel))?;
    let name = name.to_owned();
    Ok(Upload {
        rel,
        name,
        dir,
        temp,
        existed,
        mode,
        cap,
        over_cap,
        written: 0,
        hasher: Sha256::new(),
        expected,
        owner: target.owner,
        reservation,
        lease: target.lease.clone(),
    })
}

fn over_quota(room: u64) -> String {
    format!("the upload would pass the server's disk quota ({room} bytes free)")
}

fn changed(rel: &Rel) -> Fail {
    Fail::conflict(format!(
        "If-Match: {} changed since that ETag",
        rel.display()
    ))
}

impl Upload {
    /// Takes the next chunk, written as the server's user; refused past the cap or when the
    /// server's quota, with what its other writes hold, has no room for it (nothing is kept).
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), Fail> {
        let len = chunk.len() as u64;
        let total = self.written.saturating_add(len);
        if total > self.cap {
            return Err(Fail::too_large(self.over_cap.clone()));
        }
        if !self.reservation.take(total) {
            return Err(Fail::too_large(over_quota(self.reservation.room())));
        }
        {
            let _as_owner = AsOwner::enter(self.owner).map_err(|e| Fail::from_io(e, &self.rel))?;
            self.temp
                .file
                .write_all(chunk)
                .map_err(|e| Fail::from_io(e, &self.rel))?;
        }
        self.hasher.update(chunk);
        self.written = total;
        Ok(())
    }

    /// Every byte arrived: the file gets the old one's mode (0644 for a new one), reaches the
    /// disk, and replaces the target in one rename, if the target is still the one `If-Match`
    /// was checked against (checked again with the server's other commits held off).
    pub fn commit(self, etags: &Etags) -> Result<FileResult, Fail> {
        let Upload {
            rel,
            dir,
            name,
            mut temp,
            existed,
            mode,
            written,
            hasher,
            expected,
            reservation,
            lease,
            ..
        } = self;
        let io = |e: std::io::Error| Fail::from_io(e, &rel);
        rustix::fs::fchmod(&temp.file, Mode::from_raw_mode(mode)).map_err(|e| io(e.into()))?;
        temp.file.sync_all().map_err(io)?;
        {
            let _commits = lease.commit_lock();
            if let Some(expected) = &expected {
                let now = rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|_| changed(&rel))?;
                let same = match expected {
                    Expected::Any => beneath::kind(&now) == FileType::RegularFile,
                    Expected::Same(identity_then) => identity(&now) == *identity_then,
                };
                if !same {
                    return Err(changed(&rel));
                }
            }
            temp.place(dir.as_fd(), &name, true).map_err(io)?;
        }
        reservation.settle(written);
        let etag = hex::encode(hasher.finalize());
        if let Ok(stat) = rustix::fs::fstat(&temp.file) {
            etags.remember(&stat, &etag);
        }
        Ok(FileResult {
            created: !existed,
            etag,
            size: written,
            ..FileResult::default()
        })
    }
}

/// The file an upload (or an archive) is written to, before it has the target's name.
pub(super) struct Temp {
    /// The file.
    pub(super) file: File,
    /// The hidden name it has when the file system has no `O_TMPFILE` (removed on drop).
    named: Option<(OwnedFd, String)>,
}

fn hidden_name() -> String {
    format!(".mamba-upload-{:016x}", rand::random::<u64>())
}

impl Temp {
    /// An unnamed file in `dir`, owned by `owner`, mode 0600 until placed.
    pub(super) fn new(dir: BorrowedFd<'_>, owner: Option<(u32, u32)>) -> std::io::Result<Temp> {
        let flags = OFlags::WRONLY | OFlags::CLOEXEC;
        let temp = match rustix::fs::openat(
            dir,
            ".",
            flags | OFlags::TMPFILE,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => Temp {
                file: File::from(fd),
                named: None,
            },
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR) => {
                let mut attempt = 0;
                loop {
                    let name = hidden_name();
                    match rustix::fs::openat(
                        dir,
                        name.as_str(),
                        flags | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
                        Mode::from_raw_mode(0o600),
                    ) {
                        Ok(fd) => {
                            break Temp {
                                file: File::from(fd),
                                named: Some((rustix::io::fcntl_dupfd_cloexec(dir, 0)?, name)),
                            };
                        }
                        Err(rustix::io::Errno::EXIST) if attempt < 8 => attempt += 1,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Err(e) => return Err(e.into()),
        };
        if let Some((uid, gid)) = owner {
            rustix::fs::fchown(
                &temp.file,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )?;
        }
        Ok(temp)
    }

    /// Gives the file `name` in `dir`, replacing what had it when `replace` (else an existing
    /// `name` is an error).
    pub(super) fn place(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        replace: bool,
    ) -> std::io::Result<()> {
        let flags = if replace {
            rustix::fs::RenameFlags::empty()
        } else {
            rustix::fs::RenameFlags::NOREPLACE
        };
        if let Some((_, hidden)) = &self.named {
            rustix::fs::renameat_with(dir, hidden.as_str(), dir, name, flags)?;
            self.named = None;
            return Ok(());
        }
        // Linked under a fresh hidden name first (linkat never replaces), then renamed over
        // the target in one step.
        let mut attempt = 0;
        let hidden = loop {
            let hidden = hidden_name();
            let linked =
                rustix::fs::linkat(&self.file, "", dir, hidden.as_str(), AtFlags::EMPTY_PATH)
                    .or_else(|_| {
                        // Without CAP_DAC_READ_SEARCH (Wings not root): through /proc.
                        let path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                        rustix::fs::linkat(
                            rustix::fs::CWD,
                            path.as_str(),
                            dir,
                            hidden.as_str(),
                            AtFlags::SYMLINK_FOLLOW,
                        )
                    });
            match linked {
                Ok(()) => break hidden,
                Err(rustix::io::Errno::EXIST) if attempt < 8 => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        };
        if let Err(e) = rustix::fs::renameat_with(dir, hidden.as_str(), dir, name, flags) {
            let _ = rustix::fs::unlinkat(dir, hidden.as_str(), AtFlags::empty());
            return Err(e.into());
        }
        Ok(())
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some((dir, name)) = self.named.take() {
            let _ = rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty());
        }
    }
}
