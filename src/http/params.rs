//! What each REST parameter may be, in one place: the handlers check a value with
//! [`Rule::check`] and the OpenAPI document describes it with [`Rule::schema`], so a client
//! generated from the document sends only what the server takes, and the server takes only
//! what the document says. A parameter that is present must be valid: an empty value is not
//! "absent", it is a 400.

use serde_json::{Value, json};

use super::error::ApiError;

/// Largest page.
pub(crate) const MAX_LIMIT: i64 = 200;
/// Longest id: a UUID, an Exotel CallSid or a key id.
const MAX_ID: usize = 64;
/// Longest phone number filter.
const MAX_PHONE: usize = 32;
/// Most digits of an epoch-milliseconds time (years up to 5138).
const MAX_EPOCH_DIGITS: usize = 14;

/// A rule a parameter's value must follow.
#[derive(Debug, Clone)]
pub(crate) enum Rule {
    /// One of these words.
    OneOf(Vec<&'static str>),
    /// Letters, digits, `-`, `_`; 1 to 64.
    Id,
    /// A phone number: an optional `+`, digits, spaces, `-`, `(`, `)`, at least one digit.
    Phone,
    /// RFC 3339 (`2026-11-25T10:00:00Z`) or epoch milliseconds (up to 14 digits).
    Time,
    /// A page size, 1 to [`MAX_LIMIT`].
    Limit,
    /// A `next_cursor` of `GET /v1/calls`: `<epoch ms>.<call id>`.
    CallCursor,
    /// A `next_cursor` of `GET /v1/actions`: `<epoch ms>.<action number>`.
    ActionCursor,
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// `<ms>.<rest>` with `ms` an optional `-` and 1 to 15 digits.
fn cursor_parts(text: &str) -> Option<(&str, &str)> {
    let (ms, rest) = text.split_once('.')?;
    let digits = ms.strip_prefix('-').unwrap_or(ms);
    (!digits.is_empty() && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some((ms, rest))
}

impl Rule {
    /// Whether `value` follows the rule.
    pub(crate) fn admits(&self, value: &str) -> bool {
        match self {
            Rule::OneOf(words) => words.contains(&value),
            Rule::Id => !value.is_empty() && value.len() <= MAX_ID && value.bytes().all(is_id_byte),
            Rule::Phone => {
                let rest = value.strip_prefix('+').unwrap_or(value);
                value.len() <= MAX_PHONE
                    && rest.bytes().any(|b| b.is_ascii_digit())
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b" ()-".contains(&b))
            }
            Rule::Time => epoch_ms(value).is_some() || rfc3339_ms(value).is_some(),
            Rule::Limit => {
                value.len() <= 3
                    && value.bytes().all(|b| b.is_ascii_digit())
                    && value
                        .parse::<i64>()
                        .is_ok_and(|n| (1..=MAX_LIMIT).contains(&n))
            }
            Rule::CallCursor => cursor_parts(value).is_some_and(|(_, id)| {
                !id.is_empty()
                    && id.len() <= MAX_ID
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }),
            Rule::ActionCursor => cursor_parts(value).is_some_and(|(_, id)| {
                !id.is_empty() && id.len() <= 18 && id.bytes().all(|b| b.is_ascii_digit())
            }),
        }
    }

    /// `value`, or a 400 that says what `name` must be.
    pub(crate) fn check<'v>(&self, name: &str, value: &'v str) -> Result<&'v str, ApiError> {
        if self.admits(value) {
            return Ok(value);
        }
        let what = match self {
            Rule::OneOf(words) => format!("one of {}", words.join(", ")),
            Rule::Id => "1 to 64 letters, digits, `-` or `_`".to_owned(),
            Rule::Phone => {
                "a phone number (digits, an optional leading +, spaces, -, ( or ))".to_owned()
            }
            Rule::Time => {
                "an RFC 3339 time (2026-11-25T10:00:00Z) or epoch milliseconds".to_owned()
            }
            Rule::Limit => format!("a whole number from 1 to {MAX_LIMIT}"),
            Rule::CallCursor | Rule::ActionCursor => "a `next_cursor` this API gave out".to_owned(),
        };
        Err(ApiError::bad_request(format!("`{name}` must be {what}.")))
    }

