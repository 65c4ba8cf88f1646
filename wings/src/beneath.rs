//! Acting on a server's files as root without ever following a link out of its directory.
//!
//! A server's directory belongs to its tenant, who can put anything there — including
//! symbolic links swapped in and out while Wings looks (`renameat2(RENAME_EXCHANGE)` in a
//! loop). So nothing here opens, stats, lists, chowns or removes a tenant's path by name from
//! the top: the server's directory is opened once (`O_DIRECTORY | O_NOFOLLOW`), and every
//! entry below it is reached one component at a time, relative to its parent's descriptor,
//! with `O_NOFOLLOW` (a link is never followed, only read with `readlinkat`); what is then
//! read, measured or changed is the opened descriptor (`fstat`, `fchown`, `unlinkat`), never
//! the name again. Multi-component paths resolve with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`. An entry that changes kind between listing and opening is skipped:
//! whatever it became, it is not followed.
//!
//! Only regular files, directories and symbolic links (as entries) are ever acted on; FIFOs,
//! sockets and devices are reported as [`Node::Other`] and never opened.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};

/// Deepest directory nesting walked (a deeper tree is refused, not half-handled).
pub const MAX_DEPTH: usize = 256;

/// One entry met on a walk, with what its descriptor says it is.
pub enum Node<'a> {
    /// A directory (visited before what it holds).
    Dir(&'a Stat),
    /// A regular file, opened read-only without following links.
    File(File, &'a Stat),
    /// A symbolic link and its target, read without following it.
    Symlink(OsString, &'a Stat),
    /// A FIFO, socket or device: never opened.
    Other(&'a Stat),
}

/// A tree deeper than [`MAX_DEPTH`]: the tenant's doing, told apart from other I/O errors
/// (as `io::Error::other(TooDeep)`).
#[derive(Debug)]
pub struct TooDeep;

impl std::fmt::Display for TooDeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the tree is deeper than {MAX_DEPTH} levels")
    }
}

impl std::error::Error for TooDeep {}

fn too_deep() -> io::Error {
    io::Error::other(TooDeep)
}

/// Whether `error` is a tree deeper than [`MAX_DEPTH`].
pub fn is_too_deep(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|e| e.is::<TooDeep>())
}

/// The kind of a `stat` result.
pub fn kind(stat: &Stat) -> FileType {
    FileType::from_raw_mode(stat.st_mode)
}

/// Opens a directory by a root-controlled path (the server's directory, a staging directory
/// Wings made), refusing a link in its place.
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the directory `name` (one component) inside `dir`, never through a link.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens a relative, multi-component `path` beneath `root`: no component may be a link, none
/// may climb out. `flags` adds to `O_CLOEXEC | O_NOFOLLOW`.
pub fn open_beneath(
    root: BorrowedFd<'_>,
    path: &Path,
    flags: OFlags,
    mode: Mode,
) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        root,
        path,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        mode,
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// The names in a directory (without `.` and `..`), read as they come: a directory of
/// millions of names is never held whole. Reads from its own descriptor ([`Entries::fd`]
/// for `statat` and `openat` relative to the directory).
pub struct Entries {
    dir: rustix::fs::Dir,
}

impl Entries {
    /// Reads the directory open as `fd`, which it takes (its position must be the start:
    /// a descriptor just opened).
    pub fn new(fd: OwnedFd) -> io::Result<Entries> {
        Ok(Entries {
            dir: rustix::fs::Dir::new(fd)?,
        })
    }

    /// Reads the directory open as `fd` from the start, on a descriptor of its own (a
    /// `dup` would share, and move, `fd`'s position).
    pub fn of(fd: BorrowedFd<'_>) -> io::Result<Entries> {
        Ok(Entries {
            dir: rustix::fs::Dir::read_from(fd)?,
        })
    }

    /// The directory's descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        // `Dir::fd` cannot fail: it borrows the descriptor it owns.
        self.dir.fd().unwrap_or_else(|_| unreachable!())
    }
}

impl Iterator for Entries {
    type Item = io::Result<OsString>;

