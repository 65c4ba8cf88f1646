//! Servers: a tenant's process on a node, made from a template. The panel records what the
//! tenant asked for and what the node reports; commands go down the node's stream
//! ([`commands`]), state and console come back up, reach the database and SSE subscribers
//! ([`events`]), and every (re)connect reconciles the records to what the node really has.

pub mod backups;
pub mod commands;
pub mod events;
pub mod fanout;
pub mod routing;
pub mod schema;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, TimeZone, Utc};
use proto::node::v1::{ConsoleLine, ConsoleStream, ServerStatus};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, Order, QueryFilter,
    QuerySelect, Set,
};
use serde::Deserialize;

pub use commands::{Action, NodeCommand};
pub use events::{Event, Events};

use crate::Error;
use crate::clock::SharedClock;
pub use crate::db::entities::states::ServerState;
use crate::db::entities::{node, server};
use crate::metrics::Metrics;
use crate::nodes::NodeLink;
use crate::pagination::{self, Page, PageQuery};
use crate::secrets::Vault;
use crate::templates::{self, Expanded, Template};
use crate::tenancy::{new_id, validate_name};

/// What the server services use, and only that: the database, the link to nodes, live
/// events, the vault that opens secrets a server's variables refer to, the clock, the
/// counters and the command deadline. The panel's state holds one; nothing here sees the
/// rest of it, so each handle can be replaced on its own (a cross-replica [`NodeLink`]).
#[derive(Clone)]
pub struct Servers {
    /// The database.
    pub db: DatabaseConnection,
    /// How commands reach nodes.
    pub nodes: Arc<dyn NodeLink>,
    /// Live events for SSE subscribers.
    pub events: Events,
    /// Opens the secrets a server's variables refer to.
    pub vault: Vault,
    /// Where the time comes from.
    pub clock: SharedClock,
    /// Counters.
    pub metrics: Metrics,
    /// How long a command waits for its ack before [`commands::sweep`] fails it.
    pub command_timeout: Duration,
}

