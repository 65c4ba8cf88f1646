//! The error responses of the document: one component response per error status, each with
//! the contract's error body (`#/components/schemas/Error`), `RateLimited` with its headers.

use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{Components, KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};

/// Adds every error response to `components`.
pub(super) fn add(components: &mut Components) {
    for (name, description) in ERRORS {
        let response = error(description, *name == "RateLimited");
        components
            .responses
            .insert((*name).to_owned(), RefOr::T(response));
    }
}

/// The component responses for errors: name and description.
const ERRORS: &[(&str, &str)] = &[
    ("Error", "An error, in the contract's body."),
    (
        "BadRequest",
        "Malformed JSON, a missing or invalid field, a bad UUID or query parameter \
         (`invalid_request`, `weak_password`).",
    ),
    (
        "Unauthenticated",
        "No, an invalid or an expired token (`unauthenticated`); wrong credentials \
         (`invalid_credentials`); a reused refresh token (`token_reused`).",
    ),
    (
        "Forbidden",
        "Authenticated but not allowed (`forbidden`), or the email address is not verified \
         (`email_not_verified`).",
    ),
    (
        "NotFound",
        "Not found, or it belongs to a tenant the caller is not a member of (`not_found`).",
    ),
    (
        "Conflict",
        "A duplicate, the wrong state, or the node is offline (`conflict`, `node_offline`, \
         `no_free_port`, `secret_unreadable`).",
    ),
    (
        "PayloadTooLarge",
        "The body is over its bound (`payload_too_large`).",
    ),
    (
        "UnsupportedMediaType",
        "The body is not JSON (`unsupported_media_type`).",
    ),
    ("RateLimited", "Rate limited (`rate_limited`)."),
    (
        "Unavailable",
        "Unavailable for now (`unavailable`), with `Retry-After` when it says.",
    ),
];

/// The component response named for `status`.
pub(super) fn error_name(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        401 => "Unauthenticated",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        413 => "PayloadTooLarge",
        415 => "UnsupportedMediaType",
        429 => "RateLimited",
        503 => "Unavailable",
        _ => "Error",
    }
}

fn error(description: &str, rate_limited: bool) -> Response {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Error")))
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/json", content);
    if rate_limited {
        response = response.header("Retry-After", header("Seconds to wait before retrying."));
        for (name, header) in rate_limit_headers() {
            response = response.header(name, header);
        }
    }
    response.build()
}

fn header(description: &str) -> Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .description(Some(description))
        .build()
}

pub(super) fn rate_limit_headers() -> [(&'static str, Header); 3] {
    let reset = HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .description(Some("When the window frees a slot (RFC 3339 UTC)."))
        .build();
    [
        (
            "X-RateLimit-Limit",
            header("Requests allowed in the window."),
        ),
        (
            "X-RateLimit-Remaining",
            header("Requests left in the window."),
        ),
        ("X-RateLimit-Reset", reset),
    ]
}
