//! ETags: the lowercase hex SHA-256 of a file's bytes, remembered for files Wings has hashed
//! (an upload hashes what it writes; a download or `If-Match` hashes what it reads) so that a
//! download does not read a large file twice. An entry holds only while the file's inode,
//! size, modification and change times are what they were: any write, truncation, `touch` or
//! chmod moves the change time, which no tenant can set back. At most [`MAX_ENTRIES`] are kept.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::sync::Mutex;

use rustix::fs::Stat;
use sha2::{Digest, Sha256};

/// Files whose ETag is remembered (about 150 bytes each).
pub const MAX_ENTRIES: usize = 4096;

/// What a file was when hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Version {
    size: i64,
    mtime: (i64, u64),
    ctime: (i64, u64),
}

// The nanosecond fields are `u64` here and `i64` on other architectures.
#[allow(clippy::unnecessary_cast)]
fn version(stat: &Stat) -> ((u64, u64), Version) {
    (
        (stat.st_dev, stat.st_ino),
        Version {
            size: stat.st_size,
            mtime: (stat.st_mtime, stat.st_mtime_nsec as u64),
            ctime: (stat.st_ctime, stat.st_ctime_nsec as u64),
        },
    )
}

/// The remembered ETags of a node.
#[derive(Debug, Default)]
pub struct Etags {
    known: Mutex<HashMap<(u64, u64), (Version, String)>>,
}

impl Etags {
    /// The ETag of the file open as `file` whose `fstat` is `stat`: remembered, or computed by
    /// reading it from the start (the caller seeks afterwards).
    pub fn of(&self, file: &mut File, stat: &Stat) -> io::Result<String> {
        let (key, now) = version(stat);
        if let Some((seen, etag)) = self.lock().get(&key)
            && *seen == now
        {
            return Ok(etag.clone());
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; super::CHUNK];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let etag = hex::encode(hasher.finalize());
        // What was read is the file as it was only if it did not change meanwhile.
        let after = rustix::fs::fstat(&*file)?;
        if version(&after) == (key, now) {
            self.remember(&after, &etag);
        }
        Ok(etag)
    }

    /// Remembers `etag` for the file whose `fstat` is `stat`.
    pub fn remember(&self, stat: &Stat, etag: &str) {
        let (key, now) = version(stat);
        let mut known = self.lock();
        if known.len() >= MAX_ENTRIES && !known.contains_key(&key) {
            known.clear();
        }
        known.insert(key, (now, etag.to_owned()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, u64), (Version, String)>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
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
        let first = etags.of(&mut file, &stat).unwrap();
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
        assert_ne!(etags.of(&mut file, &stat).unwrap(), first);
    }
}
