//! Node identity over REST: join tokens (`POST /api/admin/nodes/{id}/join-tokens`), enrolment
//! (`POST /api/nodes/enroll`, no bearer: the join token is the credential; its body is
//! bounded to [`ENROLL_BODY_LIMIT`] before it is parsed) and a forced renewal
//! (`POST /api/admin/nodes/{id}/rotate`). Every enrolment, refused or not, is an audit row
//! (`node.enroll`), never with the token.

use crate::ids::NodeId;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::access::Caller;
use super::error::{ApiError, ApiJson, ApiJsonOrEmpty, ApiPath};
use super::guard::ClientIp;
use crate::AppState;
use crate::audit::{self, AuditEvent};
use crate::nodes::enroll::{self, Refusal};
use crate::nodes::{Kick, lifecycle, renew};

/// The largest enrolment body read: a token and a PEM CSR fit in well under 16 KiB.
pub const ENROLL_BODY_LIMIT: usize = 16 * 1024;

type Result<T> = std::result::Result<T, ApiError>;

/// `{ttl_secs?}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewJoinToken {
    ttl_secs: Option<u64>,
}

/// POST /api/admin/nodes/{id}/join-tokens → 201 `{token, expires_at}` (shown once).
pub async fn create_join_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ip: ClientIp,
    ApiPath(id): ApiPath<NodeId>,
    ApiJsonOrEmpty(body): ApiJsonOrEmpty<NewJoinToken>,
) -> Result<Response> {
    let ttl = body
        .ttl_secs
        .map_or(enroll::DEFAULT_TTL, Duration::from_secs);
    let (token, expires_at) = enroll::create_token(&state.db, &id, ttl, state.clock.now()).await?;
    let event = AuditEvent {
        actor: caller.0.user.id.clone(),
        action: "node.join_token".into(),
        target: Some(id.to_string()),
        outcome: "ok".into(),
        ip: Some(ip.0.to_string()),
        details: json!({ "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true) }),
        tenant_id: None,
    };
    audit::record_or_log(&state.db, event).await;
    let body = json!({
        "token": token,
        "node_id": id,
        "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `{token, csr}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    token: String,
    csr: String,
}

/// POST /api/nodes/enroll → 201 `{certificate, chain, node_id, fingerprint, not_after}`.
pub async fn enroll(
    State(state): State<Arc<AppState>>,
    ip: ClientIp,
    ApiJson(body): ApiJson<EnrollRequest>,
) -> Result<Response> {
    let now = state.clock.now();
    let outcome = enroll::enroll(
        &state.db,
        state.nodes.issuer.get().as_deref(),
        &body.token,
        body.csr.as_bytes(),
        now,
    )
    .await;
    let (outcome, node, details, result) = match outcome {
        Ok(enrolled) => {
            if enrolled.replaced_pin {
                state
                    .nodes
                    .link
                    .kick(&enrolled.node_id, Kick::FingerprintReset);
            }
            let cert = &enrolled.certificate;
            let body = json!({
                "node_id": enrolled.node_id,
                "certificate": cert.cert_pem,
                "chain": cert.chain_pem,
                "fingerprint": cert.fingerprint,
                "not_after": lifecycle::rfc3339(cert.not_after),
            });
            (
                "ok".to_owned(),
                Some(enrolled.node_id.clone()),
                json!({ "fingerprint": cert.fingerprint, "pinned_at_issue": true }),
                Ok((StatusCode::CREATED, Json(body)).into_response()),
            )
        }
        Err((Ok(refusal), node)) => (
            format!("rejected: {}", refusal.reason()),
            node,
            json!({ "reason": refusal.reason() }),
            Err(refusal_error(refusal)),
        ),
        Err((Err(e), node)) => {
            tracing::error!(error = %e, "enrolment failed");
            (
                format!("failed: {}", ApiError::code_of(&e)),
                node,
                json!({}),
                Err(ApiError::from(e)),
            )
        }
    };
    let event = AuditEvent {
        actor: node.clone().unwrap_or_else(|| "unknown".into()),
        action: "node.enroll".into(),
        target: node,
        outcome,
        ip: Some(ip.0.to_string()),
        details,
        tenant_id: None,
    };
    audit::record_or_log(&state.db, event).await;
    result
}

/// POST /api/admin/nodes/{id}/rotate → 202: the node renews at once over its stream (when it
/// is connected; otherwise as soon as it connects).
pub async fn rotate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ip: ClientIp,
    ApiPath(id): ApiPath<NodeId>,
) -> Result<Response> {
    let node = renew::request_rotation(&state.db, &id).await?;
    let event = AuditEvent {
        actor: caller.0.user.id.clone(),
        action: "node.rotate".into(),
        target: Some(id.to_string()),
        outcome: "ok".into(),
        ip: Some(ip.0.to_string()),
        details: json!({}),
        tenant_id: None,
    };
    audit::record_or_log(&state.db, event).await;
    let body = json!({
        "node_id": id,
        "renewal": lifecycle::renewal_state(&node, state.clock.now()),
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

fn refusal_error(refusal: Refusal) -> ApiError {
    let error = ApiError::from(refusal.error());
    match refusal {
        Refusal::IssuerOff => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this panel has no issuer: enrolment is off (PANEL_ISSUER_CERT_FILE)",
        ),
        _ => error,
    }
}
