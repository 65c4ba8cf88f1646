//! The `wings` binary: `wings` runs the agent, `wings check` validates configuration and
//! certificates and exits. Everything else is in the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use wings::agent::{self, AgentStatus};
use wings::supervisor::Supervisor;

#[derive(Parser)]
#[command(
    name = "wings",
    version,
    about = "Mamba Wings node agent (configured by WINGS_* variables)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate configuration and certificates, print what was found, and exit.
    Check,
    /// Join the panel with a one-time token: make a key here, send a CSR, write the key,
    /// certificate and root where the agent reads them, print the WINGS_* lines and exit.
    Enroll {
        /// The panel's REST URL, https only (its own TLS or a TLS proxy in front).
        #[arg(long)]
        panel: String,
        /// The root CA (bundle) the panel's certificates chain to.
        #[arg(long)]
        ca_cert: std::path::PathBuf,
        /// The join token (`api node add … --join-token`).
        #[arg(long, env = "WINGS_JOIN_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Internal: join the given cgroups, set the limits, drop to the server's user, then exec
    /// the command with the server's environment (how a server's process is inside its
    /// cgroups, unprivileged, before it runs a single instruction of its own).
    #[command(hide = true)]
    EnterCgroups {
        /// `cgroup.procs` files to write this process's pid to.
        #[arg(long = "procs")]
        procs: Vec<std::path::PathBuf>,
        /// The server's uid.
        #[arg(long)]
        uid: u32,
        /// The server's gid.
        #[arg(long)]
        gid: u32,
        /// The open-files limit.
        #[arg(long)]
        nofile: u64,
        /// The Unix socket to report the exec on (closed unsaid on success, else the reason).
        #[arg(long)]
        exec_report: Option<std::path::PathBuf>,
        /// The command to exec.
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Internal: become `uid` and kill every process of it (how Wings ends a server's
    /// processes in one step).
    #[command(hide = true)]
    KillUser {
        /// The uid whose processes die.
        #[arg(long)]
        uid: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::EnterCgroups {
        procs,
        uid,
        gid,
        nofile,
        exec_report,
        command,
    }) = &cli.command
    {
        let identity = wings::isolation::Identity {
            uid: *uid,
            gid: *gid,
            open_files: *nofile,
        };
        return wings::isolation::enter_and_exec(procs, identity, exec_report.as_deref(), command);
    }
    if let Some(Command::KillUser { uid }) = &cli.command {
        return wings::isolation::kill_as_user(*uid);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
    security::tls::install_default_provider();

    if let Some(Command::Enroll {
        panel,
        ca_cert,
        token,
    }) = &cli.command
    {
        return enroll(panel, ca_cert, token);
    }
    let config = match wings::Config::from_env() {
        Ok(config) => config,
        Err(errors) => return refuse("configuration", &errors),
    };
    let report = match config.check(SystemTime::now()) {
        Ok(report) => report,
        Err(errors) => return refuse("certificate check", &errors),
    };
    if matches!(cli.command, Some(Command::Check)) {
        println!("wings check: OK");
        println!("  node id:     {}", config.node_id);
        for (host, port) in &config.panels {
            println!("  panel:       {host}:{port}");
        }
        println!(
            "  certificate: {} (CN {})",
            config.cert_file.display(),
            report.common_name
        );
        println!("  fingerprint: {}", report.fingerprint);
        println!("  expires in:  {} days", report.days_left);
        if nix::unistd::Uid::effective().is_root() {
            let cgroups = wings::isolation::Cgroups::detect_at(&config.cgroup_root);
            let missing = cgroups.missing();
            let unconfined = cgroups.unconfined();
            println!(
                "  isolation:   root: a system user per server (uids {}-{}), cgroups {} ({})",
                config.uid_range.start(),
                config.uid_range.end(),
                cgroups.version(),
                if missing.is_empty() {
                    "memory, pids and cpu limits enforced".to_owned()
                } else {
                    format!(
                        "missing {}: those limits are NOT enforced",
                        missing.join(", ")
                    )
                }
            );
            if !unconfined.is_empty() {
                if config.allow_unconfined {
                    println!(
                        "  unconfined:  WINGS_ALLOW_UNCONFINED=1: servers run without {}",
                        unconfined.join(" and ")
                    );
                } else {
                    println!(
                        "  unconfined:  servers will NOT start: the {} controller is missing (WINGS_ALLOW_UNCONFINED=1 overrides)",
                        unconfined.join(" and ")
                    );
                }
            }
        } else {
            println!(
                "  isolation:   NOT root: servers run as this user, without per-server users or cgroups"
            );
        }
        return ExitCode::SUCCESS;
    }
    tracing::info!(node = %config.node_id, fingerprint = %report.fingerprint, days_left = report.days_left, "starting");

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wings: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Walks over tenants' trees hold a descriptor per level: take the hard limit of open
    // files as the soft one (servers get their own limit from their template).
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let (status, _) = tokio::sync::watch::channel(AgentStatus::Connecting);
        let (supervisor, uplink) = match Supervisor::load(&config.supervisor_options()) {
            Ok(loaded) => loaded,
            Err(e) => {
                eprintln!("wings: {}: {e}", wings::config::WINGS_DATA_DIR);
                return ExitCode::FAILURE;
            }
        };
        let agent = tokio::spawn(agent::run(
            config,
            supervisor,
            uplink,
            status,
            shutdown.clone(),
        ));
        wait_for_signal().await;
        shutdown.cancel();
        let _ = agent.await;
        ExitCode::SUCCESS
    })
}

fn enroll(panel: &str, ca_cert: &std::path::Path, token: &str) -> ExitCode {
    let request = wings::enroll::Request {
        panel: panel.to_owned(),
        ca_cert: ca_cert.to_owned(),
        token: token.to_owned(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wings: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(wings::enroll::enroll(&request, |name| {
        std::env::var(name).ok()
    })) {
        Ok(enrolled) => {
            eprintln!(
                "wings: enrolled as {} (fingerprint {}, pinned by the panel); run the agent with:",
                enrolled.node_id, enrolled.fingerprint
            );
            for (name, value) in &enrolled.env {
                println!("{name}={value}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wings: enrolment failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn refuse(what: &str, errors: &[String]) -> ExitCode {
    eprintln!("wings: refusing to start, {what} failed:");
    for e in errors {
        eprintln!("  - {e}");
    }
    ExitCode::FAILURE
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
