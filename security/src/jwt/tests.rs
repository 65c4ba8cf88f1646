//! Every forgery the panel must refuse, and key rotation.

use super::*;

const ISS: &str = "https://panel.example.com";

fn auds() -> Vec<String> {
    vec!["mamba-panel".to_owned()]
}

fn ed_key() -> SigningKey {
    SigningKey::from_pem(&SigningKey::generate_ed25519_pem().unwrap()).unwrap()
}

fn p256_key() -> SigningKey {
    let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .serialize_pem();
    SigningKey::from_pem(&pem).unwrap()
}

fn claims(now: i64) -> Claims {
    Claims {
        sub: "user-1".into(),
        sid: "session-1".into(),
        email: "a@example.com".into(),
        tenant_id: None,
        role: None,
        iss: ISS.into(),
        aud: "mamba-panel".into(),
        iat: now,
        exp: now + 900,
        jti: "jti-1".into(),
    }
}

/// Signs an arbitrary header and payload with `key`, as a forger holding the key would.
fn forge(key: &SigningKey, header: Value, payload: Value) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(payload.to_string())
    );
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(sig))
}

#[test]
fn round_trips_with_both_algorithms() {
    for key in [ed_key(), p256_key()] {
        let alg = key.alg();
        let ring = KeyRing::new(key, vec![]);
        let token = ring.sign(&claims(1_000)).unwrap();
        assert_eq!(
            ring.verify(&token, 1_000, ISS, &auds()).unwrap(),
            claims(1_000),
            "{alg:?}"
        );
        assert_eq!(ring.jwks()["keys"][0]["alg"], alg.name());
        assert_eq!(ring.jwks()["keys"][0]["kid"], ring.active().kid());
    }
}

#[test]
fn forgeries_are_refused() {
    let ring = KeyRing::new(ed_key(), vec![]);
    let kid = ring.active().kid().to_owned();
    let payload = serde_json::to_value(claims(1_000)).unwrap();
    let verify = |t: &str| ring.verify(t, 1_000, ISS, &auds());

    // alg: none with an empty signature.
    let none = format!(
        "{}.{}.",
        B64.encode(json!({"alg": "none", "typ": "at+jwt", "kid": kid}).to_string()),
        B64.encode(payload.to_string())
    );
    assert_eq!(verify(&none), Err(TokenError::Algorithm));

    // HS256 keyed with the public key (the classic confusion attack).
    let input = format!(
        "{}.{}",
        B64.encode(json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}).to_string()),
        B64.encode(payload.to_string())
    );
    let mac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, ring.active().public_key());
    let hs = format!(
        "{input}.{}",
        B64.encode(ring::hmac::sign(&mac_key, input.as_bytes()).as_ref())
    );
    assert_eq!(verify(&hs), Err(TokenError::Algorithm));

    // Right key and algorithm, but an ID-token type.
    let id_token = forge(
        ring.active(),
        json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}),
        payload.clone(),
    );
    assert_eq!(verify(&id_token), Err(TokenError::Type));
    let untyped = forge(
        ring.active(),
        json!({"alg": "EdDSA", "kid": kid}),
        payload.clone(),
    );
    assert_eq!(verify(&untyped), Err(TokenError::Type));

    // Unknown and missing kid.
    let wrong_kid = forge(
        ring.active(),
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "nope"}),
        payload.clone(),
    );
    assert_eq!(verify(&wrong_kid), Err(TokenError::UnknownKey));
    let no_kid = forge(
        ring.active(),
        json!({"alg": "EdDSA", "typ": "at+jwt"}),
        payload.clone(),
    );
    assert_eq!(verify(&no_kid), Err(TokenError::UnknownKey));

    // Signed by another key that claims our kid.
    let other = ed_key();
    let stolen_kid = forge(
        &other,
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid}),
        payload.clone(),
    );
    assert_eq!(verify(&stolen_kid), Err(TokenError::Signature));

    // A tampered payload.
    let good = ring.sign(&claims(1_000)).unwrap();
    let mut parts: Vec<&str> = good.split('.').collect();
    let mut evil = claims(1_000);
    evil.sub = "admin".into();
    let evil_payload = B64.encode(serde_json::to_vec(&evil).unwrap());
    parts[1] = &evil_payload;
    assert_eq!(verify(&parts.join(".")), Err(TokenError::Signature));

    // Garbage.
    for junk in ["", "a.b", "a.b.c.d", "###.###.###"] {
        assert_eq!(verify(junk), Err(TokenError::Malformed), "{junk:?}");
    }
    assert_eq!(verify(&"a".repeat(9000)), Err(TokenError::Malformed));
}

