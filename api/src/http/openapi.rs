//! `GET /openapi.json`: the OpenAPI 3.0.3 document of the REST API, generated from the route
//! table ([`super::routes`]) so that it cannot drift from what is served.
//!
//! Each route gives what it knows itself: the path and its parameters, the security scheme,
//! the permissions of tenant routes, and the errors its guards answer (401, 403, 404, 429
//! with the rate-limit headers). The handler's side — summary, request body, success
//! responses, paging, its own error statuses — comes from one match over the routes
//! (`operations::describe`); a route missing there fails a unit test. Every operation also has
//! a `default` response with the error body, so every error status is documented.

mod operations;
mod schemas;

use std::collections::BTreeSet;
use std::sync::LazyLock;

use axum::Json;
use serde_json::{Map, Value, json};

use super::{Access, Class, Route};
use operations::{Content, Doc};
use schemas::{header, response};

/// The document, built on first use.
static DOCUMENT: LazyLock<Value> = LazyLock::new(|| build(&super::routes()));

/// The OpenAPI document of every route of [`super::routes`].
pub fn document() -> Value {
    DOCUMENT.clone()
}

/// GET /openapi.json.
pub async fn serve() -> Json<&'static Value> {
    Json(&*DOCUMENT)
}

/// `METHOD path` of every route that [`build`] cannot describe fully: no arm in
/// `operations::describe`, or a path parameter it does not know.
fn undocumented(routes: &[Route]) -> Vec<String> {
    routes
        .iter()
        .filter(|r| {
            operations::describe(r.method, r.path).is_none()
                || path_parameters(r.path).any(|name| parameter_schema(r.path, name).is_none())
        })
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn build(routes: &[Route]) -> Value {
    for route in undocumented(routes) {
        tracing::error!(%route, "route without an OpenAPI description");
    }
    let mut paths = Map::new();
    for route in routes {
        let item = paths
            .entry(route.path)
            .or_insert_with(|| Value::Object(Map::new()));
        item[route.method.to_ascii_lowercase()] = operation(route);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Mamba Host Panel API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "JSON in and out. Errors are `{\"error\": {\"code\", \"message\"}}`; \
                            lists are `{\"items\", \"next_cursor\"}`; times are RFC 3339 UTC. \
                            Rate-limited calls answer `X-RateLimit-*` headers and 429 with \
                            `Retry-After`.",
        },
        "servers": [{ "url": "/" }],
        "paths": paths,
        "components": schemas::components(),
    })
}

fn operation(route: &Route) -> Value {
    let doc = operations::describe(route.method, route.path).unwrap_or_else(Doc::missing);
    let mut op = Map::new();
    op.insert("operationId".into(), json!(operation_id(route)));
    op.insert("tags".into(), json!([tag(route.path)]));
    op.insert("summary".into(), json!(doc.summary));
    if let Some(description) = description(route, &doc) {
        op.insert("description".into(), json!(description));
    }
    let parameters = parameters(route, &doc);
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    if doc.raw_body {
        op.insert(
            "requestBody".into(),
            json!({
                "required": true,
                "content": { "application/octet-stream": {
                    "schema": { "type": "string", "format": "binary" },
                } },
            }),
        );
    }
    if let Some(body) = &doc.body {
        op.insert(
            "requestBody".into(),
            json!({
                "required": !doc.body_optional,
                "content": { "application/json": { "schema": body } },
            }),
        );
    }
    let security = match route.access {
        Access::Public => json!([]),
        _ => json!([{ "bearerAuth": [] }]),
    };
    op.insert("security".into(), security);
    op.insert("x-access".into(), json!(access_name(route.access)));
    if let Access::Tenant(permissions) = route.access {
        let names: Vec<Value> = permissions
            .iter()
            .filter_map(|p| serde_json::to_value(p).ok())
            .collect();
        op.insert("x-permissions".into(), Value::Array(names));
    }
    op.insert("x-api-keys".into(), json!(route.api_keys));
    if let Some(limits) = rate_limits(route) {
        op.insert("x-rate-limit".into(), limits);
    }
    op.insert("responses".into(), responses(route, &doc));
    Value::Object(op)
}

