//! Access tokens: JWTs typed `at+jwt` (RFC 9068), signed with Ed25519 (`EdDSA`) or P-256
//! (`ES256`) — the algorithm follows from the key — and identified by a `kid` that is the key's
//! RFC 7638 thumbprint. A [`KeyRing`] signs with its active key and verifies with the active
//! and retired ones, all published in the JWKS, so the active key can change without
//! invalidating tokens signed by the old one.
//!
//! Verification trusts nothing in the header but `kid` as a lookup: the algorithm must be the
//! key's own (so `alg: none` and HS256-with-the-public-key fail), the type must be `at+jwt`
//! (so an ID token signed by the same key fails), and `iss`, `aud`, `exp` and `iat` are checked
//! against the caller's clock.

use std::borrow::Cow;
use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Error;

/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp` and `iat`, in seconds.
pub const LEEWAY_SECS: i64 = 30;
/// The JOSE type of access tokens.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// A signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// Ed25519.
    EdDSA,
    /// ECDSA P-256 with SHA-256.
    ES256,
}

impl Alg {
    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::ES256 => "ES256",
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not three base64url JSON parts, or too long.
    #[error("malformed token")]
    Malformed,
    /// `alg` is not the key's algorithm (`none`, HS256, …).
    #[error("algorithm not accepted")]
    Algorithm,
    /// `typ` is not `at+jwt`.
    #[error("not an access token")]
    Type,
    /// `kid` missing or unknown.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// `iss` is not ours.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` names none of our audiences.
    #[error("wrong audience")]
    Audience,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `iat` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The session (refresh-token family) the token belongs to.
    pub sid: String,
    /// The user's email.
    pub email: String,
    /// The client's default tenant, if any (never used for authorisation).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tenant_id: Option<String>,
    /// The role in that tenant, if any (informational).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub role: Option<String>,
    /// Issuer.
    pub iss: String,
    /// Audience (the first configured one).
    pub aud: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
}

/// A private key that signs tokens.
pub struct SigningKey {
    kid: String,
    alg: Alg,
    pair: Pair,
    jwk: Value,
}

enum Pair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads a PKCS#8 PEM private key, Ed25519 or P-256.
    pub fn from_pem(pem: &str) -> Result<SigningKey, Error> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| Error::Pem {
            what: "JWT signing key".into(),
            reason: format!("no PKCS#8 private key ({e})"),
        })?;
        let der = der.secret_pkcs8_der();
        if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            let x = B64.encode(pair.public_key().as_ref());
            let jwk_core = json!({ "crv": "Ed25519", "kty": "OKP", "x": x });
            return Ok(Self::with_jwk(Alg::EdDSA, Pair::Ed(pair), jwk_core));
        }
        let rng = SystemRandom::new();
        if let Ok(pair) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
        {
            // Uncompressed point: 0x04 || x || y.
            let point = pair.public_key().as_ref();
            let (x, y) = point
                .get(1..33)
                .zip(point.get(33..65))
                .ok_or_else(|| Error::Pem {
                    what: "JWT signing key".into(),
                    reason: "unexpected P-256 public key encoding".into(),
                })?;
            let jwk_core =
                json!({ "crv": "P-256", "kty": "EC", "x": B64.encode(x), "y": B64.encode(y) });
            return Ok(Self::with_jwk(Alg::ES256, Pair::Ec(pair), jwk_core));
        }
        Err(Error::Pem {
            what: "JWT signing key".into(),
            reason: "not an Ed25519 or P-256 key".into(),
        })
    }

    /// A new Ed25519 key as PKCS#8 PEM (for development, written to `data/`).
    pub fn generate_ed25519_pem() -> Result<String, Error> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| Error::Hash("cannot generate an Ed25519 key".into()))?;
        let body = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect();
        Ok(format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        ))
    }

    fn with_jwk(alg: Alg, pair: Pair, jwk_core: Value) -> SigningKey {
        // RFC 7638: SHA-256 over the required members, lexicographically ordered, no spaces.
        // serde_json's map is ordered by key, so `to_string` is the canonical form.
        let kid = B64.encode(Sha256::digest(jwk_core.to_string().as_bytes()));
        let mut jwk = jwk_core;
        if let Value::Object(map) = &mut jwk {
            map.insert("kid".into(), json!(kid));
            map.insert("alg".into(), json!(alg.name()));
            map.insert("use".into(), json!("sig"));
        }
        SigningKey {
            kid,
            alg,
            pair,
            jwk,
        }
    }

    /// Replaces the key id (the thumbprint by default), for operators who name their keys.
    pub fn with_kid(mut self, kid: &str) -> SigningKey {
        kid.clone_into(&mut self.kid);
        if let Value::Object(map) = &mut self.jwk {
            map.insert("kid".into(), json!(kid));
        }
        self
    }

    /// The key id (RFC 7638 thumbprint unless [`SigningKey::with_kid`] named it).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    fn public_key(&self) -> &[u8] {
        match &self.pair {
            Pair::Ed(p) => p.public_key().as_ref(),
            Pair::Ec(p) => p.public_key().as_ref(),
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        match &self.pair {
            Pair::Ed(p) => Ok(p.sign(message).as_ref().to_vec()),
            Pair::Ec(p) => p
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| Error::Hash("ECDSA signing failed".into())),
        }
    }
}

