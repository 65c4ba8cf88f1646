//! Where certificates live on disk (the `certs/` layout of the contract) and how they are
//! written: atomically, keys with mode 0600, certificates 0644.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::Error;

/// The `certs/` directory layout shared by `dev-ca`, the panel and Wings.
#[derive(Debug, Clone)]
pub struct CertLayout {
    root: PathBuf,
}

impl CertLayout {
    /// A layout rooted at `root` (by default `certs/`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CertLayout { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `ca/ca-cert.pem`.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca/ca-cert.pem")
    }

    /// `ca/ca-key.pem`.
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca/ca-key.pem")
    }

    /// `issuer/issuer-cert.pem`: the panel's issuing intermediate (`PANEL_ISSUER_CERT_FILE`).
    pub fn issuer_cert(&self) -> PathBuf {
        self.root.join("issuer/issuer-cert.pem")
    }

    /// `issuer/issuer-key.pem` (`PANEL_ISSUER_KEY_FILE`).
    pub fn issuer_key(&self) -> PathBuf {
        self.root.join("issuer/issuer-key.pem")
    }

    /// `nodes/<id>-cert.pem`. The id must have passed [`super::validate_node_id`].
    pub fn node_cert(&self, id: &str) -> PathBuf {
        self.root.join(format!("nodes/{id}-cert.pem"))
    }

    /// `nodes/<id>-key.pem`. The id must have passed [`super::validate_node_id`].
    pub fn node_key(&self, id: &str) -> PathBuf {
        self.root.join(format!("nodes/{id}-key.pem"))
    }

    /// `server/panel-cert.pem`.
    pub fn server_cert(&self) -> PathBuf {
        self.root.join("server/panel-cert.pem")
    }

    /// `server/panel-key.pem`.
    pub fn server_key(&self) -> PathBuf {
        self.root.join("server/panel-key.pem")
    }
}

/// Writes a private key with mode 0600, atomically (temporary file, then rename).
pub fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    write_atomic(path, contents, 0o600)
}

/// Writes a certificate with mode 0644, atomically.
pub fn write_public(path: &Path, contents: &str) -> Result<(), Error> {
    write_atomic(path, contents, 0o644)
}

fn write_atomic(path: &Path, contents: &str, mode: u32) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}
