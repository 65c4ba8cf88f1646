//! Writes to a server's files against each other, from an attacker's review of issue 17,
//! through the real `api` and `wings` binaries: concurrent uploads together within the disk
//! quota (M2), two conditional edits of one ETag (L1), a restore and a write never
//! overlapping (L2).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::files::{Files, RawPut, encode, on_disk, one_server, server_dir};
use crate::servers::CAP;
use tests::eventually;

/// A raw HTTP/1.1 PUT of `total` bytes, 1 MiB at a time with `pause` between, with a length
/// (or chunked) and `extra` header lines; the status and the whole answer.
async fn put_slowly(
    files: &Files,
    path: &str,
    total: usize,
    pause: Duration,
    chunked: bool,
    extra: &str,
) -> (u16, String) {
    put_watched(files, path, total, pause, chunked, extra, None).await
}

/// [`put_slowly`], setting `sent_all` once the whole body is written.
async fn put_watched(
    files: &Files,
    path: &str,
    total: usize,
    pause: Duration,
    chunked: bool,
    extra: &str,
    sent_all: Option<&AtomicBool>,
) -> (u16, String) {
    let token = files.rest.token.clone().unwrap();
    let url = format!("{}/content?path={}", files.base, encode(path));
    let response = RawPut {
        base: &files.rest.base,
        token: &token,
        url: &url,
        total,
        pause,
        chunked,
        extra,
        sent_all,
    }
    .send()
    .await;
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// Names in the server's directory that an upload or an unpack would leave half-done.
pub(crate) fn leftovers(dir: &Path) -> Vec<String> {
    on_disk(dir)
        .into_iter()
        .filter(|n| n.starts_with(".mamba-"))
        .collect()
}

/// M2: N uploads each under the quota, together over it, at once: at most the quota is kept,
/// the others are refused with 413, nothing partial is left; with a declared length and
/// without one (reserved as the bytes arrive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_together_stay_within_the_quota() {
    const MIB: usize = 1 << 20;
    const QUOTA_MB: u64 = 8;
    let s = one_server("eight", QUOTA_MB).await;
    let (tmp, wings, sid) = (&s.stack.tmp, &s.stack.wings, &s.sid);
    let files = &s.files;
    let dir = server_dir(tmp.path(), sid);
    for chunked in [false, true] {
        let uploads = (0..4).map(|i| {
            let files = &files;
            async move {
                let path = format!("/u{i}");
                put_slowly(
                    files,
                    &path,
                    3 * MIB,
                    Duration::from_millis(300),
                    chunked,
                    "",
                )
                .await
            }
        });
        let answers = futures::future::join_all(uploads).await;
        let mut kept = 0;
        for (status, answer) in &answers {
            match status {
                201 => kept += 1,
                413 => assert!(answer.contains("payload_too_large"), "{answer}"),
                _ => panic!("chunked={chunked}: {answer}\nWings:\n{}", wings.log()),
            }
        }
        let sizes: Vec<u64> = on_disk(&dir)
            .iter()
            .map(|n| std::fs::metadata(dir.join(n)).unwrap().len())
            .collect();
        let total: u64 = sizes.iter().sum();
        eprintln!("chunked={chunked}: {kept} of 4 kept, {total} bytes on disk {sizes:?}");
        assert!(
            total <= QUOTA_MB << 20,
            "chunked={chunked}: {total} bytes kept, over the quota: {answers:?}"
        );
        assert!(
            sizes.iter().all(|&s| s == 3 * MIB as u64),
            "nothing partial: {sizes:?}"
        );
        assert_eq!(sizes.len(), kept, "what was kept was answered 201");
        assert!(leftovers(&dir).is_empty(), "{:?}", on_disk(&dir));
        if !chunked {
            // Declared lengths are held up front: exactly two fit.
            assert_eq!(kept, 2, "{answers:?}");
        }
        let names: Vec<String> = on_disk(&dir).iter().map(|n| format!("/{n}")).collect();
        if !names.is_empty() {
            let (status, body) = files.op("delete", json!({ "paths": names })).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        }
    }
    // The books are straight again: the whole quota can be used.
    let (status, _, body) = files.put("/full", vec![7u8; 7 * MIB], None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// L1: two conditional PUTs of one ETag at once: exactly one lands, the other is 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_conditional_edits_of_one_etag_have_one_winner() {
    let s = one_server("roomy", 256).await;
    let (tmp, sid) = (&s.stack.tmp, &s.sid);
    let files = &s.files;
    let (status, etag, _) = files.put("/conf", b"v1".to_vec(), None).await;
    assert_eq!(status, StatusCode::CREATED);
    let etag = etag.unwrap();
    let header = format!("if-match: {etag}\r\n");
    let edit = || {
        put_slowly(
            files,
            "/conf",
            3 << 20,
            Duration::from_millis(300),
            false,
            &header,
        )
    };
    let (a, b) = tokio::join!(edit(), edit());
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [204, 409], "{}\n---\n{}", a.1, b.1);
    let loser = if a.0 == 409 { &a.1 } else { &b.1 };
    assert!(loser.contains("\"conflict\""), "{loser}");
    let dir = server_dir(tmp.path(), sid);
    assert_eq!(std::fs::metadata(dir.join("conf")).unwrap().len(), 3 << 20);
    assert!(leftovers(&dir).is_empty(), "{:?}", on_disk(&dir));
}

