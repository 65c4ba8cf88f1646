//! What each route takes and answers, read off its handler: one arm of [`describe`] per
//! route of the table. Access, path parameters, security and the error responses of the guards
//! are not here: the document derives them from the route itself.

use serde_json::{Value, json};

use super::schemas::{page, schema, time};

/// What a successful response carries.
pub(super) enum Content {
    /// `application/json` with this schema.
    Json(Value),
    /// `text/plain` (Prometheus exposition).
    Text,
    /// `text/event-stream`.
    EventStream,
    /// `application/octet-stream` (a file's bytes).
    Binary,
    /// No body (202 without one, 204).
    Empty,
}

/// The part of an operation only its handler knows.
pub(super) struct Doc {
    /// One line.
    pub summary: &'static str,
    /// More, when one line is not enough.
    pub description: Option<&'static str>,
    /// The JSON body's schema.
    pub body: Option<Value>,
    /// Whether the body may be left out (every field optional).
    pub body_optional: bool,
    /// Success (and other non-error) responses: status and content.
    pub replies: Vec<(u16, Content)>,
    /// Whether it takes `?limit=&cursor=`.
    pub paged: bool,
    /// Error statuses the handler itself answers beyond those the route implies.
    pub errors: &'static [u16],
    /// Query parameters, beyond paging.
    pub query: Vec<Value>,
    /// Whether the request body is raw bytes (`application/octet-stream`), not JSON.
    pub raw_body: bool,
}

impl Doc {
    fn new(summary: &'static str) -> Doc {
        Doc {
            summary,
            description: None,
            body: None,
            body_optional: false,
            replies: Vec::new(),
            paged: false,
            errors: &[],
            query: Vec::new(),
            raw_body: false,
        }
    }

    /// The stand-in for a route [`describe`] does not know: the document still lists it
    /// (and a unit test fails).
    pub(super) fn missing() -> Doc {
        Doc::new("Undocumented")
    }

    fn describe(mut self, description: &'static str) -> Doc {
        self.description = Some(description);
        self
    }

    fn body(mut self, schema: Value) -> Doc {
        self.body = Some(schema);
        self
    }

    /// A body that may be left out altogether.
    fn optional_body(mut self, schema: Value) -> Doc {
        self.body_optional = true;
        self.body(schema)
    }

    fn reply(mut self, status: u16, content: Content) -> Doc {
        self.replies.push((status, content));
        self
    }

    fn json(self, status: u16, schema: Value) -> Doc {
        self.reply(status, Content::Json(schema))
    }

    fn empty(self, status: u16) -> Doc {
        self.reply(status, Content::Empty)
    }

    /// A paged list of `item`: `?limit=&cursor=` → `{items, next_cursor}`.
    fn paged(mut self, item: Value) -> Doc {
        self.paged = true;
        self.json(200, page(item))
    }

    fn errors(mut self, errors: &'static [u16]) -> Doc {
        self.errors = errors;
        self
    }
}

/// A JSON object with these properties, `required` of them required.
fn object(required: &[&str], properties: Value) -> Value {
    let mut object = json!({ "type": "object", "properties": properties });
    if !required.is_empty() {
        object["required"] = json!(required);
    }
    object
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn optional_string() -> Value {
    json!({ "type": "string", "nullable": true })
}

/// A name shown to people: 1 to 100 characters once trimmed, no control characters.
fn display_name() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "description": "1 to 100 characters (trimmed), no control characters.",
    })
}

/// [`display_name`], or null / absent to leave it be.
fn optional_display_name() -> Value {
    json!({
        "type": "string",
        "nullable": true,
        "minLength": 1,
        "description": "1 to 100 characters (trimmed), no control characters.",
    })
}

/// A new password: at least 12 characters, at most 1024 bytes, not a common one.
fn new_password() -> Value {
    json!({
        "type": "string",
        "minLength": 12,
        "maxLength": 1024,
        "description": "At least 12 characters and at most 1024 bytes; not one of the 20,000 \
                        most common passwords nor containing the local part of the email \
                        (400 `weak_password`).",
    })
}

