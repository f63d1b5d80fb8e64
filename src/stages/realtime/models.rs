//! The OpenAI models the `realtime` stage knows: which take reasoning settings, which
//! transcription models take several languages and keywords, what they cost, and when the
//! retired ones shut down (PROTOCOLS.md §3.14, read 2026-12-03). Add a row when OpenAI
//! announces a model or a shutdown; everything else (warnings at start-up and in
//! `caly pipeline check`, refusing to start after a shutdown, `/readyz`) follows from the table.

use time::macros::date;
use time::{Date, OffsetDateTime};

/// What a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Speech to speech (`session.model`).
    Realtime,
    /// The caller's transcription (`audio.input.transcription.model`).
    Transcription,
}

impl Role {
    /// Its label on `/readyz`.
    pub fn label(self) -> &'static str {
        match self {
            Role::Realtime => "realtime",
            Role::Transcription => "transcription",
        }
    }
}

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    /// Text in / cached text in / text out.
    pub text: (f64, f64, f64),
    /// Audio in / cached audio in / audio out.
    pub audio: (f64, f64, f64),
}

/// One known model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Model {
    /// Its id.
    pub name: &'static str,
    /// What it is for.
    pub role: Role,
    /// Takes `reasoning.effort` and `parallel_tool_calls` (the `gpt-realtime-2` family).
    pub reasoning: bool,
    /// Takes `languages` (several) and `keywords` in its transcription settings.
    pub languages_and_keywords: bool,
    /// The announced shutdown date.
    pub shutdown: Option<Date>,
    /// What to use instead, for a retired model.
    pub replacement: Option<&'static str>,
    /// List prices, where published (§3.14).
    pub prices: Option<Prices>,
}

const fn realtime(name: &'static str, reasoning: bool, prices: Option<Prices>) -> Model {
    Model {
        name,
        role: Role::Realtime,
        reasoning,
        languages_and_keywords: false,
        shutdown: None,
        replacement: None,
        prices,
    }
}

const fn retired(name: &'static str, role: Role, shutdown: Date, replacement: &'static str) -> Model {
    Model {
        name,
        role,
        reasoning: false,
        languages_and_keywords: false,
        shutdown: Some(shutdown),
        replacement: Some(replacement),
        prices: None,
    }
}

const fn transcription(name: &'static str, languages_and_keywords: bool) -> Model {
    Model {
        name,
        role: Role::Transcription,
        reasoning: false,
        languages_and_keywords,
        shutdown: None,
        replacement: None,
        prices: None,
    }
}

const REALTIME_SHUTDOWN: Date = date!(2027 - 01 - 20);
const TRANSCRIBE_SHUTDOWN: Date = date!(2027 - 02 - 26);

/// Every model Caly knows.
pub static MODELS: &[Model] = &[
    realtime(
        "gpt-realtime-2.1",
        true,
        Some(Prices {
            text: (4.00, 0.40, 24.00),
            audio: (32.00, 0.40, 64.00),
        }),
    ),
    realtime(
        "gpt-realtime-2.1-mini",
        true,
        Some(Prices {
            text: (0.60, 0.06, 2.40),
            audio: (10.00, 0.30, 20.00),
        }),
    ),
    realtime("gpt-realtime-2", true, None),
    realtime(
        "gpt-realtime-1.5",
        false,
        Some(Prices {
            text: (4.00, 0.40, 16.00),
            audio: (32.00, 0.40, 64.00),
        }),
    ),
    retired("gpt-realtime", Role::Realtime, REALTIME_SHUTDOWN, "gpt-realtime-2.1"),
    retired("gpt-realtime-2025-08-28", Role::Realtime, REALTIME_SHUTDOWN, "gpt-realtime-2.1"),
    retired("gpt-realtime-mini", Role::Realtime, REALTIME_SHUTDOWN, "gpt-realtime-2.1-mini"),
    retired("gpt-realtime-mini-2025-12-15", Role::Realtime, REALTIME_SHUTDOWN, "gpt-realtime-2.1-mini"),
    retired("gpt-audio-mini", Role::Realtime, REALTIME_SHUTDOWN, "gpt-realtime-2.1-mini"),
    retired("gpt-audio-mini-2025-12-15", Role::Realtime, REALTIME_SHUTDOWN, "gpt-realtime-2.1-mini"),
    transcription("gpt-transcribe", true),
    transcription("gpt-live-transcribe", true),
    transcription("gpt-realtime-whisper", false),
    retired("gpt-4o-transcribe", Role::Transcription, TRANSCRIBE_SHUTDOWN, "gpt-transcribe"),
    retired("gpt-4o-transcribe-diarize", Role::Transcription, TRANSCRIBE_SHUTDOWN, "gpt-transcribe"),
    retired("gpt-4o-mini-transcribe", Role::Transcription, TRANSCRIBE_SHUTDOWN, "gpt-transcribe"),
    retired("gpt-4o-mini-transcribe-2025-12-15", Role::Transcription, TRANSCRIBE_SHUTDOWN, "gpt-transcribe"),
    retired("whisper-1", Role::Transcription, TRANSCRIBE_SHUTDOWN, "gpt-transcribe"),
];

