//! Where a node's certificate stands: its renewal state as operators see it (`ok`, `due`,
//! `renewing`, `failed: <code>`), computed from the node row at a given moment, and the
//! metrics alerts are built on (refreshed by `background::export_node_metrics`): each node's certificate expiry and whether it is
//! online, read from the database (so the whole fleet, whichever panel holds a node, and
//! changes by `api node …`), and the issuer's own expiry.

use chrono::{DateTime, Utc};
use time::OffsetDateTime;

use crate::db::entities::node::{Model, Renewal};
use crate::metrics::Metrics;

/// Sets a node's gauges at once (between the database refreshes): its stream came or went,
/// or it presented a certificate ending at `not_after` (Unix seconds).
pub fn observe(metrics: &Metrics, node: &str, online: bool, not_after: Option<i64>) {
    metrics
        .node_online
        .with_label_values(&[node])
        .set(i64::from(online));
    if let Some(not_after) = not_after {
        metrics
            .node_cert_expiry
            .with_label_values(&[node])
            .set(not_after);
    }
}

/// Sets the per-node gauges from `rows` (a node gone from the rows is gone from the gauges).
pub fn set_node_metrics(metrics: &Metrics, rows: &[Model]) {
    metrics.node_cert_expiry.reset();
    metrics.node_online.reset();
    for row in rows {
        if let Some(not_after) = row.cert_not_after {
            metrics
                .node_cert_expiry
                .with_label_values(&[row.id.as_str()])
                .set(not_after.timestamp());
        }
        if row.enabled {
            metrics
                .node_online
                .with_label_values(&[row.id.as_str()])
                .set(i64::from(row.online));
        }
    }
}

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
