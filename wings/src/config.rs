//! Wings' configuration: the `WINGS_*` variables, parsed once, every problem reported together,
//! and the certificate checks `wings check` prints (and the agent runs before it starts).

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use security::pki;

/// This node's id; must equal its certificate's CN.
pub const WINGS_NODE_ID: &str = "WINGS_NODE_ID";
/// The panel's gRPC URL, `https://host:port`, or several (replicas) separated by commas.
pub const WINGS_API_URL: &str = "WINGS_API_URL";
/// The most panel URLs `WINGS_API_URL` may list.
pub const MAX_PANEL_URLS: usize = 16;
/// The join token of `wings enroll` (instead of `--token`).
pub const WINGS_JOIN_TOKEN: &str = "WINGS_JOIN_TOKEN";
/// The node's certificate chain (default `$WINGS_DATA_DIR/identity/cert.pem`).
pub const WINGS_TLS_CERT_FILE: &str = "WINGS_TLS_CERT_FILE";
/// The node's private key (default `$WINGS_DATA_DIR/identity/key.pem`).
pub const WINGS_TLS_KEY_FILE: &str = "WINGS_TLS_KEY_FILE";
/// The root CA (bundle) of the panel's certificate (default `$WINGS_DATA_DIR/identity/ca.pem`).
pub const WINGS_API_CA_CERT: &str = "WINGS_API_CA_CERT";
/// Where servers and backups live.
pub const WINGS_DATA_DIR: &str = "WINGS_DATA_DIR";
/// Seconds between heartbeats (default 5).
pub const WINGS_HEARTBEAT_SECS: &str = "WINGS_HEARTBEAT_SECS";
/// The block of uids servers get, `first-last` (default [`crate::users::DEFAULT_UID_RANGE`]).
pub const WINGS_UID_RANGE: &str = "WINGS_UID_RANGE";
/// `1`: start servers even when the memory or pids cgroup controller is missing.
pub const WINGS_ALLOW_UNCONFINED: &str = "WINGS_ALLOW_UNCONFINED";
/// Where the cgroup hierarchies are mounted (default `/sys/fs/cgroup`).
pub const WINGS_CGROUP_ROOT: &str = "WINGS_CGROUP_ROOT";

/// Everything the agent needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node id.
    pub node_id: String,
    /// The panel's host (for SNI and server certificate verification): the first of
    /// [`Config::panels`], or the one [`Config::at_panel`] chose.
    pub panel_host: String,
    /// The panel's port.
    pub panel_port: u16,
    /// Every panel (replica) `WINGS_API_URL` lists, in its order: the agent tries them in
    /// turn.
    pub panels: Vec<(String, u16)>,
    /// Certificate file.
    pub cert_file: PathBuf,
    /// Key file.
    pub key_file: PathBuf,
    /// CA file for the panel's certificate.
    pub ca_file: PathBuf,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Server uids (and gids).
    pub uid_range: RangeInclusive<u32>,
    /// Start servers without the memory or pids controller.
    pub allow_unconfined: bool,
    /// Where the cgroup hierarchies are.
    pub cgroup_root: PathBuf,
}

/// What `wings check` found out about the credentials.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The certificate's CN.
    pub common_name: String,
    /// Its SHA-256 fingerprint.
    pub fingerprint: String,
    /// Days until it expires.
    pub days_left: i64,
}

impl Config {
    /// This configuration aimed at the `n`-th listed panel (counting around).
    pub fn at_panel(&self, n: usize) -> Config {
        let mut config = self.clone();
        if let Some((host, port)) = self.panels.get(n % self.panels.len().max(1)) {
            (config.panel_host, config.panel_port) = (host.clone(), *port);
        }
        config
    }

