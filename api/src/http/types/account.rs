//! Accounts: users, sessions, tokens, the second factor, and the public meta routes (health,
//! the JWKS).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::tenancy::RoleName;
use crate::db::entities::user;

/// A user as the API shows them.
#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    /// The user's id.
    #[schema(format = Uuid)]
    pub id: String,
    /// Their email address (lower-cased).
    pub email: String,
    /// Their name, if they gave one.
    #[schema(required = true)]
    pub name: Option<String>,
    /// Whether they followed the verification link.
    pub email_verified: bool,
}

impl From<&user::Model> for User {
    fn from(user: &user::Model) -> User {
        User {
            id: user.id.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
            email_verified: user.email_verified,
        }
    }
}

/// `{"user": ...}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserEnvelope {
    /// The user.
    pub user: User,
}

/// The caller and their memberships.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// The caller.
    pub user: User,
    /// Every tenant they belong to, with their role.
    pub memberships: Vec<Membership>,
}

/// A tenant the caller belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct Membership {
    /// The tenant.
    #[schema(format = Uuid)]
    pub tenant_id: String,
    /// The caller's role in it.
    #[schema(value_type = RoleName)]
    pub role: authz::Role,
}

/// One of the caller's live sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    /// The session id.
    #[schema(format = Uuid)]
    pub id: String,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// When it was last used (to the minute).
    #[schema(required = true)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// The client IP at login.
    #[schema(required = true)]
    pub ip: Option<String>,
    /// The client's `User-Agent` at login.
    #[schema(required = true)]
    pub user_agent: Option<String>,
    /// Whether it is the caller's own.
    pub current: bool,
}

/// `{"items": [...]}`: the caller's live sessions, newest first, at most 100.
#[derive(Debug, Serialize, ToSchema)]
pub struct Sessions {
    /// The sessions.
    pub items: Vec<Session>,
}

/// An access token and its refresh token.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    /// The access token (a JWT).
    pub access_token: String,
    /// The refresh token (one use).
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: TokenType,
    /// Seconds the access token is valid.
    #[schema(minimum = 0)]
    pub expires_in: u64,
}

impl From<crate::identity::TokenPair> for TokenPair {
    fn from(pair: crate::identity::TokenPair) -> TokenPair {
        TokenPair {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            token_type: TokenType::Bearer,
            expires_in: crate::identity::ACCESS_TTL.as_secs(),
        }
    }
}

/// The kind of token a [`TokenPair`] holds.
#[derive(Debug, Serialize, ToSchema)]
pub enum TokenType {
    /// `Authorization: Bearer <access_token>`.
    Bearer,
}

/// The account has TOTP on: finish with `POST /api/auth/login/mfa`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaChallenge {
    /// Always true.
    pub mfa_required: bool,
    /// The second step's token.
    pub mfa_token: String,
    /// Seconds the token is valid.
    #[schema(minimum = 0)]
    pub expires_in: u64,
}

/// What a right password answers: tokens, or a second step.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginAnswer {
    /// No second factor: the tokens.
    Tokens(TokenPair),
    /// TOTP is on: a second step.
    Mfa(MfaChallenge),
}

/// A new TOTP secret, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpSetup {
    /// Base32, no padding.
    pub secret: String,
    /// `otpauth://totp/…`.
    pub otpauth_uri: String,
    /// The URI as a QR code, SVG.
    pub qr_svg: String,
}

/// Ten single-use recovery codes, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// `xxxxx-xxxxx-xxxxx-xxxxx`.
    #[schema(min_items = 10, max_items = 10)]
    pub recovery_codes: Vec<String>,
}

/// Liveness and dependencies.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `degraded` when the database is down.
    pub status: HealthStatus,
    /// The database.
    pub db: Up,
    /// Redis: `disabled` when none is configured.
    pub redis: crate::limits::RedisStatus,
    /// Nodes connected to this panel.
    #[schema(minimum = 0)]
    pub nodes_online: usize,
}

/// The panel as a whole.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Everything it needs answers.
    Ok,
    /// The database does not.
    Degraded,
}

/// A dependency that is up or down.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Up {
    /// It answers.
    Ok,
    /// It does not.
    Down,
}

/// The keys that verify access tokens.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JwkSet {
    /// The active key and the retired ones still accepted.
    pub keys: Vec<Jwk>,
}

/// An Ed25519 (`OKP`) or P-256 (`EC`) public key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Jwk {
    /// `OKP` or `EC`.
    pub kty: String,
    /// `Ed25519` or `P-256`.
    pub crv: String,
    /// The public key (base64url).
    pub x: String,
    /// P-256 keys only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// The key id.
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub alg: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}