    /// The JSON Schema of a value that follows the rule.
    pub(crate) fn schema(&self) -> Value {
        match self {
            Rule::OneOf(words) => json!({ "type": "string", "enum": words }),
            Rule::Id => json!({
                "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$",
                "minLength": 1, "maxLength": MAX_ID,
            }),
            Rule::Phone => json!({
                "type": "string", "pattern": "^\\+?[0-9 ()-]*[0-9][0-9 ()-]*$",
                "minLength": 1, "maxLength": MAX_PHONE,
            }),
            Rule::Time => json!({ "anyOf": [
                { "type": "string", "format": "date-time" },
                { "type": "string", "pattern": "^[0-9]{1,14}$" },
            ]}),
            Rule::Limit => json!({ "type": "integer", "minimum": 1, "maximum": MAX_LIMIT }),
            Rule::CallCursor => json!({
                "type": "string", "pattern": "^-?[0-9]{1,15}\\.[A-Za-z0-9-]{1,64}$",
            }),
            Rule::ActionCursor => json!({
                "type": "string", "pattern": "^-?[0-9]{1,15}\\.[0-9]{1,18}$",
            }),
        }
    }
}

fn epoch_ms(text: &str) -> Option<i64> {
    (!text.is_empty() && text.len() <= MAX_EPOCH_DIGITS && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

fn rfc3339_ms(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
}

/// The epoch milliseconds of a time that follows [`Rule::Time`].
pub(crate) fn time_ms(name: &str, text: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(text) = text else {
        return Ok(None);
    };
    Rule::Time.check(name, text)?;
    Ok(epoch_ms(text).or_else(|| rfc3339_ms(text)))
}

/// A name for something a person made (an API key): 1 to `max` characters, not only
/// spaces, no control characters. Taken as given: it is not trimmed into shape.
pub(crate) fn name_admits(name: &str, max: usize) -> bool {
    name.chars().count() <= max && !name.trim().is_empty() && !name.chars().any(char::is_control)
}

/// The JSON Schema of [`name_admits`].
pub(crate) fn name_schema(max: usize) -> Value {
    const FREE: &str = "[^\\x00-\\x1f\\x7f-\\x9f]";
    json!({
        "type": "string", "minLength": 1, "maxLength": max,
        "pattern": format!("^{FREE}*[^\\s\\x00-\\x1f\\x7f-\\x9f]{FREE}*$"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_takes_what_it_documents_and_nothing_else() {
        let cases: &[(Rule, &[&str], &[&str])] = &[
            (
                Rule::OneOf(vec!["completed", "failed"]),
                &["completed", "failed"],
                &["", "Completed", " completed", "not_configured"],
            ),
            (
                Rule::Id,
                &["CA1", "0195e0c4-7d35-7c3b-9a43-1f2a3b4c5d6e", "a_b"],
                &["", "x' OR '1'='1", "a/b", &"a".repeat(65)],
            ),
            (
                Rule::Phone,
                &["+919876543210", "098765 43210", "(080) 4123-4567"],
                &["", "+", "1'; --", "91+98", "abc", &"9".repeat(33)],
            ),
            (
                Rule::Time,
                &[
                    "2026-11-25T10:00:00Z",
                    "2026-11-25T10:00:00.5+05:30",
                    "0",
                    "99999999999999",
                ],
                &[
                    "",
                    "yesterday",
                    "2026-02-30T00:00:00Z",
                    "-5",
                    "1e9",
                    "999999999999999",
                ],
            ),
            (
                Rule::Limit,
                &["1", "50", "200"],
                &[
                    "",
                    "0",
                    "201",
                    "-1",
                    "+5",
                    " 5",
                    "ten",
                    "99999999999999999999",
                ],
            ),
            (
                Rule::CallCursor,
                &["1764064800000.0195e0c4-7d35", "-1.x"],
                &["", "garbage", "1.", ".x", "1.x'--", "1.a_b"],
            ),
            (
                Rule::ActionCursor,
                &["1764064800000.42"],
                &["1.x", "1.", "x.1", "1.1234567890123456789"],
            ),
        ];
        for (rule, good, bad) in cases {
            for v in *good {
                assert!(rule.admits(v), "{rule:?} should take {v:?}");
            }
            for v in *bad {
                assert!(!rule.admits(v), "{rule:?} should refuse {v:?}");
                assert!(rule.check("p", v).is_err());
            }
        }
        assert_eq!(
            time_ms("since", Some("2025-11-25T10:00:00Z")).unwrap(),
            Some(1_764_064_800_000)
        );
        assert_eq!(
            time_ms("since", Some("1764064800000")).unwrap(),
            Some(1_764_064_800_000)
        );
    }

    #[test]
    fn names_are_printable_not_blank_and_counted_in_characters() {
        assert!(name_admits("grafana", 100));
        assert!(name_admits(" ops ", 100));
        assert!(name_admits(&"ह".repeat(100), 100), "characters, not bytes");
        for bad in [
            "",
            "   ",
            "\u{2003}",
            "a\u{0}b",
            "tab\there",
            &"a".repeat(101),
        ] {
            assert!(!name_admits(bad, 100), "{bad:?}");
        }
    }
}