    /// Reads the environment; on failure returns every problem, each naming its variable.
    pub fn from_env() -> Result<Config, Vec<String>> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, Vec<String>> {
        let mut errors = Vec::new();
        let mut required = |name: &str| match lookup(name).filter(|v| !v.trim().is_empty()) {
            Some(v) => v,
            None => {
                errors.push(format!(
                    "{name} is not set (print the values with `scripts/dev-ca.sh env <node-id>`)"
                ));
                String::new()
            }
        };
        let node_id = required(WINGS_NODE_ID);
        let url = required(WINGS_API_URL);
        if !node_id.is_empty()
            && let Err(e) = pki::validate_node_id(&node_id)
        {
            errors.push(format!("{WINGS_NODE_ID}: {e}"));
        }
        let panels = if url.is_empty() {
            Vec::new()
        } else {
            parse_urls(&url).unwrap_or_else(|e| {
                errors.push(format!("{WINGS_API_URL}: {e}"));
                Vec::new()
            })
        };
        let (panel_host, panel_port) = panels.first().cloned().unwrap_or_default();
        let data_dir = lookup(WINGS_DATA_DIR)
            .filter(|v| !v.trim().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(format!("data/wings/{node_id}")));
        // Where `wings enroll` writes them unless told otherwise.
        let identity = |name: &str, file: &str| {
            lookup(name)
                .filter(|v| !v.trim().is_empty())
                .map_or_else(|| data_dir.join("identity").join(file), PathBuf::from)
        };
        let cert_file = identity(WINGS_TLS_CERT_FILE, "cert.pem");
        let key_file = identity(WINGS_TLS_KEY_FILE, "key.pem");
        let ca_file = identity(WINGS_API_CA_CERT, "ca.pem");
        let heartbeat = match lookup(WINGS_HEARTBEAT_SECS).filter(|v| !v.trim().is_empty()) {
            None => Duration::from_secs(5),
            Some(raw) => {
                match raw.parse::<u64>() {
                    Ok(secs @ 1..=60) => Duration::from_secs(secs),
                    _ => {
                        errors.push(format!("{WINGS_HEARTBEAT_SECS}: {raw:?} is not a number of seconds from 1 to 60"));
                        Duration::from_secs(5)
                    }
                }
            }
        };
        let uid_range = match lookup(WINGS_UID_RANGE).filter(|v| !v.trim().is_empty()) {
            None => crate::users::DEFAULT_UID_RANGE,
            Some(raw) => parse_uid_range(&raw).unwrap_or_else(|e| {
                errors.push(format!("{WINGS_UID_RANGE}: {e}"));
                crate::users::DEFAULT_UID_RANGE
            }),
        };
        let allow_unconfined = match lookup(WINGS_ALLOW_UNCONFINED).as_deref().map(str::trim) {
            None | Some("" | "0") => false,
            Some("1") => true,
            Some(other) => {
                errors.push(format!("{WINGS_ALLOW_UNCONFINED}: {other:?} is not 0 or 1"));
                false
            }
        };
        let cgroup_root = lookup(WINGS_CGROUP_ROOT)
            .filter(|v| !v.trim().is_empty())
            .map_or_else(|| PathBuf::from("/sys/fs/cgroup"), PathBuf::from);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Config {
            uid_range,
            allow_unconfined,
            cgroup_root,
            node_id,
            panel_host,
            panel_port,
            panels,
            cert_file,
            key_file,
            ca_file,
            data_dir,
            heartbeat,
        })
    }

    /// What the server supervisor needs of this configuration.
    pub fn supervisor_options(&self) -> crate::supervisor::Options {
        crate::supervisor::Options {
            data_dir: self.data_dir.clone(),
            uid_range: self.uid_range.clone(),
            allow_unconfined: self.allow_unconfined,
            cgroup_root: self.cgroup_root.clone(),
        }
    }

    /// Checks the credentials at `now`: every file readable and parseable, the certificate
    /// inside its validity window, its CN equal to the node id, the key matching it.
    pub fn check(&self, now: SystemTime) -> Result<CheckReport, Vec<String>> {
        let mut errors = Vec::new();
        if let Err(e) = security::tls::read_certs(&self.ca_file) {
            errors.push(format!("{WINGS_API_CA_CERT}: {e}"));
        }
        let key_pem = std::fs::read_to_string(&self.key_file)
            .map_err(|e| {
                errors.push(format!(
                    "{WINGS_TLS_KEY_FILE}: {}: {e}",
                    self.key_file.display()
                ))
            })
            .ok();
        let cert = match security::tls::read_certs(&self.cert_file) {
            Ok(mut certs) => Some(certs.swap_remove(0)),
            Err(e) => {
                errors.push(format!("{WINGS_TLS_CERT_FILE}: {e}"));
                None
            }
        };
        let mut report = None;
        if let Some(cert) = &cert {
            match pki::inspect(cert) {
                Err(e) => errors.push(format!("{WINGS_TLS_CERT_FILE}: {e}")),
                Ok(info) => {
                    let now = time::OffsetDateTime::from(now);
                    if info.not_after < now {
                        errors.push(format!(
                            "{WINGS_TLS_CERT_FILE}: certificate expired at {}",
                            info.not_after
                        ));
                    }
                    if info.not_before > now {
                        errors.push(format!(
                            "{WINGS_TLS_CERT_FILE}: certificate not valid until {}",
                            info.not_before
                        ));
                    }
                    if info.common_name != self.node_id {
                        errors.push(format!(
                            "{WINGS_TLS_CERT_FILE}: certificate CN is {:?} but {WINGS_NODE_ID} is {:?}",
                            info.common_name, self.node_id
                        ));
                    }
                    report = Some(CheckReport {
                        days_left: info.days_left(now),
                        common_name: info.common_name,
                        fingerprint: info.fingerprint,
                    });
                }
            }
            if let Some(key_pem) = &key_pem {
                match pki::key_matches_cert(key_pem, cert) {
                    Ok(true) => {}
                    Ok(false) => errors.push(format!(
                        "{WINGS_TLS_KEY_FILE}: the key does not match the certificate in {WINGS_TLS_CERT_FILE}"
                    )),
                    Err(e) => errors.push(format!("{WINGS_TLS_KEY_FILE}: {e}")),
                }
            }
        }
        match report {
            Some(report) if errors.is_empty() => Ok(report),
            _ => Err(errors),
        }
    }
}

