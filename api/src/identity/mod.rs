//! Accounts and sessions: registration with email verification, login (with a TOTP second step
//! when the account has it on, see [`totp`] and `mfa`), access tokens, refresh tokens rotated in
//! families with reuse detection, logout, password reset.
//!
//! Crypto lives in `security` (argon2id, JWT); this module keeps the state. Password hashing
//! runs on the blocking pool behind a semaphore with a bounded queue, so a burst of logins
//! neither starves the runtime nor waits for seconds: what is over the queue is shed at once.

mod email;
use email::Purpose;
pub(crate) mod keys;
pub mod lock;
mod mfa;
mod passwords;
mod refresh;
pub mod sessions;
pub mod tokens;
pub mod totp;

pub use mfa::{LoginOutcome, MFA_ATTEMPTS, MFA_TTL, Proof};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use security::jwt::{Claims, KeyRing};
use security::password::{self, Verdict};
use serde_json::json;
use tokio::sync::{Semaphore, broadcast};

use crate::Error;
use crate::audit::{self, AuditEvent};
use crate::clock::SharedClock;
use crate::config::{Environment, SecurityConfig};
use crate::db::entities::{session, user};
use crate::mailer::Mailer;
use crate::metrics::Metrics;

/// Access tokens live 15 minutes.
pub const ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
/// Refresh tokens live 30 days.
pub const REFRESH_TTL: Duration = Duration::from_secs(30 * 86_400);
/// Email verification tokens live 24 hours.
pub const VERIFY_TTL: Duration = Duration::from_secs(86_400);
/// Password reset tokens live 1 hour.
pub const RESET_TTL: Duration = Duration::from_secs(3600);
/// Hashings that may wait per hashing slot; more are shed at once.
pub const QUEUE_PER_SLOT: usize = 4;
/// `Retry-After` of a shed request: a queue's worth of hashing is well under a second.
const SHED_RETRY_AFTER_SECS: u64 = 1;
/// Mail jobs (look-up, token, send) that may run after their answer at once; more are dropped.
const MAIL_JOBS: usize = 64;
/// Revocation notices kept for slow event streams (one that lags re-checks its session).
const REVOCATION_BACKLOG: usize = 256;
/// Concurrent argon2 computations (each takes 19 MiB and a core for tens of milliseconds):
/// one core is always left to serve other requests.
fn hashing_slots() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// An access and refresh token, as login and refresh return them.
#[derive(Debug, Clone)]
pub struct TokenPair {
    /// The JWT.
    pub access_token: String,
    /// The opaque refresh token.
    pub refresh_token: String,
}

/// A caller authenticated by an access token whose session is live, or by an API key.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user (an API key's creator), as the database has it now.
    pub user: user::Model,
    /// How the caller proved it.
    pub credential: Credential,
}

/// What a caller presented.
#[derive(Debug, Clone)]
pub enum Credential {
    /// An access token of a live session.
    Session {
        /// The session (`sid`).
        id: String,
        /// The token's claims.
        claims: Claims,
    },
    /// A tenant API key (`mhp_…`).
    ApiKey(crate::apikeys::Grant),
}

impl Principal {
    /// The session of an access token; `None` for an API key.
    pub fn session_id(&self) -> Option<&str> {
        match &self.credential {
            Credential::Session { id, .. } => Some(id),
            Credential::ApiKey(_) => None,
        }
    }

    /// The API key, when the caller used one.
    pub fn api_key(&self) -> Option<&crate::apikeys::Grant> {
        match &self.credential {
            Credential::Session { .. } => None,
            Credential::ApiKey(grant) => Some(grant),
        }
    }

    /// Who audit rows name: the user, or `apikey:<id>` for a key.
    pub fn actor(&self) -> String {
        match &self.credential {
            Credential::Session { .. } => self.user.id.clone(),
            Credential::ApiKey(grant) => format!("apikey:{}", grant.id),
        }
    }

    /// Until when (Unix seconds) long-lived responses may stay open: the access token's
    /// expiry, or for a key an access token's lifetime from `now` (its own expiry if sooner).
    pub fn open_until(&self, now: i64) -> i64 {
        match &self.credential {
            Credential::Session { claims, .. } => claims.exp,
            Credential::ApiKey(grant) => {
                let cap = now + ACCESS_TTL.as_secs() as i64;
                grant.expires_at.map_or(cap, |at| at.timestamp().min(cap))
            }
        }
    }