    fn next(&mut self) -> Option<io::Result<OsString>> {
        loop {
            let entry = match self.dir.next()? {
                Ok(entry) => entry,
                Err(e) => return Some(Err(e.into())),
            };
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                return Some(Ok(OsStr::from_bytes(name).to_owned()));
            }
        }
    }
}

/// The names in a directory (without `.` and `..`), all at once: for directories Wings
/// made or a few levels of a removal, never a tenant's directory listed or measured.
pub fn names(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(out)
}

/// How often an entry that changes kind while it is reached is tried again before the walk
/// passes it by.
const ATTEMPTS: usize = 8;

/// Reaches `name` in `dir` as what it is now, trying again when it changes kind midway;
/// `None` if it vanished or kept changing.
fn visit_one(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<(Stat, Reached)>> {
    for _ in 0..ATTEMPTS {
        match reach(dir, name)? {
            Outcome::Reached(stat, reached) => return Ok(Some((stat, reached))),
            Outcome::Gone => return Ok(None),
            Outcome::Changed => continue,
        }
    }
    Ok(None)
}

enum Outcome {
    Reached(Stat, Reached),
    Gone,
    Changed,
}

/// One attempt of [`visit_one`].
fn reach(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Outcome> {
    let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(rustix::io::Errno::NOENT) => return Ok(Outcome::Gone),
        Err(e) => return Err(e.into()),
    };
    let reached = match kind(&stat) {
        FileType::Directory => match open_dir_at(dir, name) {
            Ok(fd) => Reached::Dir(fd),
            Err(e) if swapped(&e) => return Ok(Outcome::Changed),
            Err(e) => return Err(e),
        },
        FileType::RegularFile => {
            // O_NONBLOCK: a FIFO swapped in after the stat must not hang the walk.
            match rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::NOCTTY
                    | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => Reached::File(fd),
                Err(e) if swapped(&e.into()) => return Ok(Outcome::Changed),
                Err(e) => return Err(e.into()),
            }
        }
        FileType::Symlink => match rustix::fs::readlinkat(dir, name, Vec::new()) {
            Ok(target) => {
                return Ok(Outcome::Reached(
                    stat,
                    Reached::Symlink(OsStr::from_bytes(target.as_bytes()).to_owned()),
                ));
            }
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => {
                return Ok(Outcome::Changed);
            }
            Err(e) => return Err(e.into()),
        },
        _ => return Ok(Outcome::Reached(stat, Reached::Other)),
    };
    // What the descriptor is, not what the name was a moment ago.
    let fd = match &reached {
        Reached::Dir(fd) | Reached::File(fd) => fd.as_fd(),
        _ => return Ok(Outcome::Reached(stat, reached)),
    };
    let now = rustix::fs::fstat(fd)?;
    if kind(&now) != kind(&stat) {
        return Ok(Outcome::Changed);
    }
    Ok(Outcome::Reached(now, reached))
}

enum Reached {
    Dir(OwnedFd),
    File(OwnedFd),
    Symlink(OsString),
    Other,
}

/// Whether an open failed because the entry changed kind (a link or something else now).
fn swapped(e: &io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(
            rustix::io::Errno::LOOP
                | rustix::io::Errno::NOTDIR
                | rustix::io::Errno::NOENT
                | rustix::io::Errno::NXIO
        )
    )
}

/// Walks everything beneath `root` depth-first (a directory before its contents), calling
/// `visit` with each entry's path relative to `root`.
pub fn walk(
    root: BorrowedFd<'_>,
    visit: &mut dyn FnMut(&Path, Node<'_>) -> io::Result<()>,
) -> io::Result<()> {
    // Each level: its relative path and its directory stream.
    let mut stack: Vec<(PathBuf, Entries)> = vec![(PathBuf::new(), Entries::of(root)?)];
    while let Some((path, level)) = stack.last_mut() {
        let Some(name) = level.next() else {
            stack.pop();
            continue;
        };
        let name = name?;
        let Some((stat, reached)) = visit_one(level.fd(), &name)? else {
            continue;
        };
        let here = path.join(&name);
        match reached {
            Reached::Dir(fd) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(too_deep());
                }
                visit(&here, Node::Dir(&stat))?;
                stack.push((here, Entries::new(fd)?));
            }
            Reached::File(fd) => visit(&here, Node::File(File::from(fd), &stat))?,
            Reached::Symlink(target) => visit(&here, Node::Symlink(target, &stat))?,
            Reached::Other => visit(&here, Node::Other(&stat))?,
        }
    }
    Ok(())
}

