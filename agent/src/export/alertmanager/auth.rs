//! How requests to Alertmanager authenticate: a bearer token or basic auth, read once
//! from the environment or a file at start.

use crate::config::AlertmanagerConfig;
use crate::secret::{self, Secret};

use super::AlertmanagerError;

/// How requests authenticate.
#[derive(Debug, Clone)]
pub(super) enum Auth {
    None,
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

impl Auth {
    /// Reads the configured token or password (once, at start).
    pub(super) fn from_config(config: &AlertmanagerConfig) -> Result<Auth, AlertmanagerError> {
        let token = secret::from_env_or_file(
            "export.alertmanager.bearer_token",
            config.bearer_token_env.as_deref(),
            config.bearer_token_file.as_deref(),
        )
        .map_err(AlertmanagerError::Secret)?;
        if let Some(token) = token {
            return Ok(Auth::Bearer(token));
        }
        let Some(basic) = &config.basic_auth else {
            return Ok(Auth::None);
        };
        let password = secret::from_env_or_file(
            "export.alertmanager.basic_auth.password",
            basic.password_env.as_deref(),
            basic.password_file.as_deref(),
        )
        .map_err(AlertmanagerError::Secret)?
        .ok_or_else(|| {
            AlertmanagerError::Secret(
                "export.alertmanager.basic_auth needs password_env or password_file".to_owned(),
            )
        })?;
        Ok(Auth::Basic {
            username: basic.username.clone(),
            password,
        })
    }

    /// `request` with the credentials.
    pub(super) fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token.expose()),
            Auth::Basic { username, password } => {
                request.basic_auth(username, Some(password.expose()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "hunter2\n").unwrap();
        let config: AlertmanagerConfig = toml::from_str(&format!(
            "urls = [\"http://a\"]\nbasic_auth = {{ username = \"vigil\", password_file = {:?} }}\n",
            file.display().to_string()
        ))
        .unwrap();
        let auth = Auth::from_config(&config).unwrap();
        let text = format!("{auth:?}");
        assert!(
            !text.contains("hunter2") && text.contains("vigil"),
            "{text}"
        );
        let Auth::Basic { password, .. } = auth else {
            panic!("{text}")
        };
        assert_eq!(password.expose(), "hunter2");
    }

    #[test]
    fn missing_secret_says_what_to_set() {
        let config: AlertmanagerConfig = toml::from_str(
            "urls = [\"http://a\"]\nbearer_token_env = \"VIGIL_TEST_SURELY_UNSET_TOKEN\"\n",
        )
        .unwrap();
        let err = Auth::from_config(&config).unwrap_err().to_string();
        assert!(err.contains("VIGIL_TEST_SURELY_UNSET_TOKEN"), "{err}");
    }
}
