//! A tenant's file manager, on the node: list, read, write, mkdir, rename, delete, chmod,
//! compress and decompress beneath a server's root.
//!
//! The panel asks on the control stream (`FileRequest`); Wings answers each request on its own
//! `Files` stream ([`serve`]), opened on a second mutually authenticated connection kept for
//! transfers ([`Link`]): HTTP/2 flow control on that stream bounds what a transfer holds in
//! memory on both sides (a few chunks of [`CHUNK`] bytes), and since the control stream's
//! connection carries no transfer, a transfer — even one the panel stops reading — never
//! holds up heartbeats or commands.
//!
//! Every path is checked lexically first ([`paths`]), then opened one directory descriptor at
//! a time beneath the server's root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: no
//! link is ever followed, nothing a tenant controls is touched by name from the top, and what
//! is read, measured or changed is the opened descriptor. Wings stays root and gives what it
//! makes to the server's user by descriptor (`fchown` of the unnamed `O_TMPFILE` before it is
//! linked into place), rather than switching to that uid: a helper process per request would
//! cost a fork and a second copy of every byte, and by-descriptor resolution is what stops a
//! tenant's links, whoever does the writing. A file that is not the server's own (a hard link
//! to another user's file) is never read or changed.

mod archive;
mod etag;
mod ledger;
mod link;
mod links;
mod ops;
mod owner;
pub mod paths;
mod transfer;
mod upload;

use std::io;
use std::path::PathBuf;

use proto::node::v1::{FileError, FileResult};

pub use etag::Etags;
pub use ledger::{Lease, Ledger, Reservation, Restoring};
pub use link::Link;
pub use links::Links;
pub use transfer::serve;

/// Bytes per data message (the panel accepts messages up to 1 MiB).
pub const CHUNK: usize = 512 * 1024;
/// HTTP/2 flow-control window of a transfer stream: what one upload may have in flight
/// towards Wings.
pub const WINDOW: u32 = 2 << 20;
/// HTTP/2 flow-control window of the transfers' connection: every stream's window of the
/// panel's cap of 8 transfers per node, so one upload whose disk is slow never holds up the
/// others.
pub const CONNECTION_WINDOW: u32 = 8 * WINDOW;
/// Chunks queued between the disk and the stream, each way.
const QUEUE: usize = 4;
/// Most entries a listing page holds.
pub const MAX_PAGE: usize = 1000;

/// A server's files as the supervisor knows them.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its directory (root-controlled: `WINGS_DATA_DIR/servers/<id>`).
    pub dir: PathBuf,
    /// Its user and group, when Wings is root.
    pub owner: Option<(u32, u32)>,
    /// Its disk quota in bytes.
    pub quota: u64,
    /// The operation under way (a restore waits for it); held by what outlives the request's
    /// first step (an upload being written).
    pub lease: Lease,
}

/// Why a file operation failed, as the panel is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail {
    /// The kind (the panel maps it to a status and error code).
    pub kind: FileError,
    /// For people; never holds file contents.
    pub message: String,
}

impl Fail {
    fn new(kind: FileError, message: impl Into<String>) -> Fail {
        Fail {
            kind,
            message: message.into(),
        }
    }

    /// Malformed, outside the root, or through a link.
    pub fn invalid_path(message: impl Into<String>) -> Fail {
        Fail::new(FileError::InvalidPath, message)
    }

    /// No such file or directory.
    pub fn not_found(message: impl Into<String>) -> Fail {
        Fail::new(FileError::NotFound, message)
    }

    /// Exists already, wrong kind, changed since, or busy.
    pub fn conflict(message: impl Into<String>) -> Fail {
        Fail::new(FileError::Conflict, message)
    }

    /// Past the quota or a cap.
    pub fn too_large(message: impl Into<String>) -> Fail {
        Fail::new(FileError::TooLarge, message)
    }

    /// A bad request that is not about the path.
    pub fn invalid(message: impl Into<String>) -> Fail {
        Fail::new(FileError::Invalid, message)
    }

    /// Anything else.
    pub fn failed(message: impl Into<String>) -> Fail {
        Fail::new(FileError::Failed, message)
    }

    /// An I/O error met on `rel`, as the tenant should see it.
    pub fn from_io(error: io::Error, rel: &paths::Rel) -> Fail {
        use rustix::io::Errno;
        let path = rel.display();
        if crate::beneath::is_too_deep(&error) {
            return Fail::conflict(format!(
                "{path}: {error}; the server's tree must be made shallower first"
            ));
        }
        match Errno::from_io_error(&error) {
            Some(Errno::NOENT) => Fail::not_found(format!("{path} does not exist")),
            Some(Errno::LOOP | Errno::XDEV) => Fail::invalid_path(format!(
                "{path} goes through a symbolic link, which is never followed"
            )),
            Some(Errno::NOTDIR) => Fail::conflict(format!("{path}: not a directory")),
            Some(Errno::ISDIR) => Fail::conflict(format!("{path} is a directory")),
            Some(Errno::EXIST | Errno::NOTEMPTY) => Fail::conflict(format!("{path} exists")),
            Some(Errno::DQUOT | Errno::NOSPC | Errno::FBIG) => {
                Fail::too_large(format!("{path}: no space left for the server"))
            }
            Some(Errno::NAMETOOLONG) => Fail::invalid_path(format!("{path} is too long")),
            // The tenant's doing (an immutable or busy file, a full directory, a read-only
            // file system): a conflict with the state of the files, never the node's fault.
            Some(
                Errno::PERM
                | Errno::ACCESS
                | Errno::BUSY
                | Errno::TXTBSY
                | Errno::MLINK
                | Errno::ROFS,
            ) => Fail::conflict(format!("{path}: not possible now ({error})")),
            Some(Errno::INVAL) => Fail::invalid(format!("{path}: not possible ({error})")),
            _ => {
                tracing::warn!(path = %path, error = %error, "file operation failed");
                Fail::failed(format!("{path}: {error}"))
            }
        }
    }

    /// The answer that carries it.
    pub fn result(self) -> FileResult {
        FileResult {
            error: self.kind as i32,
            message: self.message,
            ..FileResult::default()
        }
    }
}

/// A successful answer with nothing to say.
fn done() -> FileResult {
    FileResult::default()
}
