//! `/api/admin/*`: nodes, templates and the platform-wide audit log, for platform admins.

use crate::ids::NodeId;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::access::Caller;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::guard::ClientIp;
use super::tenants::audit_page;
use super::types::{self, Page};
use crate::audit::{self, AuditEvent};
use crate::db::entities::node;
use crate::nodes::view::Node;
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
/// `node` as admins see it, `online` as this panel's registry knows it.
fn live_node(state: &AppState, node: &node::Model) -> Node {
    Node {
        online: state.nodes.link.is_online(&node.id),
        ..Node::new(node, state.clock.now())
    }
}

/// `{id, fqdn, name?}`.
#[derive(Deserialize, ToSchema)]
pub struct NewNode {
    /// The CN of its certificate.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    id: String,
    /// Its host name.
    #[schema(min_length = 1, max_length = 253)]
    fqdn: String,
    /// Its name, for people.
    name: Option<String>,
    /// At most 10,000 ports within 1024-65535, e.g. `30000-30099`.
    #[schema(example = "30000-30099", pattern = "^[0-9]{4,5}-[0-9]{4,5}$")]
    ports: Option<String>,
}

/// POST /api/admin/nodes.
#[utoipa::path(
    post,
    path = "/api/admin/nodes",
    summary = r#"Add a node"#,
    request_body = NewNode,
    responses(
        (status = 201, description = "Created.", body = crate::nodes::view::Node),
        (status = 409, description = "See the description."),
    ),
)]
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
    Ok((StatusCode::CREATED, Json(live_node(&state, &node))).into_response())
}

/// GET /api/admin/nodes.
#[utoipa::path(
    get,
    path = "/api/admin/nodes",
    summary = r#"Every node, by id"#,
    params(crate::pagination::PageQuery),
    responses(
        (status = 200, description = "OK.", body = types::Page<crate::nodes::view::Node>),
    ),
)]
pub async fn nodes(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<Node>>> {
    let page = store::page(&state.db, false, &query).await?;
    Ok(Json(Page::of(page, |n| live_node(&state, &n))))
}

/// GET /api/admin/nodes/{id}.
#[utoipa::path(
    get,
    path = "/api/admin/nodes/{id}",
    summary = r#"A node"#,
    responses(
        (status = 200, description = "OK.", body = crate::nodes::view::Node),
    ),
)]
pub async fn node(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<NodeId>,
) -> Result<Json<Node>> {
    let node = store::get(&state.db, &id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("node {id}")))?;
    Ok(Json(live_node(&state, &node)))
}

/// POST /api/admin/nodes/{id}/disable: its live stream is dropped at once.
#[utoipa::path(
    post,
    path = "/api/admin/nodes/{id}/disable",
    summary = r#"Disable a node"#,
    description = r#"Its live connection is dropped at once."#,
    responses(
        (status = 200, description = "OK.", body = crate::nodes::view::Node),
    ),
)]
pub async fn disable_node(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ip: ClientIp,
    ApiPath(id): ApiPath<NodeId>,
) -> Result<Json<Node>> {
    let node = store::set_enabled(&state.db, &id, false).await?;
    state.nodes.link.kick(&id, Kick::Disabled);
    record(&state, &caller, ip, "node.disable", &id).await;
    Ok(Json(live_node(&state, &node)))
}

/// POST /api/admin/nodes/{id}/enable.
#[utoipa::path(
    post,
    path = "/api/admin/nodes/{id}/enable",
    summary = r#"Enable a node"#,
    responses(
        (status = 200, description = "OK.", body = crate::nodes::view::Node),
    ),
)]
pub async fn enable_node(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ip: ClientIp,
    ApiPath(id): ApiPath<NodeId>,
) -> Result<Json<Node>> {
    let node = store::set_enabled(&state.db, &id, true).await?;
    record(&state, &caller, ip, "node.enable", &id).await;
    Ok(Json(live_node(&state, &node)))
}

/// POST /api/admin/nodes/{id}/reset-fingerprint: the next valid certificate is pinned.
#[utoipa::path(
    post,
    path = "/api/admin/nodes/{id}/reset-fingerprint",
    summary = r#"Forget a node's pinned certificate"#,
    description = r#"The next valid certificate is pinned; the live connection is dropped."#,
    responses(
        (status = 200, description = "OK.", body = crate::nodes::view::Node),
    ),
)]
pub async fn reset_fingerprint(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ip: ClientIp,
    ApiPath(id): ApiPath<NodeId>,
) -> Result<Json<Node>> {
    let node = store::reset_fingerprint(&state.db, &id).await?;
    state.nodes.link.kick(&id, Kick::FingerprintReset);
    record(&state, &caller, ip, "node.reset_fingerprint", &id).await;
    Ok(Json(live_node(&state, &node)))
}

/// GET /api/admin/templates: with their command lines.
#[utoipa::path(
    get,
    path = "/api/admin/templates",
    summary = r#"Every template, with its command line, by name"#,
    params(crate::pagination::PageQuery),
    responses(
        (status = 200, description = "OK.", body = types::Page<crate::templates::Template>),
    ),
)]
pub async fn templates(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<Template>>> {
    let page = templates::page(&state.db, &query).await?;
    Ok(Json(Page::of(page, |t| t)))
}

/// POST /api/admin/templates.
#[utoipa::path(
    post,
    path = "/api/admin/templates",
    summary = r#"Define a template"#,
    description = r#"Unknown fields are refused. 409 when the name is taken."#,
    request_body = NewTemplate,
    responses(
        (status = 201, description = "Created.", body = crate::templates::Template),
        (status = 409, description = "See the description."),
    ),
)]
pub async fn create_template(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ip: ClientIp,
    ApiJson(body): ApiJson<NewTemplate>,
) -> Result<Response> {
    let template = templates::create(&state.db, body).await?;
    record(&state, &caller, ip, "template.create", &template.name).await;
    Ok((StatusCode::CREATED, Json(template)).into_response())
}

/// GET /api/admin/audit: every row, newest first.
#[utoipa::path(
    get,
    path = "/api/admin/audit",
    summary = r#"The platform-wide audit log, newest first"#,
    params(crate::pagination::PageQuery),
    responses(
        (status = 200, description = "OK.", body = types::Page<types::AuditEntry>),
    ),
)]
pub async fn audit_log(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<types::AuditEntry>>> {
    audit_page(&state, None, &query).await
}
