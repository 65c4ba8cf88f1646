//! `dev-ca`: the development certificate authority of Mamba Host Panel.
//!
//! A thin command line over `security::pki`: it makes the root CA and the panel's issuing
//! intermediate, issues node and panel certificates (from its own keys, or by signing a node's
//! CSR with the issuer), verifies them and prints the `WINGS_*` variables a node needs. All the PKI
//! logic lives in `security`; this file only parses arguments, reads and writes files, and
//! prints.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use security::pki::{self, CertLayout, CertificateAuthority, LeafKind, LeafSpec, validate_node_id};
use serde_json::json;
use time::OffsetDateTime;

#[derive(Parser)]
#[command(
    name = "dev-ca",
    version,
    about = "Development CA: issues the panel's and the nodes' certificates"
)]
struct Cli {
    /// Directory holding ca/, nodes/ and server/.
    #[arg(long, global = true, default_value = "certs")]
    dir: PathBuf,
    /// Machine-readable output (read commands).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the root CA (ECDSA P-256) under <dir>/ca/ and the panel's issuing intermediate
    /// under <dir>/issuer/. Keep ca/ca-key.pem offline: a running panel never needs it.
    Init {
        /// Replace an existing CA (every certificate it issued stops verifying).
        #[arg(long)]
        force: bool,
        /// Validity in days.
        #[arg(long, default_value_t = pki::CA_DAYS, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
    },
    /// Make (or renew, with --force) the panel's issuing intermediate under <dir>/issuer/,
    /// signed by the root in <dir>/ca/.
    Issuer {
        /// Validity in days.
        #[arg(long, default_value_t = pki::ISSUER_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// Replace an existing issuer (nodes keep their certificates: they chain to the root).
        #[arg(long)]
        force: bool,
    },
    /// Sign a node's CSR with the issuer (the key never leaves the node): writes
    /// <dir>/nodes/<id>-cert.pem holding the certificate and the issuer (the whole chain).
    SignCsr {
        /// The node id; the certificate's CN (a CSR naming another CN is refused).
        node_id: String,
        /// The CSR, PEM.
        csr: PathBuf,
        /// Host names or IP addresses for the subject alternative names.
        #[arg(long = "hostname")]
        hostnames: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = pki::NODE_CERT_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// Replace an existing certificate for this node.
        #[arg(long)]
        force: bool,
    },
    /// Issue a node certificate: CN = node id, SAN = the host names, client auth only.
    Generate {
        /// The node id, [a-z0-9][a-z0-9-]{0,62}.
        node_id: String,
        /// Host names or IP addresses for the subject alternative names.
        #[arg(required = true)]
        hostnames: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = pki::LEAF_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// Replace an existing certificate and key for this node.
        #[arg(long)]
        force: bool,
    },
    /// Issue the panel's gRPC server certificate for the given host names, with the panel
    /// identity (URI SAN spiffe://mamba/panel) that Wings requires.
    Server {
        /// Host names or IP addresses Wings dials the panel by.
        #[arg(required = true)]
        hostnames: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = pki::LEAF_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// Replace an existing server certificate.
        #[arg(long)]
        force: bool,
    },
    /// Check a node's certificate: chain, validity, CN, key; print fingerprint and days left.
    Verify {
        /// The node id.
        node_id: String,
    },
    /// Print the WINGS_* variables for a node.
    Env {
        /// The node id.
        node_id: String,
        /// The panel's gRPC URL.
        #[arg(long, default_value = "https://127.0.0.1:3001")]
        api_url: String,
    },
    /// List the node certificates with their fingerprints and expiry.
    List,
    /// Print a node certificate's SHA-256 fingerprint.
    Fingerprint {
        /// The node id.
        node_id: String,
    },
}

