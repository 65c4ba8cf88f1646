//! Failed logins, counted two ways. Per client (an IPv4 address or an IPv6 /64): ten failures
//! within an hour block it for an hour. Per account: twenty failures within 15 minutes from
//! places the account has not logged in from make it refuse further attempts from such places
//! (429 with `Retry-After`) for 15 minutes, before any password is checked. The owner, logging
//! in from a network that has logged into the account before (remembered 30 days), is never
//! throttled: an attacker spread over many addresses gets about 20 guesses per half hour on an
//! account but cannot lock its owner out. Unknown emails are throttled the same way, so the
//! throttle says nothing about which accounts exist. A familiar network's logins may also use
//! places of the password-hashing queue a flood from fresh addresses cannot take.

use std::sync::Arc;
use std::time::Duration;

use security::limiter::Rule;

use super::guard::ClientIp;
use crate::identity::Lane;
use crate::{AppState, Error};

/// Failed logins from one client within an hour that block it for an hour.
const CLIENT_FAILURES: Rule = Rule {
    limit: 10,
    window: Duration::from_secs(3600),
};
/// Failed logins on one account from unfamiliar places that throttle it (above the per-client
/// block, so one client meets its own block first).
const ACCOUNT_FAILURES: Rule = Rule {
    limit: 20,
    window: Duration::from_secs(15 * 60),
};
/// How long a throttled account refuses attempts from unfamiliar places.
const ACCOUNT_THROTTLE: Duration = Duration::from_secs(15 * 60);
/// How long a network that logged into an account stays familiar to it.
const FAMILIAR_FOR: Duration = Duration::from_secs(30 * 86_400);

/// One login attempt's keys.
pub(super) struct Attempt {
    client: String,
    account: String,
}

impl Attempt {
    /// The attempt of `ip` on `email` (normalised; anything malformed shares one key).
    pub(super) fn new(ip: ClientIp, email: &str) -> Attempt {
        let account = crate::identity::normalise_email(email).unwrap_or_else(|_| "-".into());
        Attempt {
            client: ip.limit_key(),
            account,
        }
    }

    fn familiar_key(&self) -> String {
        format!("login-familiar:{}:{}", self.account, self.client)
    }

    fn account_key(&self) -> String {
        format!("login-account:{}", self.account)
    }

    fn client_key(&self) -> String {
        format!("login:{}", self.client)
    }

    /// Refuses a blocked client, and an unfamiliar one on a throttled account; otherwise the
    /// lane of the hashing queue the attempt may use.
    pub(super) async fn admit(&self, state: &Arc<AppState>) -> Result<Lane, Error> {
        let limits = &state.limits;
        if limits.is_blocked(&self.client_key()).await {
            return Err(Error::RateLimited {
                retry_after_secs: CLIENT_FAILURES.window.as_secs(),
            });
        }
        if limits.is_blocked(&self.familiar_key()).await {
            return Ok(Lane::Familiar);
        }
        if limits.is_blocked(&self.account_key()).await {
            return Err(Error::RateLimited {
                retry_after_secs: ACCOUNT_THROTTLE.as_secs(),
            });
        }
        Ok(Lane::Anyone)
    }

    /// Counts a failure against the client and, from an unfamiliar place, the account.
    pub(super) async fn failed(&self, state: &Arc<AppState>) {
        let limits = &state.limits;
        let failures = limits
            .check(&format!("login-failures:{}", self.client), CLIENT_FAILURES)
            .await;
        if !failures.allowed || failures.remaining == 0 {
            limits
                .block(&self.client_key(), CLIENT_FAILURES.window)
                .await;
            tracing::warn!(client = %self.client, "too many failed logins: blocked for an hour");
        }
        if limits.is_blocked(&self.familiar_key()).await {
            return;
        }
        let failures = limits
            .check(
                &format!("login-account-failures:{}", self.account),
                ACCOUNT_FAILURES,
            )
            .await;
        if !failures.allowed || failures.remaining == 0 {
            limits.block(&self.account_key(), ACCOUNT_THROTTLE).await;
            tracing::warn!("too many failed logins on one account: unfamiliar places throttled");
        }
    }

    /// Remembers the client's network as familiar to the account.
    pub(super) async fn succeeded(&self, state: &Arc<AppState>) {
        state.limits.block(&self.familiar_key(), FAMILIAR_FOR).await;
    }
}
