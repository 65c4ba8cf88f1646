//! The transfers' connections of one control session, by panel replica: a `FileRequest`'s
//! `Files` stream goes to the replica its `reply_to` names (a replica that does not hold this
//! node's control stream routed the request to the one that does), or, when it is empty, to
//! the panel of the control stream. Each is a [`Link`] made with the control stream's TLS
//! configuration (the same certificate; the replica's certificate verified against the host
//! of `reply_to`). At most [`MAX_LINKS`] replicas' links are kept, the least recently used
//! dropped first.
//!
//! The addresses dialled come only from `FileRequest`s, which come only over the
//! authenticated control stream; a malformed one is refused, never dialled.

use std::collections::VecDeque;
use std::net::Ipv6Addr;
use std::sync::{Arc, Mutex};

use rustls::ClientConfig;

use super::link::Link;

/// Links to replicas other than the control stream's kept at once.
pub const MAX_LINKS: usize = 8;
/// Longest `reply_to`: a DNS name, a colon and a port.
pub const MAX_REPLY_TO: usize = 253 + 1 + 5;

/// The links of one control session.
pub struct Links {
    /// To the panel of the control stream.
    home: Arc<Link>,
    tls: Arc<ClientConfig>,
    /// To other replicas, by `reply_to`, the most recently used last.
    others: Mutex<VecDeque<(String, Arc<Link>)>>,
}

impl Links {
    /// The links of a session connected to `host:port` with `tls`; nothing is dialled yet.
    pub fn new(host: &str, port: u16, tls: Arc<ClientConfig>) -> Links {
        Links {
            home: Arc::new(Link::new(host, port, tls.clone())),
            tls,
            others: Mutex::default(),
        }
    }

    /// The link to the control stream's panel.
    pub fn home(&self) -> Arc<Link> {
        self.home.clone()
    }

    /// The link a request with `reply_to` is answered on: the home link when it is empty,
    /// else the one to that replica (made now if there is none). `Err` says why `reply_to`
    /// is refused.
    pub fn for_reply(&self, reply_to: &str) -> Result<Arc<Link>, String> {
        if reply_to.is_empty() {
            return Ok(self.home());
        }
        let (host, port) = parse(reply_to)?;
        // Entries are replaced whole; a panic elsewhere does not make them wrong.
        let mut others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        let known = others.iter().position(|(addr, _)| addr == reply_to);
        if let Some(entry) = known.and_then(|at| others.remove(at)) {
            let link = entry.1.clone();
            others.push_back(entry);
            return Ok(link);
        }
        if others.len() >= MAX_LINKS {
            others.pop_front();
        }
        let link = Arc::new(Link::new(&host, port, self.tls.clone()));
        others.push_back((reply_to.to_owned(), link.clone()));
        Ok(link)
    }

    /// How many links to other replicas are kept.
    pub fn kept(&self) -> usize {
        self.others.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// `host:port` of a `reply_to`: a DNS name or IPv4 address, or a bracketed IPv6 address
/// (returned without its brackets), and a port from 1 to 65535.
fn parse(reply_to: &str) -> Result<(String, u16), String> {
    let refuse = || {
        let shown: String = reply_to.chars().take(64).collect();
        format!("the panel named a malformed address to answer at: {shown:?}")
    };
    if reply_to.len() > MAX_REPLY_TO {
        return Err(refuse());
    }
    let (host, port) = reply_to.rsplit_once(':').ok_or_else(refuse)?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(refuse)?;
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) if v6.parse::<Ipv6Addr>().is_ok() => Ok((v6.to_owned(), port)),
        Some(_) => Err(refuse()),
        None if !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')) =>
        {
            Ok((host.to_owned(), port))
        }
        None => Err(refuse()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> Links {
        security::tls::install_default_provider();
        let tls = ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Links::new("panel.example.com", 3001, Arc::new(tls))
    }

    #[test]
    fn reply_addresses_are_checked() {
        assert_eq!(parse("10.0.0.2:3001").unwrap(), ("10.0.0.2".into(), 3001));
        assert_eq!(parse("[::1]:3001").unwrap(), ("::1".into(), 3001));
        assert_eq!(
            parse("panel-2.example.com:443").unwrap(),
            ("panel-2.example.com".into(), 443)
        );
        let long = format!("{}:1", "a".repeat(MAX_REPLY_TO));
        for bad in [
            "panel", "panel:0", "panel:x", ":1", "::1:1", "[nope]:1", "a b:1", "a@b:1", &long,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn links_are_reused_and_bounded() {
        let links = links();
        assert!(Arc::ptr_eq(&links.for_reply("").unwrap(), &links.home()));
        assert!(links.for_reply("bad address").is_err());
        let first = links.for_reply("10.0.0.1:3001").unwrap();
        assert!(Arc::ptr_eq(
            &first,
            &links.for_reply("10.0.0.1:3001").unwrap()
        ));
        let second = links.for_reply("10.0.0.2:3001").unwrap();
        for n in 3..=MAX_LINKS {
            links.for_reply(&format!("10.0.0.{n}:3001")).unwrap();
        }
        // 10.0.0.1 used again: 10.0.0.2 is now the least recently used, and goes first.
        assert!(Arc::ptr_eq(
            &first,
            &links.for_reply("10.0.0.1:3001").unwrap()
        ));
        links.for_reply("10.0.0.99:3001").unwrap();
        assert_eq!(links.kept(), MAX_LINKS);
        assert!(Arc::ptr_eq(
            &first,
            &links.for_reply("10.0.0.1:3001").unwrap()
        ));
        assert!(!Arc::ptr_eq(
            &second,
            &links.for_reply("10.0.0.2:3001").unwrap()
        ));
        assert_eq!(links.kept(), MAX_LINKS);
    }
}
