//! Per-server book-keeping of the file manager on one node: which file operations are under
//! way (so a restore and a file write never overlap), the bytes reserved by writes that are not
//! yet visible (so concurrent uploads cannot pass the disk quota together), and the commits that
//! must not interleave (so `If-Match` is checked again just before the rename).
//!
//! An operation holds a [`Lease`] from start to end; a restore marks the server as restoring
//! (new operations are refused with 409) and waits until the leases already out are returned.
//! A write measures the server's usage and reserves what it may add under one lock
//! ([`Lease::reserve`]): its declared length up front, or, when none was declared, each chunk as
//! it arrives ([`Reservation::take`]), refused the moment the reservations would pass the quota.
//! Bytes written to an unnamed file are invisible to a walk of the tree, which is why they are
//! reserved until they are renamed into place and counted ([`Reservation::settle`]).

use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::Fail;
use crate::beneath;

/// How often a restore looks whether the file operations under way have ended.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// The books of every server of a node.
#[derive(Debug, Default)]
pub struct Ledger {
    servers: Mutex<HashMap<String, Arc<Books>>>,
}

/// One server's books.
#[derive(Debug, Default)]
struct Books {
    state: Mutex<Use>,
    space: Mutex<Space>,
    commits: Mutex<()>,
}

/// What holds a server's files now.
#[derive(Debug, Default)]
struct Use {
    /// File operations under way.
    active: usize,
    /// A restore has begun (or waits for the operations under way).
    restoring: bool,
}

/// A server's bytes as the file manager counts them.
#[derive(Debug, Default)]
struct Space {
    /// The usage last measured, plus what was committed since.
    used: u64,
    /// Bytes reserved by writes under way.
    reserved: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ledger {
    fn books(&self, id: &str) -> Arc<Books> {
        lock(&self.servers)
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    /// Starts a file operation on server `id`: refused (409) while it is being restored.
    pub fn enter(&self, id: &str) -> Result<Lease, Fail> {
        let books = self.books(id);
        {
            let mut state = lock(&books.state);
            if state.restoring {
                return Err(Fail::conflict(
                    "the server is being restored; try again when it is done",
                ));
            }
            state.active += 1;
        }
        Ok(Lease { books })
    }

    /// Whether server `id` is being restored.
    pub fn restoring(&self, id: &str) -> bool {
        lock(&self.books(id).state).restoring
    }

    /// Marks server `id` as being restored (new file operations are refused) and waits until
    /// the operations under way have ended; the mark goes with the guard.
    pub async fn restore(&self, id: &str) -> Restoring {
        let books = self.books(id);
        lock(&books.state).restoring = true;
        let guard = Restoring {
            books: books.clone(),
        };
        while lock(&books.state).active > 0 {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        guard
    }
}

/// A restore under way: file operations on its server are refused until it is dropped.
#[derive(Debug)]
pub struct Restoring {
    books: Arc<Books>,
}

impl Drop for Restoring {
    fn drop(&mut self) {
        lock(&self.books.state).restoring = false;
    }
}

/// A file operation under way (a restore waits for it to end).
#[derive(Debug)]
pub struct Lease {
    books: Arc<Books>,
}

impl Clone for Lease {
    fn clone(&self) -> Lease {
        lock(&self.books.state).active += 1;
        Lease {
            books: self.books.clone(),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = lock(&self.books.state);
        state.active = state.active.saturating_sub(1);
    }
}

impl Lease {
    /// Measures the server's usage beneath `root` and opens a reservation against `quota`,
    /// with `credit` bytes that the write frees when it lands (the file it replaces). Holding
    /// the books while measuring: no other write of the server reserves or lands meanwhile.
    pub fn reserve(
        &self,
        root: BorrowedFd<'_>,
        quota: u64,
        credit: u64,
    ) -> std::io::Result<Reservation> {
        let mut space = lock(&self.books.space);
        space.used = beneath::disk_usage(root)?;
        drop(space);
        Ok(Reservation {
            books: self.books.clone(),
            quota,
            credit,
            held: 0,
        })
    }

    /// Serialises the last check and the rename of writes to this server's files.
    pub fn commit_lock(&self) -> MutexGuard<'_, ()> {
        lock(&self.books.commits)
    }
}

/// Bytes a write holds against its server's quota until it lands or is dropped.
#[derive(Debug)]
pub struct Reservation {
    books: Arc<Books>,
    quota: u64,
    credit: u64,
    held: u64,
}

impl Reservation {
    /// The bytes the write may still reserve.
    pub fn room(&self) -> u64 {
        let space = lock(&self.books.space);
        self.room_in(&space)
    }

    fn room_in(&self, space: &Space) -> u64 {
        // What the others hold (this write's own bytes count once, as held).
        let others = space.reserved.saturating_sub(self.held);
        self.quota
            .saturating_add(self.credit)
            .saturating_sub(space.used)
            .saturating_sub(others)
    }

    /// Makes sure `total` bytes are held; false (nothing more held) when that would pass
    /// the quota with what the server uses and the other writes hold.
    pub fn take(&mut self, total: u64) -> bool {
        if total <= self.held {
            return true;
        }
        let mut space = lock(&self.books.space);
        if total > self.room_in(&space) {
            return false;
        }
        space.reserved = space.reserved.saturating_add(total - self.held);
        self.held = total;
        true
    }

    /// The write landed with `kept` bytes (visible now): they count as used, the reservation
    /// is returned.
    pub fn settle(mut self, kept: u64) {
        let mut space = lock(&self.books.space);
        space.used = space
            .used
            .saturating_add(kept)
            .saturating_sub(self.credit.min(space.used));
        space.reserved = space.reserved.saturating_sub(self.held);
        self.held = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held > 0 {
            let mut space = lock(&self.books.space);
            space.reserved = space.reserved.saturating_sub(self.held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn reservations_of_concurrent_writes_stay_within_the_quota() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("old"), vec![0u8; 100]).unwrap();
        let root = beneath::open_root(tmp.path()).unwrap();
        let ledger = Ledger::default();
        let lease = ledger.enter("s").unwrap();
        let mut a = lease.reserve(root.as_fd(), 1000, 0).unwrap();
        let mut b = lease.reserve(root.as_fd(), 1000, 0).unwrap();
        assert_eq!(a.room(), 900);
        assert!(a.take(600));
        assert_eq!(b.room(), 300);
        assert!(!b.take(301), "together they would pass the quota");
        assert!(b.take(300));
        assert!(!a.take(601));
        drop(b);
        assert!(a.take(900));
        a.settle(900);
        let c = lease.reserve(root.as_fd(), 1000, 0).unwrap();
        // Measured again: only what is on disk (the settled write was never linked here).
        assert_eq!(c.room(), 900);
    }

    #[tokio::test]
    async fn a_restore_waits_for_operations_and_refuses_new_ones() {
        let ledger = Arc::new(Ledger::default());
        let lease = ledger.enter("s").unwrap();
        let other = ledger.clone();
        let restore = tokio::spawn(async move {
            let guard = other.restore("s").await;
            drop(guard);
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(ledger.restoring("s"));
        assert!(!restore.is_finished(), "the restore waits for the write");
        assert!(ledger.enter("s").is_err(), "no new operation meanwhile");
        assert!(ledger.enter("t").is_ok(), "another server is not held up");
        drop(lease);
        restore.await.unwrap();
        assert!(ledger.enter("s").is_ok());
    }
}