/// The description of the route `method path`, or `None` when it has none (a test fails).
pub(super) fn describe(method: &str, path: &str) -> Option<Doc> {
    if let Some(rest) = path.strip_prefix("/api/tenants/{tid}") {
        return describe_tenant(method, rest);
    }
    // Enrolment is the nodes' side of the platform's node operations.
    if path.starts_with("/api/admin/") || path == "/api/nodes/enroll" {
        return describe_platform(method, path);
    }
    if path.starts_with("/api/") {
        return describe_account(method, path);
    }
    let doc = match (method, path) {
        ("GET", "/health") => Doc::new("Liveness and dependencies")
            .describe("503 when the database is down; Redis `down` alone keeps 200.")
            .json(200, schema("Health"))
            .json(503, schema("Health")),
        ("GET", "/metrics") => Doc::new("Prometheus metrics").reply(200, Content::Text),
        ("GET", "/.well-known/jwks.json") => Doc::new("Keys that verify access tokens")
            .describe("The active key and the retired ones still accepted; `kid` on every key.")
            .json(200, schema("JwkSet")),
        ("GET", "/openapi.json") => {
            Doc::new("This document").json(200, object(&["openapi", "info", "paths"], json!({})))
        }
        _ => return None,
    };
    Some(doc)
}

fn describe_account(method: &str, path: &str) -> Option<Doc> {
    let token_body = object(&["token"], json!({ "token": string() }));
    let email_body = object(&["email"], json!({ "email": string() }));
    let refresh_body = object(&["refresh_token"], json!({ "refresh_token": string() }));
    let doc = match (method, path) {
        ("POST", "/api/auth/register") => Doc::new("Create an account")
            .describe("The account starts unverified; a verification mail is sent.")
            .body(object(
                &["email", "password"],
                json!({ "email": string(), "password": new_password(), "name": optional_string() }),
            ))
            .json(201, schema("UserEnvelope"))
            .errors(&[409]),
        ("POST", "/api/auth/verify-email") => Doc::new("Verify an email address")
            .describe("The token is from the verification mail: one use, 24 hours.")
            .body(token_body)
            .json(200, schema("UserEnvelope")),
        ("POST", "/api/auth/resend-verification") => Doc::new("Mail a new verification link")
            .describe(
                "202 whatever the address, at once: the look-up and the mail run after the \
                 answer, so its timing does not tell which accounts exist.",
            )
            .body(email_body)
            .empty(202),
        ("POST", "/api/auth/login") => Doc::new("Log in")
            .describe(
                "Unknown email and wrong password both answer 401 `invalid_credentials`. Ten \
                 failures from one client (IPv4 address or IPv6 /64) within an hour block it \
                 for an hour (429); twenty on one account from networks that never logged \
                 into it throttle such networks for 15 minutes (429). `tenant_id` must name a \
                 tenant of the user (400 otherwise). When the password-hashing queue is full \
                 the login is refused at once: 503 `unavailable` with `Retry-After`. A locked \
                 account (`api user lock`) with the right password is 403 `forbidden`. With \
                 TOTP on, the right password answers `{mfa_required: true, mfa_token}` \
                 instead of tokens: finish with `POST /api/auth/login/mfa`.",
            )
            .body(object(
                &["email", "password"],
                json!({
                    "email": string(),
                    "password": string(),
                    "tenant_id": {
                        "type": "string",
                        "nullable": true,
                        "description": "The client's default tenant, put in the token; one the user is a member of.",
                    },
                }),
            ))
            .json(
                200,
                json!({ "oneOf": [schema("TokenPair"), schema("MfaChallenge")] }),
            )
            .errors(&[401, 403, 503]),
        ("POST", "/api/auth/login/mfa") => Doc::new("Finish a login with a second factor")
            .describe(
                "The `mfa_token` of a login with TOTP on (5 minutes, one use, at most 5 wrong \
                 codes) and exactly one of `code` (the current 6-digit TOTP code; each is \
                 accepted once) or `recovery_code` (each works once). Answers the token pair \
                 as login does. A bad, expired or used-up token is 401 `unauthenticated`, a \
                 wrong or reused code 401 `invalid_code`; both count as failed logins of the \
                 account from this client (the login limit: 429). A lock or a password change \
                 since the login ends the token.",
            )
            .body(object(
                &["mfa_token"],
                json!({
                    "mfa_token": string(),
                    "code": string(),
                    "recovery_code": string(),
                }),
            ))
            .json(200, schema("TokenPair"))
            .errors(&[401, 403]),
        ("POST", "/api/auth/totp/setup") => Doc::new("Set up TOTP for the caller")
            .describe(
                "A new secret (160 bits; RFC 6238 with SHA-1, 30-second steps, 6 digits), \
                 shown once as base32, as an `otpauth://` URI and as that URI's QR code \
                 (SVG). It stays pending, and logins do not ask for it, until confirmed; a new \
                 setup replaces a pending one. 409 while TOTP is on.",
            )
            .json(200, schema("TotpSetup"))
            .errors(&[409]),
        ("POST", "/api/auth/totp/confirm") => Doc::new("Turn TOTP on with a first code")
            .describe(
                "The current code of the pending secret turns it on and answers ten \
                 single-use recovery codes, shown once. A wrong code is 400; nothing pending \
                 or TOTP already on is 409.",
            )
            .body(object(&["code"], json!({ "code": string() })))
            .json(200, schema("RecoveryCodes"))
            .errors(&[409]),
        ("DELETE", "/api/auth/totp") => Doc::new("Turn TOTP off")
            .describe(
                "Needs the account's password (wrong: 401 `invalid_credentials`) and a \
                 current code (wrong or reused: 401 `invalid_code`); each failure counts as a \
                 failed login from this client. The secret and the recovery codes are \
                 deleted and a notice is mailed. 409 when TOTP is not on.",
            )
            .body(object(
                &["password", "code"],
                json!({ "password": string(), "code": string() }),
            ))
            .empty(204)
            .errors(&[401, 409, 503]),
        ("POST", "/api/auth/refresh") => Doc::new("Exchange a refresh token for a new pair")
            .describe(
                "Rotation: the old token is used up. Presenting a used one answers 401 \
                 `token_reused` and revokes its whole family.",
            )
            .body(refresh_body)
            .json(200, schema("TokenPair"))
            .errors(&[401]),
        ("POST", "/api/auth/logout") => Doc::new("End the session of a refresh token")
            .describe("Unknown tokens are ignored.")
            .body(refresh_body)
            .empty(204),
        ("POST", "/api/auth/password-reset") => Doc::new("Mail a password reset link")
            .describe(
                "202 whatever the address, at once (the mail is sent after the answer). The \
                 token is valid for one hour, once.",
            )
            .body(email_body)
            .empty(202),
        ("POST", "/api/auth/password-reset/confirm") => Doc::new("Set a new password")
            .describe("Every session of the account is revoked.")
            .body(object(
                &["token", "new_password"],
                json!({ "token": string(), "new_password": new_password() }),
            ))
            .empty(204),
        ("POST", "/api/auth/logout-all") => Doc::new("End every session of the caller")
            .describe("Access tokens issued before now stop working.")
            .empty(204),
        ("POST", "/api/auth/password") => Doc::new("Change the caller's password")
            .describe(
                "Checks `current_password` (a wrong one answers 401 `invalid_credentials` and \
                 counts as a failed login from this client: ten within an hour block it for an \
                 hour, logins included). The new password must have at least 12 characters, at \
                 most 1024 bytes, not be one of the 20,000 most common passwords nor contain \
                 the local part of the account's email (400 `weak_password`). Every other \
                 session of the account ends (its access tokens at their next request, its \
                 refresh tokens at once); the caller's stays. A notice is mailed.",
            )
            .body(object(
                &["current_password", "new_password"],
                json!({ "current_password": string(), "new_password": new_password() }),
            ))
            .empty(204)
            .errors(&[401, 503]),
        ("GET", "/api/auth/sessions") => Doc::new("The caller's live sessions")
            .describe(
                "Newest first, at most 100: where each was opened (IP and `User-Agent` at \
                 login), when, when last used (to the minute) and whether it is the caller's.",
            )
            .json(
                200,
                object(
                    &["items"],
                    json!({ "items": { "type": "array", "items": schema("Session") } }),
                ),
            ),
        ("DELETE", "/api/auth/sessions/{id}") => Doc::new("End one of the caller's sessions")
            .describe(
                "Its access tokens stop at their next request, its refresh tokens at once. \
                 Another user's, an ended or an unknown session is 404.",
            )
            .empty(204)
            .errors(&[400]),
        ("GET", "/api/auth/me") => {
            Doc::new("The caller and their memberships").json(200, schema("Me"))
        }
        ("POST", "/api/invitations/accept") => Doc::new("Accept an invitation to a tenant")
            .describe(
                "The token is from the invitation mail: one use, 7 days. The caller must be \
                 logged in with the invited, verified address (403 otherwise; an address \
                 without an account registers first). A used, withdrawn, expired or unknown \
                 link is 400; already a member of the tenant, 409.",
            )
            .body(token_body)
            .empty(204)
            .errors(&[400, 403, 409]),
        ("GET", "/api/permissions") => {
            Doc::new("The role → permission table").json(200, schema("RolePermissions"))
        }
        ("GET", "/api/templates") => {
            Doc::new("Templates a server can be made from, by name").paged(schema("Template"))
        }
        ("GET", "/api/nodes") => {
            Doc::new("Enabled nodes a server can be placed on, by id").paged(schema("NodeSummary"))
        }
        ("POST", "/api/tenants") => Doc::new("Create a tenant")
            .describe("The caller becomes its owner. Unknown fields are refused.")
            .body(object(&["name"], json!({ "name": display_name() })))
            .json(201, schema("Tenant")),
        ("GET", "/api/tenants") => {
            Doc::new("The tenants the caller belongs to, with their role").paged(schema("Tenant"))
        }
        _ => return None,
    };
    Some(doc)
}

