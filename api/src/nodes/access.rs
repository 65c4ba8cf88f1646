//! Who may speak for a node: the admission facts of every node (enabled, pinned and next
//! fingerprint, certificate expiry), judged by one function ([`NodeAccess::judge`]) whether
//! they come from the database or from the [`AccessCache`].
//!
//! The cache lets a replica admit a reconnect storm without a database read per connection.
//! It is trusted only while it is kept fresh by PostgreSQL's node announcements (the
//! `mamba_nodes` channel, which a trigger notifies on every insert, delete and change of
//! these facts, whoever made it):
//!
//! - it is [`Freshness::Cold`] until the listener is listening and has loaded every node
//!   *after* it began to listen (so a change committed during the load is announced after
//!   it), and again as soon as the listener loses its connection: a cold cache answers
//!   nothing and admission reads the database, as on SQLite, which has no announcements;
//! - a connection that died silently (no reset ever came: a NAT or firewall forgot it, a
//!   pooler accepted `LISTEN` and delivers nothing) looks exactly like a quiet one, so the
//!   absence of an error proves nothing: the listener announces a ping of its own every
//!   second, and the cache answers only while an announcement arrived within
//!   [`CONFIRMED_FOR`] ([`AccessCache::confirm`]);
//! - an announcement marks the node's entry as being refreshed *before* anything else
//!   happens (the watcher is woken after), so from then on the node is judged on the
//!   database until the re-read lands; a re-read overtaken by a newer announcement is
//!   dropped.
//!
//! Only a yes comes from the cache: a node it does not know (added a moment ago, or
//! unknown), a certificate to pin and every refusal are decided on the database, so a cache
//! lagging a pin, a renewal or an enabling by a few milliseconds never refuses a node. A
//! cache lagging a disable or a reset could admit for those milliseconds; the announcement
//! that ends them also wakes the watcher, which drops the connection.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;

use crate::clock::SharedClock;

use super::store::{self, Admission, Refusal};
use crate::Error;
use crate::db::entities::node::Model;

/// How long an arrived announcement proves the listener hears announcements: the listener
/// pings itself every second, so this is three pings.
pub const CONFIRMED_FOR: std::time::Duration = std::time::Duration::from_secs(3);

/// The facts admission needs about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAccess {
    /// Disabled nodes are refused.
    pub enabled: bool,
    /// The pinned fingerprint; `None` until the first connection.
    pub fingerprint: Option<String>,
    /// A renewal's fingerprint, admitted beside the pinned one.
    pub next_fingerprint: Option<String>,
    /// The pinned certificate's expiry, as recorded.
    pub cert_not_after: Option<DateTime<Utc>>,
}

impl From<&Model> for NodeAccess {
    fn from(row: &Model) -> Self {
        NodeAccess {
            enabled: row.enabled,
            fingerprint: row.fingerprint.clone(),
            next_fingerprint: row.next_fingerprint.clone(),
            cert_not_after: row.cert_not_after,
        }
    }
}

/// What the facts say about a certificate with a given fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It is the pinned certificate.
    Matched,
    /// It is the renewal's certificate (the next pin).
    Next,
    /// Nothing is pinned: a first connection pins it (a conditional write), a connection
    /// admitted earlier was reset.
    Unpinned,
    /// Refused.
    Refused(Refusal),
}

impl NodeAccess {
    /// Judges a certificate with `fingerprint` presented for this node.
    pub fn judge(&self, fingerprint: &str) -> Verdict {
        if !self.enabled {
            return Verdict::Refused(Refusal::Disabled);
        }
        match self.fingerprint.as_deref() {
            Some(pinned) if pinned == fingerprint => Verdict::Matched,
            Some(_) if self.next_fingerprint.as_deref() == Some(fingerprint) => Verdict::Next,
            Some(_) => Verdict::Refused(Refusal::FingerprintMismatch),
            None => Verdict::Unpinned,
        }
    }
}

