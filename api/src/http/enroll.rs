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
use utoipa::ToSchema;

use super::access::Caller;
use super::error::{ApiError, ApiJson, ApiJsonOrEmpty, ApiPath};
use super::guard::ClientIp;
use super::types;
use crate::AppState;
use crate::audit::{self, AuditEvent};
use crate::nodes::enroll::{self, Refusal};
use crate::nodes::{Kick, lifecycle, renew};

/// The largest enrolment body read: a token and a PEM CSR fit in well under 16 KiB.
pub const ENROLL_BODY_LIMIT: usize = 16 * 1024;

type Result<T> = std::result::Result<T, ApiError>;

/// `{ttl_secs?}`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewJoinToken {
    /// Seconds it stays usable; 3600 when absent.
    #[schema(minimum = 60, maximum = 604800)]
    ttl_secs: Option<u64>,
}

/// POST /api/admin/nodes/{id}/join-tokens → 201 `{token, expires_at}` (shown once).
#[utoipa::path(
    post,
    path = "/api/admin/nodes/{id}/join-tokens",
    summary = r#"Make a join token for a node"#,
    description = r#"A one-time token (256 bits, stored hashed, shown only in this answer) that lets the node enrol by CSR (`POST /api/nodes/enroll`); it expires after `ttl_secs` (60 to 604800, default 3600) and is deleted when the node is disabled. 409 for a disabled node."#,
    request_body = Option<NewJoinToken>,
    responses(
        (status = 201, description = "Created.", body = types::JoinToken),
        (status = 409, description = "See the description."),
    ),
)]
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
    let body = types::JoinToken {
        token,
        node_id: id.into_string(),
        expires_at: types::rfc3339(expires_at),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `{token, csr}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The join token.
    #[schema(max_length = 256)]
    token: String,
    /// PKCS#10, PEM.
    #[schema(max_length = 8192)]
    csr: String,
}

/// POST /api/nodes/enroll → 201 `{certificate, chain, node_id, fingerprint, not_after}`.
#[utoipa::path(
    post,
    path = "/api/nodes/enroll",
    summary = r#"Enrol a node with a join token and a CSR"#,
    description = r#"No bearer token: the join token is the credential (one use). The panel's issuer signs the CSR's key with CN = the token's node id (a CSR naming another CN is 403) and pins the certificate's fingerprint at once. Keys must be ECDSA P-256, P-384 or Ed25519 (RSA and other curves: 400). An unknown, expired or used token is 401, a disabled node 403, a panel without an issuer 503. Bodies over 16 KiB are 413. Every attempt is audited (`node.enroll`)."#,
    request_body = EnrollRequest,
    responses(
        (status = 201, description = "Created.", body = types::Enrolled),
        (status = 401, description = "See the description."),
        (status = 403, description = "See the description."),
        (status = 503, description = "See the description."),
    ),
)]
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
            let body = types::Enrolled {
                node_id: enrolled.node_id.clone(),
                certificate: cert.cert_pem.clone(),
                chain: cert.chain_pem.clone(),
                fingerprint: cert.fingerprint.clone(),
                not_after: lifecycle::rfc3339(cert.not_after),
            };
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
#[utoipa::path(
    post,
    path = "/api/admin/nodes/{id}/rotate",
    summary = r#"Make a node renew its certificate now"#,
    description = r#"The node is sent `Rotate` over its stream (within a second; when it is offline, as soon as it connects) and renews with overlap: a new key and CSR, the new fingerprint admitted beside the current one, promoted at its first connection."#,
    responses(
        (status = 202, description = "Accepted.", body = types::Rotation),
    ),
)]
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
    let body = types::Rotation {
        renewal: lifecycle::renewal_state(&node, state.clock.now()),
        node_id: id.into_string(),
    };
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
