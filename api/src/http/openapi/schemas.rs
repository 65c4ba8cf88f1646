//! `components` of the document: the shapes the handlers answer with (read off their `json!`
//! bodies), the error body, the security scheme and the rate-limit headers.

use serde_json::{Value, json};

/// A reference to the component schema `name`.
pub(super) fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A reference to the component response `name`.
pub(super) fn response(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}

/// A reference to the component header `name`.
pub(super) fn header(name: &str) -> Value {
    json!({ "$ref": format!("#/components/headers/{name}") })
}

/// `{"items": [item...], "next_cursor": string|null}`, the contract's list.
pub(super) fn page(item: Value) -> Value {
    json!({
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": { "type": "array", "items": item },
            "next_cursor": {
                "type": "string",
                "nullable": true,
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
        },
    })
}

/// An RFC 3339 UTC time.
pub(super) fn time() -> Value {
    json!({ "type": "string", "format": "date-time" })
}

fn nullable_time() -> Value {
    json!({ "type": "string", "format": "date-time", "nullable": true })
}

fn uuid() -> Value {
    json!({ "type": "string", "format": "uuid" })
}

fn nullable_string() -> Value {
    json!({ "type": "string", "nullable": true })
}

/// The whole `components` object.
pub(super) fn components() -> Value {
    json!({
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "An access token from `POST /api/auth/login` or `/api/auth/refresh`.",
            },
        },
        "headers": headers(),
        "responses": responses(),
        "schemas": schemas(),
    })
}

fn headers() -> Value {
    json!({
        "RetryAfter": {
            "description": "Seconds to wait before retrying.",
            "schema": { "type": "integer", "minimum": 0 },
        },
        "RateLimitLimit": {
            "description": "Requests allowed in the window.",
            "required": true,
            "schema": { "type": "integer", "minimum": 0 },
        },
        "RateLimitRemaining": {
            "description": "Requests left in the window.",
            "required": true,
            "schema": { "type": "integer", "minimum": 0 },
        },
        "RateLimitReset": {
            "description": "When the window frees a slot (RFC 3339 UTC).",
            "required": true,
            "schema": time(),
        },
    })
}

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema("Error") } },
    })
}

fn responses() -> Value {
    let mut rate_limited = error("Rate limited (`rate_limited`).");
    rate_limited["headers"] = json!({
        "Retry-After": header("RetryAfter"),
        "X-RateLimit-Limit": header("RateLimitLimit"),
        "X-RateLimit-Remaining": header("RateLimitRemaining"),
        "X-RateLimit-Reset": header("RateLimitReset"),
    });
    json!({
        "Error": error("An error, in the contract's body."),
        "BadRequest": error(
            "Malformed JSON, a missing or invalid field, a bad UUID or query parameter \
             (`invalid_request`, `weak_password`).",
        ),
        "Unauthenticated": error(
            "No, an invalid or an expired token (`unauthenticated`); wrong credentials \
             (`invalid_credentials`); a reused refresh token (`token_reused`).",
        ),
        "Forbidden": error(
            "Authenticated but not allowed (`forbidden`), or the email address is not verified \
             (`email_not_verified`).",
        ),
        "NotFound": error(
            "Not found, or it belongs to a tenant the caller is not a member of (`not_found`).",
        ),
        "Conflict": error(
            "A duplicate, the wrong state, or the node is offline (`conflict`, `node_offline`, \
             `no_free_port`, `secret_unreadable`).",
        ),
        "PayloadTooLarge": error("The body is over 1 MiB (`payload_too_large`)."),
        "UnsupportedMediaType": error(
            "The body is not JSON (`unsupported_media_type`).",
        ),
        "RateLimited": rate_limited,
    })
}

fn schemas() -> Value {
    let mut all = serde_json::Map::new();
    for part in [identity(), tenancy(), servers(), platform()] {
        if let Value::Object(part) = part {
            all.extend(part);
        }
    }
    Value::Object(all)
}

