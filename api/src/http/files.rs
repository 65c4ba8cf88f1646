//! `/api/tenants/{tid}/servers/{sid}/files…`: a tenant's file manager (`file:read`,
//! `file:write`). Every call is audited with its path(s), never the content. Bytes stream
//! through the panel a chunk at a time ([`crate::transfers`]): an upload is read from the
//! client only as fast as the node writes it, a download only as fast as the client reads.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use proto::node::v1::{
    FileChmod, FileCompress, FileDecompress, FileDelete, FileDown, FileEnd, FileKind, FileList,
    FileMkdir, FileRead, FileRename, FileResult, FileUp, FileWrite, file_down, file_request::Op,
    file_up,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::access::TenantCtx;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::listener::Abort;
use crate::db::entities::server;
use crate::ids::{ServerId, TenantId};
use crate::servers;
use crate::transfers as files;
use crate::{AppState, Error, FileFailure, audit};

type Result<T> = std::result::Result<T, ApiError>;

/// How long an upload may wait for the client's next bytes.
const UPLOAD_IDLE: Duration = Duration::from_secs(60);
/// Most paths one `delete` or `compress` takes.
const MAX_PATHS: usize = 1000;
/// Entries per listing page when the client does not say.
const DEFAULT_PAGE: u32 = 100;
/// Most entries per listing page.
const MAX_PAGE: u32 = 1000;

/// One entry of a directory listing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FileItem {
    /// The name in its directory.
    pub name: String,
    /// `file`, `dir` or `symlink` (a link is shown, never followed).
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^(file|dir|symlink)$")]
    pub kind: &'static str,
    /// Bytes (a link's: its target's length).
    pub size: u64,
    /// Permission bits, as a number (0o644 is 420).
    pub mode: u32,
    /// Last modification, RFC 3339.
    #[schema(format = DateTime)]
    pub modified_at: String,
}

/// A page of a directory listing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FilePage {
    /// The entries, by name (byte order).
    pub items: Vec<FileItem>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// `?path=&cursor=&limit=`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The directory, absolute from the server's root; `/` when absent.
    #[param(min_length = 1, max_length = 4096, pattern = "^/")]
    path: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(max_length = 255)]
    cursor: Option<String>,
    /// Entries per page; 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// `?path=`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PathQuery {
    /// The file, absolute from the server's root.
    #[param(min_length = 1, max_length = 4096, pattern = "^/")]
    path: String,
}

/// Audits a file call: its path(s) and outcome, never content.
async fn audited<T>(
    state: &AppState,
    ctx: &TenantCtx,
    action: &str,
    server_id: &str,
    details: Value,
    result: &std::result::Result<T, Error>,
) {
    let outcome = match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("rejected: {}", ApiError::code_of(e)),
    };
    let event = ctx.audit(action, Some(server_id), &outcome, details);
    audit::record_or_log(&state.db, event).await;
}

/// Sends `op` and waits for the node's one answer.
async fn ask(
    state: &AppState,
    server: &server::Model,
    op: Op,
    max_entries: usize,
) -> std::result::Result<FileResult, Error> {
    let mut channel = files::open(state, server, op).await?;
    files::answer(state, &mut channel.up, max_entries).await
}

