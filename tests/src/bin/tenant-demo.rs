//! `tenant-demo`: the tenant story of `scripts/demo.sh`, told over the panel's REST API as a
//! client would tell it. A platform admin and a tenant admin register and verify through the
//! mail outbox; the admin is granted with `api admin grant` and defines a template; the tenant
//! admin makes a tenant, a server on a connected node, starts it, watches its console over
//! SSE, stops it, invites a teammate by address (who registers and accepts), makes an API key
//! for a deploy script (written to `--key-out` for the demo's `curl`), deletes the server (its
//! system user and cgroups go with it), and reads the tenant's audit log.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde_json::{Value, json};
use tests::Rest;

#[derive(Parser)]
#[command(about = "The tenant story of the demo, over REST")]
struct Args {
    /// The panel's REST base URL.
    #[arg(long)]
    panel: String,
    /// The panel's mail outbox folder.
    #[arg(long)]
    outbox: PathBuf,
    /// The `api` binary (for `api admin grant`).
    #[arg(long)]
    api_bin: PathBuf,
    /// A connected node to place the server on.
    #[arg(long)]
    node: String,
    /// The program the template runs.
    #[arg(long)]
    program: String,
    /// Where to write `TENANT=` and `KEY=` of the deploy script's API key (mode 0600).
    #[arg(long)]
    key_out: Option<PathBuf>,
}

fn show(what: &str, status: reqwest::StatusCode, body: &Value) {
    println!("  {what:<44} -> {} {}", status.as_u16(), body);
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(story(args))
}

async fn story(args: Args) -> anyhow::Result<()> {
    let rest = Rest::new(args.panel.clone());
    println!("A platform admin registers, verifies through the outbox, is granted by the CLI:");
    rest.verified_user(&args.outbox, "ops@example.com").await;
    let granted = std::process::Command::new(&args.api_bin)
        .args(["admin", "grant", "ops@example.com"])
        .output()?;
    anyhow::ensure!(granted.status.success(), "api admin grant failed");
    print!("  {}", String::from_utf8_lossy(&granted.stdout));
    let admin = rest.login("ops@example.com").await;
    let (status, body) = admin
        .post(
            "/api/admin/templates",
            json!({
                "name": "ticker",
                "command": args.program,
                "args": ["--interval-ms", "{{INTERVAL}}", "--motd={{MOTD}}"],
                "variables": [
                    {"name": "INTERVAL", "pattern": "[0-9]{2,5}", "default": "500"},
                    {"name": "MOTD", "pattern": "[ -~]{0,200}", "default": "welcome"},
                ],
            }),
        )
        .await;
    show(
        "POST /api/admin/templates",
        status,
        &json!({"name": body["name"]}),
    );
    // A template may not steer how a program is loaded: a loader hook is refused by name.
    let (status, body) = admin
        .post(
            "/api/admin/templates",
            json!({
                "name": "preloaded",
                "command": args.program,
                "variables": [{"name": "LD_PRELOAD", "pattern": ".*", "default": ""}],
            }),
        )
        .await;
    anyhow::ensure!(status == 400, "a loader hook was accepted: {body}");
    show(
        "POST /api/admin/templates (LD_PRELOAD)",
        status,
        &body["error"],
    );

    println!("\nA tenant admin registers, makes a tenant and a server:");
    let (alice, _) = rest.verified_user(&args.outbox, "alice@example.com").await;
    let (status, body) = alice.get("/api/templates").await;
    show("GET /api/templates", status, &body["items"]);
    let (status, body) = alice.get("/api/nodes").await;
    show("GET /api/nodes", status, &body["items"]);
    let (status, tenant) = alice
        .post("/api/tenants", json!({"name": "Acme Games"}))
        .await;
    show("POST /api/tenants", status, &tenant);
    let tenant_id = tenant["id"].as_str().unwrap_or_default();
    let servers = format!("/api/tenants/{tenant_id}/servers");
    let (status, server) = alice
        .post(
            &servers,
            json!({"name": "lobby", "node_id": args.node, "template": "ticker",
                   "variables": {"MOTD": "hello from Acme; $(not a shell)"}}),
        )
        .await;
    show(
        "POST …/servers",
        status,
        &json!({"id": server["id"], "state": server["state"]}),
    );
    anyhow::ensure!(status == reqwest::StatusCode::CREATED, "server not created");
    let path = format!("{servers}/{}", server["id"].as_str().unwrap_or_default());
    for _ in 0..40 {
        if alice.get(&path).await.1["state"] == "offline" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "  the node installed it: state {}",
        alice.get(&path).await.1["state"]
    );

    println!("\nStart it and watch its console over SSE (GET …/events):");
    let mut events = alice
        .events(&format!("{path}/events"))
        .await
        .map_err(|(s, b)| anyhow::anyhow!("events: {s} {b}"))?;
    let (status, body) = alice
        .post(&format!("{path}/power"), json!({"action": "start"}))
        .await;
    show("POST …/power {start}", status, &body);
    let mut lines = 0;
    events
        .until(
            "running and six console lines",
            Duration::from_secs(20),
            |name, v| {
                match name {
                    "status" => println!("  event: status  {}", v["state"]),
                    "console" => {
                        lines += 1;
                        println!("  event: console {}", v["line"]);
                    }
                    _ => {}
                }
                lines >= 6
            },
        )
        .await;
    let (status, body) = alice
        .post(&format!("{path}/power"), json!({"action": "stop"}))
        .await;
    show("POST …/power {stop}", status, &body);
    events
        .until("offline", Duration::from_secs(20), |name, v| {
            if name == "status" {
                println!("  event: status  {} {}", v["state"], v["reason"]);
            }
            name == "status" && v["state"] == "offline"
        })
        .await;

    files(&args, &alice, &path).await?;

    teammate_and_key(&rest, &alice, &args, tenant_id).await?;

    let (status, _) = alice.call(reqwest::Method::DELETE, &path, None).await;
    show("DELETE …/servers/{id}", status, &Value::Null);

    println!("\nThe tenant's audit log (newest first):");
    let (_, audit) = alice.get(&format!("/api/tenants/{tenant_id}/audit")).await;
    for row in audit["items"].as_array().into_iter().flatten() {
        println!(
            "  {}  {:<14} {:<10} {}",
            row["at"].as_str().unwrap_or_default(),
            row["action"].as_str().unwrap_or_default(),
            row["outcome"].as_str().unwrap_or_default(),
            row["details"]
        );
    }
    Ok(())
}

