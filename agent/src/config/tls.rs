//! The TLS sections: `[export.otlp.tls]` and `[export.alertmanager.tls]` (how vigil checks
//! the servers it connects to) and `[http.tls]` (the status endpoint over https). The
//! files are read by `crate::tls`; here they are only named and checked for pairs.

use std::path::PathBuf;

use serde::Deserialize;

/// `[export.otlp.tls]`, `[export.alertmanager.tls]`: how vigil checks the server it connects to.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsClientConfig {
    /// PEM file of the CA(s) to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. For tests only: logged as a warning at every load.
    pub insecure_skip_verify: bool,
}

/// `[http.tls]`: the status endpoint serves https with this certificate.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// PEM certificate chain the endpoint presents. `vigil reload` trusts the system roots
    /// and every certificate in this file, so put the chain up to its root CA here (or use
    /// a self-signed certificate).
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file`.
    pub key_file: PathBuf,
    /// PEM file of the CA(s) client certificates must be issued by: set, every client
    /// must present one (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
}

impl TlsClientConfig {
    /// The field at fault and what is wrong with it (fields relative to the section).
    pub fn validate(&self) -> Result<(), (String, String)> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err((
                "key_file".to_owned(),
                "is missing: cert_file (a client certificate for mutual TLS) needs the PEM file of its private key".to_owned(),
            )),
            (None, Some(_)) => Err((
                "cert_file".to_owned(),
                "is missing: key_file is set, so the PEM file of the client certificate it belongs to is needed too".to_owned(),
            )),
            _ => Ok(()),
        }
    }

    /// The file paths, to resolve them against the config file's directory.
    pub fn files_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        [
            self.ca_file.as_mut(),
            self.cert_file.as_mut(),
            self.key_file.as_mut(),
        ]
        .into_iter()
        .flatten()
    }
}

impl TlsServerConfig {
    /// The file paths, to resolve them against the config file's directory.
    pub fn files_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        [Some(&mut self.cert_file), Some(&mut self.key_file)]
            .into_iter()
            .chain([self.client_ca_file.as_mut()])
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn a_certificate_needs_its_key_and_the_reverse() {
        let error = Config::parse("[export.otlp.tls]\ncert_file = \"c.pem\"\n", "x")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`export.otlp.tls.key_file` is missing"),
            "{error}"
        );
        let error = Config::parse(
            "[export.alertmanager]\nurls = [\"https://am:9093\"]\n[export.alertmanager.tls]\nkey_file = \"k.pem\"\n",
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("`export.alertmanager.tls.cert_file` is missing"),
            "{error}"
        );
    }

    #[test]
    fn relative_files_are_relative_to_the_config_file() {
        let config = Config::from_file_text(
            std::path::Path::new("/etc/vigil/agent.toml"),
            "[export.otlp.tls]\nca_file = \"ca.pem\"\ncert_file = \"/abs/c.pem\"\nkey_file = \"k.pem\"\n\
             [http.tls]\ncert_file = \"s.pem\"\nkey_file = \"s.key\"\nclient_ca_file = \"cca.pem\"\n",
        )
        .unwrap();
        let tls = &config.export.otlp.tls;
        assert_eq!(
            tls.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/vigil/ca.pem"))
        );
        assert_eq!(
            tls.cert_file.as_deref(),
            Some(std::path::Path::new("/abs/c.pem"))
        );
        assert_eq!(
            tls.key_file.as_deref(),
            Some(std::path::Path::new("/etc/vigil/k.pem"))
        );
        let http = config.http.tls.unwrap();
        assert_eq!(http.cert_file, std::path::Path::new("/etc/vigil/s.pem"));
        assert_eq!(
            http.client_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/vigil/cca.pem"))
        );
    }
}
