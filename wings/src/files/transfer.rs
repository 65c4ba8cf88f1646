//! One `FileRequest`, answered on its own `Files` stream: opened on the transfers' connection
//! ([`Link`](super::Link)) to the panel replica the request names ([`Links`]; a malformed
//! name is refused with an answer on the control stream's panel link, never dialled), first
//! message `open` with the request's id, then the outcome (and a read's
//! bytes, or a write's `ready` before its bytes come down). The blocking work runs on the
//! blocking pool; bytes pass between it and the stream through channels of [`QUEUE`] chunks,
//! so a transfer of any size holds a few hundred KiB here. Nothing waits on the stream for
//! ever: a chunk the panel does not take within [`SEND_TIMEOUT`] ends the transfer (the
//! stream and the file are dropped).

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use prost::bytes::Bytes;
use proto::node::v1::{
    FileDown, FileEnd, FileRead, FileRequest, FileResult, FileUp, FileWrite, file_down,
    file_request, file_up,
};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;
use tonic::Streaming;

use super::link::Stream;
use super::links::Links;
use super::{CHUNK, Etags, Fail, QUEUE, Target, archive, ops, upload};
use crate::supervisor::Supervisor;

/// How long an upload waits for its next chunk before it is dropped.
const IDLE: Duration = Duration::from_secs(60);
/// How long a message waits for room on the stream (the panel not reading: its client
/// stalled, or the panel is gone without a word) before the transfer is dropped. Longer than
/// the panel's own bound on a stalled client (30 s), which normally ends it first.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the panel has to read the last answer and close its side.
const LINGER: Duration = Duration::from_secs(10);

/// Answers `request` on a new `Files` stream of the transfers' connection to the replica it
/// names, in the background.
pub fn serve(links: Arc<Links>, supervisor: Arc<Supervisor>, request: FileRequest) {
    tokio::spawn(run(links, supervisor, request));
}

fn up(kind: file_up::Kind) -> FileUp {
    FileUp { kind: Some(kind) }
}

/// Sends `message` unless the stream has had no room for [`SEND_TIMEOUT`]; false when it is
/// not sent (the panel gone or not reading).
async fn send(tx: &mpsc::Sender<FileUp>, message: FileUp) -> bool {
    match tx.send_timeout(message, SEND_TIMEOUT).await {
        Ok(()) => true,
        Err(SendTimeoutError::Timeout(_)) => {
            tracing::warn!("the panel stopped reading a files stream; dropping it");
            false
        }
        Err(SendTimeoutError::Closed(_)) => false,
    }
}

async fn run(links: Arc<Links>, supervisor: Arc<Supervisor>, request: FileRequest) {
    let (link, refused) = match links.for_reply(&request.reply_to) {
        Ok(link) => (link, None),
        Err(reason) => {
            tracing::warn!(request = %request.id, %reason, "refusing a file request");
            (links.home(), Some(Fail::invalid(reason)))
        }
    };
    let Stream { tx, mut inbound } = match link.open(&request.id).await {
        Ok(stream) => stream,
        Err(reason) => {
            tracing::warn!(request = %request.id, %reason, "cannot open a files stream");
            return;
        }
    };
    let answered = match refused {
        Some(fail) => Err(fail),
        None => answer(&supervisor, request, &tx, &mut inbound).await,
    };
    if let Err(fail) = answered {
        send(&tx, up(file_up::Kind::Result(fail.result()))).await;
    }
    drop(tx);
    // Whatever was queued goes out before the stream is dropped.
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(Some(_)) = inbound.message().await {}
    })
    .await;
}

/// Runs blocking file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Fail> + Send + 'static,
) -> Result<T, Fail> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|_| Err(Fail::failed("the file task failed")))
}

async fn reply(tx: &mpsc::Sender<FileUp>, result: FileResult) -> Result<(), Fail> {
    // The panel gone: nobody to tell.
    send(tx, up(file_up::Kind::Result(result))).await;
    Ok(())
}