/// GET …/files?path=: a page of the directory's entries.
#[utoipa::path(
    get,
    path = "/api/tenants/{tid}/servers/{sid}/files",
    summary = r#"A page of a directory of the server"#,
    description = r#"Entries in byte order of their names; a symbolic link is shown as one, never followed (FIFOs, sockets and devices are not listed). 400 `invalid_path` for a path outside the root or through a link, 404 for none, 409 for a file; 409 `node_offline`, 502 `node_gone`."#,
    params(ListQuery),
    responses(
        (status = 200, description = "OK.", body = FilePage),
        (status = 409, description = "See the description."),
        (status = 502, description = "The node went away."),
        (status = 503, description = "The node has its cap of 8 file transfers open (`unavailable`, `Retry-After`)."),
    ),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<FilePage>> {
    let path = query.path.unwrap_or_else(|| "/".to_owned());
    files::check_path(&path)?;
    let server = servers::get(&state.db, &ctx.tenant_id, &server_id).await?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let op = Op::List(FileList {
        path: path.clone(),
        cursor: query.cursor.unwrap_or_default(),
        limit,
    });
    let result = ask(&state, &server, op, limit as usize).await;
    audited(
        &state,
        &ctx,
        "file.list",
        &server_id,
        json!({ "path": audit::bounded_path(&path) }),
        &result,
    )
    .await;
    let page = result?;
    let items = page
        .entries
        .into_iter()
        .map(|e| FileItem {
            kind: match FileKind::try_from(e.kind) {
                Ok(FileKind::Dir) => "dir",
                Ok(FileKind::Symlink) => "symlink",
                _ => "file",
            },
            name: e.name,
            size: e.size,
            mode: e.mode & 0o7777,
            modified_at: chrono::DateTime::from_timestamp(e.modified_unix, 0)
                .unwrap_or_default()
                .to_rfc3339(),
        })
        .collect();
    let next_cursor = Some(page.next_cursor).filter(|c| !c.is_empty());
    Ok(Json(FilePage { items, next_cursor }))
}

/// `Range: bytes=…` as (start, end, suffix); `None` (the whole file) for anything but one
/// well-formed range.
fn parse_range(value: &str) -> Option<(Option<u64>, Option<u64>, Option<u64>)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    match (start.trim(), end.trim()) {
        ("", suffix) => Some((None, None, Some(suffix.parse().ok()?))),
        (start, "") => Some((Some(start.parse().ok()?), None, None)),
        (start, end) => {
            let (start, end) = (start.parse().ok()?, end.parse().ok()?);
            (end >= start).then_some((Some(start), Some(end), None))
        }
    }
}