    /// Refuses callers whose email is not verified (creating tenants, servers, secrets).
    pub fn require_verified(&self) -> Result<(), Error> {
        if self.user.email_verified {
            Ok(())
        } else {
            Err(Error::Forbidden {
                code: "email_not_verified",
                message: "verify your email address first",
            })
        }
    }
}

/// Which places of the password-hashing queue a login may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// The shared places: a flood of logins fills them.
    Anyone,
    /// Also the places kept for logins from a network that has logged into the account before
    /// (a flood from fresh addresses never takes them, so the owner still gets in).
    Familiar,
}

/// Who is asking, for audit rows.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The client IP.
    pub ip: Option<String>,
    /// The client's `User-Agent`, bounded (see [`sessions::bounded_user_agent`]); kept with a
    /// session opened by login.
    pub user_agent: Option<String>,
}

/// The identity service.
pub struct Identity {
    db: DatabaseConnection,
    keys: KeyRing,
    issuer: String,
    audiences: Vec<String>,
    /// The audience put into new tokens (the preflight's self-test signs with the same).
    token_audience: String,
    grace: Duration,
    public_url: String,
    mailer: Mailer,
    hashing: Arc<Semaphore>,
    metrics: Metrics,
    /// User ids whose sessions were just revoked in this process, for open event streams.
    revocations: broadcast::Sender<String>,
    /// Slots of mail jobs run after their request was answered.
    mail_jobs: Arc<Semaphore>,
    /// Hashings waiting for a slot now.
    queued: Arc<AtomicUsize>,
    /// At most this many may wait.
    queue_cap: usize,
    /// Where it reads the time.
    clock: SharedClock,
}

impl Identity {
    /// Loads the signing keys (generating a development key when none is configured outside
    /// production) and the mailer.
    pub fn new(
        config: &SecurityConfig,
        environment: Environment,
        db: DatabaseConnection,
        metrics: Metrics,
        clock: SharedClock,
    ) -> Result<Identity, Error> {
        let keys = keys::load(config, environment)?;
        let mailer = Mailer::new(config.smtp_url.as_deref(), &config.outbox_dir)?;
        Ok(Identity {
            db,
            keys,
            issuer: config.jwt_issuer.clone(),
            audiences: config.jwt_audiences.clone(),
            token_audience: config.token_audience().to_owned(),
            grace: config.refresh_grace,
            public_url: config.public_url.clone(),
            mailer,
            hashing: Arc::new(Semaphore::new(hashing_slots())),
            metrics,
            revocations: broadcast::channel(REVOCATION_BACKLOG).0,
            mail_jobs: Arc::new(Semaphore::new(MAIL_JOBS)),
            queued: Arc::new(AtomicUsize::new(0)),
            queue_cap: hashing_slots() * QUEUE_PER_SLOT,
            clock,
        })
    }

