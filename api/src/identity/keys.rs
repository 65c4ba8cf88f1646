//! The access-token signing keys: the configured one (or, outside production, one generated
//! into `data/`), named by `JWT_ACTIVE_KID` if set, plus the retired ones.

use security::jwt::{KeyRing, SigningKey};

use crate::Error;
use crate::config::{Environment, SecurityConfig};

/// Loads the key ring.
pub(crate) fn load(config: &SecurityConfig, environment: Environment) -> Result<KeyRing, Error> {
    use crate::config::{JWT_PRIVATE_KEY_FILE, JWT_RETIRED_KEY_FILES};
    let read = |path: &std::path::Path, var: &str| {
        std::fs::read_to_string(path)
            .map_err(|e| Error::config(var, format!("cannot read {}: {e}", path.display())))
            .and_then(|pem| {
                SigningKey::from_pem(&pem)
                    .map_err(|e| Error::config(var, format!("{}: {e}", path.display())))
            })
    };
    let active = match &config.jwt_key_file {
        Some(path) => read(path, JWT_PRIVATE_KEY_FILE)?,
        None if environment == Environment::Production => {
            return Err(Error::config(
                JWT_PRIVATE_KEY_FILE,
                format!("{JWT_PRIVATE_KEY_FILE} is required in production"),
            ));
        }
        None => {
            let path = config.data_dir.join("jwt-signing-key.pem");
            if !path.exists() {
                let pem = SigningKey::generate_ed25519_pem()?;
                security::pki::write_private(&path, &pem)?;
                tracing::warn!(path = %path.display(), "DEVELOPMENT ONLY: generated a JWT signing key; set {JWT_PRIVATE_KEY_FILE} in production");
            }
            read(&path, JWT_PRIVATE_KEY_FILE)?
        }
    };
    let active = match &config.jwt_active_kid {
        Some(kid) => active.with_kid(kid),
        None => active,
    };
    let retired = config
        .jwt_retired_key_files
        .iter()
        .map(|p| read(p, JWT_RETIRED_KEY_FILES))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(KeyRing::new(active, retired))
}
