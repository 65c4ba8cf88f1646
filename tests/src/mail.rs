//! Reading the panel's outbox: one RFC 5322 `.eml` file per mail, bodies possibly
//! quoted-printable, as a mail client would.

use std::path::Path;

/// One mail from the outbox.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The `To:` header.
    pub to: String,
    /// The `Subject:` header.
    pub subject: String,
    /// The decoded body.
    pub body: String,
}

impl Mail {
    /// The value of the `token=` query parameter of the link in the body.
    pub fn token(&self) -> Option<String> {
        let start = self.body.find("token=")? + "token=".len();
        let token: String = self.body[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        (!token.is_empty()).then_some(token)
    }
}

/// Every mail in `dir`, oldest first.
pub fn outbox(dir: &Path) -> Vec<Mail> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|raw| parse(&raw))
        .collect()
}

/// The mails to `to`, oldest first.
pub fn outbox_for(dir: &Path, to: &str) -> Vec<Mail> {
    outbox(dir)
        .into_iter()
        .filter(|m| m.to.contains(to))
        .collect()
}

fn parse(raw: &str) -> Mail {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((raw.as_str(), ""));
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    let body = if header("Content-Transfer-Encoding:").eq_ignore_ascii_case("quoted-printable") {
        decode_quoted_printable(body)
    } else {
        body.to_owned()
    };
    Mail {
        to: header("To:"),
        subject: header("Subject:"),
        body,
    }
}

fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoted_printable() {
        assert_eq!(super::decode_quoted_printable("a=3Db=\nc =C3=A9"), "a=bc é");
    }
}
