//! ETags: the lowercase hex SHA-256 of a file's bytes (issue 17), remembered for files Wings has
//! hashed (an upload hashes what it writes; a download or `If-Match` hashes what it reads) so
//! that a download does not read a large file twice. An entry holds only while the file's
//! inode, size, modification and change times are what they were: any write, truncation,
//! `touch` or chmod moves the change time, which no tenant can set back. At most
//! [`MAX_ENTRIES`] are kept.
//!
//! Hashing costs a read of the whole file, so it is bounded: a file over [`STRONG_MAX_BYTES`]
//! is never hashed (a 16 TiB sparse file would hold a thread for hours), and at most
//! [`HASHES_PER_NODE`] files, [`HASHES_PER_SERVER`] of one server, are hashed at once. A
//! download that cannot have its strong ETag at once gets a weak one instead, `W/` and a keyed
//! digest of the file's inode, size and times (RFC 9110 §8.8.1: it changes whenever the strong
//! one could, and reveals nothing of the inode without the node's key); it starts at once. A
//! weak ETag never matches `If-Match` (RFC 9110 §13.1.1 compares strongly), so an edit
//! conditional on a file that has only a weak one is refused as changed (409); an `If-Match`
//! waits up to [`IF_MATCH_WAIT`] for a hashing slot, then is refused as busy (409).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::fs::Stat;
use sha2::{Digest, Sha256};

use super::Fail;
use super::paths::Rel;

/// Files whose ETag is remembered (about 150 bytes each).
pub const MAX_ENTRIES: usize = 4096;
/// The largest file hashed for a strong ETag.
pub const STRONG_MAX_BYTES: u64 = 1 << 30;
/// Files hashed at once on a node.
pub const HASHES_PER_NODE: usize = 4;
/// Files of one server hashed at once.
pub const HASHES_PER_SERVER: usize = 2;
/// How long an `If-Match` waits for a hashing slot.
pub const IF_MATCH_WAIT: Duration = Duration::from_secs(10);

/// What a file was when hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    size: i64,
    mtime: (i64, u64),
    ctime: (i64, u64),
}

/// A file's device and inode, and its version.
pub type Identity = ((u64, u64), Version);

/// The identity of the file whose `fstat`/`statat` is `stat`.
// The nanosecond fields are `u64` here and `i64` on other architectures.
#[allow(clippy::unnecessary_cast)]
pub fn identity(stat: &Stat) -> Identity {
    (
        (stat.st_dev, stat.st_ino),
        Version {
            size: stat.st_size,
            mtime: (stat.st_mtime, stat.st_mtime_nsec as u64),
            ctime: (stat.st_ctime, stat.st_ctime_nsec as u64),
        },
    )
}

/// The remembered ETags of a node, and its hashing slots.
#[derive(Debug)]
pub struct Etags {
    known: Mutex<HashMap<(u64, u64), (Version, String)>>,
    /// Keys the weak ETags.
    key: [u8; 32],
    hashing: Mutex<Hashing>,
    freed: Condvar,
}

/// Files being hashed: in all, and per server directory.
#[derive(Debug, Default)]
struct Hashing {
    total: usize,
    per_server: HashMap<PathBuf, usize>,
}

impl Default for Etags {
    fn default() -> Etags {
        Etags {
            known: Mutex::default(),
            key: rand::random(),
            hashing: Mutex::default(),
            freed: Condvar::new(),
        }
    }
}