/// The bytes of regular files beneath `root` (links not followed).
/// Nothing is opened but directories (sizes come from `statat`, so a file the tenant holds a
/// lease on cannot stall it), an entry that vanishes midway is passed by, and a tree deeper
/// than [`MAX_DEPTH`] is an error, never a smaller number.
pub fn disk_usage(root: BorrowedFd<'_>) -> io::Result<u64> {
    let mut total = 0u64;
    // One directory stream per level: memory is bounded by the depth, not by the names.
    let mut stack = vec![Entries::of(root)?];
    loop {
        let depth = stack.len();
        let Some(level) = stack.last_mut() else {
            return Ok(total);
        };
        let Some(name) = level.next() else {
            stack.pop();
            continue;
        };
        let name = name?;
        let Ok(stat) = rustix::fs::statat(level.fd(), &name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        match kind(&stat) {
            FileType::RegularFile => {
                total = total.saturating_add(u64::try_from(stat.st_size).unwrap_or(0));
            }
            FileType::Directory => {
                if depth >= MAX_DEPTH {
                    return Err(too_deep());
                }
                if let Ok(inner) = open_dir_at(level.fd(), &name) {
                    stack.push(Entries::new(inner)?);
                }
            }
            _ => {}
        }
    }
}

/// Removes everything inside `root` (not `root` itself), by descriptor: `unlinkat` relative to
/// each directory, never a path from the top. A tree deeper than [`MAX_DEPTH`] is flattened
/// first (its deep directories renamed up to `root`), so any depth is removed.
pub fn remove_contents(root: BorrowedFd<'_>) -> io::Result<()> {
    remove_contents_of(root, None)
}

/// [`remove_contents`], but only what belongs to `only` when it is given: another user's
/// entries (and the directories that still hold them) stay.
pub fn remove_contents_of(root: BorrowedFd<'_>, only: Option<u32>) -> io::Result<()> {
    let mut spare = 0u64;
    loop {
        match remove_pass(root, &mut spare, only)? {
            Pass::Done => return Ok(()),
            Pass::Again => continue,
        }
    }
}

enum Pass {
    Done,
    Again,
}

fn remove_pass(root: BorrowedFd<'_>, spare: &mut u64, only: Option<u32>) -> io::Result<Pass> {
    let mut stack: Vec<(OwnedFd, Vec<OsString>, Option<OsString>)> = Vec::new();
    let top = rustix::io::fcntl_dupfd_cloexec(root, 0)?;
    let list = names(top.as_fd())?;
    stack.push((top, list, None));
    let mut flattened = false;
    loop {
        let depth = stack.len();
        let Some((dir, pending, _)) = stack.last_mut() else {
            break;
        };
        let Some(name) = pending.pop() else {
            // Empty now: remove it from its parent.
            let Some((_, _, Some(own_name))) = stack.pop() else {
                break;
            };
            if let Some((parent, _, _)) = stack.last() {
                match rustix::fs::unlinkat(parent.as_fd(), &own_name, AtFlags::REMOVEDIR) {
                    // Another user's entries kept it.
                    Err(rustix::io::Errno::NOTEMPTY) if only.is_some() => {}
                    other => ignore_missing(other)?,
                }
            }
            continue;
        };
        let stat = match rustix::fs::statat(dir.as_fd(), &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if only.is_some_and(|uid| uid != stat.st_uid) {
            continue;
        }
        if kind(&stat) != FileType::Directory {
            ignore_missing(rustix::fs::unlinkat(dir.as_fd(), &name, AtFlags::empty()))?;
            continue;
        }
        if depth >= MAX_DEPTH {
            // Too deep to hold a descriptor per level: move it up (under a name nothing else
            // has: never over an entry) and take it next pass.
            loop {
                *spare += 1;
                let new_name = format!(".wings-flatten-{spare}");
                match rustix::fs::renameat_with(
                    dir.as_fd(),
                    &name,
                    root,
                    new_name.as_str(),
                    rustix::fs::RenameFlags::NOREPLACE,
                ) {
                    Ok(()) => break,
                    Err(rustix::io::Errno::EXIST) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            flattened = true;
            continue;
        }
        let inner = match open_dir_at(dir.as_fd(), &name) {
            Ok(fd) => fd,
            Err(e) if swapped(&e) => continue,
            Err(e) => return Err(e),
        };
        let list = names(inner.as_fd())?;
        stack.push((inner, list, Some(name)));
    }
    Ok(if flattened { Pass::Again } else { Pass::Done })
}

fn ignore_missing(result: rustix::io::Result<()>) -> io::Result<()> {
    match result {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes the directory at a root-controlled `path` and everything in it, by descriptor.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let fd = match open_root(path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    remove_contents(fd.as_fd())?;
    drop(fd);
    match std::fs::remove_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn walk_reports_links_as_links_and_never_leaves_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "secret").unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/file"), "12345").unwrap();
        symlink(&outside, root.join("escape-dir")).unwrap();
        symlink(outside.join("secret"), root.join("a/escape-file")).unwrap();
        let fd = open_root(&root).unwrap();
        let mut seen = Vec::new();
        walk(fd.as_fd(), &mut |path, node| {
            let what = match node {
                Node::Dir(_) => "dir".to_owned(),
                Node::File(_, stat) => format!("file {}", stat.st_size),
                Node::Symlink(target, _) => format!("link {}", target.to_string_lossy()),
                Node::Other(_) => "other".to_owned(),
            };
            seen.push(format!("{} {what}", path.display()));
            Ok(())
        })
        .unwrap();
        seen.sort();
        assert_eq!(
            seen,
            [
                "a dir".to_owned(),
                "a/b dir".to_owned(),
                "a/b/file file 5".to_owned(),
                format!("a/escape-file link {}", outside.join("secret").display()),
                format!("escape-dir link {}", outside.display()),
            ]
        );
        assert_eq!(disk_usage(fd.as_fd()).unwrap(), 5);
        // A link as the root itself is refused.
        symlink(&root, tmp.path().join("root-link")).unwrap();
        assert!(open_root(&tmp.path().join("root-link")).is_err());
        // Multi-component resolution refuses links and climbing out.
        assert!(
            open_beneath(
                fd.as_fd(),
                Path::new("a/b/file"),
                OFlags::RDONLY,
                Mode::empty()
            )
            .is_ok()
        );
        assert!(
            open_beneath(
                fd.as_fd(),
                Path::new("escape-dir/secret"),
                OFlags::RDONLY,
                Mode::empty()
            )
            .is_err()
        );
        assert!(
            open_beneath(
                fd.as_fd(),
                Path::new("../outside/secret"),
                OFlags::RDONLY,
                Mode::empty()
            )
            .is_err()
        );
        // Removal takes the links, not what they point to.
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "secret"
        );
    }

    #[test]
    fn removes_trees_deeper_than_a_descriptor_per_level() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let fd = open_root(&root).unwrap();
        // Deeper than MAX_DEPTH, built by descriptor (the path would be too long to name).
        let mut dir = rustix::io::fcntl_dupfd_cloexec(fd.as_fd(), 0).unwrap();
        for _ in 0..(MAX_DEPTH * 2 + 3) {
            rustix::fs::mkdirat(dir.as_fd(), "d", Mode::from_raw_mode(0o700)).unwrap();
            dir = open_dir_at(dir.as_fd(), OsStr::new("d")).unwrap();
        }
        std::fs::write(
            format!(
                "/proc/self/fd/{}/leaf",
                std::os::fd::AsRawFd::as_raw_fd(&dir)
            ),
            "x",
        )
        .unwrap();
        drop(dir);
        assert!(
            walk(fd.as_fd(), &mut |_, _| Ok(())).is_err(),
            "too deep to walk"
        );
        drop(fd);
        remove_tree(&root).unwrap();
        assert!(!root.exists());
    }
}
