//! Where token keys come from. HS256: the environment variable `[auth] secret_env` (or
//! `<VAR>_FILE`), else the development key file, created with 32 random bytes and mode
//! 0600 on first start. RS256/EdDSA: PEM keys from `public_key_env` (and, for minting
//! only, `private_key_env`). No key is ever in the repository or a config file.

use std::io::Write;
use std::path::Path;

use crate::foundation::secrets::from_env;
use base64::Engine as _;

use super::Tokens;
use crate::config::auth::{AuthConfig, JwtAlgorithm};

/// Why no key could be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Env(String),
    #[error("no token key: set {var} (or {var}_FILE), or configure auth.dev_key_file for development")]
    Missing { var: String },
    #[error("development key file {path}: {message}")]
    File { path: String, message: String },
    #[error("the token key must be at least 32 bytes; {0} is shorter")]
    TooShort(String),
}

/// The verifier (and, with `mint`, the signer) `[auth]` describes, keys loaded from
/// the environment (or `*_FILE`) or the development key file.
pub fn tokens(a: &AuthConfig, mint: bool) -> Result<Tokens, KeyError> {
    match a.algorithm {
        JwtAlgorithm::HS256 => {
            let var = a.secret_env.as_deref().unwrap_or_default();
            let secret = load(var, a.dev_key_file.as_deref())?;
            Ok(
                Tokens::new(&secret, &a.issuer, &a.audience, a.leeway_secs)
                    .with_max_lifetime(a.max_token_lifetime_secs),
            )
        }
        JwtAlgorithm::RS256 | JwtAlgorithm::EdDSA => {
            let var = a.public_key_env.as_deref().unwrap_or_default();
            let public = from_env(var).map_err(KeyError::Env)?;
            let private = match (&a.private_key_env, mint) {
                (Some(v), true) => Some(from_env(v).map_err(KeyError::Env)?),
                _ => None,
            };
            let tokens = Tokens::from_pem(
                a.algorithm,
                public.as_bytes(),
                private.as_ref().map(|p| p.as_bytes()),
                &a.issuer,
                &a.audience,
                a.leeway_secs,
            )
            .map_err(|e| KeyError::Env(format!("{var}: {e}")))?;
            Ok(tokens
                .with_private_key_env(a.private_key_env.as_deref().unwrap_or("auth.private_key_env"))
                .with_max_lifetime(a.max_token_lifetime_secs))
        }
    }
}

/// The HS256 secret bytes.
pub fn load(secret_env: &str, dev_key_file: Option<&Path>) -> Result<Vec<u8>, KeyError> {
    let set = |v: &str| std::env::var_os(v).is_some_and(|s| !s.is_empty());
    if set(secret_env) || set(&format!("{secret_env}_FILE")) {
        let secret = from_env(secret_env).map_err(KeyError::Env)?;
        if secret.len() < 32 {
            return Err(KeyError::TooShort(secret_env.to_owned()));
        }
        return Ok(secret.into_bytes());
    }
    let Some(path) = dev_key_file else {
        return Err(KeyError::Missing {
            var: secret_env.to_owned(),
        });
    };
    let file_err = |message: String| KeyError::File {
        path: path.display().to_string(),
        message,
    };
    // Two processes may start at once: creation is atomic (link of a complete file), and
    // the loser reads the winner's key.
    for _ in 0..2 {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let key = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|e| file_err(format!("not base64: {e}; delete it to create a new one")))?;
                if key.len() < 32 {
                    return Err(file_err("shorter than 32 bytes; delete it to create a new one".into()));
                }
                return Ok(key);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match create(path) {
                Ok(key) => return Ok(key),
                Err(Created::Exists) => continue,
                Err(Created::Failed(m)) => return Err(file_err(m)),
            },
            Err(e) => return Err(file_err(e.to_string())),
        }
    }
    Err(file_err("created and removed concurrently; retry".into()))
}

enum Created {
    /// Another process created it first.
    Exists,
    Failed(String),
}

fn create(path: &Path) -> Result<Vec<u8>, Created> {
    let fail = |m: String| Created::Failed(m);
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key).map_err(|e| fail(format!("no randomness: {e}")))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
    let tmp = dir.join(format!(
        ".jwt-key-{}-{:x}",
        std::process::id(),
        u64::from_le_bytes(key[..8].try_into().unwrap_or([0; 8]))
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(base64::engine::general_purpose::STANDARD.encode(&key).as_bytes())?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e.to_string()));
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::warn!(path = %path.display(), "created a development token key: not for production");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Created::Exists),
        Err(e) => Err(fail(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_mode_0600_then_reused() {
        let dir = std::env::temp_dir().join(format!("sbz-key-test-{}", std::process::id()));
        let path = dir.join("k");
        let _ = std::fs::remove_dir_all(&dir);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || load("SBZ_KEY_TEST_UNSET", Some(&p)).unwrap())
            })
            .collect();
        let keys: Vec<Vec<u8>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(keys.windows(2).all(|w| w[0] == w[1]), "every starter sees the same key");
        assert_eq!(keys[0].len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary files left");
        std::fs::write(&path, "short").unwrap();
        assert!(load("SBZ_KEY_TEST_UNSET", Some(&path)).is_err());
        assert!(matches!(
            load("SBZ_KEY_TEST_UNSET", None),
            Err(KeyError::Missing { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
