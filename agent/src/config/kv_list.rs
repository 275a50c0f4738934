//! The `key=value,key2=value2` lists of `OTEL_EXPORTER_OTLP_HEADERS` and
//! `OTEL_RESOURCE_ATTRIBUTES`: keys and values percent-decoded (`%2C` is a comma),
//! whitespace around them trimmed, empty entries (a trailing comma) skipped.

use percent_encoding::percent_decode_str;

/// The pairs of `text` in order. An error names the entry at fault by its position and
/// never repeats its text (a header value may be an API key).
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for (i, entry) in text.split(',').enumerate() {
        let number = i + 1;
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some((key, value)) = entry.split_once('=') else {
            return Err(format!(
                "has no `=` in entry {number}; write key=value pairs separated by commas, e.g. key1=value1,key2=value2"
            ));
        };
        let key = decode(key.trim()).map_err(|why| format!("has a key {why} in entry {number}"))?;
        if key.is_empty() {
            return Err(format!(
                "has an empty key in entry {number}; write key=value pairs separated by commas"
            ));
        }
        let value = decode(value.trim())
            .map_err(|why| format!("has a value {why} in entry {number} ({key})"))?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// Percent-decodes `text`; every `%` must start a `%XX` escape, and the result must be UTF-8.
fn decode(text: &str) -> Result<String, &'static str> {
    let bytes = text.as_bytes();
    let broken_escape = bytes.iter().enumerate().any(|(i, b)| {
        *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if broken_escape {
        return Err("with a `%` that starts no %XX escape (write a literal % as %25)");
    }
    percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| "that is not UTF-8 once percent-decoded")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_and_values_are_percent_decoded_and_trimmed() {
        assert_eq!(
            parse(" api-key = s3cr%3Dt , x%2Cy=a%2Cb%20c,empty=,, ").unwrap(),
            pairs(&[("api-key", "s3cr=t"), ("x,y", "a,b c"), ("empty", "")])
        );
        assert_eq!(
            parse("Authorization=Basic dTpw==").unwrap(),
            pairs(&[("Authorization", "Basic dTpw==")]),
            "a value may hold `=` (base64 padding)"
        );
        assert_eq!(parse("").unwrap(), pairs(&[]));
        assert_eq!(parse(" , ").unwrap(), pairs(&[]));
    }

    #[test]
    fn bad_entries_are_named_by_position_without_their_text() {
        let err = parse("a=1,secrettoken").unwrap_err();
        assert!(err.contains("entry 2") && err.contains("no `=`"), "{err}");
        assert!(!err.contains("secrettoken"), "{err}");
        let err = parse("=1").unwrap_err();
        assert!(err.contains("empty key in entry 1"), "{err}");
        let err = parse("a=100%").unwrap_err();
        assert!(err.contains("value") && err.contains("%25"), "{err}");
        let err = parse("k%zz=1").unwrap_err();
        assert!(err.contains("key") && err.contains("entry 1"), "{err}");
        let err = parse("a=%ff").unwrap_err();
        assert!(err.contains("not UTF-8"), "{err}");
    }
}
