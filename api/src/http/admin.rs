//! `/api/admin/*`: nodes, templates and the platform-wide audit log, for platform admins.

use crate::ids::NodeId;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::Caller;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::guard::ClientIp;
use super::tenants::audit_page;
use crate::audit::{self, AuditEvent};
use crate::db::entities::node;
use crate::nodes::view::node_json;
use crate::nodes::{Kick, store};
use crate::pagination::PageQuery;
use crate::templates::{self, NewTemplate, Template};
use crate::{AppState, Error};

type Result<T> = std::result::Result<T, ApiError>;

async fn record(state: &AppState, caller: &Caller, ip: ClientIp, action: &str, target: &str) {
    let event = AuditEvent {
        actor: caller.0.user.id.clone(),
        action: action.to_owned(),
        target: Some(target.to_owned()),
        outcome: "ok".into(),
        ip: Some(ip.0.to_string()),
        details: json!({}),
        tenant_id: None,
    };
    audit::record_or_log(&state.db, event).await;
}

/// A node with `online` from the live registry.
fn live_node_json(state: &AppState, node: &node::Model) -> Value {
    let mut value = node_json(node, state.clock.now());
    value["online"] = json!(state.nodes.link.is_online(&node.id));
    value
}

/// `{id, fqdn, name?}`.
#[derive(Deserialize)]
pub struct NewNode {
    id: String,
    fqdn: String,
    name: Option<String>,
    ports: Option<String>,
}

/// POST /api/admin/nodes.
pub async fn add_node(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ip: ClientIp,
    ApiJson(body): ApiJson<NewNode>,
) -> Result<Response> {
    let range = body.ports.as_deref().map(store::parse_ports).transpose()?;
    let mut node = store::add(&state.db, &body.id, &body.fqdn, body.name.as_deref()).await?;
    if let Some(range) = range {
        node = store::set_ports(&state.db, &node.id, range).await?;
    }
    record(&state, &caller, ip, "node.create", &node.id).await;
    Ok((StatusCode::CREATED, Json(live_node_json(&state, &node))).into_response())
}

/// GET /api/admin/nodes.
pub async fn nodes(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Value>> {
    let page = store::page(&state.db, false, &query).await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|n| live_node_json(&state, n))
        .collect();
    Ok(Json(
        json!({ "items": items, "next_cursor": page.next_cursor }),
    ))
}

/// GET /api/admin/nodes/{id}.
pub async fn node(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<NodeId>,
) -> Result<Json<Value>> {
    let node = store::get(&state.db, &id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("node {id}")))?;
    Ok(Json(live_node_json(&state, &node)))
}

/// POST /api/admin/nodes/{id}/disable: its live stream is dropped at once.
pub async fn disable_node(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ip: ClientIp,
    ApiPath(id): ApiPath<NodeId>,
) -> Result<Json<Value>> {
    let node = store::set_enabled(&state.db, &id, false).await?;
    state.nodes.link.kick(&id, Kick::Disabled);
    record(&state, &caller, ip, "node.disable", &id).await;
    Ok(Json(live_node_json(&state, &node)))
}

/// POST /api/admin/nodes/{id}/enable.
pub async fn enable_node(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ip: ClientIp,
    ApiPath(id): ApiPath<NodeId>,
) -> Result<Json<Value>> {
    let node = store::set_enabled(&state.db, &id, true).await?;
    record(&state, &caller, ip, "node.enable", &id).await;
    Ok(Json(live_node_json(&state, &node)))
}

/// POST /api/admin/nodes/{id}/reset-fingerprint: the next valid certificate is pinned.
pub async fn reset_fingerprint(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ip: ClientIp,
    ApiPath(id): ApiPath<NodeId>,
) -> Result<Json<Value>> {
    let node = store::reset_fingerprint(&state.db, &id).await?;
    state.nodes.link.kick(&id, Kick::FingerprintReset);
    record(&state, &caller, ip, "node.reset_fingerprint", &id).await;
    Ok(Json(live_node_json(&state, &node)))
}

fn template_json(t: Template) -> Value {
    json!({ "id": t.id, "name": t.name, "command": t.command, "args": t.args,
            "variables": t.variables, "sensitive_input": t.sensitive_input, "limits": t.limits })
}

/// GET /api/admin/templates: with their command lines.
pub async fn templates(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Value>> {
    let page = templates::page(&state.db, &query).await?;
    let items: Vec<Value> = page.items.into_iter().map(template_json).collect();
    Ok(Json(
        json!({ "items": items, "next_cursor": page.next_cursor }),
    ))
}

/// POST /api/admin/templates.
pub async fn create_template(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ip: ClientIp,
    ApiJson(body): ApiJson<NewTemplate>,
) -> Result<Response> {
    let template = templates::create(&state.db, body).await?;
    record(&state, &caller, ip, "template.create", &template.name).await;
    Ok((StatusCode::CREATED, Json(template_json(template))).into_response())
}

/// GET /api/admin/audit: every row, newest first.
pub async fn audit_log(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Value>> {
    audit_page(&state, None, &query).await
}
