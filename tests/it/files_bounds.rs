//! The file manager's costs and leftovers, from an attacker's review of issue 17, through the
//! real `api` and `wings` binaries: a 16 TiB sparse file downloaded at once with a weak ETag
//! (M1), a directory of 200,000 names listed page by page in bounded memory (M3), a refused
//! archive leaving no `into` behind (L3), a tenant's deep tree answered 409 and never 503
//! (L5), and bounded audit rows (L6).

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::files::{code, encode, on_disk, one_server, server_dir, zip_of};
use crate::files_writes::leftovers;

/// M1: a 16 TiB sparse file downloads at once, with a weak ETag (never hashed), which
/// `If-Match` never matches; listings go on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_sparse_file_downloads_at_once_with_a_weak_etag() {
    const HUGE: u64 = (16 << 40) - (1 << 20);
    let s = one_server("roomy", 256).await;
    let (tmp, wings, sid) = (&s.stack.tmp, &s.stack.wings, &s.sid);
    let files = &s.files;
    let dir = server_dir(tmp.path(), sid);
    let owner = std::fs::metadata(&dir).unwrap();
    let path = dir.join("huge.img");
    std::fs::File::create(&path).unwrap().set_len(HUGE).unwrap();
    std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
    // (Each download left unread holds its stream's flow-control window on the node's one
    // connection; this test holds one at a time.)
    let mut downloads = Vec::new();
    for _ in 0..3 {
        let request = files.request(
            Method::GET,
            &format!("{}/content?path=/huge.img", files.base),
        );
        let response = tokio::time::timeout(Duration::from_secs(5), request.send())
            .await
            .unwrap_or_else(|_| panic!("no answer within 5 s\nWings:\n{}", wings.log()))
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.content_length(), Some(HUGE));
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        assert!(
            etag.starts_with("W/\"") && etag.ends_with('"'),
            "a weak ETag: {etag}"
        );
        downloads.push(etag);
        // Dropped unread: the node stops reading the file.
        drop(response);
    }
    assert!(
        downloads.iter().all(|e| *e == downloads[0]),
        "the same while the file is"
    );
    let etag = downloads[0].clone();
    let request = files.request(
        Method::GET,
        &format!("{}/content?path=/huge.img", files.base),
    );
    let mut response = tokio::time::timeout(Duration::from_secs(5), request.send())
        .await
        .unwrap()
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!first.is_empty() && first.iter().all(|&b| b == 0));
    // Listings go on while the downloads are open.
    let (status, page) = tokio::time::timeout(Duration::from_secs(5), files.list("/"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"][0]["size"], HUGE);
    drop(response);
    // A weak tag never matches If-Match, nor can a strong one (the file has none).
    let (status, _, body) = files.put("/huge.img", b"x".to_vec(), Some(&etag)).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"));
    let strong = format!("\"{}\"", "0".repeat(64));
    let put = files.put("/huge.img", b"x".to_vec(), Some(&strong));
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(5), put)
        .await
        .unwrap();
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), HUGE, "unchanged");
    // A small file still has its strong ETag, the SHA-256 (once the huge one, which counts
    // against the quota by its length, is gone).
    let (status, _) = files.op("delete", json!({"paths": ["/huge.img"]})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, etag, _) = files.put("/small", b"hello".to_vec(), None).await;
    let (_, headers, _) = files.get("/small").await;
    assert_eq!(headers["etag"].to_str().unwrap(), etag.unwrap());
}

/// Wings' peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// M3: a directory of 200,000 names (100 bytes each) is listed page by page, in order, each
/// name once, and Wings' peak memory grows by far less than the names would take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_200000_names_lists_page_by_page_in_bounded_memory() {
    const NAMES: usize = 200_000;
    let s = one_server("roomy", 256).await;
    let (tmp, wings, sid) = (&s.stack.tmp, &s.stack.wings, &s.sid);
    let files = &s.files;
    let big = server_dir(tmp.path(), sid).join("big");
    std::fs::create_dir(&big).unwrap();
    let pad = "n".repeat(92);
    for i in 0..NAMES {
        std::fs::File::create(big.join(format!("{i:08}{pad}"))).unwrap();
    }
    let before = peak_rss_kib(wings.pid());
    let (mut seen, mut cursor, mut pages, mut last) = (0usize, String::new(), 0, String::new());
    loop {
        let query = format!("{}&limit=1000&cursor={}", encode("/big"), encode(&cursor));
        let (status, page) = files.list_raw(&query).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            let name = item["name"].as_str().unwrap().to_owned();
            assert!(name > last, "in order, each once: {name} after {last}");
            last = name;
            seen += 1;
        }
        match page["next_cursor"].as_str() {
            Some(next) if !next.is_empty() => cursor = next.to_owned(),
            _ => break,
        }
        assert!(pages <= NAMES / 1000 + 1, "too many pages");
    }
    let after = peak_rss_kib(wings.pid());
    eprintln!(
        "{NAMES} names in {pages} pages; Wings' peak RSS {before} KiB before, {after} KiB after"
    );
    assert_eq!(seen, NAMES);
    // The names alone are some 20 MiB; held at once they would show.
    assert!(
        after.saturating_sub(before) < 12 << 10,
        "Wings' peak grew by {} KiB",
        after - before
    );
}

