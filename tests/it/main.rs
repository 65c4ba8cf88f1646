//! The one integration-test binary: every black-box test of the workspace, by area.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod abuse;
mod accounts;
mod api_keys;
mod binaries;
mod boundary;
mod dev_ca;
mod files;
mod files_bounds;
mod files_fleet;
mod files_transport;
mod files_writes;
mod fleet;
mod fleet_admission;
mod fleet_cluster;
mod fleet_events;
mod fleet_failover;
mod fleet_proxy;
mod hardening;
mod identity;
mod invitations;
mod limiter;
mod node_admission;
mod node_boundary;
mod node_bounds;
mod node_channel;
mod node_enroll;
mod node_identity;
mod node_renew;
mod node_root_rotation;
mod openapi;
mod panel_identity;
mod preflight;
mod rbac;
mod secrets;
mod servers;
mod servers_exec;
mod shutdown;
mod totp;

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

/// [`on_both_databases!`] for tests that need root (Wings giving each server its own user and
/// cgroups): ignored unless asked for; `scripts/test.sh` runs them when it is root.
#[macro_export]
macro_rules! on_both_databases_as_root {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs root"]
                async fn sqlite() {
                    super::$name(tests::DbKind::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs root"]
                async fn postgres() {
                    super::$name(tests::DbKind::Postgres).await
                }
            }
        )*
    };
}