#[test]
fn issuer_audience_and_time_are_enforced() {
    let ring = KeyRing::new(p256_key(), vec![]);
    let token = ring.sign(&claims(1_000)).unwrap();
    assert_eq!(
        ring.verify(&token, 1_000, "https://evil.example", &auds()),
        Err(TokenError::Issuer)
    );
    assert_eq!(
        ring.verify(&token, 1_000, ISS, &["other".to_owned()]),
        Err(TokenError::Audience)
    );
    // Several configured audiences: any one matches.
    assert!(
        ring.verify(
            &token,
            1_000,
            ISS,
            &["other".to_owned(), "mamba-panel".to_owned()]
        )
        .is_ok()
    );
    // exp = 1900: accepted within the leeway, refused after it.
    assert!(
        ring.verify(&token, 1_900 + LEEWAY_SECS, ISS, &auds())
            .is_ok()
    );
    assert_eq!(
        ring.verify(&token, 1_901 + LEEWAY_SECS, ISS, &auds()),
        Err(TokenError::Expired)
    );
    assert_eq!(
        ring.verify(&token, 1_000 - LEEWAY_SECS - 1, ISS, &auds()),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn rotation_keeps_old_tokens_valid_until_the_key_is_dropped() {
    let old_pem = SigningKey::generate_ed25519_pem().unwrap();
    let new_pem = SigningKey::generate_ed25519_pem().unwrap();
    let before = KeyRing::new(SigningKey::from_pem(&old_pem).unwrap(), vec![]);
    let old_token = before.sign(&claims(1_000)).unwrap();

    let rotated = KeyRing::new(
        SigningKey::from_pem(&new_pem).unwrap(),
        vec![SigningKey::from_pem(&old_pem).unwrap()],
    );
    assert!(
        rotated.verify(&old_token, 1_000, ISS, &auds()).is_ok(),
        "old token still valid"
    );
    let new_token = rotated.sign(&claims(1_000)).unwrap();
    assert!(new_token.contains('.') && rotated.verify(&new_token, 1_000, ISS, &auds()).is_ok());
    let jwks = rotated.jwks();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(kids.len(), 2);
    assert_ne!(kids[0], kids[1]);

    let after = KeyRing::new(SigningKey::from_pem(&new_pem).unwrap(), vec![]);
    assert_eq!(
        after.verify(&old_token, 1_000, ISS, &auds()),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn kid_is_the_rfc7638_thumbprint() {
    // RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
    let jwk = json!({ "crv": "Ed25519", "kty": "OKP", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" });
    let kid = B64.encode(Sha256::digest(jwk.to_string().as_bytes()));
    assert_eq!(kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
}

#[test]
fn non_signing_pem_is_refused() {
    assert!(SigningKey::from_pem("not a key").is_err());
    let rsa_like = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    assert!(SigningKey::from_pem(rsa_like).is_err());
}

#[test]
fn a_named_kid_is_used_and_published() {
    let ring = KeyRing::new(ed_key().with_kid("2026-11"), vec![]);
    assert_eq!(ring.jwks()["keys"][0]["kid"], "2026-11");
    let token = ring.sign(&claims(1_000)).unwrap();
    assert!(ring.verify(&token, 1_000, ISS, &auds()).is_ok());
}

#[test]
fn the_published_jwks_alone_verifies_what_the_ring_signs() {
    for key in [ed_key(), p256_key()] {
        let alg = key.alg();
        let ring = KeyRing::new(key, vec![ed_key()]);
        let token = ring.sign(&claims(1_000)).unwrap();
        let jwks = ring.jwks();
        assert_eq!(
            verify_with_jwks(&jwks, &token, 1_000, ISS, &auds()).unwrap(),
            claims(1_000),
            "{alg:?}"
        );
        assert_eq!(
            verify_with_jwks(&jwks, &token, 1_000, ISS, &["other".to_owned()]),
            Err(TokenError::Audience)
        );
        assert_eq!(
            verify_with_jwks(&jwks, &token, 1_000, "https://elsewhere", &auds()),
            Err(TokenError::Issuer)
        );
        // A JWKS of another key, or one naming the kid twice, verifies nothing.
        let other = KeyRing::new(ed_key().with_kid(ring.active().kid()), vec![]).jwks();
        assert!(matches!(
            verify_with_jwks(&other, &token, 1_000, ISS, &auds()),
            Err(TokenError::Signature | TokenError::Algorithm)
        ));
        let mut twice = jwks.clone();
        let first = twice["keys"][0].clone();
        twice["keys"].as_array_mut().unwrap().push(first);
        assert_eq!(
            verify_with_jwks(&twice, &token, 1_000, ISS, &auds()),
            Err(TokenError::UnknownKey)
        );
        let mut mangled = jwks.clone();
        mangled["keys"][0]["x"] = json!("AAAA");
        assert_eq!(
            verify_with_jwks(&mangled, &token, 1_000, ISS, &auds()),
            Err(TokenError::UnknownKey)
        );
    }
}
