//! Typed ids, parsed once where they enter (a path, a body) and trusted after: a handler that
//! takes `Path<(TenantId, ServerId)>` cannot mix the two up or see a malformed one. Row ids
//! are UUIDs, kept in their canonical lower-case form; a node id is the operator's name for
//! the node and its certificate's CN (`security::pki::validate_node_id`). Each type reads as
//! a `&str` (`Deref`), so the services and the database keep taking strings.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Why an id did not parse: the sentence for a 400 `invalid_request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is not {expected}")]
pub struct BadId {
    /// The id's name, e.g. `sid`.
    pub what: &'static str,
    /// What it should be, e.g. `a UUID`.
    pub expected: &'static str,
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $expected:literal, $parse:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = BadId;

            fn from_str(raw: &str) -> Result<Self, BadId> {
                let parse: fn(&str) -> Option<String> = $parse;
                parse(raw).map($name).ok_or(BadId {
                    what: $what,
                    expected: $expected,
                })
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                raw.parse().map_err(serde::de::Error::custom)
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    };
}

/// A UUID in its canonical lower-case hyphenated form.
fn uuid(raw: &str) -> Option<String> {
    uuid::Uuid::try_parse(raw).ok().map(|u| u.to_string())
}

fn node_id(raw: &str) -> Option<String> {
    security::pki::validate_node_id(raw)
        .ok()
        .map(|()| raw.to_owned())
}

fn api_key_id(raw: &str) -> Option<String> {
    (raw.len() == 16 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| raw.to_owned())
}

string_id!(
    /// A tenant (`{tid}`).
    TenantId, "tid", "a UUID", uuid
);
string_id!(
    /// A server (`{sid}`).
    ServerId, "sid", "a UUID", uuid
);
string_id!(
    /// A user, e.g. a member (`{uid}`).
    UserId, "uid", "a UUID", uuid
);
string_id!(
    /// A command sent to a node (`{cid}`).
    CommandId, "cid", "a UUID", uuid
);
string_id!(
    /// A backup (`{bid}`).
    BackupId, "bid", "a UUID", uuid
);
string_id!(
    /// An invitation (`{iid}`).
    InvitationId, "iid", "a UUID", uuid
);
string_id!(
    /// A session (`/api/auth/sessions/{id}`).
    SessionId, "id", "a UUID", uuid
);
string_id!(
    /// A tenant API key's public id (`{kid}`: 16 lower-case hex digits).
    ApiKeyId, "kid", "16 lower-case hex digits", api_key_id
);
string_id!(
    /// A node: the operator's name for it and its certificate's CN.
    NodeId, "id", "a node id (lower-case letters, digits and '-', at most 63)", node_id
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_kept_canonical() {
        let id: ServerId = "0190A4B2-7C3D-7E8F-9A0B-1C2D3E4F5A6B".parse().unwrap();
        assert_eq!(id.as_str(), "0190a4b2-7c3d-7e8f-9a0b-1c2d3e4f5a6b");
        let err = "../etc".parse::<ServerId>().unwrap_err();
        assert_eq!(err.to_string(), "sid is not a UUID");
    }

    #[test]
    fn ids_deserialize_from_paths_and_bodies() {
        let (t, s): (TenantId, ServerId) = serde_json::from_str(
            r#"["0190a4b2-7c3d-7e8f-9a0b-1c2d3e4f5a6b","0190a4b2-7c3d-7e8f-9a0b-1c2d3e4f5a6c"]"#,
        )
        .unwrap();
        assert_ne!(t.as_str(), s.as_str());
        assert!(serde_json::from_str::<NodeId>(r#""Node 1""#).is_err());
        assert_eq!(
            serde_json::from_str::<NodeId>(r#""node-1""#).unwrap(),
            *"node-1"
        );
        assert!(serde_json::from_str::<ApiKeyId>(r#""0123456789abcdef""#).is_ok());
        assert!(serde_json::from_str::<ApiKeyId>(r#""0123456789ABCDEF""#).is_err());
    }
}
