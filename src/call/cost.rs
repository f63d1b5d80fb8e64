//! What a call's model use costs: the tokens of every response (`response.done` usage, by
//! kind), priced with a per-model table (`data/prices.toml`, list prices with their date;
//! operators replace it with `--prices FILE`). Cached input is priced at its own rate.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::engine::frame::TokenUse;

/// The built-in table.
pub const BUILTIN: &str = include_str!("../../data/prices.toml");

/// US dollars per 1M tokens of each kind, for one model.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrices {
    /// Text input.
    pub text_in: f64,
    /// Cached text input.
    pub text_in_cached: f64,
    /// Text output.
    pub text_out: f64,
    /// Audio input.
    pub audio_in: f64,
    /// Cached audio input.
    pub audio_in_cached: f64,
    /// Audio output.
    pub audio_out: f64,
}

impl ModelPrices {
    /// What `usage` costs, in dollars.
    pub fn cost(&self, usage: &TokenUse) -> f64 {
        let fresh = |all: u64, cached: u64| all.saturating_sub(cached) as f64;
        (fresh(usage.text_in, usage.text_in_cached) * self.text_in
            + usage.text_in_cached as f64 * self.text_in_cached
            + fresh(usage.audio_in, usage.audio_in_cached) * self.audio_in
            + usage.audio_in_cached as f64 * self.audio_in_cached
            + usage.text_out as f64 * self.text_out
            + usage.audio_out as f64 * self.audio_out)
            / 1_000_000.0
    }
}

/// The price table (`data/prices.toml`'s format).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// When the prices were read.
    pub as_of: String,
    /// Their currency (`USD`).
    pub currency: String,
    models: BTreeMap<String, ModelPrices>,
}

impl Prices {
    /// The table shipped in the binary.
    pub fn builtin() -> Result<Prices, String> {
        Prices::parse(BUILTIN).map_err(|e| format!("data/prices.toml: {e}"))
    }

    /// A table in `data/prices.toml`'s format; every price must be a finite, non-negative
    /// number.
    pub fn parse(text: &str) -> Result<Prices, String> {
        let prices: Prices = toml::from_str(text).map_err(|e| e.to_string())?;
        for (model, p) in &prices.models {
            let all = [
                p.text_in,
                p.text_in_cached,
                p.text_out,
                p.audio_in,
                p.audio_in_cached,
                p.audio_out,
            ];
            if all.iter().any(|x| !x.is_finite() || *x < 0.0) {
                return Err(format!("{model}: prices must be non-negative numbers"));
            }
        }
        Ok(prices)
    }

    /// A table from a file.
    pub fn from_file(path: &Path) -> Result<Prices, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Prices::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The prices of `model`: its own entry, or, for a dated snapshot
    /// (`gpt-realtime-2.1-2026-11-01`), the entry it is a snapshot of.
    pub fn model(&self, model: &str) -> Option<&ModelPrices> {
        self.models.get(model).or_else(|| {
            self.models
                .iter()
                .filter(|(name, _)| {
                    model
                        .strip_prefix(name.as_str())
                        .and_then(|rest| rest.strip_prefix('-'))
                        .is_some_and(|date| {
                            date.starts_with(|c: char| c.is_ascii_digit()) && date.contains('-')
                        })
                })
                .max_by_key(|(name, _)| name.len())
                .map(|(_, p)| p)
        })
    }

    /// What `usage` of `model` costs, if the table knows the model.
    pub fn cost(&self, model: &str, usage: &TokenUse) -> Option<f64> {
        self.model(model).map(|p| p.cost(usage))
    }
}

/// Warns, once per process, that a model's tokens are not priced.
pub fn warn_unpriced(model: &str) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            model,
            "The price table has no entry for this model: its tokens are recorded, its cost is not (add it with --prices FILE)."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_parses_and_prices_each_kind_at_its_rate() {
        let prices = Prices::parse(BUILTIN).unwrap();
        assert_eq!(prices.as_of, "2026-12-03");
        assert_eq!(prices.currency, "USD");
        let usage = TokenUse {
            text_in: 1_000,
            text_in_cached: 400,
            audio_in: 2_000,
            audio_in_cached: 500,
            text_out: 100,
            audio_out: 1_000,
        };
        // gpt-realtime-2.1: 600 × 4 + 400 × 0.4 + 1500 × 32 + 500 × 0.4 + 100 × 24 + 1000 × 64,
        // per million.
        let expected = (600.0 * 4.0
            + 400.0 * 0.4
            + 1500.0 * 32.0
            + 500.0 * 0.4
            + 100.0 * 24.0
            + 1000.0 * 64.0)
            / 1e6;
        let cost = prices.cost("gpt-realtime-2.1", &usage).unwrap();
        assert!((cost - expected).abs() < 1e-12, "{cost} vs {expected}");
        let mini = prices.cost("gpt-realtime-2.1-mini", &usage).unwrap();
        assert!(mini < cost / 2.0);
        // A dated snapshot is priced as its model; an unknown model is not priced.
        assert_eq!(
            prices.cost("gpt-realtime-2.1-2026-11-01", &usage),
            Some(cost)
        );
        assert_eq!(prices.cost("gpt-realtime-9", &usage), None);
        assert_eq!(prices.cost("gpt-realtime-2.1-minix", &usage), None);
    }

    #[test]
    fn a_bad_table_is_refused_with_its_reason() {
        assert!(
            Prices::parse("as_of = \"x\"\ncurrency = \"USD\"\n[models.m]\ntext_in = 1.0").is_err()
        );
        let negative = BUILTIN.replacen("text_in = 4.00", "text_in = -4.00", 1);
        assert!(
            Prices::parse(&negative)
                .unwrap_err()
                .contains("non-negative")
        );
        assert!(Prices::parse(&format!("{BUILTIN}\nextra = 1")).is_err());
    }
}