/// The active signing key and the retired ones still accepted.
#[derive(Debug)]
pub struct KeyRing {
    active: SigningKey,
    by_kid: HashMap<String, usize>,
    retired: Vec<SigningKey>,
}

impl KeyRing {
    /// A ring signing with `active` and also verifying with `retired` (never used to sign).
    pub fn new(active: SigningKey, retired: Vec<SigningKey>) -> KeyRing {
        let by_kid = retired
            .iter()
            .enumerate()
            .map(|(i, k)| (k.kid.clone(), i))
            .collect();
        KeyRing {
            active,
            by_kid,
            retired,
        }
    }

    /// The active key.
    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    /// `{"keys": [...]}` with every key that verifies tokens.
    pub fn jwks(&self) -> Value {
        let keys: Vec<&Value> = std::iter::once(&self.active)
            .chain(&self.retired)
            .map(|k| &k.jwk)
            .collect();
        json!({ "keys": keys })
    }

    /// Signs `claims` as an access token with the active key.
    pub fn sign(&self, claims: &Claims) -> Result<String, Error> {
        let header = json!({ "alg": self.active.alg.name(), "typ": ACCESS_TOKEN_TYPE, "kid": self.active.kid });
        let payload = serde_json::to_vec(claims).map_err(|e| Error::Hash(e.to_string()))?;
        let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(payload));
        let signature = self.active.sign(signing_input.as_bytes())?;
        Ok(format!("{signing_input}.{}", B64.encode(signature)))
    }

    /// Verifies an access token at `now` (Unix seconds) for `issuer` and any of `audiences`.
    pub fn verify(
        &self,
        token: &str,
        now: i64,
        issuer: &str,
        audiences: &[String],
    ) -> Result<Claims, TokenError> {
        verify_with(token, now, issuer, audiences, |kid| {
            self.key(kid)
                .map(|k| (k.alg, Cow::Borrowed(k.public_key())))
        })
    }

    fn key(&self, kid: &str) -> Option<&SigningKey> {
        if kid == self.active.kid {
            return Some(&self.active);
        }
        self.by_kid.get(kid).and_then(|&i| self.retired.get(i))
    }
}