/// The model of that name, if Caly knows it.
pub fn lookup(name: &str) -> Option<&'static Model> {
    MODELS.iter().find(|m| m.name == name)
}

/// Whether a model takes reasoning settings: known reasoning models, and any other
/// `gpt-realtime-2…` (a dated snapshot of the family).
pub fn takes_reasoning(name: &str) -> bool {
    match lookup(name) {
        Some(m) => m.reasoning,
        None => name.starts_with("gpt-realtime-2"),
    }
}

/// Whether a transcription model takes several `languages` and `keywords`.
pub fn takes_languages_and_keywords(name: &str) -> bool {
    lookup(name).is_some_and(|m| m.languages_and_keywords)
}

/// Today's date in UTC, or `CALY_TODAY` (YYYY-MM-DD) when set: the deprecation guard's clock,
/// which tests (and an operator rehearsing a shutdown) can move.
pub fn today() -> Date {
    std::env::var("CALY_TODAY")
        .ok()
        .and_then(|d| Date::parse(d.trim(), time::macros::format_description!("[year]-[month]-[day]")).ok())
        .unwrap_or_else(|| OffsetDateTime::now_utc().date())
}

/// Where a configured model stands on `today`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// No shutdown announced (or a model Caly does not know).
    Current,
    /// Shuts down on `on`, `days` from today.
    Retiring {
        /// The shutdown date.
        on: Date,
        /// Days left (0 on the day itself).
        days: i64,
        /// What to use instead.
        replacement: &'static str,
    },
    /// Shut down on `on`: calls would fail.
    Retired {
        /// The shutdown date.
        on: Date,
        /// What to use instead.
        replacement: &'static str,
    },
}

/// How `name` stands on `today`. A model is usable through its shutdown date's eve; on the
/// date itself it counts as retired.
pub fn standing(name: &str, today: Date) -> Standing {
    let Some(m) = lookup(name) else {
        return Standing::Current;
    };
    match (m.shutdown, m.replacement) {
        (Some(on), Some(replacement)) if today >= on => Standing::Retired { on, replacement },
        (Some(on), Some(replacement)) => Standing::Retiring {
            on,
            days: (on - today).whole_days(),
            replacement,
        },
        _ => Standing::Current,
    }
}

/// A sentence about a model that is being or has been retired; `None` for a current one.
pub fn notice(name: &str, role: Role, today: Date) -> Option<String> {
    match standing(name, today) {
        Standing::Current => None,
        Standing::Retiring { on, days, replacement } => Some(format!(
            "{} model `{name}` shuts down on {on} ({days} days from now); switch to `{replacement}`",
            role.label()
        )),
        Standing::Retired { on, replacement } => Some(format!(
            "{} model `{name}` was shut down on {on}; calls on it fail. Use `{replacement}`",
            role.label()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_models_warn_before_their_date_and_fail_on_it() {
        let before = date!(2026 - 12 - 03);
        assert_eq!(
            standing("gpt-realtime", before),
            Standing::Retiring {
                on: date!(2027 - 01 - 20),
                days: 48,
                replacement: "gpt-realtime-2.1"
            }
        );
        assert!(matches!(
            standing("gpt-realtime", date!(2027 - 01 - 20)),
            Standing::Retired { replacement: "gpt-realtime-2.1", .. }
        ));
        assert!(matches!(
            standing("gpt-realtime-mini", date!(2027 - 03 - 01)),
            Standing::Retired { replacement: "gpt-realtime-2.1-mini", .. }
        ));
        assert!(matches!(
            standing("gpt-4o-transcribe", date!(2027 - 02 - 25)),
            Standing::Retiring { days: 1, replacement: "gpt-transcribe", .. }
        ));
        assert_eq!(standing("gpt-realtime-2.1", date!(2030 - 01 - 01)), Standing::Current);
        assert_eq!(standing("my-proxy-model", before), Standing::Current);
        let n = notice("whisper-1", Role::Transcription, before).unwrap_or_default();
        assert!(n.contains("2027-02-26") && n.contains("gpt-transcribe"), "{n}");
        assert_eq!(notice("gpt-transcribe", Role::Transcription, before), None);
    }

    #[test]
    fn only_the_gpt_realtime_2_family_takes_reasoning() {
        assert!(takes_reasoning("gpt-realtime-2.1"));
        assert!(takes_reasoning("gpt-realtime-2.1-mini"));
        assert!(takes_reasoning("gpt-realtime-2-2026-05-07"));
        assert!(!takes_reasoning("gpt-realtime-1.5"));
        assert!(!takes_reasoning("gpt-realtime"));
        assert!(takes_languages_and_keywords("gpt-transcribe"));
        assert!(!takes_languages_and_keywords("gpt-4o-transcribe"));
    }

    #[test]
    fn every_retired_model_names_a_current_replacement_of_its_role() {
        for m in MODELS.iter().filter(|m| m.shutdown.is_some()) {
            let r = m.replacement.and_then(lookup).unwrap_or_else(|| panic!("{}", m.name));
            assert_eq!(r.role, m.role, "{}", m.name);
            assert!(r.shutdown.is_none(), "{} → {}", m.name, r.name);
        }
    }
}
