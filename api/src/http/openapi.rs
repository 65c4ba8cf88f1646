//! `GET /openapi.json`: the OpenAPI 3.1 document of the REST API, derived with utoipa.
//!
//! Each handler says what it takes and answers (`#[utoipa::path]` with the request and
//! response types of [`super::types`], which it builds and returns). What the route table
//! ([`super::routes`]) knows is added by [`routes::FromRoutes`]: operation ids and tags, path
//! parameters, the security scheme, `x-access`, `x-permissions`, `x-api-keys` and
//! `x-rate-limit`, the errors the guards answer (400, 401, 403, 404, 413, 415, 429 with the
//! rate-limit headers), a `default` error response on every operation, and links from each
//! create to the reads, updates and deletes of what it made. A unit test checks that the
//! operations are exactly the routes.

mod errors;
mod links;
mod routes;

use std::sync::LazyLock;

use axum::Json;
use serde_json::Value;
use utoipa::OpenApi;

use routes::FromRoutes;

/// The derived document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Mamba Host Panel API",
        description = "JSON in and out. Errors are `{\"error\": {\"code\", \"message\"}}`; lists \
                       are `{\"items\", \"next_cursor\"}`; times are RFC 3339 UTC. Rate-limited \
                       calls answer `X-RateLimit-*` headers and 429 with `Retry-After`.",
        license(name = "AGPL-3.0-only", identifier = "AGPL-3.0-only"),
    ),
    servers((url = "/")),
    paths(
        super::files::list,
        super::files::download,
        super::files::upload,
        super::files::mkdir,
        super::files::rename,
        super::files::delete,
        super::files::chmod,
        super::files::compress,
        super::files::decompress,
        super::meta::health,
        super::meta::metrics,
        super::auth::jwks,
        serve,
        super::auth::register,
        super::auth::verify_email,
        super::auth::resend_verification,
        super::auth::login,
        super::mfa::login_mfa,
        super::auth::refresh,
        super::auth::logout,
        super::auth::password_reset,
        super::auth::password_reset_confirm,
        super::auth::logout_all,
        super::account::change_password,
        super::account::sessions,
        super::account::end_session,
        super::mfa::setup,
        super::mfa::confirm,
        super::mfa::disable,
        super::account::me,
        super::meta::permissions,
        super::enroll::enroll,
        super::tenants::templates,
        super::tenants::nodes,
        super::tenants::create,
        super::tenants::list,
        super::tenants::get,
        super::tenants::delete,
        super::tenants::members,
        super::tenants::add_member,
        super::tenants::update_member,
        super::tenants::remove_member,
        super::invitations::create,
        super::invitations::list,
        super::invitations::withdraw,
        super::invitations::accept,
        super::apikeys::create,
        super::apikeys::list,
        super::apikeys::revoke,
        super::tenants::audit_log,
        super::servers::create,
        super::servers::list,
        super::servers::get,
        super::servers::update,
        super::servers::delete,
        super::servers::power,
        super::servers::command,
        super::servers::console,
        super::servers::events,
        super::backups::create,
        super::backups::list,
        super::backups::restore,
        super::backups::delete,
        super::secrets::list,
        super::secrets::put,
        super::secrets::get,
        super::secrets::delete,
        super::admin::add_node,
        super::admin::nodes,
        super::admin::node,
        super::admin::disable_node,
        super::admin::enable_node,
        super::admin::reset_fingerprint,
        super::enroll::create_join_token,
        super::enroll::rotate,
        super::admin::templates,
        super::admin::create_template,
        super::admin::audit_log
    ),
    components(schemas(super::types::ErrorBody)),
    modifiers(&FromRoutes),
)]
struct ApiDoc;

/// The document, built on first use.
static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    links::spell_as_openapi(&mut document);
    document
});

/// The OpenAPI document of every route of [`super::routes`].
pub fn document() -> Value {
    DOCUMENT.clone()
}

/// GET /openapi.json.
#[utoipa::path(
    get,
    path = "/openapi.json",
    summary = r#"This document"#,
    responses(
        (status = 200, description = "OK.", body = Object),
    ),
)]
pub async fn serve() -> Json<&'static Value> {
    Json(&*DOCUMENT)
}

#[cfg(test)]
mod tests;
