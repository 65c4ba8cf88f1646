//! Every gRPC status the panel ends a node's call with, in one place: from the panel's
//! [`Error`], from an admission [`Rejection`] and from a [`Kick`]. REST's counterpart is
//! `http::error`. Statuses carry `code: sentence` messages a node can act on, and never an
//! internal detail (those are logged here).

use tonic::Status;

use super::Rejection;
use crate::Error;
use crate::nodes::registry::Kick;

/// The status a node sees for `error`.
pub fn of_error(error: &Error) -> Status {
    match error {
        Error::NotFound(what) => Status::not_found(format!("{what} not found")),
        Error::Conflict(msg) => Status::failed_precondition(msg.clone()),
        Error::Invalid(msg) => Status::invalid_argument(msg.clone()),
        other => {
            tracing::error!(error = %other, "internal error on the node channel");
            Status::unavailable("the panel cannot serve this request right now")
        }
    }
}

/// The status for a connection or stream refused after the handshake.
pub fn of_rejection(rejection: Rejection) -> Status {
    let message = format!("{}: {}", rejection.reason(), rejection.message());
    match rejection {
        Rejection::PanelUnavailable => Status::unavailable(message),
        Rejection::InvalidCommonName | Rejection::UnknownNode => Status::unauthenticated(message),
        _ => Status::permission_denied(message),
    }
}

/// The status that ends a stream the panel drops.
pub fn of_kick(kick: Kick) -> Status {
    match kick {
        Kick::Disabled => {
            Status::permission_denied("node_disabled: this node was disabled in the panel")
        }
        Kick::FingerprintReset => Status::permission_denied(
            "fingerprint_reset: the pinned certificate of this node was reset; reconnect to pin again",
        ),
        Kick::Deleted => {
            Status::permission_denied("unknown_node: this node was removed from the panel")
        }
        Kick::Replaced => Status::aborted("replaced: a newer connection of this node took over"),
        Kick::Shutdown => {
            Status::unavailable("shutting_down: the panel is restarting, reconnect now")
        }
    }
}

/// The first message of a stream was not `Hello`.
pub fn hello_expected() -> Status {
    Status::invalid_argument("the first message must be Hello")
}

/// The stream closed before its `Hello`.
pub fn closed_before_hello() -> Status {
    Status::cancelled("stream closed before Hello")
}

/// No `Hello` came in time.
pub fn hello_timeout(secs: u64) -> Status {
    Status::deadline_exceeded(format!("no Hello within {secs} s"))
}

/// The node went quiet for `secs`.
pub fn heartbeat_timeout(secs: u64) -> Status {
    Status::deadline_exceeded(format!("heartbeat_timeout: no message for {secs} s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_detail_never_reaches_the_node() {
        let status = of_error(&Error::internal("secret path /etc/x"));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(!status.message().contains("/etc/x"));
        let status = of_error(&Error::NotFound("server s1".into()));
        assert_eq!(status.code(), tonic::Code::NotFound);
    }

    #[test]
    fn kicks_name_their_reason_first() {
        for (kick, code) in [
            (Kick::Disabled, "node_disabled"),
            (Kick::FingerprintReset, "fingerprint_reset"),
            (Kick::Deleted, "unknown_node"),
            (Kick::Replaced, "replaced"),
            (Kick::Shutdown, "shutting_down"),
        ] {
            assert!(of_kick(kick).message().starts_with(code), "{kick:?}");
        }
    }
}