/// Verifies an access token the way a client that knows only the published JWKS would: the
/// `kid` must name exactly one key of `jwks`, rebuilt from its JWK members alone. The preflight
/// signs a token and checks it here, so a key the JWKS does not publish faithfully fails before
/// any user sees it.
pub fn verify_with_jwks(
    jwks: &Value,
    token: &str,
    now: i64,
    issuer: &str,
    audiences: &[String],
) -> Result<Claims, TokenError> {
    verify_with(token, now, issuer, audiences, |kid| {
        let keys = jwks.get("keys").and_then(Value::as_array)?;
        let mut named = keys
            .iter()
            .filter(|k| k.get("kid").and_then(Value::as_str) == Some(kid));
        let (jwk, None) = (named.next()?, named.next()) else {
            return None;
        };
        public_key_of(jwk).map(|(alg, key)| (alg, Cow::Owned(key)))
    })
}

/// The algorithm and raw public key of an Ed25519 (`OKP`) or P-256 (`EC`) JWK.
fn public_key_of(jwk: &Value) -> Option<(Alg, Vec<u8>)> {
    let member = |name: &str| {
        jwk.get(name)
            .and_then(Value::as_str)
            .and_then(|v| B64.decode(v).ok())
    };
    match (
        jwk.get("kty").and_then(Value::as_str),
        jwk.get("crv").and_then(Value::as_str),
    ) {
        (Some("OKP"), Some("Ed25519")) => member("x")
            .filter(|x| x.len() == 32)
            .map(|x| (Alg::EdDSA, x)),
        (Some("EC"), Some("P-256")) => {
            let (x, y) = (member("x")?, member("y")?);
            (x.len() == 32 && y.len() == 32).then(|| {
                let mut point = vec![0x04];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                (Alg::ES256, point)
            })
        }
        _ => None,
    }
}

/// The checks of [`KeyRing::verify`], with the key found by `lookup` from the header's `kid`.
fn verify_with<'k>(
    token: &str,
    now: i64,
    issuer: &str,
    audiences: &[String],
    lookup: impl Fn(&str) -> Option<(Alg, Cow<'k, [u8]>)>,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Value = decode_json(h)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(TokenError::Algorithm)?;
    let typ = header
        .get("typ")
        .and_then(Value::as_str)
        .ok_or(TokenError::Type)?;
    if !typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE)
        && !typ.eq_ignore_ascii_case("application/at+jwt")
    {
        return Err(TokenError::Type);
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(TokenError::UnknownKey)?;
    let (key_alg, public_key) = lookup(kid).ok_or(TokenError::UnknownKey)?;
    if alg != key_alg.name() {
        return Err(TokenError::Algorithm);
    }
    let signature = B64.decode(s).map_err(|_| TokenError::Malformed)?;
    let verifier: &dyn signature::VerificationAlgorithm = match key_alg {
        Alg::EdDSA => &signature::ED25519,
        Alg::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
    };
    let signing_input = &token[..h.len() + 1 + p.len()];
    signature::UnparsedPublicKey::new(verifier, &public_key)
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| TokenError::Signature)?;
    let raw: Value = decode_json(p)?;
    let aud_ok = match raw.get("aud") {
        Some(Value::String(a)) => audiences.iter().any(|x| x == a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| audiences.iter().any(|x| x == a)),
        _ => false,
    };
    let claims: Claims =
        serde_json::from_value(normalise_aud(raw)).map_err(|_| TokenError::Malformed)?;
    if claims.iss != issuer {
        return Err(TokenError::Issuer);
    }
    if !aud_ok {
        return Err(TokenError::Audience);
    }
    if now > claims.exp + LEEWAY_SECS {
        return Err(TokenError::Expired);
    }
    if claims.iat > now + LEEWAY_SECS {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

fn decode_json(part: &str) -> Result<Value, TokenError> {
    let bytes = B64.decode(part).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// A list `aud` becomes its first entry, so the claims struct has one shape.
fn normalise_aud(mut raw: Value) -> Value {
    if let Some(first) = raw
        .get("aud")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .cloned()
    {
        raw["aud"] = first;
    }
    raw
}

#[cfg(test)]
mod tests;