fn main() -> ExitCode {
    security::tls::install_default_provider();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dev-ca: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let layout = CertLayout::new(&cli.dir);
    let now = OffsetDateTime::now_utc();
    match &cli.command {
        Command::Init { force, days } => {
            refuse_existing(&[layout.ca_cert(), layout.ca_key()], *force)?;
            // A distinct name per CA, so that certificates of two dev CAs are never confused.
            let name = format!("Mamba Development CA {:08x}", rand_suffix());
            let ca = CertificateAuthority::generate(&name, now, *days)?;
            pki::write_private(&layout.ca_key(), &ca.key_pem())?;
            pki::write_public(&layout.ca_cert(), ca.cert_pem())?;
            let info = pki::inspect(ca.cert_der())?;
            println!("CA written to {}", layout.ca_cert().display());
            println!(
                "  key:         {} (0600; keep it offline)",
                layout.ca_key().display()
            );
            println!("  valid until: {}", rfc3339(info.not_after));
            println!("  fingerprint: {}", info.fingerprint);
            make_issuer(&layout, &ca, now, pki::ISSUER_DAYS)?;
        }
        Command::Issuer { days, force } => {
            refuse_existing(&[layout.issuer_cert(), layout.issuer_key()], *force)?;
            make_issuer(&layout, &load_ca(&layout)?, now, *days)?;
        }
        Command::SignCsr {
            node_id,
            csr,
            hostnames,
            days,
            force,
        } => {
            validate_node_id(node_id)?;
            let cert_path = layout.node_cert(node_id);
            refuse_existing(std::slice::from_ref(&cert_path), *force)?;
            let issuer = load_issuer(&layout)?;
            let csr_pem = std::fs::read(csr).with_context(|| csr.display().to_string())?;
            let spec = LeafSpec::new(LeafKind::Node, node_id, hostnames, now, *days);
            let signed = issuer.sign_node_csr(&csr_pem, &spec)?;
            let chain = format!("{}{}", signed.cert_pem, issuer.cert_pem());
            pki::write_public(&cert_path, &chain)?;
            let info = pki::inspect(&signed.cert_der)?;
            println!(
                "certificate written to {} (with the issuer)",
                cert_path.display()
            );
            println!("  CN:          {}", info.common_name);
            println!(
                "  valid until: {} ({} days)",
                rfc3339(info.not_after),
                info.days_left(now)
            );
            println!("  fingerprint: {}", info.fingerprint);
        }
        Command::Generate {
            node_id,
            hostnames,
            days,
            force,
        } => {
            validate_node_id(node_id)?;
            let (cert, key) = (layout.node_cert(node_id), layout.node_key(node_id));
            issue(
                &layout,
                LeafKind::Node,
                node_id,
                hostnames,
                *days,
                *force,
                &cert,
                &key,
            )?;
        }
        Command::Server {
            hostnames,
            days,
            force,
        } => {
            let (cert, key) = (layout.server_cert(), layout.server_key());
            issue(
                &layout,
                LeafKind::Server,
                "mamba-panel",
                hostnames,
                *days,
                *force,
                &cert,
                &key,
            )?;
        }
        Command::Verify { node_id } => verify(&layout, node_id, cli.json)?,
        Command::Env { node_id, api_url } => {
            validate_node_id(node_id)?;
            let vars = [
                ("WINGS_NODE_ID", node_id.clone()),
                ("WINGS_API_URL", api_url.clone()),
                ("WINGS_TLS_CERT_FILE", absolute(&layout.node_cert(node_id))?),
                ("WINGS_TLS_KEY_FILE", absolute(&layout.node_key(node_id))?),
                ("WINGS_API_CA_CERT", absolute(&layout.ca_cert())?),
            ];
            if cli.json {
                let map: serde_json::Map<_, _> = vars
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), json!(v)))
                    .collect();
                println!("{}", serde_json::Value::Object(map));
            } else {
                for (k, v) in vars {
                    println!("{k}={v}");
                }
            }
        }
        Command::List => list(&layout, now, cli.json)?,
        Command::Fingerprint { node_id } => {
            validate_node_id(node_id)?;
            let der = read_cert(&layout.node_cert(node_id))?;
            let fp = pki::fingerprint(&der);
            if cli.json {
                println!("{}", json!({ "node_id": node_id, "fingerprint": fp }));
            } else {
                println!("{fp}");
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn issue(
    layout: &CertLayout,
    kind: LeafKind,
    common_name: &str,
    hostnames: &[String],
    days: u32,
    force: bool,
    cert_path: &Path,
    key_path: &Path,
) -> anyhow::Result<()> {
    refuse_existing(&[cert_path.to_owned(), key_path.to_owned()], force)?;
    let ca = load_ca(layout)?;
    let now = OffsetDateTime::now_utc();
    let issued = ca.issue(&LeafSpec::new(kind, common_name, hostnames, now, days))?;
    pki::write_private(key_path, &issued.key_pem)?;
    pki::write_public(cert_path, &issued.cert_pem)?;
    let info = pki::inspect(&issued.cert_der)?;
    println!("certificate written to {}", cert_path.display());
    println!("  key:         {} (0600)", key_path.display());
    println!("  CN:          {}", info.common_name);
    println!("  SAN:         {}", info.hostnames.join(", "));
    println!(
        "  valid until: {} ({} days)",
        rfc3339(info.not_after),
        info.days_left(now)
    );
    println!("  fingerprint: {}", info.fingerprint);
    Ok(())
}

fn verify(layout: &CertLayout, node_id: &str, json: bool) -> anyhow::Result<()> {
    validate_node_id(node_id)?;
    let roots = security::tls::read_certs(&layout.ca_cert())?;
    let cert_path = layout.node_cert(node_id);
    let chain = security::tls::read_certs(&cert_path)?;
    let cert = chain[0].clone();
    // A certificate signed from the node's CSR has no key here: the node keeps it.
    let key_path = layout.node_key(node_id);
    let key_pem = match std::fs::read_to_string(&key_path) {
        Ok(pem) => Some(pem),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| key_path.display().to_string()),
    };
    let info = pki::inspect(&cert)?;
    let now = OffsetDateTime::now_utc();
    let mut problems = Vec::new();
    if let Err(e) = pki::verify_chain(&roots, &chain, LeafKind::Node, None, SystemTime::now()) {
        problems.push(format!("chain/validity: {e}"));
    }
    if info.common_name != node_id {
        problems.push(format!(
            "CN is {:?}, expected {node_id:?}",
            info.common_name
        ));
    }
    match key_pem.map(|pem| pki::key_matches_cert(&pem, &cert)) {
        None | Some(Ok(true)) => {}
        Some(Ok(false)) => problems.push("the key file does not match the certificate".into()),
        Some(Err(e)) => problems.push(format!("key: {e}")),
    }
    if json {
        println!(
            "{}",
            json!({
                "node_id": node_id,
                "ok": problems.is_empty(),
                "problems": problems,
                "common_name": info.common_name,
                "hostnames": info.hostnames,
                "fingerprint": info.fingerprint,
                "not_before": rfc3339(info.not_before),
                "not_after": rfc3339(info.not_after),
                "days_left": info.days_left(now),
            })
        );
    } else {
        println!(
            "{}: {}",
            cert_path.display(),
            if problems.is_empty() { "OK" } else { "FAILED" }
        );
        println!("  CN:          {}", info.common_name);
        println!("  SAN:         {}", info.hostnames.join(", "));
        println!("  fingerprint: {}", info.fingerprint);
        println!(
            "  valid until: {} ({} days left)",
            rfc3339(info.not_after),
            info.days_left(now)
        );
        for p in &problems {
            println!("  problem:     {p}");
        }
    }
    if !problems.is_empty() {
        bail!("{node_id}: {}", problems.join("; "));
    }
    Ok(())
}

fn list(layout: &CertLayout, now: OffsetDateTime, json: bool) -> anyhow::Result<()> {
    let dir = layout.root().join("nodes");
    let mut ids: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix("-cert.pem")
                    .map(str::to_owned)
            })
            .filter(|id| validate_node_id(id).is_ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| dir.display().to_string()),
    };
    ids.sort();
    let mut rows = Vec::new();
    for id in &ids {
        let info = pki::inspect(&read_cert(&layout.node_cert(id))?)?;
        rows.push(json!({
            "node_id": id,
            "common_name": info.common_name,
            "hostnames": info.hostnames,
            "fingerprint": info.fingerprint,
            "not_after": rfc3339(info.not_after),
            "days_left": info.days_left(now),
        }));
        if !json {
            println!(
                "{id:<24} {:>5} days  {}",
                info.days_left(now),
                info.fingerprint
            );
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(rows));
    } else if ids.is_empty() {
        println!("no node certificates under {}", dir.display());
    }
    Ok(())
}