/// Routes under `/api/tenants/{tid}`, by the rest of their path.
fn describe_tenant(method: &str, rest: &str) -> Option<Doc> {
    let doc = match (method, rest) {
        ("GET", "") => Doc::new("A tenant, with the caller's role").json(200, schema("Tenant")),
        ("DELETE", "") => Doc::new("Delete a tenant")
            .describe("Its servers are deleted on their nodes and its secrets destroyed.")
            .empty(202),
        ("GET", "/members") => Doc::new("The tenant's members").paged(schema("Member")),
        ("POST", "/members") => Doc::new("Add a user as a member")
            .describe(
                "404 when no account has the address; only an owner grants `owner`. Unknown \
                 fields are refused.",
            )
            .body(object(
                &["email", "role"],
                json!({ "email": string(), "role": schema("Role") }),
            ))
            .json(201, schema("Member"))
            .errors(&[409]),
        ("PATCH", "/members/{uid}") => Doc::new("Change a member's role")
            .describe("The last owner cannot be demoted (409). Unknown fields are refused.")
            .body(object(&["role"], json!({ "role": schema("Role") })))
            .json(200, schema("Member"))
            .errors(&[409]),
        ("DELETE", "/members/{uid}") => Doc::new("Remove a member")
            .describe("The last owner cannot be removed (409).")
            .empty(204)
            .errors(&[409]),
        ("GET", "/audit") => {
            Doc::new("The tenant's audit log, newest first").paged(schema("AuditEntry"))
        }
        ("POST", "/invitations") => Doc::new("Invite an address into the tenant")
            .describe(
                "Mails a one-time link (7 days) to the address, whether or not it has an \
                 account: the answer is the same either way. Only an owner invites an owner. \
                 At most 100 pending invitations per tenant (409). Unknown fields are refused.",
            )
            .body(object(
                &["email", "role"],
                json!({ "email": string(), "role": schema("Role") }),
            ))
            .json(202, schema("Invitation"))
            .errors(&[409]),
        ("GET", "/invitations") => {
            Doc::new("The tenant's pending invitations, oldest first").paged(schema("Invitation"))
        }
        ("DELETE", "/invitations/{iid}") => Doc::new("Withdraw a pending invitation")
            .describe("Its link stops working. Only an owner withdraws an owner's invitation.")
            .empty(204),
        ("POST", "/api-keys") => Doc::new("Make an API key for scripts")
            .describe(
                "The whole key (`mhp_` + 16 hex characters + `_` + 43 base64url characters) is \
                 in this answer only. It reaches this tenant's routes only, with the \
                 permissions given here, each of which the caller's role must grant (403), and \
                 never more than the caller's role grants at the time of use. Send it as \
                 `Authorization: Bearer mhp_…`. At most 25 live keys per member. Unknown \
                 fields are refused.",
            )
            .body(object(
                &["name", "permissions"],
                json!({
                    "name": display_name(),
                    "permissions": {
                        "type": "array",
                        "minItems": 1,
                        "items": schema("Permission"),
                    },
                    "expires_at": {
                        "type": "string",
                        "format": "date-time",
                        "nullable": true,
                        "description": "In the future; absent or null: it does not expire.",
                    },
                }),
            ))
            .json(201, schema("NewApiKey"))
            .errors(&[409]),
        ("GET", "/api-keys") => Doc::new("Live API keys")
            .describe("The caller's own; every member's with `member:manage`. Never the secret.")
            .paged(schema("ApiKey")),
        ("DELETE", "/api-keys/{kid}") => Doc::new("Revoke an API key")
            .describe("One's own, or any with `member:manage`; it stops at its next request.")
            .empty(204),
        ("POST", "/servers") => Doc::new("Create a server")
            .describe(
                "Needs a verified email address. 409 `node_offline` when the node is not \
                 connected, `no_free_port` when its port range is used up. Unknown fields are \
                 refused.",
            )
            .body(object(
                &["name", "node_id", "template"],
                json!({
                    "name": display_name(),
                    "node_id": string(),
                    "template": { "type": "string", "description": "The template's name." },
                    "variables": schema("ServerVariables"),
                }),
            ))
            .json(201, schema("Server"))
            .errors(&[409]),
        ("GET", "/servers") => Doc::new("The tenant's servers").paged(schema("Server")),
        ("GET", "/servers/{sid}") => Doc::new("A server").json(200, schema("Server")),
        ("PATCH", "/servers/{sid}") => Doc::new("Rename a server or replace its variables")
            .describe("New variables are used from the next start. Unknown fields are refused.")
            .body(object(
                &[],
                json!({
                    "name": optional_display_name(),
                    "variables": {
                        "allOf": [schema("ServerVariables")],
                        "nullable": true,
                        "description": "The whole set, validated again.",
                    },
                }),
            ))
            .json(200, schema("Server")),
        ("DELETE", "/servers/{sid}") => Doc::new("Delete a server")
            .describe("Its node removes it now, or when it next connects.")
            .empty(202),
        ("POST", "/servers/{sid}/power") => Doc::new("Start, stop, restart or kill a server")
            .describe(
                "`start` needs `server:start`; `stop`, `restart` and `kill` need `server:stop`. \
                 409 for the wrong state or an offline node. Unknown fields are refused.",
            )
            .body(object(
                &["action"],
                json!({ "action": schema("PowerAction") }),
            ))
            .json(202, schema("CommandAccepted"))
            .errors(&[409]),
        ("GET", "/servers/{sid}/commands/{cid}") => {
            Doc::new("What became of a command").json(200, schema("Command"))
        }
        ("POST", "/servers/{sid}/console") => Doc::new("Write a line to the server's stdin")
            .describe(
                "At most 4096 bytes, without line breaks or NUL. 409 unless the server is \
                 running. Unknown fields are refused.",
            )
            .body(object(
                &["line"],
                json!({ "line": { "type": "string", "maxLength": 4096 } }),
            ))
            .empty(204)
            .errors(&[409]),
        ("GET", "/servers/{sid}/events") => Doc::new("Live events of a server (SSE)")
            .describe(
                "Server-Sent Events, each `data` a JSON object with a `type`: `status` first, \
                 then `console` lines (with `server:console`), `stats`, `command` and `backup`. \
                 The stream stays open; the caller's role is re-read every 15 s. 429 when the \
                 caller or the server has too many streams open.",
            )
            .reply(200, Content::EventStream),
        ("POST", "/servers/{sid}/backups") => Doc::new("Back a server up")
            .describe(
                "The backup is `pending` until its node reports; without a name it gets a dated \
                 one. 409 `node_offline`. Unknown fields are refused; the body may be left out.",
            )
            .optional_body(object(&[], json!({ "name": optional_display_name() })))
            .json(202, schema("Backup"))
            .errors(&[409]),
        ("GET", "/servers/{sid}/backups") => {
            Doc::new("A server's backups, newest first").paged(schema("Backup"))
        }
        ("POST", "/servers/{sid}/backups/{bid}/restore") => Doc::new("Restore a backup")
            .describe("Only a completed backup (409 otherwise, or when the node is offline).")
            .json(202, schema("CommandAccepted"))
            .errors(&[409]),
        ("DELETE", "/servers/{sid}/backups/{bid}") => Doc::new("Delete a backup")
            .describe("Its node removes the archive; 409 when the node is offline.")
            .empty(204)
            .errors(&[409]),
        // Files (issue 17): paths are UTF-8, absolute from the server's root.
        ("GET", "/servers/{sid}/files") => Doc::new("A page of a directory of the server")
            .describe(
                "Entries in byte order of their names; a symbolic link is shown as one, never \
                 followed (FIFOs, sockets and devices are not listed). 400 `invalid_path` for a \
                 path outside the root or through a link, 404 for none, 409 for a file; \
                 409 `node_offline`, 502 `node_gone`.",
            )
            .query(file_path(false))
            .query(json!({
                "name": "limit",
                "in": "query",
                "description": "Entries per page; 100 when absent.",
                "schema": { "type": "integer", "minimum": 1, "maximum": 1000 },
            }))
            .query(json!({
                "name": "cursor",
                "in": "query",
                "description": "The `next_cursor` of the previous page.",
                "schema": { "type": "string", "maxLength": 255 },
            }))
            .json(200, page(schema("FileItem")))
            .errors(&[409, 502]),
        ("GET", "/servers/{sid}/files/content") => Doc::new("Download a file")
            .describe(
                "The bytes, streamed, with `Content-Length`, `ETag` (the SHA-256) and one \
                 `Range: bytes=…` (206 with `Content-Range`; 416 outside the file). 409 for a \
                 directory or anything but a regular file. A node that goes away midway breaks \
                 the transfer off (never a short file taken for whole).",
            )
            .query(file_path(true))
            .reply(200, Content::Binary)
            .reply(206, Content::Binary)
            .errors(&[409, 416, 502]),
        ("PUT", "/servers/{sid}/files/content") => Doc::new("Upload or edit a file")
            .describe(
                "The raw body becomes the file: written beside it and renamed into place when \
                 complete (a broken upload changes nothing), owned by the server's user. \
                 `If-Match` with the ETag makes it conditional (409 when the file changed). 413 \
                 past the server's disk quota or `FILES_MAX_UPLOAD_MB`, before any byte is \
                 kept; uploads are rate-limited per user (429). 201 for a new file, 204 for a \
                 replaced one, with the new `ETag`.",
            )
            .query(file_path(true))
            .raw_body()
            .empty(201)
            .empty(204)
            .errors(&[409, 413, 429, 502]),
        ("POST", "/servers/{sid}/files/mkdir") => Doc::new("Make a directory (and its parents)")
            .describe("409 when it exists.")
            .body(object(&["path"], json!({ "path": file_path_schema() })))
            .empty(204)
            .errors(&[409, 502]),
        ("POST", "/servers/{sid}/files/rename") => Doc::new("Move or rename a file or directory")
            .describe("`to` must not exist (409).")
            .body(object(
                &["from", "to"],
                json!({ "from": file_path_schema(), "to": file_path_schema() }),
            ))
            .empty(204)
            .errors(&[409, 502]),
        ("POST", "/servers/{sid}/files/delete") => Doc::new("Delete files and directories")
            .describe("Directories with everything in them. All must exist (404), or none goes.")
            .body(object(&["paths"], json!({ "paths": file_paths_schema() })))
            .empty(204)
            .errors(&[409, 502]),
        ("POST", "/servers/{sid}/files/chmod") => Doc::new("Set a file's permission bits")
            .describe("No setuid, setgid or sticky bit (400); a link has no mode of its own (409).")
            .body(object(
                &["path", "mode"],
                json!({
                    "path": file_path_schema(),
                    "mode": { "type": "integer", "minimum": 0, "maximum": 511 },
                }),
            ))
            .empty(204)
            .errors(&[409, 502]),
        ("POST", "/servers/{sid}/files/compress") => Doc::new("Archive files into a new tar.gz")
            .describe(
                "Links are archived as links. `into` must not exist (409); 413 past the quota.",
            )
            .body(object(
                &["paths", "into"],
                json!({ "paths": file_paths_schema(), "into": file_path_schema() }),
            ))
            .empty(204)
            .errors(&[409, 502]),
        ("POST", "/servers/{sid}/files/decompress") => Doc::new("Unpack a tar, tar.gz or zip")
            .describe(
                "Every entry is checked first: an absolute path, `..` or a link leading outside \
                 is 400 `invalid_path`, a device or FIFO 400; too many entries, too many bytes \
                 or too high a ratio (a zip bomb) 413. A refused archive leaves nothing; names \
                 that exist in `into` are 409.",
            )
            .body(object(
                &["path", "into"],
                json!({ "path": file_path_schema(), "into": file_path_schema() }),
            ))
            .empty(204)
            .errors(&[409, 502]),
        ("GET", "/secrets") => {
            Doc::new("The tenant's secrets: names and times only").paged(schema("SecretInfo"))
        }
        ("PUT", "/secrets/{name}") => Doc::new("Create or replace a secret")
            .describe(
                "Needs a verified email address. The value is at most 64 KiB. Unknown fields are \
                 refused.",
            )
            .body(object(
                &["value"],
                json!({ "value": { "type": "string", "maxLength": 65536 } }),
            ))
            .empty(204)
            .errors(&[409]),
        ("GET", "/secrets/{name}") => Doc::new("A secret's value (audited)")
            .describe("409 `secret_unreadable` when the stored value does not decrypt.")
            .json(200, schema("Secret"))
            .errors(&[409]),
        ("DELETE", "/secrets/{name}") => Doc::new("Delete a secret").empty(204),
        _ => return None,
    };
    Some(doc)
}