/// `get_api_tenants_tid_servers_sid`: the method and the path's words.
fn operation_id(route: &Route) -> String {
    let mut id = route.method.to_ascii_lowercase();
    for word in route
        .path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        id.push('_');
        id.push_str(word);
    }
    id
}

fn tag(path: &str) -> &'static str {
    if path.starts_with("/api/admin/") {
        "admin"
    } else if path.starts_with("/api/auth/") {
        "auth"
    } else if path.contains("/backups") {
        "backups"
    } else if path.contains("/files") {
        "files"
    } else if path.contains("/secrets") {
        "secrets"
    } else if path.contains("/servers") {
        "servers"
    } else if path.starts_with("/api/tenants") || path.starts_with("/api/invitations") {
        "tenants"
    } else if path.starts_with("/api/") {
        "catalog"
    } else {
        "meta"
    }
}

fn access_name(access: Access) -> &'static str {
    match access {
        Access::Public => "public",
        Access::Authenticated => "authenticated",
        Access::Verified => "verified",
        Access::PlatformAdmin => "platform_admin",
        Access::Tenant(_) => "tenant",
    }
}

/// The handler's description, then what the route requires.
fn description(route: &Route, doc: &Doc) -> Option<String> {
    let requirement = match route.access {
        Access::Public | Access::Authenticated => None,
        Access::Verified => {
            Some("Needs a verified email address (403 `email_not_verified`).".to_owned())
        }
        Access::PlatformAdmin => Some("Platform administrators only.".to_owned()),
        Access::Tenant(permissions) => {
            let names: Vec<String> = permissions
                .iter()
                .filter_map(|p| serde_json::to_value(p).ok())
                .filter_map(|v| v.as_str().map(|s| format!("`{s}`")))
                .collect();
            let keys = if route.api_keys {
                " A tenant API key (`Bearer mhp_…`) of this tenant given that permission may \
                 call it too."
            } else {
                " API keys may not call it (403)."
            };
            Some(format!(
                "Needs a role in the tenant granting {}; non-members get 404.{keys}",
                names.join(" or ")
            ))
        }
    };
    let parts: Vec<String> = doc
        .description
        .map(str::to_owned)
        .into_iter()
        .chain(requirement)
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

/// The `{name}` segments of a path template.
fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

/// The schema and description of the path parameter `name` of `path`: what the guard and the
/// handlers accept.
fn parameter_schema(path: &str, name: &str) -> Option<(Value, &'static str)> {
    let uuid = json!({ "type": "string", "format": "uuid" });
    Some(match name {
        "tid" => (uuid, "The tenant."),
        "sid" => (uuid, "The server."),
        "uid" => (uuid, "The member's user id."),
        "bid" => (uuid, "The backup."),
        "cid" => (uuid, "The command."),
        "iid" => (uuid, "The invitation."),
        "kid" => (
            json!({ "type": "string", "pattern": "^[0-9a-f]{16}$" }),
            "The API key's id.",
        ),
        "id" if path.starts_with("/api/auth/sessions/") => (uuid, "The session."),
        "id" if path.starts_with("/api/admin/nodes/") => (
            json!({ "type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$" }),
            "The node id (its certificate's CN).",
        ),
        "name" if path.contains("/secrets/") => (
            json!({ "type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$" }),
            "The secret's name.",
        ),
        _ => return None,
    })
}

fn parameters(route: &Route, doc: &Doc) -> Vec<Value> {
    let mut parameters: Vec<Value> = path_parameters(route.path)
        .filter_map(|name| {
            let (schema, description) = parameter_schema(route.path, name)?;
            Some(json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": description,
                "schema": schema,
            }))
        })
        .collect();
    if doc.paged {
        parameters.push(json!({
            "name": "limit",
            "in": "query",
            "description": "Items per page; 50 when absent.",
            "schema": { "type": "integer", "minimum": 1, "maximum": 200 },
        }));
        parameters.push(json!({
            "name": "cursor",
            "in": "query",
            "description": "The `next_cursor` of the previous page.",
            "schema": { "type": "string", "maxLength": 128 },
        }));
    }
    parameters.extend(doc.query.iter().cloned());
    parameters
}