/// GET …/files/content?path=: the bytes, streamed, with `ETag` (SHA-256) and `Range`.
#[utoipa::path(
    get,
    path = "/api/tenants/{tid}/servers/{sid}/files/content",
    summary = r#"Download a file"#,
    description = r#"The bytes, streamed, with `Content-Length`, `ETag` (the SHA-256; a weak `W/"…"` for a file over 1 GiB the node has not hashed, or while its hashing slots are busy) and one `Range: bytes=…` (206 with `Content-Range`; 416 outside the file). 409 for a directory or anything but a regular file. A node that goes away midway breaks the transfer off (never a short file taken for whole), and so does a client that takes nothing for 30 s (its connection is reset). 503 `unavailable` with `Retry-After` while the node has 8 file requests open, or the server 4."#,
    params(PathQuery),
    responses(
        (status = 200, description = "The file.", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 206, description = "The range.", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 409, description = "See the description."),
        (status = 416, description = "The range is outside the file."),
        (status = 502, description = "The node went away."),
        (status = 503, description = "The node has its cap of 8 file transfers open (`unavailable`, `Retry-After`)."),
    ),
)]
pub async fn download(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
    ApiQuery(query): ApiQuery<PathQuery>,
    abort: Option<Extension<Abort>>,
    headers: HeaderMap,
) -> Result<Response> {
    files::check_path(&query.path)?;
    let server = servers::get(&state.db, &ctx.tenant_id, &server_id).await?;
    let (range_start, range_end, suffix) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range)
        .unwrap_or((None, None, None));
    let op = Op::Read(FileRead {
        path: query.path.clone(),
        range_start,
        range_end,
        suffix,
    });
    let result = async {
        let mut channel = files::open(&state, &server, op).await?;
        let head = files::answer(&state, &mut channel.up, 0).await?;
        Ok((channel, head))
    }
    .await;
    audited(
        &state,
        &ctx,
        "file.read",
        &server_id,
        json!({ "path": audit::bounded_path(&query.path) }),
        &result,
    )
    .await;
    let (channel, head) = match result {
        Ok(opened) => opened,
        Err(Error::File {
            kind: FileFailure::Range(size),
            message,
        }) => {
            let mut response = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                message,
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
        Err(e) => return Err(e.into()),
    };
    let length = head.length;
    // What a node announces is checked before it shapes the answer: a range inside the file.
    if head
        .offset
        .checked_add(length)
        .is_none_or(|end| end > head.size)
    {
        tracing::warn!(server = %server.id, "the node announced a range outside the file");
        return Err(Error::NodeGone.into());
    }
    let abort = abort.map(|Extension(abort)| abort);
    let mut response = Response::new(Body::from_stream(body(channel, length, abort)));
    *response.status_mut() = if head.partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(etag) = HeaderValue::from_str(&etag_header(&head.etag)) {
        headers.insert(header::ETAG, etag);
    }
    if head.partial {
        let last = (head.offset.saturating_add(length)).saturating_sub(1);
        if let Ok(value) =
            HeaderValue::from_str(&format!("bytes {}-{last}/{}", head.offset, head.size))
        {
            headers.insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

/// A download's body: the node's chunks as they come, relayed through a queue of
/// [`files::DOWN_QUEUE`] chunks (see [`relay`]).
fn body(
    channel: files::Channel,
    length: u64,
    abort: Option<Abort>,
) -> impl futures::Stream<Item = std::result::Result<Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(files::DOWN_QUEUE);
    tokio::spawn(relay(channel, length, tx, abort));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Moves a download's chunks from the node's stream to the client's queue. A node that goes
/// away (or sends other than it announced) ends it with an error, so the client sees a broken
/// transfer, never a short file taken for whole. A client that does not take a chunk within
/// [`files::STALL`] has its connection reset, and the node's stream is dropped with the
/// channel (its transfer slot with it), so a client that stops reading holds nothing for long.
async fn relay(
    mut channel: files::Channel,
    length: u64,
    tx: tokio::sync::mpsc::Sender<std::result::Result<Bytes, std::io::Error>>,
    abort: Option<Abort>,
) {
    use tokio::sync::mpsc::error::SendTimeoutError;
    let mut sent = 0u64;
    let failure = loop {
        let next = tokio::select! {
            // The client hung up while the node was slow: nothing to tell.
            () = tx.closed() => return,
            next = tokio::time::timeout(files::CHUNK_TIMEOUT, channel.up.message()) => next,
        };
        let data = match next.unwrap_or(Ok(None)) {
            Ok(Some(FileUp {
                kind: Some(file_up::Kind::Data(data)),
            })) => data,
            Ok(Some(FileUp {
                kind: Some(file_up::Kind::End(_)),
            })) if sent == length => return,
            _ => {
                tracing::warn!(sent, length, "a download ended early: the node went away");
                break "node_gone: the node went away during the download";
            }
        };
        sent = sent.saturating_add(data.len() as u64);
        if sent > length {
            break "the node sent more than it announced";
        }
        match tx.send_timeout(Ok(data), files::STALL).await {
            Ok(()) => {}
            // The client hung up: nothing to tell.
            Err(SendTimeoutError::Closed(_)) => return,
            Err(SendTimeoutError::Timeout(_)) => {
                tracing::info!(sent, length, "a download's client stopped reading; reset");
                if let Some(abort) = abort {
                    abort.now();
                }
                return;
            }
        }
    };
    let broken = Err(std::io::Error::other(failure));
    if tx.send_timeout(broken, files::STALL).await.is_err()
        && let Some(abort) = abort
    {
        abort.now();
    }
}

/// The `ETag` header of a node's tag: the SHA-256 quoted, or a weak one (`W/…` from the
/// node, for a file too large to hash) as `W/"…"`.
fn etag_header(tag: &str) -> String {
    match tag.strip_prefix("W/") {
        Some(weak) => format!("W/\"{weak}\""),
        None => format!("\"{tag}\""),
    }
}

/// `If-Match` as the node compares it: `*`, or the SHA-256 without quotes. A weak tag never
/// matches (RFC 9110 §13.1.1 compares strongly): the file counts as changed (409).
fn if_match(headers: &HeaderMap) -> std::result::Result<String, Error> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(String::new());
    };
    let text = value
        .to_str()
        .map_err(|_| Error::Invalid("If-Match must be an ETag".into()))?
        .trim();
    if text.starts_with("W/") {
        return Err(Error::File {
            kind: FileFailure::Conflict,
            message: "If-Match: a weak ETag never matches; download the file for its strong ETag"
                .into(),
        });
    }
    let tag = text.trim_matches('"');
    if tag == "*" || (tag.len() == 64 && tag.bytes().all(|b| b.is_ascii_hexdigit())) {
        Ok(tag.to_ascii_lowercase())
    } else {
        Err(Error::Invalid(
            "If-Match must be an ETag of this API or *".into(),
        ))
    }
}

/// PUT …/files/content?path=: the raw body becomes the file (201 new, 204 replaced).
#[utoipa::path(
    put,
    path = "/api/tenants/{tid}/servers/{sid}/files/content",
    summary = r#"Upload or edit a file"#,
    description = r#"The raw body becomes the file: written beside it and renamed into place when complete (a broken upload changes nothing), owned by the server's user. `If-Match` with the ETag makes it conditional (409 when the file changed, checked again just before it is replaced; a weak tag never matches). Concurrent uploads together stay within the quota. 413 past the server's disk quota or `FILES_MAX_UPLOAD_MB`, before any byte is kept; uploads are rate-limited per user (429). 201 for a new file, 204 for a replaced one, with the new `ETag`."#,
    params(PathQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Created."),
        (status = 204, description = "Replaced; no content."),
        (status = 409, description = "See the description."),
        (status = 502, description = "The node went away."),
        (status = 503, description = "The node has its cap of 8 file transfers open (`unavailable`, `Retry-After`)."),
    ),
)]
pub async fn upload(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
    ApiQuery(query): ApiQuery<PathQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    files::check_path(&query.path)?;
    let server = servers::get(&state.db, &ctx.tenant_id, &server_id).await?;
    let rule = state.config.security.rate_limits.upload;
    let decision = state
        .limits
        .check(&format!("upload:{}", ctx.principal.user.id), rule)
        .await;
    if !decision.allowed {
        return Err(Error::RateLimited {
            retry_after_secs: decision.retry_after_secs(state.clock.now().timestamp_millis()),
        }
        .into());
    }
    let size = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| Error::Invalid("Content-Length must be a number".into()))?,
        ),
    };
    let max = state.config.files.max_upload_bytes;
    let result = async {
        let if_match = if_match(&headers)?;
        if size.is_some_and(|size| size > max) {
            return Err(over_cap(max));
        }
        let write = FileWrite {
            path: query.path.clone(),
            size,
            if_match,
            max_bytes: max,
        };
        send_upload(&state, &server, write, body).await
    }
    .await;
    let details = json!({ "path": audit::bounded_path(&query.path), "size": size });
    audited(&state, &ctx, "file.write", &server_id, details, &result).await;
    let written = result?;
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    };
    let mut response = status.into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", written.etag)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