fn identity() -> Value {
    json!({
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": { "type": "string", "description": "snake_case, stable." },
                        "message": { "type": "string", "description": "For people." },
                    },
                },
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "db", "redis", "nodes_online"],
            "properties": {
                "status": { "type": "string", "enum": ["ok", "degraded"] },
                "db": { "type": "string", "enum": ["ok", "down"] },
                "redis": { "type": "string", "enum": ["ok", "disabled", "down"] },
                "nodes_online": { "type": "integer", "minimum": 0 },
            },
        },
        "JwkSet": {
            "type": "object",
            "required": ["keys"],
            "properties": { "keys": { "type": "array", "items": schema("Jwk") } },
        },
        "Jwk": {
            "type": "object",
            "description": "An Ed25519 (`OKP`) or P-256 (`EC`) public key.",
            "required": ["kty", "crv", "x", "kid", "alg", "use"],
            "properties": {
                "kty": { "type": "string", "enum": ["OKP", "EC"] },
                "crv": { "type": "string", "enum": ["Ed25519", "P-256"] },
                "x": { "type": "string" },
                "y": { "type": "string", "description": "P-256 keys only." },
                "kid": { "type": "string" },
                "alg": { "type": "string", "enum": ["EdDSA", "ES256"] },
                "use": { "type": "string", "enum": ["sig"] },
            },
        },
        "User": {
            "type": "object",
            "required": ["id", "email", "name", "email_verified"],
            "properties": {
                "id": uuid(),
                "email": { "type": "string" },
                "name": nullable_string(),
                "email_verified": { "type": "boolean" },
            },
        },
        "UserEnvelope": {
            "type": "object",
            "required": ["user"],
            "properties": { "user": schema("User") },
        },
        "Me": {
            "type": "object",
            "required": ["user", "memberships"],
            "properties": {
                "user": schema("User"),
                "memberships": { "type": "array", "items": schema("Membership") },
            },
        },
        "Membership": {
            "type": "object",
            "required": ["tenant_id", "role"],
            "properties": { "tenant_id": uuid(), "role": schema("Role") },
        },
        "Session": {
            "type": "object",
            "required": ["id", "created_at", "last_used_at", "ip", "user_agent", "current"],
            "properties": {
                "id": uuid(),
                "created_at": time(),
                "last_used_at": nullable_time(),
                "ip": nullable_string(),
                "user_agent": nullable_string(),
                "current": { "type": "boolean" },
            },
        },
        "MfaChallenge": {
            "type": "object",
            "description": "The account has TOTP on: finish with POST /api/auth/login/mfa.",
            "required": ["mfa_required", "mfa_token", "expires_in"],
            "properties": {
                "mfa_required": { "type": "boolean", "enum": [true] },
                "mfa_token": { "type": "string" },
                "expires_in": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Seconds the token is valid.",
                },
            },
        },
        "TotpSetup": {
            "type": "object",
            "required": ["secret", "otpauth_uri", "qr_svg"],
            "properties": {
                "secret": { "type": "string", "description": "Base32, no padding." },
                "otpauth_uri": { "type": "string", "description": "otpauth://totp/…" },
                "qr_svg": { "type": "string", "description": "The URI as a QR code, SVG." },
            },
        },
        "RecoveryCodes": {
            "type": "object",
            "required": ["recovery_codes"],
            "properties": {
                "recovery_codes": {
                    "type": "array",
                    "minItems": 10,
                    "maxItems": 10,
                    "items": { "type": "string" },
                },
            },
        },
        "TokenPair": {
            "type": "object",
            "required": ["access_token", "refresh_token", "token_type", "expires_in"],
            "properties": {
                "access_token": { "type": "string" },
                "refresh_token": { "type": "string" },
                "token_type": { "type": "string", "enum": ["Bearer"] },
                "expires_in": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Seconds the access token is valid.",
                },
            },
        },
    })
}

