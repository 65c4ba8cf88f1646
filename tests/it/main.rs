//! The one integration-test binary: every black-box test of the workspace, by area.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod abuse;
mod binaries;
mod boundary;
mod dev_ca;
mod hardening;
mod identity;
mod limiter;
mod node_channel;
mod openapi;
mod preflight;
mod rbac;
mod secrets;
mod servers;
mod shutdown;

/// Runs an async test body once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(tests::DbKind::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(tests::DbKind::Postgres).await
                }
            }
        )*
    };
}
