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
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let mut name = String::from("message");
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            name = v.trim().to_owned();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim_start());
                        }
                    }
                    if data.is_empty() {
                        continue;
                    }
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