fn tenancy() -> Value {
    let permissions: Vec<Value> = authz::Permission::ALL
        .iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .collect();
    let roles: Vec<&str> = authz::Role::ALL.iter().map(|r| r.as_str()).collect();
    let permission_list = json!({ "type": "array", "items": schema("Permission") });
    let by_role: serde_json::Map<String, Value> = roles
        .iter()
        .map(|role| ((*role).to_owned(), permission_list.clone()))
        .collect();
    json!({
        "Role": { "type": "string", "enum": roles },
        "Permission": { "type": "string", "enum": permissions },
        "RolePermissions": {
            "type": "object",
            "description": "Each role's permissions.",
            "required": roles,
            "properties": by_role,
        },
        "Tenant": {
            "type": "object",
            "required": ["id", "name", "created_at"],
            "properties": {
                "id": uuid(),
                "name": { "type": "string" },
                "created_at": time(),
                "role": {
                    "allOf": [schema("Role")],
                    "description": "The caller's role (not in the answer to creation).",
                },
            },
        },
        "Invitation": {
            "type": "object",
            "required": ["id", "email", "role", "invited_by", "created_at", "expires_at"],
            "properties": {
                "id": uuid(),
                "email": { "type": "string" },
                "role": schema("Role"),
                "invited_by": uuid(),
                "created_at": time(),
                "expires_at": time(),
            },
        },
        "ApiKey": {
            "type": "object",
            "required": ["id", "prefix", "name", "permissions", "created_by", "created_at", "last_used_at", "expires_at"],
            "properties": {
                "id": { "type": "string", "pattern": "^[0-9a-f]{16}$" },
                "prefix": {
                    "type": "string",
                    "pattern": "^mhp_[0-9a-f]{16}$",
                    "description": "What a secret scanner or a log shows of the key.",
                },
                "name": { "type": "string" },
                "permissions": { "type": "array", "items": schema("Permission") },
                "created_by": uuid(),
                "created_at": time(),
                "last_used_at": nullable_time(),
                "expires_at": nullable_time(),
            },
        },
        "NewApiKey": {
            "allOf": [
                schema("ApiKey"),
                {
                    "type": "object",
                    "required": ["key"],
                    "properties": {
                        "key": {
                            "type": "string",
                            "pattern": "^mhp_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$",
                            "description": "The whole key, shown this once.",
                        },
                    },
                },
            ],
        },
        "Member": {
            "type": "object",
            "required": ["user_id", "email", "role"],
            "properties": {
                "user_id": uuid(),
                "email": { "type": "string" },
                "role": schema("Role"),
            },
        },
        "AuditEntry": {
            "type": "object",
            "required": ["id", "at", "actor", "action", "target", "outcome", "ip", "details"],
            "properties": {
                "id": uuid(),
                "at": time(),
                "actor": {
                    "type": "string",
                    "description": "A user id; on the node channel the presented CN or `unknown`.",
                },
                "action": { "type": "string", "example": "node.connect" },
                "target": nullable_string(),
                "outcome": {
                    "type": "string",
                    "description": "`ok`, `accepted`, `rejected: <reason>` and the like.",
                },
                "ip": nullable_string(),
                "details": { "type": "object", "description": "Never secrets." },
            },
        },
        "SecretInfo": {
            "type": "object",
            "required": ["name", "created_at", "updated_at"],
            "properties": {
                "name": { "type": "string" },
                "created_at": time(),
                "updated_at": time(),
            },
        },
        "Secret": {
            "type": "object",
            "required": ["name", "value"],
            "properties": { "name": { "type": "string" }, "value": { "type": "string" } },
        },
    })
}

fn servers() -> Value {
    use crate::db::entities::states::{
        BackupState, CommandKind, CommandState, RestoreState, ServerState, names,
    };
    let mut restore_states: Vec<Value> = names::<RestoreState>()
        .into_iter()
        .map(Value::from)
        .collect();
    restore_states.push(Value::Null);
    json!({
        "ServerState": { "type": "string", "enum": names::<ServerState>() },
        "PowerAction": { "type": "string", "enum": ["start", "stop", "restart", "kill"] },
        "ServerVariables": {
            "type": "object",
            "description": "Values of the template's variables: a string, or a reference to one \
                            of the tenant's secrets.",
            "additionalProperties": {
                "oneOf": [
                    { "type": "string", "maxLength": 4096 },
                    {
                        "type": "object",
                        "required": ["secret"],
                        "properties": { "secret": { "type": "string" } },
                    },
                ],
            },
        },
        "Server": {
            "type": "object",
            "required": [
                "id", "tenant_id", "name", "node_id", "template", "variables", "port", "state",
                "state_reason", "created_at", "updated_at",
            ],
            "properties": {
                "id": uuid(),
                "tenant_id": uuid(),
                "name": { "type": "string" },
                "node_id": { "type": "string" },
                "template": { "type": "string", "description": "The template's name." },
                "variables": schema("ServerVariables"),
                "port": { "type": "integer", "nullable": true },
                "state": schema("ServerState"),
                "state_reason": nullable_string(),
                "created_at": time(),
                "updated_at": time(),
            },
        },
        "CommandAccepted": {
            "type": "object",
            "required": ["command_id"],
            "properties": { "command_id": uuid() },
        },
        "Command": {
            "type": "object",
            "required": ["id", "action", "state", "error", "created_at", "completed_at"],
            "properties": {
                "id": uuid(),
                "action": { "type": "string", "enum": names::<CommandKind>() },
                "state": { "type": "string", "enum": names::<CommandState>() },
                "error": nullable_string(),
                "created_at": time(),
                "completed_at": nullable_time(),
            },
        },
        // Files (issue 17).
        "FileItem": {
            "type": "object",
            "required": ["name", "type", "size", "mode", "modified_at"],
            "properties": {
                "name": { "type": "string", "maxLength": 255 },
                "type": {
                    "type": "string",
                    "enum": ["file", "dir", "symlink"],
                    "description": "A symbolic link is shown as one, never followed.",
                },
                "size": { "type": "integer", "minimum": 0 },
                "mode": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": 4095,
                    "description": "Permission bits as a number (0o644 is 420).",
                },
                "modified_at": time(),
            },
        },
        "Backup": {
            "type": "object",
            "required": [
                "id", "name", "state", "size_bytes", "sha256", "error", "restore_state",
                "restore_error", "created_at", "completed_at",
            ],
            "properties": {
                "id": uuid(),
                "name": { "type": "string" },
                "state": { "type": "string", "enum": names::<BackupState>() },
                "size_bytes": { "type": "integer", "minimum": 0, "nullable": true },
                "sha256": nullable_string(),
                "error": nullable_string(),
                "restore_state": {
                    "type": "string",
                    "enum": restore_states,
                    "nullable": true,
                },
                "restore_error": nullable_string(),
                "created_at": time(),
                "completed_at": nullable_time(),
            },
        },
    })
}

