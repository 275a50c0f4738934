//! Secrets (passwords, tokens) read from an environment variable or a file, never
//! from the config text itself, and never printed: `Debug` shows `Secret(***)`.

use std::path::Path;

/// A password or token. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the driver or the request that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Reads the secret that `env` (a variable name) or `file` points at; `None` when
/// neither is given. `what` names the setting in errors, e.g. `password`.
pub fn from_env_or_file(
    what: &str,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Secret>, String> {
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(value) if !value.is_empty() => Ok(Some(Secret(value))),
            _ => Err(format!(
                "{what}_env names {var}, which is not set (or empty): export it or use {what}_file"
            )),
        };
    }
    if let Some(file) = file {
        return std::fs::read_to_string(file)
            .map(|p| Some(Secret(p.trim_end_matches(['\n', '\r']).to_owned())))
            .map_err(|e| format!("cannot read {what}_file {}: {e}", file.display()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "Secret(***)");
    }

    #[test]
    fn file_secret_loses_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\n").unwrap();
        let secret = from_env_or_file("token", None, Some(&path))
            .unwrap()
            .unwrap();
        assert_eq!(secret.expose(), "abc");
        let err = from_env_or_file("token", Some("VIGIL_TEST_UNSET_VAR"), None).unwrap_err();
        assert!(
            err.contains("token_env names VIGIL_TEST_UNSET_VAR"),
            "{err}"
        );
    }
}
