//! Why a configuration is rejected, and the range check every section uses. A leaf:
//! the sections and the validator import it, it imports none of them.

use std::path::PathBuf;

/// Why the configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: invalid TOML: {message}")]
    Syntax { source_name: String, message: String },
    #[error("{var}: {message}")]
    Env { var: String, message: String },
    #[error("{key}: {message}{origin}")]
    Invalid {
        key: String,
        message: String,
        /// " (set by STOCKSBLITZ_...)" when an override supplied the value.
        origin: String,
    },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
            origin: String::new(),
        }
    }

    /// The config key the error names, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Env { var, .. } => Some(var),
            _ => None,
        }
    }
}

/// `key` must lie in `lo..=hi`.
pub fn range(key: &str, v: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(ConfigError::invalid(key, format!("{v} is outside {lo}..={hi}")))
    }
}
