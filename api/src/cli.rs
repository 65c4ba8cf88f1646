//! The `api` command line: `serve`, `migrate`, the `node`, `admin`, `user` and `keys` commands.
//! Node and user changes go to the database; a running panel sees them within a second (a
//! user's sessions at their next request) and drops affected streams.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::config::{Config, Environment};
use crate::db::entities::node;
use crate::error::ConfigErrors;
use crate::nodes::view::Node;
use crate::preflight::Level;
use crate::{Error, db, nodes::store};

#[derive(Parser)]
#[command(
    name = "api",
    version,
    about = "Mamba Host Panel: REST API and node channel"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the panel (REST on PANEL_HTTP_ADDR, node channel on PANEL_GRPC_ADDR).
    Serve,
    /// Check the configuration and its dependencies without opening a port; exits non-zero
    /// on any error. `api serve` runs the same checks first (fatal in production).
    Preflight {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Create or upgrade the database schema and exit.
    Migrate,
    /// Manage nodes.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Platform administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Incident response on an account (audited).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Master encryption keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-wrap every secret's data key under MASTER_ENCRYPTION_KEY (ciphertexts untouched).
    /// Resumable: run it again after an interruption. Keep the old key in
    /// MASTER_ENCRYPTION_KEYS_RETIRED until it reports nothing remaining.
    Rotate {
        /// Secrets per committed batch.
        #[arg(long, default_value_t = 500)]
        batch: u64,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Make an existing user a platform administrator (nodes, templates, platform audit).
    Grant {
        /// The user's email.
        email: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Lock the account: logins and refreshes are refused, every session ends at its next
    /// request (event streams included).
    Lock {
        /// The user's email.
        email: String,
    },
    /// Unlock the account (its ended sessions stay ended).
    Unlock {
        /// The user's email.
        email: String,
    },
    /// End every session of the account at its next request; the account stays usable.
    RevokeSessions {
        /// The user's email.
        email: String,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Register a node; its certificate's CN must equal <id>.
    Add {
        /// The node id, [a-z0-9][a-z0-9-]{0,62}.
        id: String,
        /// The node's fully qualified domain name.
        fqdn: String,
        /// A display name (defaults to the id).
        #[arg(long)]
        name: Option<String>,
        /// Ports its servers get, e.g. 30000-30099.
        #[arg(long)]
        ports: Option<String>,
        /// Also make a one-time join token for `wings enroll` (printed once).
        #[arg(long)]
        join_token: bool,
        /// How long the join token is valid: 90s, 30m, 1h, 7d (60 s to 7 days).
        #[arg(long, default_value = "1h", requires = "join_token")]
        ttl: String,
    },
    /// List nodes with online state, last_seen and fingerprint.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Refuse the node's connections and drop its live stream.
    Disable {
        /// The node id.
        id: String,
    },
    /// Accept the node's connections again.
    Enable {
        /// The node id.
        id: String,
    },
    /// Forget the pinned fingerprint; the next valid certificate is pinned.
    ResetFingerprint {
        /// The node id.
        id: String,
    },
    /// Make the node renew its certificate now (with overlap; no offline time).
    Rotate {
        /// The node id.
        id: String,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    security::tls::install_default_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("api: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("api: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Serve => {
            // Production: every problem at once, before anything else happens.
            let report = crate::preflight::run(|name| std::env::var(name).ok()).await;
            if report.environment == Environment::Production && !report.passed() {
                // One log event per finding: JSON, like every production log line.
                for finding in &report.findings {
                    match finding.level {
                        Level::Error => {
                            tracing::error!(variable = %finding.subject, "preflight: {}", finding.message)
                        }
                        Level::Warning => {
                            tracing::warn!(variable = %finding.subject, "preflight: {}", finding.message)
                        }
                    }
                }
                tracing::error!("refusing to start in production");
                return Err(Error::PreflightFailed);
            }
            let config =
                Config::from_env().map_err(|errors| Error::Config(ConfigErrors(errors)))?;
            for finding in &report.findings {
                tracing::warn!(variable = %finding.subject, "preflight: {}", finding.message);
            }
            crate::run(config).await
        }
        Command::Preflight { json } => {
            let report = crate::preflight::run(|name| std::env::var(name).ok()).await;
            if json {
                println!("{}", report.json());
            } else {
                print!("{}", report.text());
            }
            if report.passed() {
                Ok(())
            } else {
                Err(Error::PreflightFailed)
            }
        }
        Command::Keys {
            command: KeysCommand::Rotate { batch },
        } => {
            let get = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
            let mut errors = Vec::new();
            let identity = crate::config::SecurityConfig::from_lookup(&get, &mut errors);
            let environment = match get(crate::config::PANEL_ENV).as_deref() {
                Some("production") => crate::config::Environment::Production,
                _ => crate::config::Environment::Development,
            };
            if !errors.is_empty() {
                return Err(Error::Config(ConfigErrors(errors)));
            }
            let db = operator_db().await?;
            let vault = crate::secrets::Vault::load(&identity, environment)?;
            vault.check(&db).await?;
            let report = crate::secrets::rotate(&db, &vault, batch.max(1), None).await?;
            println!(
                "active key {}: {} data keys re-wrapped, {} failed, {} remaining under other keys",
                vault.active_id(),
                report.rewrapped,
                report.failed,
                report.remaining
            );
            if report.failed > 0 {
                return Err(Error::config(
                    crate::config::MASTER_ENCRYPTION_KEYS_RETIRED,
                    format!(
                        "{} secrets could not be re-wrapped: is every old key here?",
                        report.failed
                    ),
                ));
            }
            Ok(())
        }
        // The one command that changes the schema (in production; elsewhere the others do too).
        Command::Migrate => {
            db::connect_and_migrate(&Config::database_url_from_env()).await?;
            println!("database schema is up to date");
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::Grant { email },
        } => {
            let db = operator_db().await?;
            let user = crate::identity::grant_platform_admin(&db, &email).await?;
            println!("{} is now a platform administrator", user.email);
            Ok(())
        }
        Command::User { command } => {
            use crate::identity::lock::{self, UserCommand as Do};
            let (what, email) = match command {
                UserCommand::Lock { email } => (Do::Lock, email),
                UserCommand::Unlock { email } => (Do::Unlock, email),
                UserCommand::RevokeSessions { email } => (Do::RevokeSessions, email),
            };
            let db = operator_db().await?;
            let (user, ended) = lock::run(&db, what, &email, chrono::Utc::now()).await?;
            match what {
                Do::Lock => println!("{} locked; {ended} sessions ended", user.email),
                Do::Unlock => println!("{} unlocked", user.email),
                Do::RevokeSessions => println!("{}: {ended} sessions ended", user.email),
            }
            Ok(())
        }
        Command::Node { command } => {
            let db = operator_db().await?;
            match command {
                NodeCommand::Add {
                    id,
                    fqdn,
                    name,
                    ports,
                    join_token,
                    ttl,
                } => {
                    let range = ports.as_deref().map(store::parse_ports).transpose()?;
                    // The same units as RATE_LIMITS windows (s, m, h, d).
                    let ttl = security::limiter::Rule::parse(&format!("1/{ttl}"))
                        .map_err(|e| Error::Invalid(format!("--ttl: {e}")))?
                        .window;
                    let mut node = store::add(&db, &id, &fqdn, name.as_deref()).await?;
                    if let Some(range) = range {
                        node = store::set_ports(&db, &id, range).await?;
                    }
                    println!(
                        "node {} added ({}); its certificate's CN must be {}",
                        node.id, node.fqdn, node.id
                    );
                    if join_token {
                        let (token, expires_at) =
                            crate::nodes::enroll::create_token(&db, &id, ttl, chrono::Utc::now())
                                .await?;
                        crate::audit::record_or_log(&db, crate::audit::AuditEvent {
                            actor: "cli".into(),
                            action: "node.join_token".into(),
                            target: Some(id.clone()),
                            outcome: "ok".into(),
                            ip: None,
                            details: json!({ "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true) }),
                            tenant_id: None,
                        })
                        .await;
                        println!(
                            "join token (shown once, valid until {}):",
                            expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        );
                        println!("{token}");
                        println!(
                            "on the node: wings enroll --panel <https-url> --ca-cert <root.pem> --token <token>"
                        );
                    }
                }
                NodeCommand::List { json } => {
                    let nodes = store::list(&db).await?;
                    if json {
                        let rows: Vec<Node> = nodes
                            .iter()
                            .map(|n| Node::new(n, chrono::Utc::now()))
                            .collect();
                        let rows = serde_json::to_string(&rows).map_err(Error::internal)?;
                        println!("{rows}");
                    } else {
                        print_table(&nodes);
                    }
                }
                NodeCommand::Disable { id } => {
                    store::set_enabled(&db, &id, false).await?;
                    println!(
                        "node {id} disabled; a running panel drops its stream within a second"
                    );
                }
                NodeCommand::Enable { id } => {
                    store::set_enabled(&db, &id, true).await?;
                    println!("node {id} enabled");
                }
                NodeCommand::Rotate { id } => {
                    crate::nodes::renew::request_rotation(&db, &id).await?;
                    crate::audit::record_or_log(
                        &db,
                        crate::audit::AuditEvent {
                            actor: "cli".into(),
                            action: "node.rotate".into(),
                            target: Some(id.clone()),
                            outcome: "ok".into(),
                            ip: None,
                            details: json!({}),
                            tenant_id: None,
                        },
                    )
                    .await;
                    println!(
                        "node {id}: renewal requested; the panel holding its stream passes it on within a second"
                    );
                }
                NodeCommand::ResetFingerprint { id } => {
                    store::reset_fingerprint(&db, &id).await?;
                    println!(
                        "node {id}: fingerprint reset; the next valid certificate will be pinned"
                    );
                }
            }
            Ok(())
        }
    }
}

fn print_table(nodes: &[node::Model]) {
    let now = chrono::Utc::now();
    println!(
        "{:<24} {:<8} {:<7} {:<20} {:<20} {:<22} {:<20} FINGERPRINT",
        "ID", "ENABLED", "ONLINE", "LAST SEEN", "CERT EXPIRES", "RENEWAL", "LAST RENEWED"
    );
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into())
    };
    for n in nodes {
        let fp = n
            .fingerprint
            .as_deref()
            .map(|f| f.get(..16).unwrap_or(f))
            .unwrap_or("-");
        println!(
            "{:<24} {:<8} {:<7} {:<20} {:<20} {:<22} {:<20} {fp}",
            n.id,
            n.enabled,
            n.online,
            time(n.last_seen),
            time(n.cert_not_after),
            crate::nodes::lifecycle::renewal_state(n, now),
            time(n.last_renewed_at),
        );
    }
}

/// Logs go to stderr: one JSON object per line in production (or with `LOG_FORMAT=json`),
/// text otherwise. Nothing logged carries a token, password or secret value: requests are
/// logged by method, path and status only, never headers, query strings or bodies.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,sea_orm_migration=warn,sqlx=warn")
    });
    let json = match std::env::var(crate::config::LOG_FORMAT).ok().as_deref() {
        Some("json") => true,
        Some("text") => false,
        _ => std::env::var(crate::config::PANEL_ENV).is_ok_and(|env| env == "production"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

/// The database for an operator's command: in production the schema must already be current
/// (`api migrate` runs once, before the replicas; a command never migrates behind their back),
/// in development it is brought up to date as the panel would.
async fn operator_db() -> Result<sea_orm::DatabaseConnection, Error> {
    let url = Config::database_url_from_env();
    match std::env::var(crate::config::PANEL_ENV).as_deref() {
        Ok("production") => db::connect_current(&url).await,
        _ => db::connect_and_migrate(&url).await,
    }
}