fn over_cap(max: u64) -> Error {
    Error::File {
        kind: FileFailure::TooLarge,
        message: format!("uploads are limited to {} MiB", max >> 20),
    }
}

/// What the node said before the upload was over: its refusal, or that it went away.
fn early(state: &AppState, message: std::result::Result<Option<FileUp>, tonic::Status>) -> Error {
    match message {
        Ok(Some(FileUp {
            kind: Some(file_up::Kind::Result(mut result)),
        })) => {
            crate::grpc::bounds::file_result(&mut result, 0, &state.metrics);
            files::outcome(result).err().unwrap_or(Error::NodeGone)
        }
        _ => Error::NodeGone,
    }
}

/// The upload itself: the node checks first (`ready`), then the body goes down a chunk at a
/// time, only as fast as the node takes it; its final answer says where the file is now.
async fn send_upload(
    state: &AppState,
    server: &server::Model,
    write: FileWrite,
    body: Body,
) -> std::result::Result<FileResult, Error> {
    let max = write.max_bytes;
    // Held to the end: the node's stream and its transfer slot.
    let mut channel = files::open(state, server, Op::Write(write)).await?;
    let files::Channel { up, down, .. } = &mut channel;
    files::answer(state, up, 0).await?;
    let mut data = body.into_data_stream();
    let mut total = 0u64;
    loop {
        let next = tokio::select! {
            message = up.message() => return Err(early(state, message)),
            next = tokio::time::timeout(UPLOAD_IDLE, data.next()) => next,
        };
        let chunk = match next {
            Err(_) => return Err(Error::Invalid("the upload stalled".into())),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(Error::Invalid("the upload broke off".into())),
            Ok(Some(Ok(chunk))) => chunk,
        };
        total = total.saturating_add(chunk.len() as u64);
        if total > max {
            return Err(over_cap(max));
        }
        let mut at = 0;
        while at < chunk.len() {
            let end = (at + files::CHUNK).min(chunk.len());
            let piece = FileDown {
                kind: Some(file_down::Kind::Data(chunk.slice(at..end))),
            };
            at = end;
            tokio::select! {
                message = up.message() => return Err(early(state, message)),
                sent = down.send(piece) => sent.map_err(|_| Error::NodeGone)?,
            }
        }
    }
    let end = FileDown {
        kind: Some(file_down::Kind::End(FileEnd {})),
    };
    down.send(end).await.map_err(|_| Error::NodeGone)?;
    files::answer(state, up, 0).await
}