/// Which limits apply: the route's per-IP class, and the per-user API limit of every
/// authenticated call.
fn rate_limits(route: &Route) -> Option<Value> {
    let mut limits = Map::new();
    if let Some(class) = route.limit {
        let name = match class {
            Class::Login => "login",
            Class::Register => "register",
            Class::PasswordReset => "password_reset",
            Class::Verify => "verify",
            Class::Enroll => "enroll",
        };
        limits.insert("per_ip".into(), json!(name));
    }
    if route.access != Access::Public {
        limits.insert("per_user".into(), json!("api"));
    }
    (!limits.is_empty()).then_some(Value::Object(limits))
}

fn responses(route: &Route, doc: &Doc) -> Value {
    let limited = rate_limits(route).is_some();
    let mut responses = Map::new();
    for (status, content) in &doc.replies {
        let mut reply = json!({ "description": reason(*status) });
        let media = match content {
            Content::Json(schema) => Some(("application/json", schema.clone())),
            Content::Text => Some(("text/plain", json!({ "type": "string" }))),
            Content::EventStream => Some(("text/event-stream", json!({ "type": "string" }))),
            Content::Binary => Some((
                "application/octet-stream",
                json!({ "type": "string", "format": "binary" }),
            )),
            Content::Empty => None,
        };
        if let Some((media, schema)) = media {
            reply["content"] = json!({ media: { "schema": schema } });
        }
        if limited {
            reply["headers"] = json!({
                "X-RateLimit-Limit": header("RateLimitLimit"),
                "X-RateLimit-Remaining": header("RateLimitRemaining"),
                "X-RateLimit-Reset": header("RateLimitReset"),
            });
        }
        responses.insert(status.to_string(), reply);
    }
    for status in error_statuses(route, doc, limited) {
        let name = match status {
            400 => "BadRequest",
            401 => "Unauthenticated",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            413 => "PayloadTooLarge",
            415 => "UnsupportedMediaType",
            429 => "RateLimited",
            _ => "Error",
        };
        responses
            .entry(status.to_string())
            .or_insert_with(|| response(name));
    }
    responses.insert("default".into(), response("Error"));
    Value::Object(responses)
}

/// The handler's own error statuses and those the route implies: bad input, the access
/// guard's, the body extractor's and the rate limiter's.
fn error_statuses(route: &Route, doc: &Doc, limited: bool) -> BTreeSet<u16> {
    let tenant = matches!(route.access, Access::Tenant(_));
    let mut statuses: BTreeSet<u16> = doc.errors.iter().copied().collect();
    if doc.body.is_some() || doc.paged || tenant || !doc.query.is_empty() {
        statuses.insert(400);
    }
    if route.access != Access::Public {
        statuses.insert(401);
    }
    if matches!(
        route.access,
        Access::Verified | Access::PlatformAdmin | Access::Tenant(_)
    ) {
        statuses.insert(403);
    }
    if tenant || path_parameters(route.path).next().is_some() {
        statuses.insert(404);
    }
    if doc.body.is_some() {
        statuses.extend([413, 415]);
    }
    if limited {
        statuses.insert(429);
    }
    statuses
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK.",
        201 => "Created.",
        202 => "Accepted.",
        204 => "Done; no content.",
        503 => "Unavailable.",
        _ => "See the operation's description.",
    }
}

#[cfg(test)]
mod tests;
