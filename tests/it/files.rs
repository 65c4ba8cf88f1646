//! The file manager (issue 17) through the real `api` and `wings` binaries: browse, edit with
//! If-Match, 100 MB up and down with matching SHA-256, rename, delete, chmod, compress and
//! decompress; the traversal suite (`../`, absolute and encoded paths, links to `/etc`, links
//! swapped in while a download or a decompress runs, zip-slip, a zip bomb, a FIFO), another
//! tenant's server, `support` read-only, the quota, the upload cap and rate limit, and a node
//! that goes away mid-transfer.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::servers::{CAP, Stack, power, stack, stack_with, started_pid};
use tests::{DbKind, Proc, Rest, bin_path, eventually};

/// A server's files, as one caller reaches them.
pub(crate) struct Files {
    pub(crate) rest: Rest,
    /// `/api/tenants/{tid}/servers/{sid}/files`.
    pub(crate) base: String,
    http: reqwest::Client,
}

impl Files {
    pub(crate) fn new(rest: &Rest, server: &str) -> Files {
        Files {
            rest: rest.clone(),
            base: format!("{server}/files"),
            http: reqwest::Client::new(),
        }
    }

    pub(crate) fn as_caller(&self, rest: &Rest) -> Files {
        Files {
            rest: rest.clone(),
            base: self.base.clone(),
            http: self.http.clone(),
        }
    }