    /// The JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        self.keys.jwks()
    }

    /// Creates an unverified account and mails a verification link.
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        name: Option<&str>,
        origin: &Origin,
    ) -> Result<user::Model, Error> {
        let email = normalise_email(email)?;
        passwords::check_new(password, &email)?;
        if find_user(&self.db, &email).await?.is_some() {
            return Err(Error::Conflict(
                "an account with this email already exists".into(),
            ));
        }
        let hash = self.hash(password.to_owned()).await?;
        let user = user::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            email: Set(email.clone()),
            name: Set(name.map(|n| n.chars().take(255).collect())),
            password_hash: Set(hash),
            email_verified: Set(false),
            is_platform_admin: Set(false),
            created_at: Set(self.clock.now()),
            locked_at: Set(None),
        }
        .insert(&self.db)
        .await
        .map_err(|e| match e.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
                Error::Conflict("an account with this email already exists".into())
            }
            _ => Error::Db(e),
        })?;
        self.audit(&user.id, "auth.register", "success", origin)
            .await;
        self.send_verification(&user).await?;
        Ok(user)
    }

    /// Marks the account of a valid, unused verification token as verified.
    pub async fn verify_email(&self, token: &str, origin: &Origin) -> Result<user::Model, Error> {
        let user_id = self
            .consume_email_token(Purpose::VerifyEmail, token)
            .await?;
        user::Entity::update_many()
            .col_expr(user::Column::EmailVerified, Expr::value(true))
            .filter(user::Column::Id.eq(&user_id))
            .exec(&self.db)
            .await?;
        self.audit(&user_id, "auth.verify_email", "success", origin)
            .await;
        user::Entity::find_by_id(&user_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| Error::NotFound("user".into()))
    }

    /// Mails a new verification link if the account exists and is unverified; says nothing either way.
    pub async fn resend_verification(&self, email: &str) -> Result<(), Error> {
        let Ok(email) = normalise_email(email) else {
            return Ok(());
        };
        if let Some(user) = find_user(&self.db, &email).await?
            && !user.email_verified
        {
            self.send_verification(&user).await?;
        }
        Ok(())
    }

    /// Checks credentials and opens a session, or, when the account has TOTP on, answers with a
    /// challenge for the second step ([`Identity::login_mfa`]). Unknown emails cost a dummy
    /// verification, so the answer and its timing are the same as for a wrong password.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        tenant_id: Option<String>,
        origin: &Origin,
        lane: Lane,
    ) -> Result<LoginOutcome, Error> {
        // No account has a password longer than registration allows: such an attempt is
        // answered like an unknown email, without hashing a megabyte.
        let user = match normalise_email(email) {
            Ok(email) if password.len() <= password::MAX_BYTES => {
                find_user(&self.db, &email).await?
            }
            _ => None,
        };
        let Some(user) = user else {
            let cut = (0..=password.len().min(password::MAX_BYTES))
                .rev()
                .find(|&i| password.is_char_boundary(i))
                .unwrap_or(0);
            let password = password[..cut].to_owned();
            self.blocking_in(lane, move || password::dummy_verify(&password))
                .await?;
            self.audit(
                "unknown",
                "auth.login",
                "failure: invalid_credentials",
                origin,
            )
            .await;
            return Err(Error::InvalidCredentials);
        };
        let (phc, attempt) = (user.password_hash.clone(), password.to_owned());
        match self
            .blocking_in(lane, move || password::verify(&phc, &attempt))
            .await?
        {
            Verdict::Mismatch => {
                self.audit(
                    &user.id,
                    "auth.login",
                    "failure: invalid_credentials",
                    origin,
                )
                .await;
                return Err(Error::InvalidCredentials);
            }
            Verdict::Match { rehash } => {
                if rehash {
                    let hash = self.hash(password.to_owned()).await?;
                    user::Entity::update_many()
                        .col_expr(user::Column::PasswordHash, Expr::value(hash))
                        .filter(user::Column::Id.eq(&user.id))
                        .exec(&self.db)
                        .await?;
                }
            }
        }
        // A locked account is told so only after its password was right.
        if let Err(e) = lock::refuse_locked(&user) {
            self.audit(&user.id, "auth.login", "failure: locked", origin)
                .await;
            return Err(e);
        }
        // The token carries the tenant as a claim: only one the user belongs to is signed.
        let tenant_id = match tenant_id {
            None => None,
            Some(tid) => Some(self.member_tenant(&user.id, &tid, origin).await?),
        };
        if self.totp_active(&user.id).await? {
            let mfa_token = self
                .mfa_challenge(&user, tenant_id, self.clock.now())
                .await?;
            self.audit(&user.id, "auth.login", "mfa_required", origin)
                .await;
            return Ok(LoginOutcome::MfaRequired { mfa_token });
        }
        let pair = self.open_session(&user, tenant_id, origin).await?;
        self.audit(&user.id, "auth.login", "success", origin).await;
        Ok(LoginOutcome::Tokens(pair))
    }

    /// Opens a session of `user` (its default tenant already checked): the first token pair.
    async fn open_session(
        &self,
        user: &user::Model,
        tenant_id: Option<String>,
        origin: &Origin,
    ) -> Result<TokenPair, Error> {
        let session = session::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            user_id: Set(user.id.clone()),
            tenant_id: Set(tenant_id),
            created_at: Set(self.clock.now()),
            revoked_at: Set(None),
            revoked_reason: Set(None),
            ip: Set(origin.ip.clone()),
            user_agent: Set(origin.user_agent.clone()),
            last_used_at: Set(None),
        }
        .insert(&self.db)
        .await?;
        let refresh_token = refresh::issue(&self.db, &session.id, None, self.clock.now()).await?;
        Ok(TokenPair {
            access_token: self.access_token(user, &session)?,
            refresh_token,
        })
    }

    /// `tenant_id` normalised when `user_id` is a member of it; 400 (audited) otherwise.
    async fn member_tenant(
        &self,
        user_id: &str,
        tenant_id: &str,
        origin: &Origin,
    ) -> Result<String, Error> {
        let tenant_id = tenant_id.trim().to_ascii_lowercase();
        let member = uuid::Uuid::try_parse(&tenant_id).is_ok()
            && crate::tenancy::role_of(&self.db, &tenant_id, user_id)
                .await?
                .is_some();
        if member {
            return Ok(tenant_id);
        }
        self.audit(user_id, "auth.login", "failure: not_member", origin)
            .await;
        Err(Error::Invalid(
            "tenant_id: you are not a member of this tenant".into(),
        ))
    }

    /// Exchanges a refresh token for a new pair (see [`refresh`] for reuse detection).
    pub async fn refresh(&self, token: &str, origin: &Origin) -> Result<TokenPair, Error> {
        refresh::exchange(self, token, origin).await
    }

    /// Revokes the session of a refresh token. Unknown tokens are ignored.
    pub async fn logout(&self, token: &str, origin: &Origin) -> Result<(), Error> {
        if let Some(row) = refresh::find(&self.db, token).await? {
            revoke_sessions(
                &self.db,
                session::Column::Id.eq(&row.session_id),
                "logout",
                self.clock.now(),
            )
            .await?;
            if let Some(s) = session::Entity::find_by_id(&row.session_id)
                .one(&self.db)
                .await?
            {
                self.announce_revoked(&s.user_id);
                self.audit(&s.user_id, "auth.logout", "success", origin)
                    .await;
            }
        }
        Ok(())
    }

    /// Revokes every session of `user_id`: every refresh and access token stops working.
    pub async fn logout_all(&self, user_id: &str, origin: &Origin) -> Result<(), Error> {
        revoke_sessions(
            &self.db,
            session::Column::UserId.eq(user_id),
            "logout-all",
            self.clock.now(),
        )
        .await?;
        crate::apikeys::revoke_all_of(&self.db, user_id, None, self.clock.now()).await?;
        self.announce_revoked(user_id);
        self.audit(user_id, "auth.logout_all", "success", origin)
            .await;
        Ok(())
    }

    /// Mails a reset link if the account exists; says nothing either way.
    pub async fn request_password_reset(&self, email: &str, origin: &Origin) -> Result<(), Error> {
        let Ok(email) = normalise_email(email) else {
            return Ok(());
        };
        if let Some(user) = find_user(&self.db, &email).await? {
            let token = self
                .new_email_token(&user.id, Purpose::PasswordReset)
                .await?;
            let link = format!("{}/reset-password?token={token}", self.public_url);
            let body = format!(
                "Someone asked to reset the password of this account.\n\nReset it within an hour: {link}\n\nIf it was not you, ignore this mail.\n"
            );
            self.mailer
                .send(&user.email, "Reset your Mamba password", body)
                .await?;
            self.audit(&user.id, "auth.password_reset_requested", "success", origin)
                .await;
        }
        Ok(())
    }

    /// Sets a new password with a valid, unused reset token and revokes every session.
    pub async fn confirm_password_reset(
        &self,
        token: &str,
        new_password: &str,
        origin: &Origin,
    ) -> Result<(), Error> {
        // The policy needs the account's email: the token's user is read before it is used up,
        // so a refused password leaves the token usable.
        password::check_strength(new_password).map_err(|e| Error::WeakPassword(e.to_string()))?;
        if let Some(user) = self.email_token_user(Purpose::PasswordReset, token).await? {
            passwords::check_new(new_password, &user.email)?;
        }
        let user_id = self
            .consume_email_token(Purpose::PasswordReset, token)
            .await?;
        let hash = self.hash(new_password.to_owned()).await?;
        user::Entity::update_many()
            .col_expr(user::Column::PasswordHash, Expr::value(hash))
            .filter(user::Column::Id.eq(&user_id))
            .exec(&self.db)
            .await?;
        revoke_sessions(
            &self.db,
            session::Column::UserId.eq(&user_id),
            "password reset",
            self.clock.now(),
        )
        .await?;
        crate::apikeys::revoke_all_of(&self.db, &user_id, None, self.clock.now()).await?;
        self.announce_revoked(&user_id);
        self.audit(&user_id, "auth.password_reset", "success", origin)
            .await;
        Ok(())
    }

    /// Verifies an access token and that its session is still live; reads the user afresh.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal, Error> {
        let claims = self
            .keys
            .verify(
                bearer,
                self.clock.now().timestamp(),
                &self.issuer,
                &self.audiences,
            )
            .map_err(|e| {
                tracing::debug!(reason = %e, "access token refused");
                Error::Unauthenticated("invalid or expired access token")
            })?;
        let session = session::Entity::find_by_id(&claims.sid)
            .one(&self.db)
            .await?;
        let now = self.clock.now();
        match session {
            Some(s) if s.revoked_at.is_none() && s.user_id == claims.sub => {
                let stale = s.last_used_at.is_none_or(|at| {
                    now.signed_duration_since(at)
                        .to_std()
                        .is_ok_and(|age| age >= sessions::TOUCH_EVERY)
                });
                if stale {
                    self.touch(&s.id, now).await?;
                }
            }
            _ => {
                return Err(Error::Unauthenticated(
                    "the session of this token has ended",
                ));
            }
        }
        let user = user::Entity::find_by_id(&claims.sub)
            .one(&self.db)
            .await?
            .ok_or(Error::Unauthenticated("the account of this token is gone"))?;
        if user.locked_at.is_some() {
            return Err(Error::Unauthenticated("this account is locked"));
        }
        Ok(Principal {
            user,
            credential: Credential::Session {
                id: claims.sid.clone(),
                claims,
            },
        })
    }

    /// Whether the session of `principal` is still live (not revoked, its user still there):
    /// what open event streams re-check.
    pub async fn session_live(&self, principal: &Principal) -> Result<bool, Error> {
        let session_id = match &principal.credential {
            Credential::Session { id, .. } => id,
            Credential::ApiKey(grant) => {
                let user_live = user::Entity::find_by_id(&principal.user.id)
                    .one(&self.db)
                    .await?
                    .is_some_and(|u| u.locked_at.is_none());
                return Ok(user_live
                    && crate::apikeys::still_live(&self.db, grant, self.clock.now()).await?);
            }
        };
        let session = session::Entity::find_by_id(session_id)
            .one(&self.db)
            .await?;
        Ok(session.is_some_and(|s| s.revoked_at.is_none() && s.user_id == principal.user.id))
    }

    /// A slot for a mail job run after its request was answered; `None` when all are taken.
    pub fn mail_job(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.mail_jobs.clone().try_acquire_owned().ok()
    }

    /// Notices of sessions revoked by this process: the user id whose sessions changed.
    /// Revocations made elsewhere (another replica, the CLI) are caught by re-checking.
    pub fn revocations(&self) -> broadcast::Receiver<String> {
        self.revocations.subscribe()
    }

    /// Tells open event streams of `user_id` to re-check their session (or key).
    pub fn announce_revoked(&self, user_id: &str) {
        // No receivers is not an error: no stream is open.
        let _ = self.revocations.send(user_id.to_owned());
    }

    fn access_token(&self, user: &user::Model, session: &session::Model) -> Result<String, Error> {
        let now = self.clock.now().timestamp();
        let claims = Claims {
            sub: user.id.clone(),
            sid: session.id.clone(),
            email: user.email.clone(),
            tenant_id: session.tenant_id.clone(),
            role: None,
            iss: self.issuer.clone(),
            aud: self.token_audience.clone(),
            iat: now,
            exp: now + ACCESS_TTL.as_secs() as i64,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        Ok(self.keys.sign(&claims)?)
    }

    async fn hash(&self, password: String) -> Result<String, Error> {
        self.blocking(move || password::hash(&password))
            .await?
            .map_err(Error::from)
    }

    /// [`Identity::blocking_in`] the lane anyone may use.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        self.blocking_in(Lane::Anyone, work).await
    }

    /// Runs CPU-heavy work on the blocking pool, at most [`hashing_slots`] at a time, with at
    /// most [`QUEUE_PER_SLOT`] per slot waiting (twice that for [`Lane::Familiar`]): beyond that
    /// the work is refused at once ([`Error::Unavailable`], 503 with `Retry-After`) rather than
    /// queued for seconds.
    async fn blocking_in<T: Send + 'static>(
        &self,
        lane: Lane,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let cap = match lane {
            Lane::Anyone => self.queue_cap,
            Lane::Familiar => self.queue_cap * 2,
        };
        let permit = match self.hashing.clone().try_acquire_owned() {
            Ok(permit) => Ok(permit),
            Err(_) => {
                let Some(_place) = Queued::enter(&self.queued, cap, &self.metrics) else {
                    self.metrics.argon2_shed.inc();
                    return Err(Error::Unavailable(SHED_RETRY_AFTER_SECS));
                };
                self.hashing.clone().acquire_owned().await
            }
        };
        let _permit = permit.map_err(|_| Error::internal("hashing pool closed"))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(Error::internal)
    }

    async fn audit(&self, actor: &str, action: &str, outcome: &str, origin: &Origin) {
        let event = AuditEvent {
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: (actor != "unknown").then(|| actor.to_owned()),
            outcome: outcome.to_owned(),
            ip: origin.ip.clone(),
            details: json!({}),
            tenant_id: None,
        };
        if let Err(e) = audit::record(&self.db, event).await {
            tracing::error!(error = %e, "cannot write audit row");
        }
    }
}

