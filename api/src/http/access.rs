//! Who may call what. Every route is registered through one table ([`super::routes`]) that
//! carries its [`Access`]; this module's middleware enforces it, so no handler checks access
//! ad hoc. Tenant routes take the tenant from the path's `{tid}` and the caller's role from the
//! database on every request: a demoted admin loses access on the very next request.
//!
//! A non-member gets 404 (a tenant's existence is not leaked); a member without the permission
//! gets 403. Both are audited.
//!
//! A tenant API key (`Bearer mhp_…`) is accepted only on the routes the table opens to keys
//! (tenant routes, but not those managing keys), only for its own tenant, and only for what
//! both the key and its creator's current role grant; it is rate-limited per key.

use crate::ids::TenantId;
use std::net::IpAddr;
use std::sync::Arc;

use authz::{Permission, Role};
use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::guard::{self, ClientIp};
use crate::apikeys::{self, Grant as ApiKeyGrant};
use crate::audit::{self, AuditEvent};
use crate::identity::{Credential, Principal};
use crate::{AppState, Error, tenancy};

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: public endpoints and the ones that obtain tokens.
    Public,
    /// A valid access token of a live session.
    Authenticated,
    /// As above, with a verified email address.
    Verified,
    /// A platform administrator.
    PlatformAdmin,
    /// A member of the path's tenant whose role grants one of these permissions (a handler
    /// needing a particular one of several asks [`TenantCtx::require`]).
    Tenant(&'static [Permission]),
}

/// The caller of a tenant route, as authorised for this request.
#[derive(Debug, Clone)]
pub struct TenantCtx {
    /// The tenant from the path.
    pub tenant_id: TenantId,
    /// The caller's role in it, read from the database for this request.
    pub role: Role,
    /// The caller.
    pub principal: Principal,
    /// The client's address.
    pub ip: IpAddr,
    /// `METHOD /path` of the request, for audit rows.
    pub request: String,
}

impl TenantCtx {
    /// Whether the caller's role (and key, if they used one) grants `permission` here.
    pub fn allows(&self, permission: Permission) -> bool {
        self.grants(self.role, permission)
    }

    /// Whether `role`, as this caller holds it, grants `permission` here: an API key narrows
    /// it to what the key was given.
    pub fn grants(&self, role: Role, permission: Permission) -> bool {
        let principal = authz::Principal::new([(self.tenant_id.to_string(), role)]);
        authz::can(&principal, permission, &self.tenant_id)
            && self
                .principal
                .api_key()
                .is_none_or(|grant| grant.allows(permission))
    }

    /// Refuses (403, audited) unless the caller's role grants `permission`.
    pub async fn require(&self, state: &AppState, permission: Permission) -> Result<(), ApiError> {
        if self.allows(permission) {
            return Ok(());
        }
        deny(state, self, &[permission]).await;
        Err(forbidden())
    }

    /// An audit row of this tenant, by this caller.
    pub fn audit(
        &self,
        action: &str,
        target: Option<&str>,
        outcome: &str,
        details: serde_json::Value,
    ) -> AuditEvent {
        AuditEvent {
            actor: self.principal.actor(),
            action: action.to_owned(),
            target: target.map(str::to_owned),
            outcome: outcome.to_owned(),
            ip: Some(self.ip.to_string()),
            details,
            tenant_id: Some(self.tenant_id.to_string()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TenantCtx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<TenantCtx>().cloned().ok_or_else(|| {
            tracing::error!(path = %parts.uri.path(), "a tenant handler on a route not declared Access::Tenant");
            ApiError::from(Error::internal("route access misdeclared"))
        })
    }
}

/// The authenticated caller of any non-public route.
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| ApiError::from(Error::Unauthenticated("missing bearer token")))
    }
}

fn forbidden() -> ApiError {
    ApiError::from(Error::Forbidden {
        code: "forbidden",
        message: "your role does not allow this",
    })
}

/// Audits a refusal; `wanted` are the permissions any one of which would have allowed it.
async fn deny(state: &AppState, ctx: &TenantCtx, wanted: &[Permission]) {
    let wanted: Vec<String> = wanted
        .iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let event = ctx.audit(
        "authz.denied",
        Some(&ctx.request),
        "rejected: forbidden",
        json!({ "permission": wanted.join(" or "), "role": ctx.role.as_str() }),
    );
    audit::record_or_log(&state.db, event).await;
}