/// `{path}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PathBody {
    /// Absolute from the server's root.
    #[schema(min_length = 1, max_length = 4096, pattern = "^/")]
    path: String,
}

/// `{from, to}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameBody {
    /// What moves.
    #[schema(min_length = 1, max_length = 4096, pattern = "^/")]
    from: String,
    /// Where to; must not exist.
    #[schema(min_length = 1, max_length = 4096, pattern = "^/")]
    to: String,
}

/// `{paths}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PathsBody {
    /// 1 to 1,000 paths, absolute from the server's root.
    #[schema(min_items = 1, max_items = 1000)]
    paths: Vec<String>,
}

/// `{path, mode}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChmodBody {
    /// Absolute from the server's root.
    #[schema(min_length = 1, max_length = 4096, pattern = "^/")]
    path: String,
    /// Permission bits only (0 to 0o777).
    #[schema(minimum = 0, maximum = 511)]
    mode: u32,
}

/// `{paths, into}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompressBody {
    /// 1 to 1,000 paths to archive.
    #[schema(min_items = 1, max_items = 1000)]
    paths: Vec<String>,
    /// The new tar.gz; must not exist.
    #[schema(min_length = 1, max_length = 4096, pattern = "^/")]
    into: String,
}

/// `{path, into}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecompressBody {
    /// The archive.
    #[schema(min_length = 1, max_length = 4096, pattern = "^/")]
    path: String,
    /// The directory to unpack into.
    #[schema(min_length = 1, max_length = 4096, pattern = "^/")]
    into: String,
}

fn check_paths(paths: &[String]) -> std::result::Result<(), Error> {
    if paths.is_empty() || paths.len() > MAX_PATHS {
        return Err(Error::Invalid("paths must hold 1 to 1000 paths".into()));
    }
    paths.iter().try_for_each(|p| files::check_path(p))
}

/// Runs one answer-only operation, audited with `details`: 204.
async fn operation(
    state: &AppState,
    ctx: &TenantCtx,
    server_id: &str,
    action: &str,
    details: Value,
    op: std::result::Result<Op, Error>,
) -> Result<StatusCode> {
    let server = servers::get(&state.db, &ctx.tenant_id, server_id).await?;
    let result = match op {
        Ok(op) => ask(state, &server, op, 0).await,
        Err(e) => Err(e),
    };
    audited(state, ctx, action, server_id, details, &result).await;
    result?;
    Ok(StatusCode::NO_CONTENT)
}

