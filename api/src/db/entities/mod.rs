//! sea-orm entities, one module per table.

pub mod audit_log;
pub mod backup;
pub mod command;
pub mod email_token;
pub mod encryption_key;
pub mod membership;
pub mod node;
pub mod node_join_token;
pub mod refresh_token;
pub mod secret;
pub mod server;
pub mod session;
pub mod template;
pub mod tenant;
pub mod user;
