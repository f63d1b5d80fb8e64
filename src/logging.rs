//! Logs: JSON in production (`CALY_LOG_FORMAT=json`, the default when stderr is not a
//! terminal), plain text locally, filtered by `RUST_LOG` (default `info`). Every event goes
//! through one formatter, [`Redact`], which is where privacy is enforced whatever a call site
//! wrote:
//!
//! - phone numbers (10–15 digits, with `+`, spaces, dashes or brackets between) keep only
//!   their last four digits (`+91******3210`);
//! - transcript text (fields named `text`, `transcript` or `utterance`) is replaced on events
//!   above DEBUG.

use std::fmt;
use std::io::IsTerminal as _;

use tracing::field::{Field, Visit};

use crate::vocab::mask_phones;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Fields whose values are transcript text.
pub const TRANSCRIPT_FIELDS: &[&str] = &["text", "transcript", "utterance"];
/// What replaces transcript text above DEBUG.
pub const REDACTED: &str = "[transcript: DEBUG only]";

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}

impl LogFormat {
    /// `CALY_LOG_FORMAT` if set (`json` or `pretty`), else JSON unless stderr is a terminal.
    pub fn from_env() -> LogFormat {
        match std::env::var("CALY_LOG_FORMAT").ok().as_deref() {
            Some("json") => LogFormat::Json,
            Some("pretty" | "text") => LogFormat::Pretty,
            _ if std::io::stderr().is_terminal() => LogFormat::Pretty,
            _ => LogFormat::Json,
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` filter, the format, [`Redact`], stderr.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder
            .event_format(Redact::new(
                tracing_subscriber::fmt::format().json().flatten_event(true),
            ))
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .try_init(),
        LogFormat::Pretty => builder
            .event_format(Redact::new(
                tracing_subscriber::fmt::format().with_ansi(false),
            ))
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging was already set up: {e}");
    }
}

/// Wraps an event formatter: formats into a buffer, then masks phone numbers and (above
/// DEBUG) transcript text before anything is written.
#[derive(Debug, Clone)]
pub struct Redact<F> {
    inner: F,
}

impl<F> Redact<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Redact<F> {
        Redact { inner }
    }
}

#[derive(Default)]
struct Transcripts(Vec<String>);

impl Visit for Transcripts {
    fn record_str(&mut self, field: &Field, value: &str) {
        if TRANSCRIPT_FIELDS.contains(&field.name()) && !value.is_empty() {
            self.0.push(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if TRANSCRIPT_FIELDS.contains(&field.name()) {
            let text = format!("{value:?}");
            // `?text` shows the string quoted; `%text` arrives here unquoted.
            let unquoted = text
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .map(str::to_owned);
            self.0.extend(unquoted);
            self.0.push(text);
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for Redact<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut buf = String::new();
        self.inner.format_event(ctx, Writer::new(&mut buf), event)?;
        // Levels order by verbosity: INFO, WARN and ERROR are below DEBUG.
        if *event.metadata().level() < Level::DEBUG {
            let mut found = Transcripts::default();
            event.record(&mut found);
            for text in found.0 {
                let quoted = serde_json::to_string(&text).unwrap_or_default();
                let escaped = quoted
                    .strip_prefix('"')
                    .and_then(|q| q.strip_suffix('"'))
                    .unwrap_or_default();
                if !escaped.is_empty() && escaped != text {
                    buf = buf.replace(escaped, REDACTED);
                }
                buf = buf.replace(&text, REDACTED);
            }
        }
        writer.write_str(&mask_phones(&buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_keep_only_their_last_four_digits() {
        let cases = [
            ("from=+919876543210 ok", "from=+********3210 ok"),
            ("\"from\":\"09876543210\"", "\"from\":\"*******3210\""),
            ("call +91 98765 43210 now", "call +** ***** *3210 now"),
            ("9876543210", "******3210"),
            ("(080) 4123-4567.", "(***) ****-4567."),
            ("{\"from\":\"9876543210\"}", "{\"from\":\"******3210\"}"),
        ];
        for (raw, masked) in cases {
            assert_eq!(mask_phones(raw), masked, "{raw}");
        }
    }

    #[test]
    fn ids_counts_and_short_numbers_are_left_alone() {
        for text in [
            "call_sid=80bfbec2d78bbbf10fb851f4fa165211",
            "id=0193a2b4-5c6d-7e8f-9012-345678901234",
            "order #1001 pincode 560001 media_in=1234",
            "reaction_us=812 took 12.5 ms",
            "CAbench0012345 MZ1234567890123x",
            "1234567890123456789 (19 digits: not a phone)",
            "{\"seconds\":7.1234567217,\"bytes\":12345678901}",
        ] {
            assert_eq!(mask_phones(text), text);
        }
    }

    #[test]
    fn transcripts_above_debug_are_redacted_and_phones_always_masked() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::DEBUG)
            .with_writer(move || sink.clone())
            .event_format(Redact::new(
                tracing_subscriber::fmt::format().json().flatten_event(true),
            ))
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                text = "mera order kahan hai \"jaldi\"",
                caller = "+919876543210",
                "Heard."
            );
            tracing::warn!(transcript = %"cancel kar do", "Heard.");
            tracing::debug!(text = "return karna hai", "Heard.");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(!out.contains("kahan hai"), "{out}");
        assert!(!out.contains("cancel kar do"), "{out}");
        assert!(out.contains("return karna hai"), "DEBUG keeps it: {out}");
        assert!(!out.contains("9876543210"), "{out}");
        assert!(out.contains("+********3210"), "{out}");
        for line in out.lines() {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "{line}"
            );
        }
    }
}