/// POST …/files/mkdir `{path}`: the directory and any missing parent.
#[utoipa::path(
    post,
    path = "/api/tenants/{tid}/servers/{sid}/files/mkdir",
    summary = r#"Make a directory (and its parents)"#,
    description = r#"409 when it exists."#,
    request_body = PathBody,
    responses(
        (status = 204, description = "Done; no content."),
        (status = 409, description = "See the description."),
        (status = 502, description = "The node went away."),
        (status = 503, description = "The node has its cap of 8 file transfers open (`unavailable`, `Retry-After`)."),
    ),
)]
pub async fn mkdir(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
    ApiJson(body): ApiJson<PathBody>,
) -> Result<StatusCode> {
    let op = files::check_path(&body.path).map(|()| {
        Op::Mkdir(FileMkdir {
            path: body.path.clone(),
        })
    });
    operation(
        &state,
        &ctx,
        &server_id,
        "file.mkdir",
        json!({ "path": audit::bounded_path(&body.path) }),
        op,
    )
    .await
}

/// POST …/files/rename `{from, to}`: `to` must not exist.
#[utoipa::path(
    post,
    path = "/api/tenants/{tid}/servers/{sid}/files/rename",
    summary = r#"Move or rename a file or directory"#,
    description = r#"`to` must not exist (409)."#,
    request_body = RenameBody,
    responses(
        (status = 204, description = "Done; no content."),
        (status = 409, description = "See the description."),
        (status = 502, description = "The node went away."),
        (status = 503, description = "The node has its cap of 8 file transfers open (`unavailable`, `Retry-After`)."),
    ),
)]
pub async fn rename(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
    ApiJson(body): ApiJson<RenameBody>,
) -> Result<StatusCode> {
    let details = json!({
        "from": audit::bounded_path(&body.from),
        "to": audit::bounded_path(&body.to),
    });
    let op = files::check_path(&body.from)
        .and_then(|()| files::check_path(&body.to))
        .map(|()| {
            Op::Rename(FileRename {
                from: body.from,
                to: body.to,
            })
        });
    operation(&state, &ctx, &server_id, "file.rename", details, op).await
}

/// POST …/files/delete `{paths}`: directories with everything in them.
#[utoipa::path(
    post,
    path = "/api/tenants/{tid}/servers/{sid}/files/delete",
    summary = r#"Delete files and directories"#,
    description = r#"Directories with everything in them. All must exist (404), or none goes."#,
    request_body = PathsBody,
    responses(
        (status = 204, description = "Done; no content."),
        (status = 409, description = "See the description."),
        (status = 502, description = "The node went away."),
        (status = 503, description = "The node has its cap of 8 file transfers open (`unavailable`, `Retry-After`)."),
    ),
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
    ApiJson(body): ApiJson<PathsBody>,
) -> Result<StatusCode> {
    let details = json!({
        "paths": audit::bounded_paths(&body.paths),
        "path_count": body.paths.len(),
    });
    let op = check_paths(&body.paths).map(|()| Op::Delete(FileDelete { paths: body.paths }));
    operation(&state, &ctx, &server_id, "file.delete", details, op).await
}

/// POST …/files/chmod `{path, mode}`: permission bits only.
#[utoipa::path(
    post,
    path = "/api/tenants/{tid}/servers/{sid}/files/chmod",
    summary = r#"Set a file's permission bits"#,
    description = r#"No setuid, setgid or sticky bit (400); a link has no mode of its own (409)."#,
    request_body = ChmodBody,
    responses(
        (status = 204, description = "Done; no content."),
        (status = 409, description = "See the description."),
        (status = 502, description = "The node went away."),
        (status = 503, description = "The node has its cap of 8 file transfers open (`unavailable`, `Retry-After`)."),
    ),
)]
pub async fn chmod(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
    ApiJson(body): ApiJson<ChmodBody>,
) -> Result<StatusCode> {
    let details = json!({ "path": audit::bounded_path(&body.path), "mode": body.mode });
    let op = files::check_path(&body.path).and_then(|()| {
        if body.mode > 0o777 {
            return Err(Error::Invalid(
                "mode may hold permission bits only (at most 0o777 = 511; no setuid, setgid or sticky bit)".into(),
            ));
        }
        Ok(Op::Chmod(FileChmod { path: body.path, mode: body.mode }))
    });
    operation(&state, &ctx, &server_id, "file.chmod", details, op).await
}

