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
