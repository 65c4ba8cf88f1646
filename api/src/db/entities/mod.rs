//! sea-orm entities, one module per table.

pub mod api_key;
pub mod audit_log;
pub mod backup;
pub mod command;
pub mod email_token;
pub mod encryption_key;
pub mod invitation;
pub mod membership;
pub mod mfa_challenge;
pub mod node;
pub mod node_join_token;
pub mod node_owner;
pub mod recovery_code;
pub mod refresh_token;
pub mod secret;
pub mod server;
pub mod session;
pub mod states;
pub mod template;
pub mod tenant;
pub mod totp_credential;
pub mod user;