/// POST …/files/compress `{paths, into}`: a new tar.gz.
#[utoipa::path(
    post,
    path = "/api/tenants/{tid}/servers/{sid}/files/compress",
    summary = r#"Archive files into a new tar.gz"#,
    description = r#"Links are archived as links. `into` must not exist (409); 413 past the quota."#,
    request_body = CompressBody,
    responses(
        (status = 204, description = "Done; no content."),
        (status = 409, description = "See the description."),
        (status = 502, description = "The node went away."),
        (status = 503, description = "The node has its cap of 8 file transfers open (`unavailable`, `Retry-After`)."),
    ),
)]
pub async fn compress(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
    ApiJson(body): ApiJson<CompressBody>,
) -> Result<StatusCode> {
    let details = json!({
        "paths": audit::bounded_paths(&body.paths),
        "path_count": body.paths.len(),
        "into": audit::bounded_path(&body.into),
    });
    let op = check_paths(&body.paths)
        .and_then(|()| files::check_path(&body.into))
        .map(|()| {
            Op::Compress(FileCompress {
                paths: body.paths,
                into: body.into,
            })
        });
    operation(&state, &ctx, &server_id, "file.compress", details, op).await
}

/// POST …/files/decompress `{path, into}`: tar, tar.gz or zip, every entry checked.
#[utoipa::path(
    post,
    path = "/api/tenants/{tid}/servers/{sid}/files/decompress",
    summary = r#"Unpack a tar, tar.gz or zip"#,
    description = r#"Every entry is checked first: an absolute path, `..` or a link leading outside is 400 `invalid_path`, a device or FIFO 400; too many entries, too many bytes or too high a ratio (a zip bomb) 413. A refused archive leaves nothing; names that exist in `into` are 409."#,
    request_body = DecompressBody,
    responses(
        (status = 204, description = "Done; no content."),
        (status = 409, description = "See the description."),
        (status = 502, description = "The node went away."),
        (status = 503, description = "The node has its cap of 8 file transfers open (`unavailable`, `Retry-After`)."),
    ),
)]
pub async fn decompress(
    State(state): State<Arc<AppState>>,
    ctx: TenantCtx,
    ApiPath((_, server_id)): ApiPath<(TenantId, ServerId)>,
    ApiJson(body): ApiJson<DecompressBody>,
) -> Result<StatusCode> {
    let details = json!({
        "path": audit::bounded_path(&body.path),
        "into": audit::bounded_path(&body.into),
    });
    let op = files::check_path(&body.path)
        .and_then(|()| files::check_path(&body.into))
        .map(|()| {
            Op::Decompress(FileDecompress {
                path: body.path,
                into: body.into,
            })
        });
    operation(&state, &ctx, &server_id, "file.decompress", details, op).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_well_formed_range_or_the_whole_file() {
        assert_eq!(parse_range("bytes=0-99"), Some((Some(0), Some(99), None)));
        assert_eq!(parse_range("bytes=100-"), Some((Some(100), None, None)));
        assert_eq!(parse_range("bytes=-5"), Some((None, None, Some(5))));
        assert_eq!(parse_range("bytes=5-1"), None);
        assert_eq!(parse_range("bytes=0-1,4-5"), None);
        assert_eq!(parse_range("items=0-1"), None);
        assert_eq!(parse_range("bytes=x-"), None);
    }

    #[test]
    fn if_match_takes_our_etags_or_a_star() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_MATCH, HeaderValue::from_str(v).unwrap());
            if_match(&h)
        };
        let tag = "a".repeat(64);
        assert_eq!(with(&format!("\"{tag}\"")).unwrap(), tag);
        assert_eq!(with(&format!("\"{}\"", tag.to_uppercase())).unwrap(), tag);
        assert!(matches!(
            with(&format!("W/\"{tag}\"")),
            Err(Error::File {
                kind: FileFailure::Conflict,
                ..
            })
        ));
        assert_eq!(with("*").unwrap(), "*");
        assert!(with("\"nope\"").is_err());
        assert_eq!(if_match(&HeaderMap::new()).unwrap(), "");
    }
}