/// A hashing slot, given back when dropped.
struct Slot<'a> {
    etags: &'a Etags,
    server: PathBuf,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut hashing = lock(&self.etags.hashing);
        hashing.total = hashing.total.saturating_sub(1);
        if let Some(n) = hashing.per_server.get_mut(&self.server) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                hashing.per_server.remove(&self.server);
            }
        }
        self.etags.freed.notify_all();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Etags {
    /// The strong ETag of `file` (`stat` its `fstat`), of server directory `server`:
    /// remembered, or hashed from the start (the caller seeks afterwards) when the file is
    /// small enough and a slot frees within `wait`; `None` otherwise.
    pub fn of(
        &self,
        file: &mut File,
        stat: &Stat,
        server: &Path,
        wait: Duration,
    ) -> io::Result<Option<String>> {
        let (key, now) = identity(stat);
        if let Some((seen, etag)) = lock(&self.known).get(&key)
            && *seen == now
        {
            return Ok(Some(etag.clone()));
        }
        if u64::try_from(stat.st_size).unwrap_or(u64::MAX) > STRONG_MAX_BYTES {
            return Ok(None);
        }
        let Some(_slot) = self.slot(server, wait) else {
            return Ok(None);
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; super::CHUNK];
        // Never more than the size the file had (it may grow meanwhile: then not remembered).
        let mut reader = (&*file).take(STRONG_MAX_BYTES.saturating_add(1));
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let etag = hex::encode(hasher.finalize());
        // What was read is the file as it was only if it did not change meanwhile.
        let after = rustix::fs::fstat(&*file)?;
        if identity(&after) == (key, now) {
            self.remember(&after, &etag);
        }
        Ok(Some(etag))
    }

    /// The ETag a download is sent with: the strong one if it is known or can be hashed at
    /// once, else the weak one (`W/` and hex, without quotes).
    pub fn for_download(
        &self,
        file: &mut File,
        stat: &Stat,
        server: &Path,
        rel: &Rel,
    ) -> Result<String, Fail> {
        match self.of(file, stat, server, Duration::ZERO) {
            Ok(Some(etag)) => Ok(etag),
            Ok(None) => Ok(self.weak(stat)),
            Err(e) => Err(Fail::from_io(e, rel)),
        }
    }

    /// The strong ETag `If-Match` is compared with: `None` for a file that has only a weak
    /// one (over [`STRONG_MAX_BYTES`], never hashed); busy (409) when no slot freed in time.
    pub fn strong(
        &self,
        file: &mut File,
        stat: &Stat,
        server: &Path,
        rel: &Rel,
    ) -> Result<Option<String>, Fail> {
        match self.of(file, stat, server, IF_MATCH_WAIT) {
            Ok(Some(etag)) => Ok(Some(etag)),
            Ok(None) if u64::try_from(stat.st_size).unwrap_or(u64::MAX) > STRONG_MAX_BYTES => {
                Ok(None)
            }
            Ok(None) => Err(Fail::conflict(
                "the node is busy hashing other files; try the conditional edit again",
            )),
            Err(e) => Err(Fail::from_io(e, rel)),
        }
    }

    /// The weak ETag of the file whose `fstat` is `stat`.
    pub fn weak(&self, stat: &Stat) -> String {
        let ((dev, ino), version) = identity(stat);
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        let fields = [
            dev,
            ino,
            version.size as u64,
            version.mtime.0 as u64,
            version.mtime.1,
            version.ctime.0 as u64,
            version.ctime.1,
        ];
        for n in fields {
            hasher.update(n.to_le_bytes());
        }
        format!("W/{}", hex::encode(&hasher.finalize()[..16]))
    }

    /// Remembers `etag` for the file whose `fstat` is `stat`.
    pub fn remember(&self, stat: &Stat, etag: &str) {
        let (key, now) = identity(stat);
        let mut known = lock(&self.known);
        if known.len() >= MAX_ENTRIES && !known.contains_key(&key) {
            known.clear();
        }
        known.insert(key, (now, etag.to_owned()));
    }

    /// A hashing slot for `server`, waiting up to `wait` for one.
    fn slot(&self, server: &Path, wait: Duration) -> Option<Slot<'_>> {
        let deadline = Instant::now() + wait;
        let mut hashing = lock(&self.hashing);
        loop {
            let mine = hashing.per_server.get(server).copied().unwrap_or(0);
            if hashing.total < HASHES_PER_NODE && mine < HASHES_PER_SERVER {
                hashing.total += 1;
                *hashing.per_server.entry(server.to_owned()).or_default() += 1;
                return Some(Slot {
                    etags: self,
                    server: server.to_owned(),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            hashing = self
                .freed
                .wait_timeout(hashing, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_remembered_etag_holds_until_the_file_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, "hello").unwrap();
        let etags = Etags::default();
        let mut file = File::open(&path).unwrap();
        let stat = rustix::fs::fstat(&file).unwrap();
        let server = tmp.path();
        let first = etags
            .of(&mut file, &stat, server, Duration::ZERO)
            .unwrap()
            .unwrap();
        assert_eq!(
            first,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"!")
            .unwrap();
        let mut file = File::open(&path).unwrap();
        let stat = rustix::fs::fstat(&file).unwrap();
        let second = etags.of(&mut file, &stat, server, Duration::ZERO).unwrap();
        assert_ne!(second.unwrap(), first);
    }

    #[test]
    fn a_huge_file_gets_a_weak_etag_at_once_and_hashing_is_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("huge");
        // 16 TiB (less a MiB, ext4's limit), sparse: hashing it would read for hours.
        File::create(&path)
            .unwrap()
            .set_len((16 << 40) - (1 << 20))
            .unwrap();
        let etags = Etags::default();
        let mut file = File::open(&path).unwrap();
        let stat = rustix::fs::fstat(&file).unwrap();
        let rel = super::super::paths::parse("/huge").unwrap();
        let tag = etags
            .for_download(&mut file, &stat, tmp.path(), &rel)
            .unwrap();
        assert!(tag.starts_with("W/") && tag.len() == 34, "{tag}");
        assert_eq!(tag, etags.weak(&stat), "stable while the file is");
        assert_eq!(
            etags.strong(&mut file, &stat, tmp.path(), &rel).unwrap(),
            None
        );
        // All of a server's slots taken: a download does not wait, another server still hashes.
        let small = tmp.path().join("small");
        std::fs::write(&small, "hello").unwrap();
        let mut small = File::open(&small).unwrap();
        let small_stat = rustix::fs::fstat(&small).unwrap();
        let held: Vec<_> = (0..HASHES_PER_SERVER)
            .map(|_| etags.slot(tmp.path(), Duration::ZERO).unwrap())
            .collect();
        assert!(etags.slot(tmp.path(), Duration::ZERO).is_none());
        let tag = etags
            .for_download(&mut small, &small_stat, tmp.path(), &rel)
            .unwrap();
        assert!(tag.starts_with("W/"), "{tag}");
        assert!(etags.slot(Path::new("/other"), Duration::ZERO).is_some());
        drop(held);
        let tag = etags
            .for_download(&mut small, &small_stat, tmp.path(), &rel)
            .unwrap();
        assert_eq!(tag.len(), 64, "{tag}");
    }
}
