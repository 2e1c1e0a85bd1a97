//! Layered loading (SPEC §9): built-in defaults → `config/default.toml` → `--config PATH` or
//! `SWITCHYARD_CONFIG` → `SWITCHYARD__SECTION__KEY` environment variables.

use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};

use crate::config::{Problem, Settings};

/// The file every node reads when it exists, relative to the working directory.
pub const DEFAULT_FILE: &str = "config/default.toml";

/// Why a configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The named file is missing or unreadable.
    #[error("cannot read configuration file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The merged tree does not fit `Settings`.
    #[error("{0}")]
    Invalid(Problem),
}

/// Loads the layered configuration. `explicit` is `--config`; without it `SWITCHYARD_CONFIG` is used.
pub fn load(explicit: Option<&Path>) -> Result<Settings, LoadError> {
    let env_path = std::env::var_os("SWITCHYARD_CONFIG").map(PathBuf::from);
    let named = explicit.map(Path::to_path_buf).or(env_path);
    let mut builder = Config::builder().add_source(File::new(DEFAULT_FILE, FileFormat::Toml).required(false));
    if let Some(path) = &named {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LoadError::File { path: path.clone(), message: e.to_string() })?;
        builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
    }
    builder = builder
        .add_source(Environment::with_prefix("SWITCHYARD").prefix_separator("__").separator("__").try_parsing(true));
    let merged = builder.build().map_err(|e| LoadError::Invalid(Problem::new("", e.to_string())))?;
    serde_path_to_error::deserialize::<_, Settings>(merged).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        LoadError::Invalid(Problem::new(path, e.into_inner().to_string()))
    })
}

/// Resolves a `$ENV_VAR` reference. `Err` names what is wrong without the value.
pub fn resolve_env_ref(reference: &str) -> Result<String, String> {
    let Some(name) = reference.strip_prefix('$') else {
        return Err("must be an environment reference such as `$OPENAI_API_KEY`, never a literal key".into());
    };
    let name = name.trim_start_matches('{').trim_end_matches('}');
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("`${name}` is not a valid environment variable name"));
    }
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("environment variable `{name}` is not set")),
    }
}
