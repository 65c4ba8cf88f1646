//! sea-orm entities, one module per table.

pub mod audit_log;
pub mod email_token;
pub mod node;
pub mod refresh_token;
pub mod session;
pub mod user;
