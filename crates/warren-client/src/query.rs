//! Query-string building for list endpoints, byte-compatible with the official SDKs.
//!
//! The `metadata` filter of `GET /v2/sandboxes` is encoded three times over, exactly as the
//! Python SDK does it: each key and value is percent-encoded (with `/` left alone), the pairs
//! are joined as a form (`k=v&k2=v2`, form-encoding the already-encoded text again), and that
//! whole string becomes one query value (encoded a third time). A server URL-decodes the
//! query, parses the value as a form and percent-decodes each key and value once more.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters a query component may carry unescaped (Python's `quote_plus` safe set).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~');

/// Python's `quote(s)` default: as [`COMPONENT`] but keeps `/`.
const PATH_LIKE: &AsciiSet = &COMPONENT.remove(b'/');

/// Percent-encodes one query key or value.
pub(crate) fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// Percent-encodes a path segment (ids such as `team/snap:v1` become one segment).
pub(crate) fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// The form text inside the `metadata` value, before it is encoded as a query value.
fn metadata_form(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let k = utf8_percent_encode(k, PATH_LIKE).to_string();
            let v = utf8_percent_encode(v, PATH_LIKE).to_string();
            format!("{}={}", encode_component(&k), encode_component(&v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Builds a query string (without the leading `?`) from already-chosen parameters.
#[derive(Debug, Default)]
pub(crate) struct QueryBuilder {
    parts: Vec<String>,
}

impl QueryBuilder {
    /// Adds `name=value`, encoding the value.
    pub(crate) fn push(&mut self, name: &str, value: &str) -> &mut Self {
        self.parts
            .push(format!("{name}={}", encode_component(value)));
        self
    }

    /// Adds the SDK-compatible `metadata` filter; nothing when `pairs` is empty.
    pub(crate) fn metadata(&mut self, pairs: &[(String, String)]) -> &mut Self {
        if !pairs.is_empty() {
            self.push("metadata", &metadata_form(pairs));
        }
        self
    }

    /// The query string, or an empty string when no parameter was added.
    pub(crate) fn finish(&self) -> String {
        self.parts.join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_matches_python_sdk_wire_example() {
        let pairs = vec![
            ("k y".to_owned(), "v&x=1/ü".to_owned()),
            ("plain".to_owned(), "p".to_owned()),
        ];
        let mut q = QueryBuilder::default();
        q.metadata(&pairs);
        assert_eq!(
            q.finish(),
            "metadata=k%252520y%3Dv%252526x%25253D1%252F%2525C3%2525BC%26plain%3Dp"
        );
    }

    #[test]
    fn empty_metadata_adds_nothing() {
        let mut q = QueryBuilder::default();
        q.metadata(&[]).push("state", "running,paused");
        assert_eq!(q.finish(), "state=running%2Cpaused");
    }

    #[test]
    fn snapshot_id_is_one_segment() {
        assert_eq!(
            encode_segment("team-slug/my snap:v1"),
            "team-slug%2Fmy%20snap%3Av1"
        );
    }
}
