//! A tenant's path, checked before anything is opened: UTF-8 (the protocol's strings), at most
//! [`MAX_PATH_BYTES`] bytes, no NUL, absolute from the server's root; `.` and empty components
//! are dropped and `..` is resolved lexically and must stay inside. What remains are plain
//! names, opened one directory descriptor at a time beneath the server's root
//! ([`crate::beneath`]): a link on the way is never followed.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{Mode, OFlags};

use super::Fail;
use crate::beneath;

/// Longest path accepted.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest name of one component (the kernel's `NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;

/// A path beneath a server's root: its plain components (none is empty, `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rel {
    parts: Vec<String>,
}

/// Parses a tenant's path.
pub fn parse(path: &str) -> Result<Rel, Fail> {
    if path.len() > MAX_PATH_BYTES {
        return Err(Fail::invalid_path("the path is longer than 4096 bytes"));
    }
    if path.contains('\0') {
        return Err(Fail::invalid_path("the path holds a NUL byte"));
    }
    if !path.starts_with('/') {
        return Err(Fail::invalid_path(
            "the path must be absolute from the server's root (start with /)",
        ));
    }
    let mut parts: Vec<String> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(Fail::invalid_path(
                        "the path climbs out of the server's root",
                    ));
                }
            }
            name if name.len() > MAX_NAME_BYTES => {
                return Err(Fail::invalid_path("a name in the path is over 255 bytes"));
            }
            name => parts.push(name.to_owned()),
        }
    }
    Ok(Rel { parts })
}

impl Rel {
    /// Whether it is the root itself.
    pub fn is_root(&self) -> bool {
        self.parts.is_empty()
    }

    /// The relative path (`.` for the root).
    pub fn path(&self) -> PathBuf {
        if self.parts.is_empty() {
            return PathBuf::from(".");
        }
        self.parts.iter().collect()
    }

    /// The last component (`None` for the root).
    pub fn name(&self) -> Option<&str> {
        self.parts.last().map(String::as_str)
    }

    /// The directory that holds it (the root's is the root).
    pub fn parent(&self) -> Rel {
        let mut parts = self.parts.clone();
        parts.pop();
        Rel { parts }
    }

    /// How many components it has.
    pub fn depth(&self) -> usize {
        self.parts.len()
    }

    /// Its first `n` components (an ancestor, or itself).
    pub fn prefix(&self, n: usize) -> Rel {
        Rel {
            parts: self.parts[..n.min(self.parts.len())].to_vec(),
        }
    }

    /// Its components from the `n`-th on, as a relative path.
    pub fn suffix(&self, n: usize) -> PathBuf {
        self.parts[n.min(self.parts.len())..].iter().collect()
    }

    /// Whether `other` is this path or lies beneath it.
    pub fn contains(&self, other: &Rel) -> bool {
        other.parts.starts_with(&self.parts)
    }

    /// `/a/b`, as the tenant would write it.
    pub fn display(&self) -> String {
        format!("/{}", self.parts.join("/"))
    }
}

/// Opens the directory `rel` beneath `root`, through no link.
pub fn open_dir(root: BorrowedFd<'_>, rel: &Rel) -> Result<OwnedFd, Fail> {
    beneath::open_beneath(
        root,
        &rel.path(),
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
    )
    .map_err(|e| dir_error(root, rel, e))
}

/// An error met opening `rel` (or a directory on its way) as a directory: `O_DIRECTORY |
/// O_NOFOLLOW` on a link says "not a directory", so a link (refused, never followed) is told
/// from a file (a conflict).
pub fn dir_error(root: BorrowedFd<'_>, rel: &Rel, error: std::io::Error) -> Fail {
    use rustix::io::Errno;
    if Errno::from_io_error(&error) != Some(Errno::NOTDIR) {
        return Fail::from_io(error, rel);
    }
    let through_link = match beneath::open_beneath(root, &rel.path(), OFlags::PATH, Mode::empty()) {
        Ok(fd) => rustix::fs::fstat(&fd)
            .map(|stat| beneath::kind(&stat) == rustix::fs::FileType::Symlink)
            .unwrap_or(false),
        Err(e) => Errno::from_io_error(&e) == Some(Errno::LOOP),
    };
    if through_link {
        Fail::from_io(Errno::LOOP.into(), rel)
    } else {
        Fail::from_io(error, rel)
    }
}

/// The directory holding `rel` (opened beneath `root`) and `rel`'s name in it; the root itself
/// has neither.
pub fn parent_of<'a>(root: BorrowedFd<'_>, rel: &'a Rel) -> Result<(OwnedFd, &'a str), Fail> {
    let name = rel
        .name()
        .ok_or_else(|| Fail::invalid_path("not on the server's root itself"))?;
    Ok((open_dir(root, &rel.parent())?, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::node::v1::FileError;

    #[test]
    fn paths_are_resolved_lexically_and_stay_inside() {
        let ok = |p: &str| parse(p).unwrap().display();
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("/a/./b//c/"), "/a/b/c");
        assert_eq!(ok("/a/b/../c"), "/a/c");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/a%2F..%2F..%2Fetc"), "/a%2F..%2F..%2Fetc");
        for bad in ["", "a/b", "../etc", "/..", "/a/../../etc", "/x\0y"] {
            assert_eq!(
                parse(bad).unwrap_err().kind,
                FileError::InvalidPath,
                "{bad:?}"
            );
        }
        assert!(parse(&format!("/{}", "a".repeat(256))).is_err());
        assert!(parse(&format!("/{}", "a/".repeat(2100))).is_err());
        let rel = parse("/a/b").unwrap();
        assert_eq!(rel.name(), Some("b"));
        assert_eq!(rel.parent().display(), "/a");
        assert!(parse("/a").unwrap().contains(&rel));
        assert!(!rel.contains(&parse("/a").unwrap()));
        assert_eq!(parse("/").unwrap().path(), PathBuf::from("."));
    }
}
