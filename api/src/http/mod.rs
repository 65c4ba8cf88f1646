//! The REST listener. Every route is declared in one table with what it requires
//! ([`routes`]); errors use the contract's body everywhere, unknown routes included.

mod access;
mod account;
mod admin;
mod apikeys;
mod auth;
mod backups;
mod enroll;
mod error;
mod files;
pub(crate) mod guard;
mod hardening;
mod invitations;
mod listener;
mod meta;
mod mfa;
mod openapi;
mod secrets;
mod servers;
mod tenants;
mod throttle;
pub mod tls;
pub mod types;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodFilter, MethodRouter, on};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use access::{Access, Caller, TenantCtx};
pub use error::{ApiError, ApiJson, ApiJsonOrEmpty, ApiQuery};
pub use guard::{Class, ClientIp};
pub use openapi::document;

use crate::AppState;

/// Bodies over this are answered 413.
const BODY_LIMIT: usize = 1024 * 1024;

/// Serves until `shutdown` is cancelled, over TLS when `tls` is given; in-flight requests
/// finish first (see [`listener`] for the bounds on connections).
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) {
    let app = router(state.clone());
    listener::serve(state, app, listener, tls, shutdown).await;
}

/// A route: method, path template, what it requires, and an optional rate-limit class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The HTTP method.
    pub method: &'static str,
    /// The path template, axum syntax (`/api/tenants/{tid}`).
    pub path: &'static str,
    /// What the caller must be or hold.
    pub access: Access,
    /// Rate-limit class (per IP) on top of the per-user API limit.
    pub limit: Option<Class>,
    /// Whether a tenant API key may call it (tenant routes, but for those managing keys).
    pub api_keys: bool,
}

struct Entry {
    route: Route,
    handler: MethodRouter<Arc<AppState>>,
}

fn at<H, T>(method: &'static str, path: &'static str, access: Access, handler: H) -> Entry
where
    H: Handler<T, Arc<AppState>>,
    T: 'static,
{
    let filter = match method {
        "GET" => MethodFilter::GET,
        "POST" => MethodFilter::POST,
        "PUT" => MethodFilter::PUT,
        "PATCH" => MethodFilter::PATCH,
        _ => MethodFilter::DELETE,
    };
    Entry {
        route: Route {
            method,
            path,
            access,
            limit: None,
            api_keys: matches!(access, Access::Tenant(_)),
        },
        handler: on(filter, handler),
    }
}

impl Entry {
    fn limited(mut self, class: Class) -> Entry {
        self.route.limit = Some(class);
        self
    }

    /// Closed to API keys: keys and memberships are changed by people only.
    fn sessions_only(mut self) -> Entry {
        self.route.api_keys = false;
        self
    }

    /// A tighter body bound than [`BODY_LIMIT`] (413 beyond it, before anything is parsed).
    fn body_limit(mut self, bytes: usize) -> Entry {
        self.handler = self.handler.layer(DefaultBodyLimit::max(bytes));
        self
    }
}

