//! Issue 18's invitations over the real REST API of an in-process panel on both databases:
//! the same answer (and about the same time) for an address with and without an account, the
//! mail, acceptance by the invited address only, once; withdrawal; the owner rule.

use std::time::Instant;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{DbKind, mail};

use crate::accounts::{code, start};

/// Invites `email` as `role` into `tid`: the status, the body and how long the answer took.
async fn invite(
    caller: &tests::rest::Rest,
    tid: &str,
    email: &str,
    role: &str,
) -> (StatusCode, Value, f64) {
    let started = Instant::now();
    let (status, body) = caller
        .post(
            &format!("/api/tenants/{tid}/invitations"),
            json!({ "email": email, "role": role }),
        )
        .await;
    (status, body, started.elapsed().as_secs_f64() * 1000.0)
}

/// The token of the last invitation mailed to `email`, once it has arrived.
async fn invitation_token(outbox: &std::path::Path, email: &str) -> (String, String) {
    let mut found = None;
    tests::eventually(
        "the invitation mail",
        std::time::Duration::from_secs(10),
        || {
            found = mail::outbox_for(outbox, email)
                .into_iter()
                .rfind(|m| m.subject.contains("invited"));
            std::future::ready(found.is_some())
        },
    )
    .await;
    let mail = found.unwrap();
    (mail.token().unwrap(), mail.body)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

async fn invitations_answer_alike_and_accept_once(kind: DbKind) {
    let f = start(kind).await;
    let (owner, _) = f.anon.verified_user(&f.outbox, "olga@example.test").await;
    let (status, tenant) = owner
        .post("/api/tenants", json!({ "name": "Olga's" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    let tid = tenant["id"].as_str().unwrap().to_owned();
    let (kim, _) = f.anon.verified_user(&f.outbox, "kim@example.test").await;

    // A registered and an unregistered address: the same status and the same shape, and
    // about the same time (the look-up and the mail run after the answer).
    let (mut known_ms, mut unknown_ms) = (Vec::new(), Vec::new());
    for round in 0..6 {
        let (s1, known, t1) = invite(&owner, &tid, "kim@example.test", "member").await;
        let (s2, unknown, t2) = invite(&owner, &tid, "nobody@example.test", "member").await;
        assert_eq!(
            (s1, s2),
            (StatusCode::ACCEPTED, StatusCode::ACCEPTED),
            "{known} {unknown}"
        );
        let keys = |v: &Value| {
            let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        assert_eq!(keys(&known), keys(&unknown));
        if round > 0 {
            known_ms.push(t1);
            unknown_ms.push(t2);
        }
    }
    let (known_ms, unknown_ms) = (median(known_ms), median(unknown_ms));
    println!(
        "invitation answer, median: registered {known_ms:.1} ms, unregistered {unknown_ms:.1} ms"
    );
    assert!(
        (known_ms - unknown_ms).abs() < 100.0,
        "registered {known_ms:.1} ms vs unregistered {unknown_ms:.1} ms"
    );
    let (status, pending) = owner.get(&format!("/api/tenants/{tid}/invitations")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pending["items"].as_array().unwrap().len(), 12, "{pending}");

    let (kim_token, kim_mail) = invitation_token(&f.outbox, "kim@example.test").await;
    let (nobody_token, nobody_mail) = invitation_token(&f.outbox, "nobody@example.test").await;
    assert!(!kim_mail.contains("register"), "{kim_mail}");
    assert!(
        nobody_mail.contains("register with this address"),
        "{nobody_mail}"
    );

    // Another account's link: 403, nothing joined, and audited.
    let accept = |client: &tests::rest::Rest, token: &str| {
        let client = client.clone();
        let token = token.to_owned();
        async move {
            client
                .post("/api/invitations/accept", json!({ "token": token }))
                .await
        }
    };
    let (status, body) = accept(&kim, &nobody_token).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{body}"
    );
    let (_, none) = kim.get("/api/tenants").await;
    assert_eq!(none["items"].as_array().map(Vec::len), Some(0), "{none}");

    let (status, body) = accept(&kim, &kim_token).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, joined) = kim.get("/api/tenants").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        joined["items"][0]["id"].as_str(),
        Some(tid.as_str()),
        "{joined}"
    );
    assert_eq!(
        joined["items"][0]["role"].as_str(),
        Some("member"),
        "{joined}"
    );
    // Once only.
    let (status, body) = accept(&kim, &kim_token).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{body}"
    );

    // The unregistered address registers, verifies, and then accepts.
    let (nobody, _) = f.anon.verified_user(&f.outbox, "nobody@example.test").await;
    let (status, body) = accept(&nobody, &nobody_token).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // Withdrawn: the link stops working.
    let (_, late, _) = invite(&owner, &tid, "late@example.test", "support").await;
    let iid = late["id"].as_str().unwrap();
    let (late_token, _) = invitation_token(&f.outbox, "late@example.test").await;
    let path = format!("/api/tenants/{tid}/invitations/{iid}");
    assert_eq!(
        owner.call(Method::DELETE, &path, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        owner.call(Method::DELETE, &path, None).await.0,
        StatusCode::NOT_FOUND
    );
    let (late_user, _) = f.anon.verified_user(&f.outbox, "late@example.test").await;
    assert_eq!(
        accept(&late_user, &late_token).await.0,
        StatusCode::BAD_REQUEST
    );

    // Only an owner invites an owner; a plain member invites nobody.
    let (status, _) = owner
        .call(
            Method::PATCH,
            &format!("/api/tenants/{tid}/members/{}", joined_user_id(&kim).await),
            Some(json!({ "role": "admin" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body, _) = invite(&kim, &tid, "boss@example.test", "owner").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _, _) = invite(&kim, &tid, "helper@example.test", "support").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _, _) = invite(&nobody, &tid, "friend@example.test", "member").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // An unverified account cannot accept.
    let (status, body) = f
        .anon
        .post(
            "/api/auth/register",
            json!({ "email": "fresh@example.test", "password": tests::rest::PASSWORD }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let fresh = f.anon.login("fresh@example.test").await;
    let (status, body) = accept(&fresh, &kim_token).await;
    assert_eq!(code(&body), Some("email_not_verified"), "{status} {body}");

    // At most 30 invitation attempts an hour per tenant, withdrawn ones included: no mail
    // cannon. So far 15: twelve, `late`, and kim's two (the refused owner one counts too).
    let mut sent = 15;
    let status = loop {
        let (status, body, _) =
            invite(&owner, &tid, &format!("n{sent}@example.test"), "member").await;
        if status != StatusCode::ACCEPTED {
            assert_eq!(code(&body), Some("rate_limited"), "{body}");
            break status;
        }
        let path = format!(
            "/api/tenants/{tid}/invitations/{}",
            body["id"].as_str().unwrap()
        );
        assert_eq!(
            owner.call(Method::DELETE, &path, None).await.0,
            StatusCode::NO_CONTENT
        );
        sent += 1;
        assert!(sent <= 30, "more than 30 invitations in an hour");
    };
    assert_eq!((status, sent), (StatusCode::TOO_MANY_REQUESTS, 30));

    // The audit trail: invitations, the refusal and the acceptances.
    let (_, audit) = owner
        .get(&format!("/api/tenants/{tid}/audit?limit=200"))
        .await;
    let rows = audit["items"].as_array().unwrap();
    let count = |action: &str, outcome: &str| {
        rows.iter()
            .filter(|r| r["action"] == action && r["outcome"] == outcome)
            .count()
    };
    assert_eq!(count("member.invite", "ok"), 29, "{audit}");
    assert_eq!(count("member.invitation_accept", "ok"), 2);
    assert_eq!(
        count("member.invitation_accept", "rejected: other_account"),
        1
    );
    assert_eq!(count("member.invitation_withdrawn", "ok"), 16);
    drop(f.panel);
}

async fn joined_user_id(client: &tests::rest::Rest) -> String {
    let (_, me) = client.get("/api/auth/me").await;
    me["user"]["id"].as_str().unwrap().to_owned()
}

crate::on_both_databases!(invitations_answer_alike_and_accept_once);