    pub(crate) fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{url}", self.rest.base));
        match &self.rest.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// GET …/files?path= (the query as given, not encoded again).
    pub(crate) async fn list_raw(&self, query: &str) -> (StatusCode, Value) {
        let response = self
            .request(Method::GET, &format!("{}?path={query}", self.base))
            .send()
            .await
            .unwrap();
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    pub(crate) async fn list(&self, path: &str) -> (StatusCode, Value) {
        self.list_raw(&encode(path)).await
    }

    /// GET …/files/content?path= (the query as given).
    pub(crate) async fn get_raw(
        &self,
        query: &str,
        range: Option<&str>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = self.request(Method::GET, &format!("{}/content?path={query}", self.base));
        if let Some(range) = range {
            request = request.header("range", range);
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        (status, headers, response.bytes().await.unwrap().to_vec())
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
        self.get_raw(&encode(path), None).await
    }

    /// PUT …/files/content?path=; the status, the ETag, the error body.
    pub(crate) async fn put(
        &self,
        path: &str,
        body: Vec<u8>,
        if_match: Option<&str>,
    ) -> (StatusCode, Option<String>, Value) {
        let mut request = self
            .request(
                Method::PUT,
                &format!("{}/content?path={}", self.base, encode(path)),
            )
            .body(body);
        if let Some(tag) = if_match {
            request = request.header("if-match", tag);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let etag = response
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, etag, response.json().await.unwrap_or(Value::Null))
    }

    /// POST …/files/{op} with a JSON body.
    pub(crate) async fn op(&self, op: &str, body: Value) -> (StatusCode, Value) {
        self.rest.post(&format!("{}/{op}", self.base), body).await
    }
}

/// Percent-encodes a query value.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub(crate) fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What most file tests start from: the stack, and one server of alice's made from a template
/// of its own (`name`: the ticker, ticking once a second, with `disk_mb` of disk).
pub(crate) struct OneServer {
    pub(crate) stack: Stack,
    /// The server's REST path.
    pub(crate) url: String,
    pub(crate) sid: String,
    pub(crate) tid: String,
    /// Its files, through the panel.
    pub(crate) files: Files,
}

pub(crate) async fn one_server(name: &str, disk_mb: u64) -> OneServer {
    let stack = stack(DbKind::Sqlite).await;
    template(&stack.admin, name, &["--interval-ms", "1000"], disk_mb).await;
    let (url, sid, tid) = server(&stack.alice, &stack.wings, name).await;
    let files = Files::new(&stack.alice, &url);
    OneServer {
        stack,
        url,
        sid,
        tid,
        files,
    }
}

/// A template running the ticker with `args` and a `disk_mb` quota.
pub(crate) async fn template(admin: &Rest, name: &str, args: &[&str], disk_mb: u64) {
    let (status, body) = admin
        .post(
            "/api/admin/templates",
            json!({
                "name": name,
                "command": bin_path("ticker").display().to_string(),
                "args": args,
                "limits": {"memory_mb": 256, "max_processes": 64, "disk_mb": disk_mb},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A new tenant of `rest`'s with an installed server of `template`: (server URL, server id,
/// tenant id).
pub(crate) async fn server(rest: &Rest, wings: &Proc, template: &str) -> (String, String, String) {
    let (_, tenant) = rest.post("/api/tenants", json!({"name": "t"})).await;
    let tid = tenant["id"].as_str().unwrap().to_owned();
    let servers = format!("/api/tenants/{tid}/servers");
    let (status, body) = rest
        .post(
            &servers,
            json!({"name": template, "node_id": "node-1", "template": template}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sid = body["id"].as_str().unwrap().to_owned();
    let url = format!("{servers}/{sid}");
    let deadline = std::time::Instant::now() + CAP;
    while rest.get(&url).await.1["state"] != "offline" {
        assert!(
            std::time::Instant::now() < deadline,
            "not installed\nWings:\n{}",
            wings.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (url, sid, tid)
}

pub(crate) fn server_dir(tmp: &Path, sid: &str) -> PathBuf {
    tmp.join("wings/servers").join(sid)
}

/// What is in a directory on disk, sorted.
pub(crate) fn on_disk(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `size` bytes that do not compress, the same for the same seed.
pub(crate) fn noise(size: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    let mut block = Sha256::digest([seed]).to_vec();
    while out.len() < size {
        block = Sha256::digest(&block).to_vec();
        out.extend_from_slice(&block);
    }
    out.truncate(size);
    out
}

pub(crate) fn zip_of(entries: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    for (name, target) in links {
        zip.add_symlink(*name, *target, options).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

pub(crate) fn tar_gz(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut builder = tar::Builder::new(gz);
    for (name, kind, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        // Written raw: the builder would refuse `..` itself.
        header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Browse, edit with If-Match, 100 MB each way, rename, chmod, delete, compress and
/// decompress, on disk as the server's user; then the traversal suite, another tenant's
/// server and `support`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn files_end_to_end_as_the_servers_user() {
    let Stack {
        tmp,
        admin,
        alice,
        wings,
        panel: _panel,
        ..
    } = stack(DbKind::Sqlite).await;
    template(&admin, "files", &["--interval-ms", "1000"], 1024).await;
    let (server_url, sid, tid) = server(&alice, &wings, "files").await;
    let files = Files::new(&alice, &server_url);
    let dir = server_dir(tmp.path(), &sid);
    let uid = std::fs::metadata(&dir).unwrap().uid();
    assert_ne!(uid, 0, "the server has its own user");

    // Browse and edit.
    let (status, _) = files.op("mkdir", json!({"path": "/world/region"})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = files.op("mkdir", json!({"path": "/world"})).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"));
    let (status, etag, _) = files
        .put("/server.properties", b"motd=hi\n".to_vec(), None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let etag = etag.unwrap();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(b"motd=hi\n")));
    let meta = std::fs::metadata(dir.join("server.properties")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (uid, uid),
        "owned by the server's user"
    );
    let (status, page) = files.list("/").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["server.properties", "world"], "{page}");
    assert_eq!(items[0]["type"], "file");
    assert_eq!(items[0]["size"], 8);
    assert_eq!(items[1]["type"], "dir");
    assert!(page["next_cursor"].is_null());
    let (status, page) = files.list_raw("/&limit=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_cursor"], "server.properties");
    let (_, page) = files.list_raw("/&limit=1&cursor=server.properties").await;
    assert_eq!(page["items"][0]["name"], "world");
    // If-Match: the right tag replaces (204), a stale one is 409 and changes nothing.
    let (status, new_etag, _) = files
        .put("/server.properties", b"motd=edited\n".to_vec(), Some(&etag))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, body) = files
        .put("/server.properties", b"motd=lost\n".to_vec(), Some(&etag))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"));
    let (status, headers, bytes) = files.get("/server.properties").await;
    assert_eq!(
        (status, bytes.as_slice()),
        (StatusCode::OK, &b"motd=edited\n"[..])
    );
    assert_eq!(headers["etag"].to_str().unwrap(), new_etag.unwrap());
    let (status, _, body) = files.put("/world", b"x".to_vec(), None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "conflict"),
        "a directory"
    );
    let (status, _, body) = files.put("/nowhere/file", b"x".to_vec(), None).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    // 100 MB each way, bytes and SHA-256 equal; a range.
    let big = noise(100 << 20, 7);
    let digest = sha256_hex(&big);
    let (status, etag, body) = files.put("/world/big.bin", big.clone(), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(etag.unwrap(), format!("\"{digest}\""));
    assert_eq!(
        sha256_hex(&std::fs::read(dir.join("world/big.bin")).unwrap()),
        digest
    );
    let (status, headers, bytes) = files.get("/world/big.bin").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["content-length"],
        (100u64 << 20).to_string().as_str()
    );
    assert_eq!(headers["etag"].to_str().unwrap(), format!("\"{digest}\""));
    assert_eq!(sha256_hex(&bytes), digest);
    drop(bytes);
    let (status, headers, bytes) = files
        .get_raw("/world/big.bin", Some("bytes=1000-1999"))
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(bytes, big[1000..2000]);
    assert_eq!(
        headers["content-range"],
        format!("bytes 1000-1999/{}", 100u64 << 20).as_str()
    );
    let (status, _, bytes) = files.get_raw("/world/big.bin", Some("bytes=-10")).await;
    assert_eq!(
        (status, bytes.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &big[big.len() - 10..])
    );
    let (status, headers, _) = files
        .get_raw("/world/big.bin", Some("bytes=999999999-"))
        .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        headers["content-range"],
        format!("bytes */{}", 100u64 << 20).as_str()
    );
    drop(big);

    // Rename, chmod, delete.
    let (status, _) = files
        .op(
            "rename",
            json!({"from": "/world/big.bin", "to": "/big.bin"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(dir.join("big.bin").is_file() && !dir.join("world/big.bin").exists());
    let (status, body) = files
        .op(
            "rename",
            json!({"from": "/big.bin", "to": "/server.properties"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "conflict"),
        "no replacing"
    );
    let (status, _) = files
        .op("chmod", json!({"path": "/big.bin", "mode": 0o600}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let mode = std::fs::metadata(dir.join("big.bin"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
    for mode in [0o4755, 0o2755, 0o1777] {
        let (status, _) = files
            .op("chmod", json!({"path": "/big.bin", "mode": mode}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "mode {mode:o}");
    }
    let (status, _) = files.op("delete", json!({"paths": ["/big.bin"]})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!dir.join("big.bin").exists());

    // Compress, then decompress elsewhere: the same files.
    files
        .put("/world/region/r.0.0", noise(300_000, 1), None)
        .await;
    let (status, body) = files
        .op(
            "compress",
            json!({"paths": ["/world", "/server.properties"], "into": "/b.tar.gz"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(std::fs::metadata(dir.join("b.tar.gz")).unwrap().uid(), uid);
    let (status, body) = files
        .op(
            "decompress",
            json!({"path": "/b.tar.gz", "into": "/restored"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(
        std::fs::read(dir.join("restored/world/region/r.0.0")).unwrap(),
        noise(300_000, 1)
    );
    assert_eq!(
        std::fs::read(dir.join("restored/server.properties")).unwrap(),
        b"motd=edited\n"
    );
    assert_eq!(
        std::fs::metadata(dir.join("restored/world/region/r.0.0"))
            .unwrap()
            .uid(),
        uid
    );
    let (status, body) = files
        .op(
            "decompress",
            json!({"path": "/b.tar.gz", "into": "/restored"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "conflict"),
        "names exist"
    );
    files
        .put(
            "/a.zip",
            zip_of(&[("z/one.txt", b"one")], &[("z/link", "one.txt")]),
            None,
        )
        .await;
    let (status, body) = files
        .op("decompress", json!({"path": "/a.zip", "into": "/"}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(std::fs::read(dir.join("z/one.txt")).unwrap(), b"one");
    assert_eq!(
        std::fs::read_link(dir.join("z/link")).unwrap(),
        Path::new("one.txt")
    );
    let (status, body) = files
        .op("delete", json!({"paths": ["/restored", "/z"]}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(!dir.join("restored").exists() && !dir.join("z").exists());

    traversal(&files, &dir, tmp.path()).await;

    // Another tenant's server is not found, by either tenant's path.
    let outbox = tmp.path().join("data/outbox");
    let (bob, _) = alice.verified_user(&outbox, "bob@example.com").await;
    let (_, bob_tenant) = bob.post("/api/tenants", json!({"name": "b"})).await;
    let bob_tid = bob_tenant["id"].as_str().unwrap();
    for base in [
        format!("/api/tenants/{bob_tid}/servers/{sid}"),
        format!("/api/tenants/{tid}/servers/{sid}"),
    ] {
        let bobs = Files::new(&bob, &base);
        let (status, body) = bobs.list("/").await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{base}"
        );
        let (status, _, _) = bobs.get("/server.properties").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = bobs.put("/x", b"x".to_vec(), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    // Support reads, never writes; a member writes.
    let (support, _) = alice.verified_user(&outbox, "sue@example.com").await;
    let (member, _) = alice.verified_user(&outbox, "max@example.com").await;
    for (email, role) in [
        ("sue@example.com", "support"),
        ("max@example.com", "member"),
    ] {
        let (status, body) = alice
            .post(
                &format!("/api/tenants/{tid}/members"),
                json!({"email": email, "role": role}),
            )
            .await;
        assert!(status.is_success(), "{body}");
    }
    let sue = files.as_caller(&support);
    assert_eq!(sue.list("/").await.0, StatusCode::OK);
    let (status, _, bytes) = sue.get("/server.properties").await;
    assert_eq!(
        (status, bytes.as_slice()),
        (StatusCode::OK, &b"motd=edited\n"[..])
    );
    let (status, _, body) = sue.put("/server.properties", b"pwned".to_vec(), None).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    for (op, body) in [
        ("mkdir", json!({"path": "/s"})),
        ("delete", json!({"paths": ["/server.properties"]})),
        ("rename", json!({"from": "/server.properties", "to": "/s"})),
        (
            "chmod",
            json!({"path": "/server.properties", "mode": 0o777}),
        ),
        (
            "compress",
            json!({"paths": ["/world"], "into": "/s.tar.gz"}),
        ),
        ("decompress", json!({"path": "/b.tar.gz", "into": "/s"})),
    ] {
        assert_eq!(
            sue.op(op, body).await.0,
            StatusCode::FORBIDDEN,
            "support may not {op}"
        );
    }
    assert_eq!(
        std::fs::read(dir.join("server.properties")).unwrap(),
        b"motd=edited\n"
    );
    let max = files.as_caller(&member);
    assert_eq!(
        max.put("/by-member", b"m".to_vec(), None).await.0,
        StatusCode::CREATED
    );

    // Every call is audited with its path, never the content.
    let (_, audit) = alice
        .get(&format!("/api/tenants/{tid}/audit?limit=200"))
        .await;
    let text = audit.to_string();
    assert!(
        text.contains("file.write") && text.contains("/server.properties"),
        "{text}"
    );
    assert!(!text.contains("motd=edited"), "content in the audit log");
}

/// The traversal suite on a server: nothing outside its root is read, written or listed.
async fn traversal(files: &Files, dir: &Path, tmp: &Path) {
    let passwd = std::fs::read("/etc/passwd").unwrap();
    // `../`, absolute and encoded paths.
    for query in [
        "../etc/passwd",
        "/../../etc/passwd",
        "/world/../../etc/passwd",
        "..%2F..%2Fetc%2Fpasswd",
        "%2F..%2F..%2Fetc%2Fpasswd",
        "etc/passwd",
        "/x%00y",
    ] {
        let (status, _, body) = files.get_raw(query, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_ne!(body, passwd, "{query}");
        let (status, _) = files.list_raw(query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "list {query}");
    }
    // An encoded absolute path is the server's own /etc/passwd (absent); double encoding
    // is a name.
    for query in [
        "%2Fetc%2Fpasswd",
        "/etc%252Fpasswd",
        "/..%252F..%252Fetc%252Fpasswd",
    ] {
        let (status, _, body) = files.get_raw(query, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{query}");
        assert_ne!(body, passwd);
    }
    // Links to /etc and /etc/passwd: shown as links, never followed.
    std::os::unix::fs::symlink("/etc", dir.join("etc-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd-link")).unwrap();
    let (_, page) = files.list("/").await;
    let link = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "etc-link")
        .unwrap();
    assert_eq!(link["type"], "symlink");
    for path in ["/etc-link/passwd", "/passwd-link"] {
        let (status, _, body) = files.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_ne!(body, passwd);
    }
    let (status, body) = files.list("/etc-link").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_path")
    );
    let (status, _, _) = files.put("/etc-link/mamba-evil", b"x".to_vec(), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!Path::new("/etc/mamba-evil").exists());
    let (status, _, _) = files.put("/passwd-link", b"x".to_vec(), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "not a regular file");
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd);
    for (op, body) in [
        ("mkdir", json!({"path": "/etc-link/mamba-evil"})),
        (
            "rename",
            json!({"from": "/etc-link/passwd", "to": "/stolen"}),
        ),
        (
            "rename",
            json!({"from": "/server.properties", "to": "/etc-link/mamba-evil"}),
        ),
        ("delete", json!({"paths": ["/etc-link/passwd"]})),
        (
            "compress",
            json!({"paths": ["/etc-link/passwd"], "into": "/stolen.tar.gz"}),
        ),
        (
            "decompress",
            json!({"path": "/b.tar.gz", "into": "/etc-link/mamba-evil"}),
        ),
    ] {
        let (status, body) = files.op(op, body.clone()).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_path"),
            "{op} {body}"
        );
    }
    let (status, _) = files
        .op("chmod", json!({"path": "/passwd-link", "mode": 0o777}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "a link has no mode");
    assert_eq!(
        std::fs::metadata("/etc/passwd")
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    // Compressing a link archives the link, not /etc.
    let (status, _) = files
        .op(
            "compress",
            json!({"paths": ["/etc-link"], "into": "/link.tar.gz"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(std::fs::metadata(dir.join("link.tar.gz")).unwrap().len() < 4096);
    // Deleting a link removes the link only.
    let (status, _) = files
        .op(
            "delete",
            json!({"paths": ["/etc-link", "/passwd-link", "/link.tar.gz"]}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(Path::new("/etc/passwd").exists() && !dir.join("etc-link").exists());

    // A FIFO is neither listed nor opened (no hang).
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join("fifo").as_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o666),
        0,
    )
    .unwrap();
    let (status, _, _) = tokio::time::timeout(CAP, files.get("/fifo")).await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, page) = files.list("/").await;
    assert!(!page.to_string().contains("\"fifo\""));
    let (status, _, _) = files.put("/fifo", b"x".to_vec(), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    std::fs::remove_file(dir.join("fifo")).unwrap();

    // Unsafe archives: refused, nothing written anywhere.
    let outside = tmp.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let before = on_disk(dir);
    let slip = format!("../../../../../../..{}/slipped", outside.display());
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "/slip.zip",
            zip_of(&[("ok.txt", b"ok"), (slip.as_str(), b"x")], &[]),
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            "/abs.zip",
            zip_of(&[("ok.txt", b"ok"), ("/tmp/mamba-abs", b"x")], &[]),
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            "/link.zip",
            zip_of(&[("ok.txt", b"ok")], &[("etc", "/etc")]),
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            "/up.zip",
            zip_of(&[("ok.txt", b"ok")], &[("a/up", "../../x")]),
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            "/slip.tar.gz",
            tar_gz(&[
                ("ok.txt", tar::EntryType::Regular, b"ok"),
                ("../slipped", tar::EntryType::Regular, b"x"),
            ]),
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            "/fifo.tar.gz",
            tar_gz(&[
                ("ok.txt", tar::EntryType::Regular, b"ok"),
                ("pipe", tar::EntryType::Fifo, b""),
            ]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/dev.tar.gz",
            tar_gz(&[("sda", tar::EntryType::Block, b"")]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        // 200 MB of zeros in a zip of ~200 KB: its directory's sizes refuse it.
        (
            "/bomb.zip",
            zip_of(&[("ok.txt", b"ok"), ("zeros", &vec![0u8; 200 << 20])], &[]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        // The same in a tar.gz: refused while it is inflated, what was written removed.
        (
            "/bomb.tar.gz",
            tar_gz(&[
                ("ok.txt", tar::EntryType::Regular, b"ok"),
                ("zeros", tar::EntryType::Regular, &vec![0u8; 200 << 20]),
            ]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (name, bytes, want, want_code) in cases {
        let (status, _, body) = files.put(name, bytes, None).await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
        let (status, body) = files
            .op("decompress", json!({"path": name, "into": "/unpacked"}))
            .await;
        assert_eq!((status, code(&body)), (want, want_code), "{name}: {body}");
        let (_, body) = files.op("delete", json!({"paths": [name]})).await;
        assert!(body.is_null(), "{body}");
        let mut now = on_disk(dir);
        now.retain(|n| n != "unpacked");
        assert_eq!(now, before, "{name} left something");
        if dir.join("unpacked").exists() {
            assert_eq!(
                on_disk(&dir.join("unpacked")),
                Vec::<String>::new(),
                "{name}"
            );
        }
        assert_eq!(
            on_disk(&outside),
            Vec::<String>::new(),
            "{name} wrote outside"
        );
        assert!(!Path::new("/tmp/mamba-abs").exists());
    }
}

/// A download and a decompress while the server keeps swapping links to a root-only canary
/// in and out: every answer is the real file or a refusal, never the canary, and nothing
/// lands outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn links_swapped_in_during_download_and_decompress_are_never_followed() {
    let Stack {
        tmp,
        admin,
        alice,
        wings,
        panel: _panel,
        ..
    } = stack(DbKind::Sqlite).await;
    let secret = format!("CANARY-{}", hex::encode(rand::random::<[u8; 16]>()));
    let canary = tmp.path().join("canary.txt");
    std::fs::write(&canary, format!("{secret:-<64}")).unwrap();
    std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o600)).unwrap();
    let outside = tmp.path().join("outside-dir");
    std::fs::create_dir(&outside).unwrap();
    let swap_files = format!("2:{}", canary.display());
    let swap_dirs = format!("1:{}", outside.display());
    template(
        &admin,
        "swapper",
        &[
            "--interval-ms",
            "1000",
            "--swap-loop",
            &swap_files,
            "--escape-swap",
            &swap_dirs,
        ],
        1024,
    )
    .await;
    let (server_url, _sid, _) = server(&alice, &wings, "swapper").await;
    let files = Files::new(&alice, &server_url);
    assert_eq!(
        files.op("mkdir", json!({"path": "/d0"})).await.0,
        StatusCode::NO_CONTENT
    );
    let archive = tar_gz(&[("inner.txt", tar::EntryType::Regular, b"inside")]);
    assert_eq!(
        files.put("/a.tar.gz", archive, None).await.0,
        StatusCode::CREATED
    );
    let mut events = alice.events(&format!("{server_url}/events")).await.unwrap();
    power(&alice, &server_url, "start").await;
    started_pid(&mut events).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (mut read, mut refused) = (0, 0);
    for round in 0..100 {
        for path in ["/swap-f0", "/swap-l0", "/swap-f1", "/swap-l1"] {
            let (status, _, body) = files.get(path).await;
            assert!(
                !String::from_utf8_lossy(&body).contains(&secret),
                "round {round}: {path} gave the canary"
            );
            match status {
                StatusCode::OK => {
                    assert_eq!(body, vec![b'x'; 64]);
                    read += 1;
                }
                StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => refused += 1,
                other => panic!("round {round}: {path}: {other}"),
            }
        }
    }
    assert!(
        read > 0 && refused > 0,
        "the race ran: {read} read, {refused} refused"
    );

    let (mut landed, mut refused) = (0, 0);
    for round in 0..50 {
        for into in ["/d0", "/x0"] {
            let (status, body) = files
                .op("decompress", json!({"path": "/a.tar.gz", "into": into}))
                .await;
            match status {
                StatusCode::NO_CONTENT => landed += 1,
                StatusCode::BAD_REQUEST | StatusCode::CONFLICT | StatusCode::NOT_FOUND => {
                    refused += 1
                }
                other => panic!("round {round}: {into}: {other} {body}"),
            }
            let _ = files
                .op("delete", json!({"paths": [format!("{into}/inner.txt")]}))
                .await;
            assert_eq!(
                on_disk(&outside),
                Vec::<String>::new(),
                "round {round}: wrote outside"
            );
        }
    }
    assert!(landed > 0, "{landed} landed, {refused} refused");
    power(&alice, &server_url, "kill").await;
    // The swapper left its process group: `kill` stops the group, deleting the server stops
    // every process of its user, so none spins on after the test.
    eventually("the server deleted", Duration::from_secs(20), || async {
        let (status, _) = alice.call(Method::DELETE, &server_url, None).await;
        status == StatusCode::NO_CONTENT || status == StatusCode::NOT_FOUND
    })
    .await;
}

/// Writes a raw HTTP/1.1 PUT of `total` bytes, 1 MiB at a time with `pause` between, while
/// reading the answer (which may come before the body is done); returns what was read.
async fn slow_put(base: &str, token: &str, url: &str, total: usize, pause: Duration) -> String {
    raw_put(base, token, url, total, pause, false).await
}

/// [`slow_put`], with `Transfer-Encoding: chunked` (no length) when `chunked`.
pub(crate) async fn raw_put(
    base: &str,
    token: &str,
    url: &str,
    total: usize,
    pause: Duration,
    chunked: bool,
) -> String {
    RawPut {
        base,
        token,
        url,
        total,
        pause,
        chunked,
        extra: "",
        sent_all: None,
    }
    .send()
    .await
}

/// A raw HTTP/1.1 PUT of `total` bytes written 1 MiB at a time with `pause` between, while the
/// answer is read (it may come before the body is done).
pub(crate) struct RawPut<'a> {
    pub(crate) base: &'a str,
    pub(crate) token: &'a str,
    pub(crate) url: &'a str,
    pub(crate) total: usize,
    pub(crate) pause: Duration,
    /// `Transfer-Encoding: chunked` (no length).
    pub(crate) chunked: bool,
    /// More header lines, each ending in `\r\n`.
    pub(crate) extra: &'a str,
    /// Set once the whole body is written (false if the panel answered first).
    pub(crate) sent_all: Option<&'a AtomicBool>,
}

impl RawPut<'_> {
    /// Sends it; what was read back.
    pub(crate) async fn send(self) -> String {
        let RawPut {
            base,
            token,
            url,
            total,
            pause,
            chunked,
            extra,
            sent_all,
        } = self;
        let addr = base.trim_start_matches("http://");
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut rx, mut tx) = tcp.into_split();
        let reader = tokio::spawn(async move {
            let mut response = Vec::new();
            let _ = tokio::time::timeout(CAP * 3, rx.read_to_end(&mut response)).await;
            response
        });
        let length = if chunked {
            "transfer-encoding: chunked".to_owned()
        } else {
            format!("content-length: {total}")
        };
        let head = format!(
            "PUT {url} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\nconnection: close\r\n{extra}{length}\r\n\r\n"
        );
        tx.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'y'; 1 << 20];
        let mut sent = 0;
        while sent < total && !reader.is_finished() {
            let n = chunk.len().min(total - sent);
            let mut piece = Vec::new();
            if chunked {
                piece.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            }
            piece.extend_from_slice(&chunk[..n]);
            if chunked {
                piece.extend_from_slice(b"\r\n");
            }
            if tx.write_all(&piece).await.is_err() {
                break;
            }
            sent += n;
            if sent < total {
                tokio::time::sleep(pause).await;
            }
        }
        if chunked && sent == total {
            let _ = tx.write_all(b"0\r\n\r\n").await;
        }
        if let Some(flag) = sent_all {
            flag.store(sent == total, std::sync::atomic::Ordering::SeqCst);
        }
        String::from_utf8_lossy(&reader.await.unwrap()).into_owned()
    }
}

/// The quota (413 before anything is kept), the upload cap (`FILES_MAX_UPLOAD_MB`) and the
/// per-user upload limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_quota_cap_and_rate_limit() {
    let limits = "login=1000/1m,register=1000/1m,verify=1000/1m,api=10000/1m,upload=8/1m";
    let Stack {
        tmp,
        admin,
        alice,
        wings,
        panel: _panel,
        ..
    } = stack_with(
        DbKind::Sqlite,
        &[("RATE_LIMITS", limits), ("FILES_MAX_UPLOAD_MB", "64")],
    )
    .await;
    template(&admin, "tiny", &["--interval-ms", "1000"], 1).await;
    template(&admin, "roomy", &["--interval-ms", "1000"], 1024).await;
    let (tiny_url, tiny, _) = server(&alice, &wings, "tiny").await;
    let (roomy_url, roomy, _) = server(&alice, &wings, "roomy").await;
    let tiny_files = Files::new(&alice, &tiny_url);
    let files = Files::new(&alice, &roomy_url);
    let token = alice.token.clone().unwrap();

    // The quota (1 MiB): refused by the length before any byte is kept; nothing is left.
    let (status, _, body) = tiny_files.put("/big", vec![1u8; 2 << 20], None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let (status, _, _) = tiny_files.put("/small", vec![1u8; 1000], None).await;
    assert_eq!(status, StatusCode::CREATED);
    // Without a length: refused once past the quota, nothing kept.
    let response = raw_put(
        &alice.base,
        &token,
        &format!("{}/content?path=/chunked", tiny_files.base),
        2 << 20,
        Duration::ZERO,
        true,
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("payload_too_large"), "{response}");
    // …and a chunked upload within it works.
    let response = raw_put(
        &alice.base,
        &token,
        &format!("{}/content?path=/chunked", tiny_files.base),
        4096,
        Duration::ZERO,
        true,
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert_eq!(
        on_disk(&server_dir(tmp.path(), &tiny)),
        ["chunked", "small"]
    );
    // The cap (64 MiB here): the length alone refuses it.
    let response = slow_put(
        &alice.base,
        &token,
        &format!("{}/content?path=/huge", files.base),
        65 << 20,
        Duration::ZERO,
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(!server_dir(tmp.path(), &roomy).join("huge").exists());
    // The per-user limit: 8 a minute (5 above, more here).
    let mut limited = false;
    for i in 0..8 {
        let (status, _, _) = files.put(&format!("/n{i}"), b"x".to_vec(), None).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
        assert_eq!(status, StatusCode::CREATED);
    }
    assert!(limited, "uploads are rate-limited per user");
}

/// A node that goes away mid-upload: 502 `node_gone` and no partial file; mid-download: the
/// transfer breaks off, never a short file taken for whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_gone_mid_transfer_keeps_nothing() {
    let Stack {
        tmp,
        admin,
        alice,
        mut wings,
        panel: _panel,
        ..
    } = stack(DbKind::Sqlite).await;
    template(&admin, "roomy", &["--interval-ms", "1000"], 1024).await;
    let (url, sid, _) = server(&alice, &wings, "roomy").await;
    let files = Files::new(&alice, &url);
    let dir = server_dir(tmp.path(), &sid);
    let big = noise(64 << 20, 3);
    assert_eq!(
        files.put("/big", big.clone(), None).await.0,
        StatusCode::CREATED
    );
    let before = on_disk(&dir);

    let response = files
        .request(Method::GET, &format!("{}/content?path=/big", files.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut response = response;
    let first = response.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let (base, token) = (alice.base.clone(), alice.token.clone().unwrap());
    let url_partial = format!("{}/content?path=/partial", files.base);
    let upload = tokio::spawn(async move {
        slow_put(
            &base,
            &token,
            &url_partial,
            64 << 20,
            Duration::from_millis(50),
        )
        .await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    wings.kill_hard();
    let answer = upload.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("node_gone"), "{answer}");
    let mut received = first.len();
    let broken = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(
        broken && received < big.len(),
        "{received} of {} bytes, broken {broken}",
        big.len()
    );
    assert_eq!(on_disk(&dir), before, "no partial file");
}