/// L2: a restore asked while an upload runs waits for it to end (and refuses new file
/// operations meanwhile); it never runs into the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_waits_for_a_write_under_way() {
    let s = one_server("roomy", 256).await;
    let (alice, url) = (&s.stack.alice, &s.url);
    let files = &s.files;
    let (status, _, _) = files.put("/kept", b"before".to_vec(), None).await;
    assert_eq!(status, StatusCode::CREATED);
    let backups = format!("{url}/backups");
    let (status, backup) = alice.post(&backups, json!({"name": "b"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{backup}");
    let bid = backup["id"].as_str().unwrap().to_owned();
    let field = |list: &Value, key: &str| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == bid)
            .map(|b| b[key].clone())
            .unwrap_or(Value::Null)
    };
    eventually("backup completed", CAP, || async {
        field(&alice.get(&backups).await.1, "state") == "completed"
    })
    .await;
    // An upload of 6 MiB, a MiB every 500 ms: some 3 s.
    let upload_files = Files::new(alice, url);
    let sent_all = Arc::new(AtomicBool::new(false));
    let flag = sent_all.clone();
    let upload = tokio::spawn(async move {
        let pause = Duration::from_millis(500);
        put_watched(
            &upload_files,
            "/late",
            6 << 20,
            pause,
            false,
            "",
            Some(&flag),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, body) = alice
        .post(&format!("{backups}/{bid}/restore"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // Until the restore is done, file operations are refused (from the moment the node
    // takes it, just after it is accepted).
    let (mut refused, mut probes) = (None, 0);
    let deadline = Instant::now() + CAP;
    loop {
        let state = field(&alice.get(&backups).await.1, "restore_state");
        if state == "restored" || state == "failed" {
            assert_eq!(state, "restored");
            break;
        }
        assert!(Instant::now() < deadline, "the restore did not finish");
        if refused.is_none() {
            probes += 1;
            let path = format!("/during{probes}");
            let (status, body) = files.op("mkdir", json!({ "path": path })).await;
            if status == StatusCode::CONFLICT {
                refused = Some(body);
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        sent_all.load(Ordering::SeqCst),
        "the restore finished while the upload was still being written"
    );
    let refused = refused.expect("a file operation is refused while the restore waits");
    assert!(refused.to_string().contains("restored"), "{refused}");
    let (status, answer) = upload.await.unwrap();
    assert_eq!(status, 201, "{answer}");
    // Restored after the upload: the backup's files, not the upload.
    let (status, _, bytes) = files.get("/kept").await;
    assert_eq!((status, bytes.as_slice()), (StatusCode::OK, &b"before"[..]));
    let (status, _, _) = files.get("/late").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