/// Parses `first-last`: at least 1,000 uids, all above 65,535 (clear of ordinary accounts).
fn parse_uid_range(raw: &str) -> Result<RangeInclusive<u32>, String> {
    let (first, last) = raw
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?)))
        .ok_or_else(|| format!("{raw:?} is not first-last (e.g. 400000-499999)"))?;
    if first <= 65_535 || last < first || last - first < 999 || last == u32::MAX {
        return Err(format!(
            "{raw:?}: the range must start above 65535 and hold at least 1000 uids"
        ));
    }
    Ok(first..=last)
}

/// Splits `https://host:port` (port defaults to 3001; IPv6 hosts in brackets).
/// One or more comma-separated panel URLs (at most [`MAX_PANEL_URLS`], none twice).
fn parse_urls(urls: &str) -> Result<Vec<(String, u16)>, String> {
    let mut panels: Vec<(String, u16)> = Vec::new();
    for url in urls.split(',').map(str::trim) {
        let panel = parse_url(url)?;
        if panels.contains(&panel) {
            return Err(format!("{url:?} is listed twice"));
        }
        panels.push(panel);
    }
    if panels.len() > MAX_PANEL_URLS {
        return Err(format!("at most {MAX_PANEL_URLS} URLs"));
    }
    Ok(panels)
}

fn parse_url(url: &str) -> Result<(String, u16), String> {
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        format!("{url:?} must start with https:// (the node channel is always TLS)")
    })?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains('@') {
        return Err(format!("{url:?} must be https://host:port with no path"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed ["))?;
        (host.to_owned(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (authority.to_owned(), None),
        }
    };
    let port = match port {
        None => 3001,
        Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port {p:?}"))?,
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_urls_are_tried_in_their_order() {
        let config = |url: &str| {
            Config::from_lookup(|name| match name {
                WINGS_NODE_ID => Some("node-1".into()),
                WINGS_API_URL => Some(url.into()),
                _ => None,
            })
        };
        let one = config("https://a:1, https://b:2").unwrap();
        assert_eq!(one.panels, [("a".into(), 1), ("b".into(), 2)]);
        assert_eq!((one.panel_host.as_str(), one.panel_port), ("a", 1));
        let second = one.at_panel(1);
        assert_eq!((second.panel_host.as_str(), second.panel_port), ("b", 2));
        assert_eq!(one.at_panel(2).panel_host, "a", "around again");
        for bad in [
            "https://a:1,https://a:1",
            "https://a:1,",
            "https://a:1,http://b:2",
        ] {
            let errors = config(bad).unwrap_err();
            assert!(errors[0].starts_with(WINGS_API_URL), "{bad}: {errors:?}");
        }
        let many = (0..=MAX_PANEL_URLS)
            .map(|n| format!("https://p{n}:1"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(config(&many).is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("https://127.0.0.1:3001").unwrap(),
            ("127.0.0.1".into(), 3001)
        );
        assert_eq!(
            parse_url("https://panel.example.com/").unwrap(),
            ("panel.example.com".into(), 3001)
        );
        assert_eq!(parse_url("https://[::1]:9").unwrap(), ("::1".into(), 9));
        for bad in [
            "http://x:1",
            "https://",
            "https://x:port",
            "https://x/path",
            "https://u@x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uid_ranges() {
        assert_eq!(parse_uid_range("400000-499999").unwrap(), 400_000..=499_999);
        for bad in [
            "1000-2000",
            "500000-400000",
            "x-y",
            "400000",
            "400000-400010",
        ] {
            assert!(parse_uid_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_variables_are_all_named() {
        let errors = Config::from_lookup(|_| None).unwrap_err().join("\n");
        for name in [WINGS_NODE_ID, WINGS_API_URL] {
            assert!(errors.contains(name), "{name}");
        }
    }

    #[test]
    fn credentials_default_to_the_identity_directory() {
        let config = Config::from_lookup(|name| match name {
            WINGS_NODE_ID => Some("node-1".into()),
            WINGS_API_URL => Some("https://127.0.0.1:3001".into()),
            WINGS_DATA_DIR => Some("/var/lib/wings".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            config.key_file,
            PathBuf::from("/var/lib/wings/identity/key.pem")
        );
        assert_eq!(
            config.cert_file,
            PathBuf::from("/var/lib/wings/identity/cert.pem")
        );
        assert_eq!(
            config.ca_file,
            PathBuf::from("/var/lib/wings/identity/ca.pem")
        );
    }
}