fn platform() -> Value {
    json!({
        "NodeSummary": {
            "type": "object",
            "required": ["id", "name", "online"],
            "properties": {
                "id": { "type": "string" },
                "name": { "type": "string" },
                "online": { "type": "boolean" },
            },
        },
        "Node": {
            "type": "object",
            "required": [
                "id", "fqdn", "name", "enabled", "fingerprint", "online", "last_seen",
                "cert_not_after", "ports", "renewal", "last_renewed_at", "next_fingerprint",
            ],
            "properties": {
                "id": { "type": "string", "description": "The CN of the node's certificate." },
                "fqdn": { "type": "string" },
                "name": { "type": "string" },
                "enabled": { "type": "boolean" },
                "fingerprint": {
                    "type": "string",
                    "nullable": true,
                    "description": "Lowercase hex SHA-256 of the pinned certificate.",
                },
                "online": { "type": "boolean" },
                "last_seen": nullable_time(),
                "cert_not_after": nullable_time(),
                "ports": { "type": "string", "nullable": true, "example": "30000-30099" },
                "renewal": {
                    "type": "string",
                    "pattern": "^(ok|due|renewing|failed: [a-z_]+)$",
                    "description": "`ok`, `due` (two thirds of the lifetime passed), `renewing` or `failed: <code>`.",
                },
                "last_renewed_at": nullable_time(),
                "next_fingerprint": {
                    "type": "string",
                    "nullable": true,
                    "description": "During a renewal, the new certificate's fingerprint, admitted beside the pinned one.",
                },
            },
        },
        "Variable": {
            "type": "object",
            "required": ["name", "pattern"],
            "properties": {
                "name": { "type": "string", "pattern": "^[A-Z][A-Z0-9_]{0,63}$" },
                "pattern": {
                    "type": "string",
                    "maxLength": 512,
                    "description": "A regular expression the whole value must match.",
                },
                "default": { "type": "string", "nullable": true },
            },
        },
        "Template": {
            "type": "object",
            "description": "What a server can be made from (never its command line).",
            "required": ["name", "variables"],
            "properties": {
                "name": { "type": "string" },
                "variables": { "type": "array", "items": schema("Variable") },
            },
        },
        "Limits": {
            "type": "object",
            "description": "Absent fields take the platform defaults.",
            "properties": {
                "memory_mb": { "type": "integer", "minimum": 16, "maximum": 1_048_576 },
                "cpu_percent": { "type": "integer", "minimum": 1, "maximum": 6400 },
                "max_processes": { "type": "integer", "minimum": 8, "maximum": 65536 },
                "open_files": { "type": "integer", "minimum": 64, "maximum": 1_048_576 },
                "disk_mb": { "type": "integer", "minimum": 1, "maximum": 16_777_216 },
            },
        },
        "AdminTemplate": {
            "type": "object",
            "required": [
                "id", "name", "command", "args", "variables", "sensitive_input", "limits",
            ],
            "properties": {
                "id": uuid(),
                "name": { "type": "string" },
                "command": { "type": "string" },
                "args": { "type": "array", "items": { "type": "string" } },
                "variables": { "type": "array", "items": schema("Variable") },
                "sensitive_input": { "type": "boolean" },
                "limits": schema("Limits"),
            },
        },
    })
}