/// Whether the cache may be believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// Not (or no longer) kept fresh by announcements: every lookup misses.
    Cold,
    /// Loaded after the listener began to listen, and followed since.
    Live,
}

/// One node in the cache.
#[derive(Debug)]
enum Entry {
    /// The facts as last read.
    Known(NodeAccess),
    /// A change was announced; the re-read numbered so is under way.
    Refreshing(u64),
}

#[derive(Debug)]
struct Inner {
    freshness: Freshness,
    /// When an announcement last arrived (none since the load: not yet believed).
    confirmed: Option<DateTime<Utc>>,
    /// Numbers the re-reads, so an overtaken one is recognised.
    next_read: u64,
    nodes: HashMap<String, Entry>,
}

impl Inner {
    fn believed(&self, now: DateTime<Utc>) -> bool {
        let window = chrono::Duration::from_std(CONFIRMED_FOR).unwrap_or_default();
        self.freshness == Freshness::Live && self.confirmed.is_some_and(|at| now - at <= window)
    }
}

/// Every node's admission facts, believed only while announcements keep them fresh.
pub struct AccessCache {
    inner: Mutex<Inner>,
    clock: SharedClock,
}

impl AccessCache {
    /// A cold cache reading the time from `clock`.
    pub fn new(clock: SharedClock) -> AccessCache {
        AccessCache {
            inner: Mutex::new(Inner {
                freshness: Freshness::Cold,
                confirmed: None,
                next_read: 0,
                nodes: HashMap::new(),
            }),
            clock,
        }
    }

    /// The node's facts, when the cache is live, heard an announcement within
    /// [`CONFIRMED_FOR`], and knows the node for sure.
    pub fn lookup(&self, node_id: &str) -> Option<NodeAccess> {
        let inner = self.lock();
        if !inner.believed(self.clock.now()) {
            return None;
        }
        match inner.nodes.get(node_id) {
            Some(Entry::Known(access)) => Some(access.clone()),
            Some(Entry::Refreshing(_)) | None => None,
        }
    }

    /// Whether the cache is believed now.
    pub fn is_live(&self) -> bool {
        self.lock().believed(self.clock.now())
    }

    /// An announcement arrived (any: the listener's own pings keep them coming): the
    /// listener hears them, now.
    pub fn confirm(&self) {
        let now = self.clock.now();
        self.lock().confirmed = Some(now);
    }

    /// The announcements stopped (the listener lost its connection): nothing is believed
    /// until [`AccessCache::load`] runs again.
    pub fn go_cold(&self) {
        let mut inner = self.lock();
        inner.freshness = Freshness::Cold;
        inner.confirmed = None;
        inner.nodes.clear();
    }

    /// Loads every node; called by the listener once it listens, so any change committed
    /// after this read is announced after it. The cache is live afterwards, and believed
    /// once an announcement arrives.
    pub async fn load(&self, db: &DatabaseConnection) -> Result<usize, Error> {
        let rows = store::list(db).await?;
        let mut inner = self.lock();
        inner.nodes = rows
            .iter()
            .map(|row| (row.id.clone(), Entry::Known(NodeAccess::from(row))))
            .collect();
        inner.freshness = Freshness::Live;
        inner.confirmed = None;
        Ok(inner.nodes.len())
    }

    /// A change of `node_id` was announced: from now on it is judged on the database until
    /// [`AccessCache::refresh`] with the returned number lands.
    pub fn announced(&self, node_id: &str) -> u64 {
        let mut inner = self.lock();
        inner.next_read += 1;
        let read = inner.next_read;
        inner
            .nodes
            .insert(node_id.to_owned(), Entry::Refreshing(read));
        read
    }