fn rfc3339_ms(unix_ms: i64) -> String {
    Utc.timestamp_millis_opt(unix_ms)
        .single()
        .unwrap_or_else(Utc::now)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `POST …/servers`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewServer {
    /// Shown to people: 1 to 100 characters (trimmed), no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub name: String,
    /// The node to place it on.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub node_id: String,
    /// The template's name.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub template: String,
    /// Values of the template's variables.
    #[serde(default)]
    #[schema(value_type = schema::ServerVariables)]
    pub variables: serde_json::Map<String, serde_json::Value>,
}

/// `PATCH …/servers/{sid}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerPatch {
    /// A new name.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub name: Option<String>,
    /// New values; the whole set, validated again. Used from the next start.
    #[schema(value_type = Option<schema::ServerVariables>)]
    pub variables: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A server with its template's name, as the API shows it.
#[derive(Debug, Clone)]
pub struct ServerView {
    /// The row.
    pub server: server::Model,
    /// The template's name.
    pub template: String,
}

async fn template_of(db: &DatabaseConnection, server: &server::Model) -> Result<Template, Error> {
    templates::by_id(db, &server.template_id)
        .await?
        .ok_or_else(|| Error::internal(format!("server {} has no template", server.id)))
}

/// The program, arguments and environment `server` runs with now. Variables that refer to a
/// secret are decrypted here, only to be sent to the server's node, and checked against
/// their pattern.
pub async fn expanded(state: &Servers, server: &server::Model) -> Result<Expanded, Error> {
    let template = template_of(&state.db, server).await?;
    let given = server.variables.as_object().cloned().unwrap_or_default();
    let mut resolved = template.resolve(&given)?;
    for (variable, name) in &resolved.secrets {
        let value = crate::secrets::read(&state.db, &state.vault, &server.tenant_id, name)
            .await
            .map_err(|e| match e {
                Error::NotFound(_) => Error::Invalid(format!(
                    "variable {variable} refers to secret {name}, which does not exist"
                )),
                other => other,
            })?;
        template.check(variable, &value)?;
        resolved.values.insert(variable.clone(), value.to_string());
    }
    if let Some(port) = server.port {
        resolved
            .values
            .insert(templates::BUILTIN_PORT.to_owned(), port.to_string());
    }
    let mut expanded = template.expand(&resolved.values);
    expanded
        .env
        .insert("SERVER_ID".to_owned(), server.id.clone());
    Ok(expanded)
}

/// Refuses references to secrets the tenant does not have (without reading them).
async fn check_references(
    db: &DatabaseConnection,
    tenant_id: &str,
    resolved: &templates::Resolved,
) -> Result<(), Error> {
    for (variable, name) in &resolved.secrets {
        if !crate::secrets::exists(db, tenant_id, name).await? {
            return Err(Error::Invalid(format!(
                "variable {variable} refers to secret {name}, which does not exist"
            )));
        }
    }
    Ok(())
}

/// Creates a server on a connected node and sends it the install command.
pub async fn create(state: &Servers, tenant_id: &str, new: NewServer) -> Result<ServerView, Error> {
    let name = validate_name("name", &new.name)?;
    let node = node::Entity::find_by_id(&new.node_id)
        .one(&state.db)
        .await?
        .filter(|n| n.enabled)
        .ok_or_else(|| Error::Invalid(format!("there is no node {:?}", new.node_id)))?;
    let template = templates::by_name(&state.db, &new.template)
        .await?
        .ok_or_else(|| Error::Invalid(format!("there is no template {:?}", new.template)))?;
    let resolved = template.resolve(&new.variables)?;
    check_references(&state.db, tenant_id, &resolved).await?;
    if !state.nodes.is_online(&node.id) {
        return Err(Error::NodeOffline(node.id));
    }
    let row = insert_with_port(state, tenant_id, &node, name, &template, new.variables).await?;
    let spec = expanded(state, &row).await?;
    commands::send(state, &node.id, &row.id, NodeCommand::Install(spec)).await?;
    Ok(ServerView {
        server: row,
        template: template.name,
    })
}

/// Inserts the server with the lowest free port of its node's range (none when the node has
/// no range). The unique (node, port) index settles a race: the loser takes the next port.
async fn insert_with_port(
    state: &Servers,
    tenant_id: &str,
    node: &node::Model,
    name: String,
    template: &Template,
    variables: serde_json::Map<String, serde_json::Value>,
) -> Result<server::Model, Error> {
    for _ in 0..8 {
        let port = match (node.port_start, node.port_end) {
            (Some(start), Some(end)) => {
                let used: Vec<Option<i32>> = server::Entity::find()
                    .filter(server::Column::NodeId.eq(&node.id))
                    .select_only()
                    .column(server::Column::Port)
                    .into_tuple()
                    .all(&state.db)
                    .await?;
                let free = (start..=end).find(|p| !used.contains(&Some(*p)));
                Some(free.ok_or_else(|| Error::NoFreePort(node.id.clone()))?)
            }
            _ => None,
        };
        let now = state.clock.now();
        let inserted = server::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(tenant_id.to_owned()),
            node_id: Set(node.id.clone()),
            name: Set(name.clone()),
            template_id: Set(template.id.clone()),
            variables: Set(serde_json::Value::Object(variables.clone())),
            state: Set(ServerState::Installing),
            state_reason: Set(None),
            port: Set(port),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&state.db)
        .await;
        match inserted {
            Ok(row) => return Ok(row),
            Err(e)
                if matches!(
                    e.sql_err(),
                    Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict(
        "the node's ports are being taken too fast; retry".into(),
    ))
}

async fn views(
    db: &DatabaseConnection,
    rows: Vec<server::Model>,
) -> Result<Vec<ServerView>, Error> {
    let names: HashMap<String, String> = templates::list(db)
        .await?
        .into_iter()
        .map(|t| (t.id, t.name))
        .collect();
    Ok(rows
        .into_iter()
        .map(|server| ServerView {
            template: names.get(&server.template_id).cloned().unwrap_or_default(),
            server,
        })
        .collect())
}

/// The tenant's servers, one page.
pub async fn list(
    db: &DatabaseConnection,
    tenant_id: &str,
    query: &PageQuery,
) -> Result<Page<ServerView>, Error> {
    let page = pagination::fetch(
        db,
        server::Entity::find().filter(server::Column::TenantId.eq(tenant_id)),
        server::Column::Id,
        Order::Asc,
        query,
        |s| s.id.clone(),
    )
    .await?;
    Ok(Page {
        items: views(db, page.items).await?,
        next_cursor: page.next_cursor,
    })
}

/// One server of the tenant; another tenant's server is `NotFound`, like a missing one.
pub async fn get(
    db: &DatabaseConnection,
    tenant_id: &str,
    server_id: &str,
) -> Result<server::Model, Error> {
    server::Entity::find_by_id(server_id)
        .filter(server::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or_else(|| Error::NotFound("server".into()))
}

/// [`get`] with the template's name.
pub async fn view(
    db: &DatabaseConnection,
    tenant_id: &str,
    server_id: &str,
) -> Result<ServerView, Error> {
    let server = get(db, tenant_id, server_id).await?;
    let template = template_of(db, &server).await?.name;
    Ok(ServerView { server, template })
}

/// Renames a server or replaces its variables (validated; used from the next start).
pub async fn update(
    db: &DatabaseConnection,
    tenant_id: &str,
    server_id: &str,
    patch: ServerPatch,
    now: chrono::DateTime<Utc>,
) -> Result<ServerView, Error> {
    let server = get(db, tenant_id, server_id).await?;
    let mut row: server::ActiveModel = server.clone().into();
    if let Some(name) = &patch.name {
        row.name = Set(validate_name("name", name)?);
    }
    if let Some(variables) = patch.variables {
        let resolved = template_of(db, &server).await?.resolve(&variables)?;
        check_references(db, tenant_id, &resolved).await?;
        row.variables = Set(serde_json::Value::Object(variables));
    }
    row.updated_at = Set(now);
    row.update(db).await?;
    view(db, tenant_id, server_id).await
}

/// Deletes a server and its backups' rows: they go now; its node removes the server (and its
/// archives) now when connected, or when it next connects and reports a server the panel no
/// longer has.
pub async fn delete(state: &Servers, server: &server::Model) -> Result<(), Error> {
    server::Entity::delete_by_id(&server.id)
        .exec(&state.db)
        .await?;
    crate::db::entities::backup::Entity::delete_many()
        .filter(crate::db::entities::backup::Column::ServerId.eq(&server.id))
        .exec(&state.db)
        .await?;
    state.events.remove(&server.id);
    match commands::send(state, &server.node_id, &server.id, NodeCommand::Delete).await {
        Ok(_) | Err(Error::NodeOffline(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes every server of a tenant (before the tenant itself goes).
pub async fn delete_all(state: &Servers, tenant_id: &str) -> Result<usize, Error> {
    let rows = server::Entity::find()
        .filter(server::Column::TenantId.eq(tenant_id))
        .all(&state.db)
        .await?;
    for row in &rows {
        delete(state, row).await?;
    }
    Ok(rows.len())
}

/// Checks a power action against the state the node last reported, then sends it.
pub async fn power(
    state: &Servers,
    server: &server::Model,
    action: Action,
) -> Result<String, Error> {
    use ServerState as S;
    let current = server.state;
    let refused = match action {
        Action::Start => matches!(current, S::Running | S::Starting | S::Stopping),
        Action::Stop | Action::Kill => matches!(current, S::Offline | S::Crashed),
        Action::Restart => false,
    };
    if current == S::Installing || refused {
        return Err(Error::Conflict(format!(
            "cannot {} a server that is {current}",
            action.kind().name()
        )));
    }
    let command = match action {
        Action::Start => NodeCommand::Start(expanded(state, server).await?),
        Action::Restart => NodeCommand::Restart(expanded(state, server).await?),
        Action::Stop => NodeCommand::Stop,
        Action::Kill => NodeCommand::Kill,
    };
    commands::send(state, &server.node_id, &server.id, command).await
}

/// Sends `line` to the running server's stdin. Returns the command id and whether the
/// template marks console input as sensitive (audited without its content).
pub async fn console_input(
    state: &Servers,
    server: &server::Model,
    line: String,
) -> Result<(String, bool), Error> {
    if line.contains(['\n', '\r', '\0']) || line.len() > 4096 {
        return Err(Error::Invalid(
            "line must be at most 4096 bytes without line breaks or NUL".into(),
        ));
    }
    if server.state != ServerState::Running {
        return Err(Error::Conflict(format!(
            "the server is {}; console input needs it running",
            server.state
        )));
    }
    let sensitive = template_of(&state.db, server).await?.sensitive_input;
    let command = NodeCommand::ConsoleInput(line);
    let id = commands::send(state, &server.node_id, &server.id, command).await?;
    Ok((id, sensitive))
}

/// A node reported a server's state: the record follows (only for that node's own servers).
pub async fn on_status(state: &Servers, node_id: &str, status: &ServerStatus) -> Result<(), Error> {
    let new_state = ServerState::from_node(status.state());
    let reason = (!status.reason.is_empty()).then(|| status.reason.clone());
    let updated = server::Entity::update_many()
        .col_expr(server::Column::State, Expr::value(new_state))
        .col_expr(server::Column::StateReason, Expr::value(reason.clone()))
        .col_expr(server::Column::UpdatedAt, Expr::value(state.clock.now()))
        .filter(server::Column::Id.eq(&status.server_id))
        .filter(server::Column::NodeId.eq(node_id))
        .exec(&state.db)
        .await?;
    if updated.rows_affected == 1 {
        state.events.publish(
            &status.server_id,
            Event::Status {
                state: new_state,
                reason,
                at: rfc3339_ms(status.at_unix_ms),
            },
        );
    }
    Ok(())
}

/// A console line from a node, for a server the caller checked belongs to it; `truncated`
/// when the panel cut it to size (`grpc::bounds`).
pub fn on_console(state: &Servers, line: ConsoleLine, truncated: bool) {
    let stream = match line.stream() {
        ConsoleStream::Stdout => "stdout",
        ConsoleStream::Stderr => "stderr",
    };
    state.events.publish(
        &line.server_id.clone(),
        Event::Console {
            line: line.line,
            truncated,
            stream: stream.into(),
            at: rfc3339_ms(line.at_unix_ms),
        },
    );
}

/// A node's usage report for one of its servers (checked by the caller): to SSE only.
pub fn on_stats(state: &Servers, stats: proto::node::v1::ServerStats) {
    state.events.publish(
        &stats.server_id.clone(),
        Event::Stats {
            memory_bytes: stats.memory_bytes,
            memory_limit_bytes: stats.memory_limit_bytes,
            cpu_percent: (stats.cpu_percent * 10.0).round() / 10.0,
            disk_bytes: stats.disk_bytes,
            disk_limit_bytes: stats.disk_limit_bytes,
            at: rfc3339_ms(stats.at_unix_ms),
        },
    );
}

/// Whether `server_id` is one of `node_id`'s servers.
pub async fn belongs_to(
    db: &DatabaseConnection,
    node_id: &str,
    server_id: &str,
) -> Result<bool, Error> {
    Ok(server::Entity::find_by_id(server_id)
        .filter(server::Column::NodeId.eq(node_id))
        .one(db)
        .await?
        .is_some())
}

/// On every (re)connect: the node's report is the truth. Known servers take the reported
/// state; servers the node lacks are installed again; servers the panel no longer has are
/// deleted from the node.
pub async fn reconcile(
    state: &Servers,
    node_id: &str,
    reported: Vec<ServerStatus>,
) -> Result<(), Error> {
    let rows = server::Entity::find()
        .filter(server::Column::NodeId.eq(node_id))
        .all(&state.db)
        .await?;
    let mut reported: HashMap<String, ServerStatus> = reported
        .into_iter()
        .map(|s| (s.server_id.clone(), s))
        .collect();
    let (mut updated, mut installed, mut deleted) = (0, 0, 0);
    for row in rows {
        state.events.clear_console(&row.id);
        match reported.remove(&row.id) {
            Some(status) => {
                if ServerState::from_node(status.state()) != row.state {
                    updated += 1;
                }
                on_status(state, node_id, &status).await?;
            }
            None => {
                let spec = match expanded(state, &row).await {
                    Ok(spec) => spec,
                    Err(e) => {
                        tracing::warn!(server = %row.id, error = %e, "cannot reinstall the server on its node");
                        continue;
                    }
                };
                server::Entity::update_many()
                    .col_expr(server::Column::State, Expr::value(ServerState::Installing))
                    .filter(server::Column::Id.eq(&row.id))
                    .exec(&state.db)
                    .await?;
                commands::send(state, node_id, &row.id, NodeCommand::Install(spec)).await?;
                installed += 1;
            }
        }
    }
    for orphan in reported.keys() {
        commands::send(state, node_id, orphan, NodeCommand::Delete).await?;
        deleted += 1;
    }
    if updated + installed + deleted > 0 {
        tracing::info!(node = %node_id, updated, installed, deleted, "reconciled servers with the node's report");
    }
    Ok(())
}