/// The file manager: alice uploads a config file, lists the server's root, edits the file only
/// if nobody changed it meanwhile (If-Match), reads it back, and is refused a path that climbs
/// out of the server.
async fn files(args: &Args, alice: &Rest, server: &str) -> anyhow::Result<()> {
    println!("\nThe server's files (beneath its root, as its own user):");
    let http = reqwest::Client::new();
    let token = alice.token.clone().unwrap_or_default();
    let url = |rest: &str| format!("{}{server}/files{rest}", args.panel);
    let put = |body: &'static str, etag: Option<String>| {
        let mut request = http
            .put(url("/content?path=/server.properties"))
            .bearer_auth(&token)
            .body(body);
        if let Some(etag) = etag {
            request = request.header("if-match", etag);
        }
        request.send()
    };
    let response = put("motd=hello\nmax-players=20\n", None).await?;
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    println!(
        "  PUT …/files/content?path=/server.properties -> {} ETag {etag}",
        response.status()
    );
    let (status, listing) = alice.get(&format!("{server}/files?path=/")).await;
    let names: Vec<&str> = listing["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["name"].as_str())
        .collect();
    println!("  GET …/files?path=/ -> {status} {names:?}");
    let edited = put("motd=edited\nmax-players=20\n", Some(etag.clone())).await?;
    println!("  PUT with If-Match {etag} -> {}", edited.status());
    let stale = put("motd=lost update\n", Some(etag)).await?;
    println!(
        "  PUT with the same, now stale, If-Match -> {}",
        stale.status()
    );
    anyhow::ensure!(
        stale.status() == reqwest::StatusCode::CONFLICT,
        "a stale edit was taken"
    );
    let body = http
        .get(url("/content?path=/server.properties"))
        .bearer_auth(&token)
        .send()
        .await?
        .text()
        .await?;
    println!("  GET …/files/content -> {body:?}");
    let (status, refused) = alice
        .post(
            &format!("{server}/files/mkdir"),
            json!({"path": "/../../etc/evil"}),
        )
        .await;
    show(
        "POST …/files/mkdir {/../../etc/evil}",
        status,
        &refused["error"],
    );
    anyhow::ensure!(
        status == reqwest::StatusCode::BAD_REQUEST,
        "a path out was taken"
    );
    Ok(())
}

/// Alice invites bob by address (he has no account yet: the answer is the same), bob
/// registers, finds the link in his mail and accepts; then alice makes a deploy script's key.
async fn teammate_and_key(
    rest: &Rest,
    alice: &Rest,
    args: &Args,
    tenant_id: &str,
) -> anyhow::Result<()> {
    println!(
        "\nAlice invites a teammate by address (the same answer whether or not it has an account):"
    );
    let (status, invited) = alice
        .post(
            &format!("/api/tenants/{tenant_id}/invitations"),
            json!({"email": "bob@example.com", "role": "support"}),
        )
        .await;
    show(
        "POST …/invitations",
        status,
        &json!({"email": invited["email"], "role": invited["role"], "expires_at": invited["expires_at"]}),
    );
    let (bob, _) = rest.verified_user(&args.outbox, "bob@example.com").await;
    let mut token = None;
    for _ in 0..50 {
        token = tests::mail::outbox_for(&args.outbox, "bob@example.com")
            .iter()
            .rfind(|m| m.subject.contains("invited"))
            .and_then(tests::mail::Mail::token);
        if token.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = token.ok_or_else(|| anyhow::anyhow!("no invitation mail for bob"))?;
    let (status, body) = bob
        .post("/api/invitations/accept", json!({"token": token}))
        .await;
    show("POST /api/invitations/accept (bob)", status, &body);
    let (status, tenants) = bob.get("/api/tenants").await;
    let joined: Vec<Value> = tenants["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| json!({"name": t["name"], "role": t["role"]}))
        .collect();
    show("GET /api/tenants (bob)", status, &json!(joined));

    println!("\nA key for a deploy script: this tenant only, only what it was given, shown once:");
    let (status, key) = alice
        .post(
            &format!("/api/tenants/{tenant_id}/api-keys"),
            json!({"name": "deploy script", "permissions": ["server:read", "audit:read"]}),
        )
        .await;
    show(
        "POST …/api-keys",
        status,
        &json!({"prefix": key["prefix"], "permissions": key["permissions"]}),
    );
    let whole = key["key"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no key in {key}"))?;
    if let Some(out) = &args.key_out {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(out)?;
        writeln!(file, "TENANT={tenant_id}\nKEY={whole}")?;
    }
    Ok(())
}