/// Makes the issuing intermediate under `root` and writes it to `issuer/`.
fn make_issuer(
    layout: &CertLayout,
    root: &CertificateAuthority,
    now: OffsetDateTime,
    days: u32,
) -> anyhow::Result<()> {
    let name = format!("Mamba Issuer {:08x}", rand_suffix());
    let issuer = root.generate_issuer(&name, now, days)?;
    pki::write_private(&layout.issuer_key(), &issuer.key_pem())?;
    pki::write_public(&layout.issuer_cert(), issuer.cert_pem())?;
    let info = pki::inspect(issuer.cert_der())?;
    println!("issuer written to {}", layout.issuer_cert().display());
    println!(
        "  key:         {} (0600; PANEL_ISSUER_KEY_FILE)",
        layout.issuer_key().display()
    );
    println!("  valid until: {}", rfc3339(info.not_after));
    println!("  fingerprint: {}", info.fingerprint);
    Ok(())
}

fn load_issuer(layout: &CertLayout) -> anyhow::Result<CertificateAuthority> {
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p)
            .with_context(|| format!("{} (run `dev-ca issuer` first)", p.display()))
    };
    Ok(CertificateAuthority::from_pem(
        &read(layout.issuer_cert())?,
        &read(layout.issuer_key())?,
    )?)
}

fn load_ca(layout: &CertLayout) -> anyhow::Result<CertificateAuthority> {
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p)
            .with_context(|| format!("{} (run `dev-ca init` first)", p.display()))
    };
    Ok(CertificateAuthority::from_pem(
        &read(layout.ca_cert())?,
        &read(layout.ca_key())?,
    )?)
}

fn read_cert(path: &Path) -> anyhow::Result<rustls_pki_types::CertificateDer<'static>> {
    Ok(security::tls::read_certs(path)?.swap_remove(0))
}

fn refuse_existing(paths: &[PathBuf], force: bool) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    if let Some(existing) = paths.iter().find(|p| p.exists()) {
        return Err(security::Error::AlreadyExists(existing.clone()).into());
    }
    Ok(())
}

fn rand_suffix() -> u32 {
    rand::random()
}

/// RFC 3339, UTC, whole seconds.
fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn absolute(path: &Path) -> anyhow::Result<String> {
    let abs = std::path::absolute(path).with_context(|| path.display().to_string())?;
    Ok(abs.display().to_string())
}
