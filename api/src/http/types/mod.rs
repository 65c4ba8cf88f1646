//! The bodies the REST API takes and answers, as types: handlers build and return them, serde
//! writes them, and utoipa reads the same types into `/openapi.json` (see [`super::openapi`]).
//! What a field's schema says (formats, lengths, patterns) is what the handler enforces.

mod account;
mod platform;
mod servers;
mod tenancy;

pub use crate::servers::schema::{SECRET_NAME, VARIABLE_NAME};
use serde::Serialize;
use utoipa::ToSchema;

pub use account::*;
pub use platform::*;
pub use servers::*;
pub use tenancy::*;

/// A page of a list: `{"items": [...], "next_cursor": string|null}`, the contract's list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// This page's items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page of the domain's rows, each shown as `T`.
    pub fn of<M>(page: crate::pagination::Page<M>, show: impl FnMut(M) -> T) -> Page<T> {
        Page {
            items: page.items.into_iter().map(show).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

/// The contract's error body, `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` of [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// snake_case, stable.
    pub code: String,
    /// For people.
    pub message: String,
}

/// An RFC 3339 UTC time as written by `chrono` with whole seconds (`2026-01-02T03:04:05Z`).
pub(crate) fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
