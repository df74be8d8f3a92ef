//! Decoding the query of `GET /v2/sandboxes` (e2b-protocol.md 2.2).
//!
//! `metadata` is encoded twice by the SDKs: each key and value is percent-encoded, the
//! pairs are joined as a form (`k=v&k2=v2`), and that string is the query value, encoded
//! once more. So: URL-decode the query (done by the form parser), parse the value as a
//! form, then percent-decode each key and value once more. `state` is a comma-separated
//! list (`running,paused`); `limit` and `nextToken` drive pagination.

use chrono::{DateTime, Utc};
use percent_encoding::percent_decode_str;
use warren_core::manager::{ListFilter, ListOrder, MAX_LIST_LIMIT};
use warren_proto::api::SandboxState;

use crate::error::ApiFailure;

/// Parses the raw query string of a list request.
pub fn parse_list_query(raw: Option<&str>) -> Result<ListFilter, ApiFailure> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiFailure::bad_request(format!("malformed query string: {e}")))?;
    let mut filter = ListFilter::default();
    for (key, value) in pairs {
        match key.as_str() {
            "metadata" => filter.metadata.extend(decode_metadata(&value)?),
            "state" => filter.states = Some(parse_states(&value)?),
            "limit" => filter.limit = parse_limit(&value)?,
            "nextToken" => {
                filter.next_token = Some(value).filter(|v| !v.is_empty());
            }
            "startedAfter" => filter.started_after = Some(parse_time(&value)?),
            "template" => filter.template = Some(value).filter(|v| !v.is_empty()),
            "order" => filter.order = parse_order(&value)?,
            // Unknown parameters are ignored, as newer SDKs may send more.
            _ => {}
        }
    }
    Ok(filter)
}

/// Decodes the (already URL-decoded) `metadata` value into key/value pairs.
pub fn decode_metadata(value: &str) -> Result<Vec<(String, String)>, ApiFailure> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(value)
        .map_err(|e| ApiFailure::bad_request(format!("malformed metadata filter: {e}")))?;
    pairs
        .into_iter()
        .map(|(k, v)| Ok((percent_decode(&k)?, percent_decode(&v)?)))
        .collect()
}

fn percent_decode(s: &str) -> Result<String, ApiFailure> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ApiFailure::bad_request("metadata filter is not valid UTF-8"))
}

fn parse_states(value: &str) -> Result<Vec<SandboxState>, ApiFailure> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            SandboxState::parse(s).ok_or_else(|| {
                ApiFailure::bad_request(format!("state must be running or paused, got {s:?}"))
            })
        })
        .collect()
}

fn parse_limit(value: &str) -> Result<usize, ApiFailure> {
    match value.parse::<usize>() {
        Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiFailure::bad_request(format!(
            "limit must be an integer between 1 and {MAX_LIST_LIMIT}, got {value:?}"
        ))),
    }
}

fn parse_time(value: &str) -> Result<DateTime<Utc>, ApiFailure> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiFailure::bad_request(format!(
                "startedAfter must be an RFC 3339 time, got {value:?}"
            ))
        })
}

fn parse_order(value: &str) -> Result<ListOrder, ApiFailure> {
    match value {
        "asc" => Ok(ListOrder::Asc),
        "desc" => Ok(ListOrder::Desc),
        _ => Err(ApiFailure::bad_request(format!(
            "order must be asc or desc, got {value:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_python_wire_example() {
        let raw = "metadata=k%252520y%3Dv%252526x%25253D1%252F%2525C3%2525BC%26plain%3Dp";
        let filter = parse_list_query(Some(raw)).expect("parse");
        assert_eq!(
            filter.metadata,
            vec![
                ("k y".to_owned(), "v&x=1/ü".to_owned()),
                ("plain".to_owned(), "p".to_owned())
            ]
        );
    }

    #[test]
    fn parses_states_in_both_spellings_and_pagination() {
        for raw in ["state=running%2Cpaused", "state=running,paused"] {
            let f = parse_list_query(Some(raw)).expect("parse");
            assert_eq!(
                f.states,
                Some(vec![SandboxState::Running, SandboxState::Paused])
            );
        }
        let f = parse_list_query(Some("limit=2&nextToken=123_abc&order=desc")).expect("parse");
        assert_eq!(
            (f.limit, f.next_token.as_deref(), f.order),
            (2, Some("123_abc"), ListOrder::Desc)
        );
        let f = parse_list_query(Some("startedAfter=2025-01-02T03:04:05%2B00:00")).expect("parse");
        assert_eq!(f.started_after.expect("time").timestamp(), 1_735_787_045);
        let f = parse_list_query(Some("startedAfter=2025-01-02T03:04:05.000Z")).expect("parse");
        assert_eq!(f.started_after.expect("time").timestamp(), 1_735_787_045);
        let f = parse_list_query(None).expect("parse");
        assert!(f.states.is_none() && f.metadata.is_empty() && f.next_token.is_none());
    }

    #[test]
    fn rejects_bad_values_with_400() {
        for raw in [
            "state=stopped",
            "limit=0",
            "limit=abc",
            "limit=1000",
            "order=up",
            "startedAfter=yesterday",
            "metadata=%2525FF%3Dx",
        ] {
            let err = parse_list_query(Some(raw)).expect_err(raw);
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST, "{raw}");
        }
    }
}
