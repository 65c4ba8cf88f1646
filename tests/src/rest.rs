//! A REST client for the panel's API and a reader of its Server-Sent Events.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery";

/// A client of one panel, optionally logged in.
#[derive(Clone)]
pub struct Rest {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// The bearer token, once logged in.
    pub token: Option<String>,
    http: reqwest::Client,
}

impl Rest {
    /// A client of the panel at `base`.
    pub fn new(base: impl Into<String>) -> Rest {
        Rest {
            base: base.into(),
            token: None,
            http: reqwest::Client::new(),
        }
    }

    /// The same panel, as the holder of `token`.
    pub fn with_token(&self, token: &str) -> Rest {
        Rest {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// Sends a request; returns the status and the JSON body (`Null` when none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request to the panel");
        let status = response.status();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    }

    /// GET.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Registers `email` and verifies it through the mailed link found in `outbox`; returns
    /// the user id.
    pub async fn register_verified(&self, outbox: &Path, email: &str) -> String {
        let (status, body) = self
            .post(
                "/api/auth/register",
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "register {email}: {body}");
        let token = crate::mail::outbox_for(outbox, email)
            .last()
            .and_then(crate::mail::Mail::token)
            .expect("verification mail");
        let (status, body) = self
            .post("/api/auth/verify-email", json!({"token": token}))
            .await;
        assert_eq!(status, StatusCode::OK, "verify {email}: {body}");
        body["user"]["id"].as_str().expect("user id").to_owned()
    }

    /// [`Rest::register_verified`], then logged in: a client holding the access token, and
    /// the user id.
    pub async fn verified_user(&self, outbox: &Path, email: &str) -> (Rest, String) {
        let user_id = self.register_verified(outbox, email).await;
        (self.login(email).await, user_id)
    }

    /// Logs `email` in with [`PASSWORD`].
    pub async fn login(&self, email: &str) -> Rest {
        let (status, body) = self
            .post(
                "/api/auth/login",
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {email}: {body}");
        self.with_token(body["access_token"].as_str().expect("access token"))
    }

    /// Opens `path` as an event stream; events arrive on the returned reader.
    pub async fn events(&self, path: &str) -> Result<EventReader, (StatusCode, Value)> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let mut response = request.send().await.expect("request to the panel");
        if response.status() != StatusCode::OK {
            let status = response.status();
            return Err((status, response.json().await.unwrap_or(Value::Null)));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut buffer: Vec<u8> = Vec::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                // Line ends may be CRLF, CR or LF (the SSE grammar); bytes stay bytes until a
                // whole event is in, so a character split across chunks is not mangled.
                buffer.extend_from_slice(&chunk);
                while let Some((block, rest)) = split_event(&buffer) {
                    let event = parse_event(&String::from_utf8_lossy(block));
                    buffer = rest.to_vec();
                    let Some((name, data)) = event else { continue };
                    let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    if tx.send((name, value)).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(EventReader { rx, task })
    }
}

/// Events of one SSE stream: `(event name, JSON data)`.
pub struct EventReader {
    rx: mpsc::UnboundedReceiver<(String, Value)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EventReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventReader {
    /// The next event for which `matches` holds (earlier ones are passed over); panics naming
    /// `what` after `cap`.
    pub async fn until(
        &mut self,
        what: &str,
        cap: Duration,
        mut matches: impl FnMut(&str, &Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + cap;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((name, value))) if matches(&name, &value) => return value,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the event stream ended before: {what}"),
                Err(_) => panic!("no event within {cap:?}: {what}"),
            }
        }
    }

    /// Waits up to `cap` for the panel to end the stream (events meanwhile are passed over);
    /// how long it took, `None` when it is still open.
    pub async fn ended(&mut self, cap: Duration) -> Option<Duration> {
        let start = tokio::time::Instant::now();
        let deadline = start + cap;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(_)) => continue,
                Ok(None) => return Some(start.elapsed()),
                Err(_) => return None,
            }
        }
    }

    /// Every event received so far, without waiting.
    pub fn drain(&mut self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while let Ok(event) = self.rx.try_recv() {
            out.push(event);
        }
        out
    }
}

/// The first whole event of `buffer` (up to a blank line) and what follows it.
fn split_event(buffer: &[u8]) -> Option<(&[u8], &[u8])> {
    let normalised_end = |i: usize| -> Option<usize> {
        [&b"\r\n\r\n"[..], b"\n\n", b"\r\r"]
            .iter()
            .find(|sep| buffer[i..].starts_with(sep))
            .map(|sep| i + sep.len())
    };
    (0..buffer.len()).find_map(|i| normalised_end(i).map(|end| (&buffer[..i], &buffer[end..])))
}

/// One event block: its name (`message` unless given) and its data lines joined by `\n`, as
/// the SSE specification says; `None` for a comment-only or data-less block.
fn parse_event(block: &str) -> Option<(String, String)> {
    let mut name = String::from("message");
    let mut data: Vec<&str> = Vec::new();
    for line in block.split(['\r', '\n']).filter(|l| !l.is_empty()) {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = value.to_owned(),
            "data" => data.push(value),
            _ => {}
        }
    }
    (!data.is_empty()).then(|| (name, data.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::{parse_event, split_event};

    #[test]
    fn sse_blocks_follow_the_specification() {
        let stream = b"event: console\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n: keep-alive\n\nrest";
        let (first, rest) = split_event(stream).unwrap();
        let (second, rest) = split_event(rest).unwrap();
        assert_eq!(rest, b"rest");
        assert_eq!(
            parse_event(std::str::from_utf8(first).unwrap()),
            Some(("console".to_owned(), "{\"a\":\n1}".to_owned()))
        );
        assert_eq!(parse_event(std::str::from_utf8(second).unwrap()), None);
        assert_eq!(
            parse_event("data:  two spaces"),
            Some(("message".to_owned(), " two spaces".to_owned()))
        );
        assert!(split_event(b"data: x\n").is_none());
    }
}