fn describe_platform(method: &str, path: &str) -> Option<Doc> {
    let doc = match (method, path) {
        ("POST", "/api/admin/nodes") => Doc::new("Add a node")
            .body(object(
                &["id", "fqdn"],
                json!({
                    "id": { "type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$" },
                    "fqdn": { "type": "string", "minLength": 1, "maxLength": 253 },
                    "name": optional_string(),
                    "ports": {
                        "type": "string",
                        "nullable": true,
                        "example": "30000-30099",
                        "description": "At most 10,000 ports within 1024-65535.",
                    },
                }),
            ))
            .json(201, schema("Node"))
            .errors(&[409]),
        ("POST", "/api/admin/nodes/{id}/join-tokens") => Doc::new("Make a join token for a node")
            .describe(
                "A one-time token (256 bits, stored hashed, shown only in this answer) that lets                  the node enrol by CSR (`POST /api/nodes/enroll`); it expires after `ttl_secs`                  (60 to 604800, default 3600) and is deleted when the node is disabled. 409 for a                  disabled node.",
            )
            .optional_body(object(
                &[],
                json!({ "ttl_secs": { "type": "integer", "minimum": 60, "maximum": 604800 } }),
            ))
            .json(
                201,
                object(
                    &["token", "node_id", "expires_at"],
                    json!({ "token": string(), "node_id": string(), "expires_at": time() }),
                ),
            )
            .errors(&[409]),
        ("POST", "/api/admin/nodes/{id}/rotate") => Doc::new("Make a node renew its certificate now")
            .describe(
                "The node is sent `Rotate` over its stream (within a second; when it is offline, \
                 as soon as it connects) and renews with overlap: a new key and CSR, the new \
                 fingerprint admitted beside the current one, promoted at its first connection.",
            )
            .json(
                202,
                object(
                    &["node_id", "renewal"],
                    json!({ "node_id": string(), "renewal": string() }),
                ),
            ),
        ("POST", "/api/nodes/enroll") => Doc::new("Enrol a node with a join token and a CSR")
            .describe(
                "No bearer token: the join token is the credential (one use). The panel's issuer                  signs the CSR's key with CN = the token's node id (a CSR naming another CN is                  403) and pins the certificate's fingerprint at once. Keys must be ECDSA P-256,                  P-384 or Ed25519 (RSA and other curves: 400). An unknown, expired or used token                  is 401, a disabled node 403, a panel without an issuer 503. Bodies over 16 KiB                  are 413. Every attempt is audited (`node.enroll`).",
            )
            .body(object(
                &["token", "csr"],
                json!({
                    "token": { "type": "string", "maxLength": 256 },
                    "csr": { "type": "string", "description": "PKCS#10, PEM.", "maxLength": 8192 },
                }),
            ))
            .json(
                201,
                object(
                    &["node_id", "certificate", "chain", "fingerprint", "not_after"],
                    json!({
                        "node_id": string(),
                        "certificate": { "type": "string", "description": "The leaf, PEM." },
                        "chain": { "type": "string", "description": "The intermediates, PEM." },
                        "fingerprint": string(),
                        "not_after": time(),
                    }),
                ),
            )
            .errors(&[401, 403, 503]),
        ("GET", "/api/admin/nodes") => Doc::new("Every node, by id").paged(schema("Node")),
        ("GET", "/api/admin/nodes/{id}") => Doc::new("A node").json(200, schema("Node")),
        ("POST", "/api/admin/nodes/{id}/disable") => Doc::new("Disable a node")
            .describe("Its live connection is dropped at once.")
            .json(200, schema("Node")),
        ("POST", "/api/admin/nodes/{id}/enable") => {
            Doc::new("Enable a node").json(200, schema("Node"))
        }
        ("POST", "/api/admin/nodes/{id}/reset-fingerprint") => {
            Doc::new("Forget a node's pinned certificate")
                .describe("The next valid certificate is pinned; the live connection is dropped.")
                .json(200, schema("Node"))
        }
        ("GET", "/api/admin/templates") => {
            Doc::new("Every template, with its command line, by name")
                .paged(schema("AdminTemplate"))
        }
        ("POST", "/api/admin/templates") => Doc::new("Define a template")
            .describe("Unknown fields are refused. 409 when the name is taken.")
            .body(object(
                &["name", "command"],
                json!({
                    "name": { "type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$" },
                    "command": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 1024,
                        "description": "An absolute path or a program name, without spaces.",
                    },
                    "args": {
                        "type": "array",
                        "maxItems": 64,
                        "items": { "type": "string", "maxLength": 4096 },
                        "description": "Each one argument, with `{{VAR}}` placeholders.",
                    },
                    "variables": {
                        "type": "array",
                        "maxItems": 32,
                        "items": schema("Variable"),
                    },
                    "sensitive_input": { "type": "boolean" },
                    "limits": schema("Limits"),
                }),
            ))
            .json(201, schema("AdminTemplate"))
            .errors(&[409]),
        ("GET", "/api/admin/audit") => {
            Doc::new("The platform-wide audit log, newest first").paged(schema("AuditEntry"))
        }
        _ => return None,
    };
    Some(doc)
}

// Files (issue 17): what the file routes add to the document.
impl Doc {
    /// A query parameter.
    fn query(mut self, parameter: Value) -> Doc {
        self.query.push(parameter);
        self
    }

    /// The body is raw bytes.
    fn raw_body(mut self) -> Doc {
        self.raw_body = true;
        self
    }
}

/// A file path: UTF-8, absolute from the server's root.
fn file_path_schema() -> Value {
    json!({
        "type": "string",
        "pattern": "^/",
        "maxLength": 4096,
        "description": "Absolute from the server's root; `..` may not climb out of it.",
    })
}

fn file_paths_schema() -> Value {
    json!({ "type": "array", "minItems": 1, "maxItems": 1000, "items": file_path_schema() })
}

/// The `path` query parameter (`/` when optional and absent).
fn file_path(required: bool) -> Value {
    json!({
        "name": "path",
        "in": "query",
        "required": required,
        "description": "Absolute from the server's root; `/` when absent.",
        "schema": file_path_schema(),
    })
}