/// A place in the hashing queue, given back when dropped (also when the request is dropped
/// while it waits).
struct Queued<'a> {
    queued: &'a AtomicUsize,
    metrics: &'a Metrics,
}

impl<'a> Queued<'a> {
    /// Takes a place if fewer than `cap` are taken.
    fn enter(queued: &'a AtomicUsize, cap: usize, metrics: &'a Metrics) -> Option<Queued<'a>> {
        queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        metrics.argon2_queue.inc();
        Some(Queued { queued, metrics })
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        self.metrics.argon2_queue.dec();
    }
}

/// Trims and lower-cases an email, and checks its shape loosely (one `@`, no spaces).
pub fn normalise_email(email: &str) -> Result<String, Error> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 320
        && email.split('@').count() == 2
        && email.split('@').all(|part| !part.is_empty())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email)
    } else {
        Err(Error::Invalid("email is not a valid address".into()))
    }
}

/// Makes the user with `email` a platform administrator (the `api admin grant` command; there is
/// deliberately no endpoint for it). Audited.
pub async fn grant_platform_admin(
    db: &DatabaseConnection,
    email: &str,
) -> Result<user::Model, Error> {
    let email = normalise_email(email)?;
    let user = find_user(db, &email)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user {email}")))?;
    user::Entity::update_many()
        .col_expr(user::Column::IsPlatformAdmin, Expr::value(true))
        .filter(user::Column::Id.eq(&user.id))
        .exec(db)
        .await?;
    let event = AuditEvent {
        actor: "cli".into(),
        action: "admin.grant".into(),
        target: Some(user.id.clone()),
        outcome: "success".into(),
        ip: None,
        details: json!({ "email": email }),
        tenant_id: None,
    };
    audit::record(db, event).await?;
    Ok(user::Model {
        is_platform_admin: true,
        ..user
    })
}

async fn find_user(db: &DatabaseConnection, email: &str) -> Result<Option<user::Model>, Error> {
    Ok(user::Entity::find()
        .filter(user::Column::Email.eq(email))
        .one(db)
        .await?)
}

/// Revokes the live sessions matching `which`.
async fn revoke_sessions(
    db: &DatabaseConnection,
    which: sea_orm::sea_query::SimpleExpr,
    reason: &str,
    now: chrono::DateTime<Utc>,
) -> Result<u64, Error> {
    let result = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now))
        .col_expr(session::Column::RevokedReason, Expr::value(reason))
        .filter(which)
        .filter(session::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}