/// The one table of routes. Nothing is served that is not here, and nothing is here without
/// its [`Access`].
fn table() -> Vec<Entry> {
    use Access::{Authenticated, PlatformAdmin, Public, Tenant, Verified};
    use authz::Permission as P;
    vec![
        at("GET", "/health", Public, meta::health),
        at("GET", "/metrics", Public, meta::metrics),
        at("GET", "/.well-known/jwks.json", Public, auth::jwks),
        at("GET", "/openapi.json", Public, openapi::serve),
        at("POST", "/api/auth/register", Public, auth::register).limited(Class::Register),
        at("POST", "/api/auth/verify-email", Public, auth::verify_email).limited(Class::Verify),
        at(
            "POST",
            "/api/auth/resend-verification",
            Public,
            auth::resend_verification,
        )
        .limited(Class::Verify),
        at("POST", "/api/auth/login", Public, auth::login).limited(Class::Login),
        at("POST", "/api/auth/login/mfa", Public, mfa::login_mfa).limited(Class::Login),
        at("POST", "/api/auth/refresh", Public, auth::refresh),
        at("POST", "/api/auth/logout", Public, auth::logout),
        at(
            "POST",
            "/api/auth/password-reset",
            Public,
            auth::password_reset,
        )
        .limited(Class::PasswordReset),
        at(
            "POST",
            "/api/auth/password-reset/confirm",
            Public,
            auth::password_reset_confirm,
        )
        .limited(Class::PasswordReset),
        at(
            "POST",
            "/api/auth/logout-all",
            Authenticated,
            auth::logout_all,
        ),
        at(
            "POST",
            "/api/auth/password",
            Authenticated,
            account::change_password,
        )
        .limited(Class::Login),
        at(
            "GET",
            "/api/auth/sessions",
            Authenticated,
            account::sessions,
        ),
        at(
            "DELETE",
            "/api/auth/sessions/{id}",
            Authenticated,
            account::end_session,
        ),
        at("POST", "/api/auth/totp/setup", Authenticated, mfa::setup),
        at(
            "POST",
            "/api/auth/totp/confirm",
            Authenticated,
            mfa::confirm,
        ),
        at("DELETE", "/api/auth/totp", Authenticated, mfa::disable).limited(Class::Login),
        at("GET", "/api/auth/me", Authenticated, account::me),
        at("GET", "/api/permissions", Authenticated, meta::permissions),
        at("POST", "/api/nodes/enroll", Public, enroll::enroll)
            .limited(Class::Enroll)
            .body_limit(enroll::ENROLL_BODY_LIMIT),
        at("GET", "/api/templates", Verified, tenants::templates),
        at("GET", "/api/nodes", Verified, tenants::nodes),
        at("POST", "/api/tenants", Verified, tenants::create),
        at("GET", "/api/tenants", Authenticated, tenants::list),
        at(
            "GET",
            "/api/tenants/{tid}",
            Tenant(&[P::TenantRead]),
            tenants::get,
        ),
        at(
            "DELETE",
            "/api/tenants/{tid}",
            Tenant(&[P::TenantDelete]),
            tenants::delete,
        ),
        at(
            "GET",
            "/api/tenants/{tid}/members",
            Tenant(&[P::MemberRead]),
            tenants::members,
        ),
        // Who belongs to a tenant is people's business: a key (which could hand a stranger a
        // role stronger than the key itself) never changes it.
        at(
            "POST",
            "/api/tenants/{tid}/members",
            Tenant(&[P::MemberManage]),
            tenants::add_member,
        )
        .sessions_only(),
        at(
            "PATCH",
            "/api/tenants/{tid}/members/{uid}",
            Tenant(&[P::MemberManage]),
            tenants::update_member,
        )
        .sessions_only(),
        at(
            "DELETE",
            "/api/tenants/{tid}/members/{uid}",
            Tenant(&[P::MemberManage]),
            tenants::remove_member,
        )
        .sessions_only(),
        at(
            "POST",
            "/api/tenants/{tid}/invitations",
            Tenant(&[P::MemberManage]),
            invitations::create,
        )
        .sessions_only(),
        at(
            "GET",
            "/api/tenants/{tid}/invitations",
            Tenant(&[P::MemberManage]),
            invitations::list,
        ),
        at(
            "DELETE",
            "/api/tenants/{tid}/invitations/{iid}",
            Tenant(&[P::MemberManage]),
            invitations::withdraw,
        )
        .sessions_only(),
        at(
            "POST",
            "/api/invitations/accept",
            Verified,
            invitations::accept,
        ),
        // Any member makes keys for themselves; a key never holds more than its maker's role.
        at(
            "POST",
            "/api/tenants/{tid}/api-keys",
            Tenant(&[P::TenantRead, P::ServerRead]),
            apikeys::create,
        )
        .sessions_only(),
        at(
            "GET",
            "/api/tenants/{tid}/api-keys",
            Tenant(&[P::TenantRead, P::ServerRead]),
            apikeys::list,
        )
        .sessions_only(),
        at(
            "DELETE",
            "/api/tenants/{tid}/api-keys/{kid}",
            Tenant(&[P::TenantRead, P::ServerRead]),
            apikeys::revoke,
        )
        .sessions_only(),
        at(
            "GET",
            "/api/tenants/{tid}/audit",
            Tenant(&[P::AuditRead]),
            tenants::audit_log,
        ),
        at(
            "POST",
            "/api/tenants/{tid}/servers",
            Tenant(&[P::ServerCreate]),
            servers::create,
        ),
        at(
            "GET",
            "/api/tenants/{tid}/servers",
            Tenant(&[P::ServerRead]),
            servers::list,
        ),
        at(
            "GET",
            "/api/tenants/{tid}/servers/{sid}",
            Tenant(&[P::ServerRead]),
            servers::get,
        ),
        at(
            "PATCH",
            "/api/tenants/{tid}/servers/{sid}",
            Tenant(&[P::ServerUpdate]),
            servers::update,
        ),
        at(
            "DELETE",
            "/api/tenants/{tid}/servers/{sid}",
            Tenant(&[P::ServerDelete]),
            servers::delete,
        ),
        // Which of the two depends on the action; the handler asks for the one it needs.
        at(
            "POST",
            "/api/tenants/{tid}/servers/{sid}/power",
            Tenant(&[P::ServerStart, P::ServerStop]),
            servers::power,
        ),
        at(
            "GET",
            "/api/tenants/{tid}/servers/{sid}/commands/{cid}",
            Tenant(&[P::ServerRead]),
            servers::command,
        ),
        at(
            "POST",
            "/api/tenants/{tid}/servers/{sid}/console",
            Tenant(&[P::ServerConsole]),
            servers::console,
        ),
        at(
            "GET",
            "/api/tenants/{tid}/servers/{sid}/events",
            Tenant(&[P::ServerRead]),
            servers::events,
        ),
        at(
            "POST",
            "/api/tenants/{tid}/servers/{sid}/backups",
            Tenant(&[P::BackupCreate]),
            backups::create,
        ),
        at(
            "GET",
            "/api/tenants/{tid}/servers/{sid}/backups",
            Tenant(&[P::BackupRead]),
            backups::list,
        ),
        at(
            "POST",
            "/api/tenants/{tid}/servers/{sid}/backups/{bid}/restore",
            Tenant(&[P::BackupRestore]),
            backups::restore,
        ),
        at(
            "DELETE",
            "/api/tenants/{tid}/servers/{sid}/backups/{bid}",
            Tenant(&[P::BackupDelete]),
            backups::delete,
        ),
        at(
            "GET",
            "/api/tenants/{tid}/servers/{sid}/files",
            Tenant(&[P::FileRead]),
            files::list,
        ),
        at(
            "GET",
            "/api/tenants/{tid}/servers/{sid}/files/content",
            Tenant(&[P::FileRead]),
            files::download,
        ),
        // The body streams to the node (bounded by FILES_MAX_UPLOAD_MB, not BODY_LIMIT).
        at(
            "PUT",
            "/api/tenants/{tid}/servers/{sid}/files/content",
            Tenant(&[P::FileWrite]),
            files::upload,
        ),
        at(
            "POST",
            "/api/tenants/{tid}/servers/{sid}/files/mkdir",
            Tenant(&[P::FileWrite]),
            files::mkdir,
        ),
        at(
            "POST",
            "/api/tenants/{tid}/servers/{sid}/files/rename",
            Tenant(&[P::FileWrite]),
            files::rename,
        ),
        at(
            "POST",
            "/api/tenants/{tid}/servers/{sid}/files/delete",
            Tenant(&[P::FileWrite]),
            files::delete,
        ),
        at(
            "POST",
            "/api/tenants/{tid}/servers/{sid}/files/chmod",
            Tenant(&[P::FileWrite]),
            files::chmod,
        ),
        at(
            "POST",
            "/api/tenants/{tid}/servers/{sid}/files/compress",
            Tenant(&[P::FileWrite]),
            files::compress,
        ),
        at(
            "POST",
            "/api/tenants/{tid}/servers/{sid}/files/decompress",
            Tenant(&[P::FileWrite]),
            files::decompress,
        ),
        at(
            "GET",
            "/api/tenants/{tid}/secrets",
            Tenant(&[P::SecretRead]),
            secrets::list,
        ),
        at(
            "PUT",
            "/api/tenants/{tid}/secrets/{name}",
            Tenant(&[P::SecretWrite]),
            secrets::put,
        ),
        at(
            "GET",
            "/api/tenants/{tid}/secrets/{name}",
            Tenant(&[P::SecretRead]),
            secrets::get,
        ),
        at(
            "DELETE",
            "/api/tenants/{tid}/secrets/{name}",
            Tenant(&[P::SecretWrite]),
            secrets::delete,
        ),
        at("POST", "/api/admin/nodes", PlatformAdmin, admin::add_node),
        at("GET", "/api/admin/nodes", PlatformAdmin, admin::nodes),
        at("GET", "/api/admin/nodes/{id}", PlatformAdmin, admin::node),
        at(
            "POST",
            "/api/admin/nodes/{id}/disable",
            PlatformAdmin,
            admin::disable_node,
        ),
        at(
            "POST",
            "/api/admin/nodes/{id}/enable",
            PlatformAdmin,
            admin::enable_node,
        ),
        at(
            "POST",
            "/api/admin/nodes/{id}/reset-fingerprint",
            PlatformAdmin,
            admin::reset_fingerprint,
        ),
        at(
            "POST",
            "/api/admin/nodes/{id}/join-tokens",
            PlatformAdmin,
            enroll::create_join_token,
        ),
        at(
            "POST",
            "/api/admin/nodes/{id}/rotate",
            PlatformAdmin,
            enroll::rotate,
        ),
        at(
            "GET",
            "/api/admin/templates",
            PlatformAdmin,
            admin::templates,
        ),
        at(
            "POST",
            "/api/admin/templates",
            PlatformAdmin,
            admin::create_template,
        ),
        at("GET", "/api/admin/audit", PlatformAdmin, admin::audit_log),
    ]
}

/// Every route with its access, as served (for tests and the OpenAPI document).
pub fn routes() -> Vec<Route> {
    table().into_iter().map(|e| e.route).collect()
}

/// The REST API: every route of [`table`], each behind its access guard.
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    for Entry { route, handler } in table() {
        let mut handler = handler;
        if let Some(class) = route.limit {
            let limit_state = state.clone();
            handler = handler.route_layer(from_fn_with_state(
                state.clone(),
                move |ip, request, next| {
                    guard::limit(limit_state.clone(), class, ip, request, next)
                },
            ));
        }
        let guard_state = state.clone();
        handler = handler.route_layer(from_fn_with_state(
            state.clone(),
            move |ip, request, next| access::guard(guard_state.clone(), route, ip, request, next),
        ));
        router = router.route(route.path, handler);
    }
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    hardening::layers(router, &state).with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}