    /// Re-reads the announced nodes, each with its announcement's number, in one query;
    /// a re-read overtaken by a newer announcement (or a reload) is dropped. On a database
    /// error the nodes stay judged on the database until their next change or the next load.
    pub async fn refresh(&self, db: &DatabaseConnection, announced: &[(String, u64)]) {
        let ids: Vec<&str> = announced.iter().map(|(id, _)| id.as_str()).collect();
        let rows = match store::get_many(db, &ids).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(nodes = ids.len(), error = %e, "cannot re-read announced nodes; they are checked in the database until their next change");
                return;
            }
        };
        let rows: HashMap<&str, &Model> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
        for (id, read) in announced {
            self.settle(id, *read, rows.get(id.as_str()).copied());
        }
    }

    /// Lands re-read `read` of `node_id` (`None`: the node is gone), unless it was overtaken.
    fn settle(&self, node_id: &str, read: u64, row: Option<&Model>) {
        let mut inner = self.lock();
        if !matches!(inner.nodes.get(node_id), Some(Entry::Refreshing(r)) if *r == read) {
            return;
        }
        match row {
            Some(row) => {
                inner
                    .nodes
                    .insert(node_id.to_owned(), Entry::Known(NodeAccess::from(row)));
            }
            None => {
                inner.nodes.remove(node_id);
            }
        }
    }

    /// The expiry this replica just wrote for `node_id`'s pinned certificate (not a fact
    /// admission judges on, so not announced).
    pub fn expiry_written(&self, node_id: &str, fingerprint: &str, not_after: DateTime<Utc>) {
        let mut inner = self.lock();
        if let Some(Entry::Known(access)) = inner.nodes.get_mut(node_id)
            && access.fingerprint.as_deref() == Some(fingerprint)
        {
            access.cert_not_after = Some(not_after);
        }
    }

    /// Admits a certificate for node `id`: from the cache when it knows the node and the
    /// certificate is its pinned or next one (a reconnect costs no database read), else as
    /// [`store::admit`] does: pinning, and every refusal, are the database's.
    pub async fn admit(
        &self,
        db: &DatabaseConnection,
        id: &str,
        fingerprint: &str,
        cert_not_after: DateTime<Utc>,
    ) -> Result<Result<Admission, Refusal>, Error> {
        if let Some(access) = self.lookup(id) {
            match access.judge(fingerprint) {
                Verdict::Matched => {
                    if access.cert_not_after != Some(cert_not_after) {
                        store::set_expiry(db, id, fingerprint, cert_not_after).await?;
                        self.expiry_written(id, fingerprint, cert_not_after);
                    }
                    return Ok(Ok(Admission::Matched));
                }
                Verdict::Next => return Ok(Ok(Admission::Next)),
                // The cache may lag a pin, a renewal or an enabling by a few milliseconds:
                // it only ever admits; a refusal is the database's to say.
                Verdict::Refused(_) | Verdict::Unpinned => {}
            }
        }
        store::admit(db, id, fingerprint, cert_not_after).await
    }

    /// Checks again that a connection admitted earlier with `fingerprint` may still speak
    /// for node `id`, from the cache when it knows the node, else as
    /// [`store::still_admitted`] does.
    pub async fn still_admitted(
        &self,
        db: &DatabaseConnection,
        id: &str,
        fingerprint: &str,
    ) -> Result<Result<(), Refusal>, Error> {
        // As in `admit`: only a yes comes from the cache.
        match self.lookup(id).map(|access| access.judge(fingerprint)) {
            Some(Verdict::Matched | Verdict::Next) => Ok(Ok(())),
            _ => store::still_admitted(db, id, fingerprint).await,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves the map consistent; a poisoned lock still holds it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(enabled: bool, pinned: Option<&str>, next: Option<&str>) -> NodeAccess {
        NodeAccess {
            enabled,
            fingerprint: pinned.map(str::to_owned),
            next_fingerprint: next.map(str::to_owned),
            cert_not_after: None,
        }
    }

    #[test]
    fn judges_pins_renewals_and_refusals() {
        assert_eq!(access(true, Some("a"), None).judge("a"), Verdict::Matched);
        assert_eq!(access(true, Some("a"), Some("b")).judge("b"), Verdict::Next);
        assert_eq!(
            access(true, Some("a"), Some("b")).judge("c"),
            Verdict::Refused(Refusal::FingerprintMismatch)
        );
        assert_eq!(access(true, None, None).judge("a"), Verdict::Unpinned);
        assert_eq!(
            access(false, Some("a"), None).judge("a"),
            Verdict::Refused(Refusal::Disabled)
        );
    }

    fn cache() -> AccessCache {
        AccessCache::new(std::sync::Arc::new(crate::clock::SystemClock))
    }

    fn seeded(cache: &AccessCache, node: &str, facts: NodeAccess) {
        let mut inner = cache.lock();
        inner.freshness = Freshness::Live;
        inner.nodes.insert(node.to_owned(), Entry::Known(facts));
        drop(inner);
        cache.confirm();
    }

    #[test]
    fn a_cold_cache_and_an_announced_node_answer_nothing() {
        let cache = cache();
        assert_eq!(cache.lookup("n1"), None, "cold");
        seeded(&cache, "n1", access(true, Some("a"), None));
        assert_eq!(cache.lookup("n1"), Some(access(true, Some("a"), None)));
        assert_eq!(cache.lookup("n2"), None, "a miss is never an answer");
        let read = cache.announced("n1");
        assert_eq!(cache.lookup("n1"), None, "changed: ask the database");
        assert!(read > 0);
        seeded(&cache, "n1", access(true, Some("a"), None));
        cache.go_cold();
        assert_eq!(cache.lookup("n1"), None, "cold again");
        assert!(!cache.is_live());
    }

    #[test]
    fn a_cache_that_hears_nothing_stops_answering() {
        let clock = std::sync::Arc::new(crate::clock::ShiftedClock::default());
        let cache = AccessCache::new(clock.clone());
        seeded(&cache, "n1", access(true, Some("a"), None));
        assert!(cache.lookup("n1").is_some());
        // A connection that died silently: no error, no announcement either.
        clock.advance(CONFIRMED_FOR + std::time::Duration::from_millis(10));
        assert_eq!(cache.lookup("n1"), None);
        assert!(!cache.is_live());
        cache.confirm();
        assert!(cache.lookup("n1").is_some(), "heard again");
    }

    #[test]
    fn an_overtaken_re_read_is_dropped() {
        let cache = cache();
        seeded(&cache, "n1", access(true, Some("a"), None));
        let first = cache.announced("n1");
        let second = cache.announced("n1");
        let row = |enabled: bool| Model {
            id: "n1".into(),
            fqdn: "n1.example.com".into(),
            name: "n1".into(),
            enabled,
            fingerprint: Some("a".into()),
            cert_not_after: None,
            last_seen: None,
            online: false,
            created_at: Utc::now(),
            port_start: None,
            port_end: None,
            next_fingerprint: None,
            renewal: crate::db::entities::node::Renewal::Ok,
            renewal_error: None,
            last_renewed_at: None,
        };
        // The second re-read (the node disabled) lands first; the first one, older, late.
        cache.settle("n1", second, Some(&row(false)));
        cache.settle("n1", first, Some(&row(true)));
        assert_eq!(cache.lookup("n1"), Some(access(false, Some("a"), None)));
        // A node deleted.
        let third = cache.announced("n1");
        cache.settle("n1", third, None);
        assert_eq!(cache.lookup("n1"), None);
        assert!(cache.lock().nodes.is_empty());
    }

    #[test]
    fn a_written_expiry_is_kept_for_the_same_certificate_only() {
        let cache = cache();
        seeded(&cache, "n1", access(true, Some("a"), None));
        let at = Utc::now();
        cache.expiry_written("n1", "b", at);
        assert_eq!(cache.lookup("n1").and_then(|a| a.cert_not_after), None);
        cache.expiry_written("n1", "a", at);
        assert_eq!(cache.lookup("n1").and_then(|a| a.cert_not_after), Some(at));
    }
}
