//! OTLP request headers (`[export.otlp] headers`, `OTEL_EXPORTER_OTLP_*HEADERS`). They
//! often carry API keys, so nothing prints their values: `Debug` and [`Headers::masked`]
//! show names only.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Header names and values, in name order.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Headers(BTreeMap<String, String>);

impl Headers {
    /// Headers from `pairs`; a later pair replaces an earlier one of the same name.
    /// Fails on a name or value HTTP (and gRPC metadata) cannot carry, saying which.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self, String> {
        let headers = Headers(pairs.into_iter().collect());
        headers.check()?;
        Ok(headers)
    }

    /// Whether every name and value can be sent; the error names the header, never its value.
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in &self.0 {
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                format!(
                    "has the header name {name:?}, which HTTP does not allow (letters, digits and !#$%&'*+-.^_`|~ only)"
                )
            })?;
            reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                format!(
                    "has a value for header {name:?} that HTTP does not allow (control characters or non-ASCII text)"
                )
            })?;
        }
        Ok(())
    }

    /// Name and value of each header.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether there is no header.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `name=****,name2=****`, or `(none)`: what may be shown of the headers.
    pub fn masked(&self) -> String {
        if self.0.is_empty() {
            return "(none)".to_owned();
        }
        self.0
            .keys()
            .map(|name| format!("{name}=****"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Headers({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_never_shown() {
        let headers = Headers::from_pairs([
            ("x-api-key".to_owned(), "s3cret".to_owned()),
            ("tenant".to_owned(), "blue".to_owned()),
        ])
        .unwrap();
        assert_eq!(headers.masked(), "tenant=****,x-api-key=****");
        let debug = format!("{headers:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("blue"),
            "{debug}"
        );
        assert_eq!(Headers::default().masked(), "(none)");
    }

    #[test]
    fn unsendable_names_and_values_are_refused_without_the_value() {
        let err = Headers::from_pairs([("bad name".to_owned(), "v".to_owned())]).unwrap_err();
        assert!(err.contains("\"bad name\""), "{err}");
        let err = Headers::from_pairs([("k".to_owned(), "se\ncret".to_owned())]).unwrap_err();
        assert!(err.contains("\"k\"") && !err.contains("cret"), "{err}");
    }
}
