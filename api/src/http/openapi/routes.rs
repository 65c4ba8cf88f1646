//! [`FromRoutes`]: what the route table ([`crate::http::routes`]) says about each operation,
//! written into the derived document. The handlers' `#[utoipa::path]` say what they take and
//! answer; access, parameters, the guards' errors and limits come from here, so they cannot
//! drift from what is served.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use utoipa::Modify;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi, Ref, RefOr, Required};

use super::errors::{error_name, rate_limit_headers};
use crate::http::{Access, Class, Route};

/// Adds to every operation what its route declares (see the module's documentation).
pub struct FromRoutes;

impl Modify for FromRoutes {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "An access token from `POST /api/auth/login` or `/api/auth/refresh`, or a \
                 tenant API key (`mhp_…`) where the operation allows keys.",
            ))
            .build();
        components.add_security_scheme("bearerAuth", SecurityScheme::Http(scheme));
        super::errors::add(components);
        for route in crate::http::routes() {
            let Some(item) = openapi.paths.paths.get_mut(route.path) else {
                continue;
            };
            let operation = match route.method {
                "GET" => item.get.as_mut(),
                "POST" => item.post.as_mut(),
                "PUT" => item.put.as_mut(),
                "PATCH" => item.patch.as_mut(),
                _ => item.delete.as_mut(),
            };
            if let Some(operation) = operation {
                describe(operation, &route);
            }
        }
        super::links::add(openapi);
    }
}

/// Writes what `route` declares into its operation.
fn describe(operation: &mut Operation, route: &Route) {
    operation.operation_id = Some(operation_id(route));
    operation.tags = Some(vec![tag(route.path).to_owned()]);
    if let Some(requirement) = requirement(route) {
        operation.description = Some(match operation.description.take() {
            Some(description) => format!("{description}\n\n{requirement}"),
            None => requirement,
        });
    }
    let mut parameters: Vec<_> = path_parameters(route.path)
        .filter_map(|name| {
            let (schema, description) = parameter_schema(route.path, name)?;
            Some(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some(description))
                    .schema(Some(schema))
                    .build(),
            )
        })
        .collect();
    parameters.extend(operation.parameters.take().unwrap_or_default());
    let queried = !parameters.is_empty()
        && parameters
            .iter()
            .any(|p| p.parameter_in == ParameterIn::Query);
    if !parameters.is_empty() {
        operation.parameters = Some(parameters);
    }
    operation.security = Some(match route.access {
        Access::Public => Vec::new(),
        _ => vec![SecurityRequirement::new("bearerAuth", Vec::<String>::new())],
    });
    let mut extensions = ExtensionsBuilder::new()
        .add("x-access", access_name(route.access))
        .add("x-api-keys", route.api_keys);
    if let Access::Tenant(permissions) = route.access {
        extensions = extensions.add("x-permissions", json!(permissions));
    }
    let limits = rate_limits(route);
    if let Some(limits) = &limits {
        extensions = extensions.add("x-rate-limit", limits.clone());
    }
    operation.extensions = Some(extensions.build());
    if let Some(body) = operation.request_body.as_mut() {
        not_null(body);
    }
    let body = operation.request_body.is_some();
    let responses = &mut operation.responses.responses;
    for (status, response) in responses.iter_mut() {
        let code: u16 = status.parse().unwrap_or(0);
        let error_without_body =
            code >= 400 && matches!(response, RefOr::T(r) if r.content.is_empty());
        if error_without_body {
            *response = RefOr::Ref(Ref::from_response_name(error_name(code)));
        } else if limits.is_some()
            && let RefOr::T(response) = response
        {
            for (name, header) in rate_limit_headers() {
                response.headers.insert(name.to_owned(), header);
            }
        }
    }
    for status in guard_statuses(route, body, queried, limits.is_some()) {
        responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(error_name(status))));
    }
    responses.insert(
        "default".into(),
        RefOr::Ref(Ref::from_response_name("Error")),
    );
}

/// An optional body (`request_body = Option<T>`) may be left out, but `null` is no body the
/// handler takes: its schema is `T`'s, not `T` or null.
fn not_null(body: &mut utoipa::openapi::request_body::RequestBody) {
    use utoipa::openapi::schema::Schema;
    for content in body.content.values_mut() {
        let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
            continue;
        };
        let not_null: Vec<_> = one_of
            .items
            .iter()
            .filter(|item| !matches!(item, RefOr::T(Schema::Object(o)) if o.schema_type == Type::Null.into()))
            .cloned()
            .collect();
        if let [only] = not_null.as_slice() {
            content.schema = Some(only.clone());
        }
    }
}

/// `get_api_tenants_tid_servers_sid`: the method and the path's words.
pub(super) fn operation_id(route: &Route) -> String {
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

/// What the route requires, in words.
fn requirement(route: &Route) -> Option<String> {
    match route.access {
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
    }
}

/// The `{name}` segments of a path template.
pub(super) fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

/// The schema and description of the path parameter `name` of `path`: what the guard and the
/// handlers accept.
pub(super) fn parameter_schema(path: &str, name: &str) -> Option<(ObjectBuilder, &'static str)> {
    let uuid = ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)));
    let pattern = |p: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(p))
    };
    Some(match name {
        "tid" => (uuid, "The tenant."),
        "sid" => (uuid, "The server."),
        "uid" => (uuid, "The member's user id."),
        "bid" => (uuid, "The backup."),
        "cid" => (uuid, "The command."),
        "iid" => (uuid, "The invitation."),
        "kid" => (pattern("^[0-9a-f]{16}$"), "The API key's id."),
        "id" if path.starts_with("/api/auth/sessions/") => (uuid, "The session."),
        "id" if path.starts_with("/api/admin/nodes/") => (
            pattern("^[a-z0-9][a-z0-9-]{0,62}$"),
            "The node id (its certificate's CN).",
        ),
        "name" if path.contains("/secrets/") => {
            (pattern("^[A-Za-z0-9_.-]{1,64}$"), "The secret's name.")
        }
        _ => return None,
    })
}

/// Which limits apply: the route's per-IP class, and the per-user API limit of every
/// authenticated call.
fn rate_limits(route: &Route) -> Option<Value> {
    let mut limits = serde_json::Map::new();
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

/// The errors the route implies: bad input, the access guard's, the body extractor's and the
/// rate limiter's.
pub(super) fn guard_statuses(
    route: &Route,
    body: bool,
    query: bool,
    limited: bool,
) -> BTreeSet<u16> {
    let tenant = matches!(route.access, Access::Tenant(_));
    let mut statuses = BTreeSet::new();
    if body || query || tenant {
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
    if body {
        statuses.extend([413, 415]);
    }
    if limited {
        statuses.insert(429);
    }
    statuses
}