/// Middleware: enforces the access of `route`.
pub async fn guard(
    state: Arc<AppState>,
    route: super::Route,
    ClientIp(ip): ClientIp,
    mut request: Request,
    next: Next,
) -> Response {
    if route.access == Access::Public {
        return next.run(request).await;
    }
    let principal = match authenticate(&state, request.headers()).await {
        Ok(principal) => principal,
        Err(e) => return e.into_response(),
    };
    let bucket = match principal.api_key() {
        Some(grant) => format!("apikey:{}", grant.id),
        None => format!("api:{}", principal.user.id),
    };
    let decision = state
        .limits
        .check(&bucket, state.config.security.rate_limits.api)
        .await;
    let authorized = match principal.api_key() {
        Some(grant) if !route.api_keys => {
            let described = format!("{} {}", request.method(), request.uri().path());
            Err(refuse_key(&state, grant, ip, described).await)
        }
        _ => Ok(()),
    };
    if decision.allowed
        && let Err(e) = match authorized {
            Ok(()) => authorize(&state, route.access, &principal, ip, &mut request).await,
            Err(e) => Err(e),
        }
    {
        return guard::with_limit_headers(&decision, e.into_response());
    }
    request.extensions_mut().insert(principal);
    guard::respond_limited(decision, state.limits.now_ms(), request, next).await
}

/// Refuses (403, audited) an API key on a route not open to keys.
async fn refuse_key(
    state: &AppState,
    grant: &ApiKeyGrant,
    ip: IpAddr,
    described: String,
) -> ApiError {
    let event = AuditEvent {
        actor: format!("apikey:{}", grant.id),
        action: "authz.denied".into(),
        target: Some(described),
        outcome: "rejected: api_key_not_allowed".into(),
        ip: Some(ip.to_string()),
        details: json!({}),
        tenant_id: Some(grant.tenant_id.clone()),
    };
    audit::record_or_log(&state.db, event).await;
    ApiError::from(Error::Forbidden {
        code: "forbidden",
        message: "an API key reaches its own tenant's routes only, not account, member or key routes",
    })
}

async fn authenticate(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Principal, ApiError> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(Error::Unauthenticated("missing bearer token"))?;
    if bearer.starts_with(apikeys::PREFIX) {
        let (user, grant) = apikeys::authenticate(
            &state.db,
            (&state.api_keys, &state.vault),
            bearer,
            state.clock.now(),
        )
        .await?;
        return Ok(Principal {
            user,
            credential: Credential::ApiKey(grant),
        });
    }
    Ok(state.identity.authenticate(bearer).await?)
}

async fn authorize(
    state: &AppState,
    access: Access,
    principal: &Principal,
    ip: IpAddr,
    request: &mut Request,
) -> Result<(), ApiError> {
    let described = format!("{} {}", request.method(), request.uri().path());
    match access {
        Access::Public | Access::Authenticated => Ok(()),
        Access::Verified => Ok(principal.require_verified()?),
        Access::PlatformAdmin => {
            if principal.user.is_platform_admin {
                return Ok(());
            }
            let event = AuditEvent {
                actor: principal.actor(),
                action: "authz.denied".into(),
                target: Some(described),
                outcome: "rejected: not_platform_admin".into(),
                ip: Some(ip.to_string()),
                details: json!({}),
                tenant_id: None,
            };
            audit::record_or_log(&state.db, event).await;
            Err(ApiError::from(Error::Forbidden {
                code: "forbidden",
                message: "platform administrators only",
            }))
        }
        Access::Tenant(permissions) => {
            let (mut parts, body) = std::mem::take(request).into_parts();
            let params = RawPathParams::from_request_parts(&mut parts, &()).await;
            *request = Request::from_parts(parts, body);
            let params = params.map_err(|_| ApiError::from(Error::Invalid("bad path".into())))?;
            // The tenant is parsed here, where access is decided; the handler parses its
            // other ids itself (`ApiPath<(TenantId, ServerId)>`).
            let tenant_id: TenantId = params
                .iter()
                .find(|(name, _)| *name == "tid")
                .ok_or_else(|| ApiError::from(Error::internal("tenant route without {tid}")))?
                .1
                .parse()
                .map_err(|e: crate::ids::BadId| ApiError::from(Error::Invalid(e.to_string())))?;
            let foreign_key = principal
                .api_key()
                .is_some_and(|grant| tenant_id != grant.tenant_id);
            let role = match foreign_key {
                true => None,
                false => tenancy::role_of(&state.db, &tenant_id, &principal.user.id).await?,
            };
            let Some(role) = role else {
                let event = AuditEvent {
                    actor: principal.actor(),
                    action: "authz.denied".into(),
                    target: Some(described),
                    outcome: "rejected: not_member".into(),
                    ip: Some(ip.to_string()),
                    details: json!({ "tenant_id": tenant_id }),
                    tenant_id: None,
                };
                audit::record_or_log(&state.db, event).await;
                return Err(Error::NotFound("tenant".into()).into());
            };
            let ctx = TenantCtx {
                tenant_id,
                role,
                principal: principal.clone(),
                ip,
                request: described,
            };
            if !permissions.iter().any(|&p| ctx.allows(p)) {
                deny(state, &ctx, permissions).await;
                return Err(forbidden());
            }
            request.extensions_mut().insert(ctx);
            Ok(())
        }
    }
}