/// L3: a refused archive leaves nothing, not even the `into` it would have made; a good one
/// makes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_archives_leave_no_into_behind() {
    let s = one_server("roomy", 256).await;
    let (tmp, sid) = (&s.stack.tmp, &s.sid);
    let files = &s.files;
    let dir = server_dir(tmp.path(), sid);
    let slip = zip_of(&[("ok.txt", b"fine"), ("../../evil.txt", b"evil")], &[]);
    let (status, _, body) = files.put("/slip.zip", slip, None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = files
        .op(
            "decompress",
            json!({"path": "/slip.zip", "into": "/new/deep/dir"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_path"),
        "{body}"
    );
    assert!(!dir.join("new").exists(), "{:?}", on_disk(&dir));
    assert!(leftovers(&dir).is_empty(), "{:?}", on_disk(&dir));
    // An existing part of `into` stays, what was missing goes.
    std::fs::create_dir(dir.join("have")).unwrap();
    std::os::unix::fs::chown(
        dir.join("have"),
        Some(std::fs::metadata(&dir).unwrap().uid()),
        Some(std::fs::metadata(&dir).unwrap().gid()),
    )
    .unwrap();
    let (status, _) = files
        .op(
            "decompress",
            json!({"path": "/slip.zip", "into": "/have/sub"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        on_disk(&dir.join("have")).is_empty(),
        "{:?}",
        on_disk(&dir.join("have"))
    );
    // A good archive makes `into` and its parents.
    let good = zip_of(&[("a/ok.txt", b"fine")], &[]);
    files.put("/good.zip", good, None).await;
    let (status, body) = files
        .op(
            "decompress",
            json!({"path": "/good.zip", "into": "/made/here"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(
        std::fs::read(dir.join("made/here/a/ok.txt")).unwrap(),
        b"fine"
    );
    assert_eq!(
        std::fs::metadata(dir.join("made")).unwrap().uid(),
        std::fs::metadata(&dir).unwrap().uid(),
        "made as the server's"
    );
    // A compress into a missing directory makes nothing.
    let (status, _) = files
        .op(
            "compress",
            json!({"paths": ["/made"], "into": "/nowhere/x.tar.gz"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!dir.join("nowhere").exists());
}

/// L5: a tree 300 levels deep (a tenant can make it) is a conflict for a compress and an
/// upload (whose quota walk meets it), never 503 `unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_deep_tree_is_a_conflict_never_unavailable() {
    let s = one_server("roomy", 256).await;
    let files = &s.files;
    let deep = "/d".repeat(300);
    let (status, body) = files.op("mkdir", json!({ "path": deep })).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = files
        .op("compress", json!({"paths": ["/d"], "into": "/d.tar.gz"}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "conflict"),
        "{body}"
    );
    let (status, _, body) = files.put("/after", b"x".to_vec(), None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "conflict"),
        "{body}"
    );
    let (status, body) = files.op("delete", json!({"paths": ["/d"]})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _, _) = files.put("/after", b"x".to_vec(), None).await;
    assert_eq!(status, StatusCode::CREATED);
}

/// L6: a `delete` of 1,000 long paths keeps an audit row of a few KiB: the first paths, each
/// bounded, and the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_of_many_long_paths_are_bounded() {
    let s = one_server("roomy", 256).await;
    let (alice, tid) = (&s.stack.alice, &s.tid);
    let files = &s.files;
    let long = format!("/{}", "p/".repeat(440));
    let paths: Vec<String> = (0..1000).map(|i| format!("{long}{i}")).collect();
    let (status, body) = files.op("delete", json!({ "paths": paths })).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, audit) = alice.get(&format!("/api/tenants/{tid}/audit")).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let row = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "file.delete")
        .unwrap_or_else(|| panic!("no file.delete row: {audit}"))
        .clone();
    let size = row["details"].to_string().len();
    eprintln!("the file.delete row's details: {size} bytes");
    assert!(size < 16 << 10, "{size} bytes of details");
    assert_eq!(row["details"]["path_count"], 1000);
    assert!(
        row["details"]["paths"][0]
            .as_str()
            .unwrap()
            .starts_with("/p/p/")
    );
}
