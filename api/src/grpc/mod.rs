//! The node channel's server side: a tokio-rustls accept loop that authenticates every
//! connection before tonic sees a byte of it ([`listener`]), the admission checks and their
//! audit rows (`admission`, run on every connection and again on every stream), the bounds on
//! what a node sends ([`bounds`]), the caps on handshakes ([`gate`]) and the folding of
//! pre-authentication refusals into one audit row per address and minute (`fold`), the TLS set-up
//! ([`tls`]) and the `NodeControl` service that runs the stream ([`service`]).
//!
//! tonic's built-in TLS would drop failed handshakes silently; accepting connections ourselves
//! lets every rejection — at the TLS layer or after it — be audited, counted and explained.

mod admission;
pub mod bounds;
mod fold;
pub mod gate;
pub mod listener;
pub mod service;
pub mod status;
pub mod tls;

/// Why a connection was turned away; the `reason` label of audit rows and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The client presented no certificate.
    NoClientCertificate,
    /// The certificate does not chain to the panel's CA.
    UnknownCa,
    /// The certificate has expired.
    CertificateExpired,
    /// The certificate is not valid yet.
    CertificateNotYetValid,
    /// The certificate is otherwise unacceptable (usage, encoding, signature).
    BadCertificate,
    /// The handshake failed for a reason other than the certificate.
    HandshakeFailed,
    /// The handshake did not finish in time.
    HandshakeTimeout,
    /// Too many handshakes were in progress (overall or from the address).
    TooManyHandshakes,
    /// The certificate's subject does not hold exactly one UTF-8 CN.
    InvalidCommonName,
    /// No node has the certificate's CN as id.
    UnknownNode,
    /// The node is disabled.
    NodeDisabled,
    /// The node has another certificate pinned.
    FingerprintMismatch,
    /// The node's pinned certificate was reset after this connection was admitted.
    FingerprintReset,
    /// The panel could not check the node (database down).
    PanelUnavailable,
}

impl Rejection {
    /// Every reason, so each is exported (at 0) before it first happens.
    pub const ALL: [Rejection; 14] = [
        Rejection::NoClientCertificate,
        Rejection::UnknownCa,
        Rejection::CertificateExpired,
        Rejection::CertificateNotYetValid,
        Rejection::BadCertificate,
        Rejection::HandshakeFailed,
        Rejection::HandshakeTimeout,
        Rejection::TooManyHandshakes,
        Rejection::InvalidCommonName,
        Rejection::UnknownNode,
        Rejection::NodeDisabled,
        Rejection::FingerprintMismatch,
        Rejection::FingerprintReset,
        Rejection::PanelUnavailable,
    ];

    /// The reason label.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::NoClientCertificate => "no_client_certificate",
            Rejection::UnknownCa => "unknown_ca",
            Rejection::CertificateExpired => "certificate_expired",
            Rejection::CertificateNotYetValid => "certificate_not_yet_valid",
            Rejection::BadCertificate => "bad_certificate",
            Rejection::HandshakeFailed => "handshake_failed",
            Rejection::HandshakeTimeout => "handshake_timeout",
            Rejection::TooManyHandshakes => "too_many_handshakes",
            Rejection::InvalidCommonName => "invalid_common_name",
            Rejection::UnknownNode => "unknown_node",
            Rejection::NodeDisabled => "node_disabled",
            Rejection::FingerprintMismatch => "fingerprint_mismatch",
            Rejection::FingerprintReset => "fingerprint_reset",
            Rejection::PanelUnavailable => "panel_unavailable",
        }
    }

    /// The sentence the node sees in the gRPC status.
    pub fn message(self) -> &'static str {
        match self {
            Rejection::InvalidCommonName => {
                "certificate subject must hold exactly one UTF-8 common name (the node id)"
            }
            Rejection::UnknownNode => {
                "no node with this certificate's CN is registered in the panel"
            }
            Rejection::NodeDisabled => "this node is disabled in the panel",
            Rejection::FingerprintMismatch => {
                "another certificate is pinned for this node; an operator must reset its fingerprint"
            }
            Rejection::FingerprintReset => {
                "the pinned certificate of this node was reset; reconnect to pin again"
            }
            Rejection::PanelUnavailable => "the panel cannot check this node right now",
            Rejection::CertificateExpired => "the certificate has expired",
            Rejection::CertificateNotYetValid => "the certificate is not valid yet",
            _ => "TLS handshake rejected",
        }
    }
}

impl From<crate::nodes::store::Refusal> for Rejection {
    fn from(refusal: crate::nodes::store::Refusal) -> Self {
        use crate::nodes::store::Refusal;
        match refusal {
            Refusal::UnknownNode => Rejection::UnknownNode,
            Refusal::Disabled => Rejection::NodeDisabled,
            Refusal::FingerprintMismatch => Rejection::FingerprintMismatch,
            Refusal::FingerprintReset => Rejection::FingerprintReset,
        }
    }
}
