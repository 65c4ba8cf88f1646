//! Where a node's certificate stands: its renewal state as operators see it (`ok`, `due`,
//! `renewing`, `failed: <code>`), computed from the node row at a given moment.

use chrono::{DateTime, Utc};
use time::OffsetDateTime;

use crate::db::entities::node::{Model, Renewal};

/// Without a known issue time, a certificate is due this long before it expires.
const DUE_WITHOUT_ISSUE_TIME: chrono::Duration = chrono::Duration::days(30);

/// The renewal state of `node` at `now`: `renewing` and `failed: <code>` as stored; `ok` turns
/// `due` once two thirds of the certificate's lifetime have passed (when Wings should have
/// renewed), or within 30 days of expiry when the issue time is unknown.
pub fn renewal_state(node: &Model, now: DateTime<Utc>) -> String {
    match node.renewal {
        Renewal::Renewing => "renewing".into(),
        Renewal::Requested => "due".into(),
        Renewal::Failed => format!(
            "failed: {}",
            node.renewal_error.as_deref().unwrap_or("unknown")
        ),
        Renewal::Ok => match node.cert_not_after {
            Some(not_after) if now >= due_at(node.last_renewed_at, not_after) => "due".into(),
            _ => "ok".into(),
        },
    }
}

/// When a certificate issued at `issued` (if known) and ending at `not_after` is due.
fn due_at(issued: Option<DateTime<Utc>>, not_after: DateTime<Utc>) -> DateTime<Utc> {
    match issued {
        Some(issued) if issued < not_after => not_after - (not_after - issued) / 3,
        _ => not_after - DUE_WITHOUT_ISSUE_TIME,
    }
}

/// RFC 3339, UTC, whole seconds.
pub fn rfc3339(t: OffsetDateTime) -> String {
    DateTime::<Utc>::from_timestamp(t.unix_timestamp(), 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_after_two_thirds_of_the_lifetime() {
        let issued = Utc::now();
        let not_after = issued + chrono::Duration::days(30);
        assert_eq!(
            due_at(Some(issued), not_after),
            issued + chrono::Duration::days(20)
        );
        assert_eq!(due_at(None, not_after), issued);
    }
}