async fn answer(
    supervisor: &Supervisor,
    request: FileRequest,
    tx: &mpsc::Sender<FileUp>,
    inbound: &mut Streaming<FileDown>,
) -> Result<(), Fail> {
    use file_request::Op;
    let target = supervisor.file_target(&request.server_id)?;
    let etags = supervisor.etags();
    let result = match request.op {
        None => Err(Fail::failed(
            "unknown file operation: this Wings is older than the panel",
        )),
        Some(Op::Read(read)) => return serve_read(tx, target, etags, read).await,
        Some(Op::Write(write)) => return serve_write(tx, inbound, target, etags, write).await,
        Some(Op::List(list)) => {
            blocking(move || ops::list(&target, &list.path, &list.cursor, list.limit as usize))
                .await
        }
        Some(Op::Mkdir(mkdir)) => blocking(move || ops::mkdir(&target, &mkdir.path)).await,
        Some(Op::Rename(rename)) => {
            blocking(move || ops::rename(&target, &rename.from, &rename.to)).await
        }
        Some(Op::Delete(delete)) => blocking(move || ops::delete(&target, &delete.paths)).await,
        Some(Op::Chmod(chmod)) => {
            blocking(move || ops::chmod(&target, &chmod.path, chmod.mode)).await
        }
        Some(Op::Compress(compress)) => {
            blocking(move || archive::compress(&target, &compress.paths, &compress.into)).await
        }
        Some(Op::Decompress(decompress)) => {
            blocking(move || archive::decompress(&target, &decompress.path, &decompress.into)).await
        }
    };
    reply(tx, result?).await
}

/// The header, the bytes in order, then `end`; a file that ends early (truncated meanwhile)
/// or fails to read gets no `end`, and the panel ends the download as broken.
async fn serve_read(
    tx: &mpsc::Sender<FileUp>,
    target: Target,
    etags: Arc<Etags>,
    read: FileRead,
) -> Result<(), Fail> {
    let reading = blocking(move || ops::open_read(&target, &etags, &read)).await?;
    let mut left = reading.header.length;
    if !send(tx, up(file_up::Kind::Result(reading.header))).await {
        return Ok(());
    }
    let chunks = tx.clone();
    let mut file = reading.file;
    // The blocking thread waits for room on the stream through the runtime, bounded.
    let runtime = tokio::runtime::Handle::current();
    let whole = tokio::task::spawn_blocking(move || {
        while left > 0 {
            // Filled whole by `read_to_end` (a short chunk only at the end), which reads into
            // the spare capacity without zeroing it first.
            let want = CHUNK.min(usize::try_from(left).unwrap_or(CHUNK));
            let mut buf = Vec::with_capacity(want);
            let n = match (&mut file).take(want as u64).read_to_end(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            left -= n as u64;
            let data = up(file_up::Kind::Data(Bytes::from(buf)));
            if !runtime.block_on(send(&chunks, data)) {
                return false;
            }
        }
        true
    })
    .await;
    if matches!(whole, Ok(true)) {
        send(tx, up(file_up::Kind::End(FileEnd {}))).await;
    }
    Ok(())
}

/// `ready` once the checks passed, then the bytes from the panel to the unnamed file until
/// `end`; the final answer once it is in place. A stream that breaks, stalls for [`IDLE`] or
/// passes the cap keeps nothing.
async fn serve_write(
    tx: &mpsc::Sender<FileUp>,
    inbound: &mut Streaming<FileDown>,
    target: Target,
    etags: Arc<Etags>,
    write: FileWrite,
) -> Result<(), Fail> {
    let kept = etags.clone();
    let mut upload = blocking(move || upload::prepare(&target, &kept, &write)).await?;
    if !send(tx, up(file_up::Kind::Result(FileResult::default()))).await {
        return Ok(());
    }
    // `None`: every byte came.
    let (chunks, mut received) = mpsc::channel::<Option<Bytes>>(QUEUE);
    let writer = tokio::task::spawn_blocking(move || {
        while let Some(item) = received.blocking_recv() {
            match item {
                Some(chunk) => upload.write(&chunk)?,
                None => return upload.commit(&etags).map(Some),
            }
        }
        Ok(None)
    });
    loop {
        let message = match tokio::time::timeout(IDLE, inbound.message()).await {
            Ok(Ok(Some(message))) => message,
            _ => break,
        };
        match message.kind {
            Some(file_down::Kind::Data(data)) => {
                if chunks.send(Some(data)).await.is_err() {
                    break;
                }
            }
            Some(file_down::Kind::End(_)) => {
                let _ = chunks.send(None).await;
                break;
            }
            None => break,
        }
    }
    drop(chunks);
    match writer.await {
        Ok(Ok(Some(result))) => reply(tx, result).await,
        // Broken off: the unnamed file is gone with its descriptor.
        Ok(Ok(None)) => Ok(()),
        Ok(Err(fail)) => Err(fail),
        Err(_) => Err(Fail::failed("the write task failed")),
    }
}
