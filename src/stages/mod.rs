//! Every built-in stage kind, in one list. Adding a kind = one file here + one line below.
//!
//! The list builds the [`Registry`] that `caly serve`, `caly pipeline check` and `caly replay`
//! use; the engine itself never names a kind. Kinds that exist only to test the engine
//! (`fail_after`, `slow_sink`, `say_lines`) live in `testing::kinds` and are registered only by
//! `testing::registry()`, so a production pipeline cannot name them.

use std::sync::Arc;

use crate::commerce::shop::{Shopify, ShopifyConfig};
use crate::engine::registry::Registry;
use crate::engine::stage::Services;

/// Declares each kind's module and registers it: `module => Type`. The module file name is the
/// TOML `kind` (a compliance test checks it).
macro_rules! stages {
    ($($module:ident => $kind:ident,)*) => {
        $(
            pub mod $module;
            pub use $module::$kind;
        )*

        /// The registry of every built-in kind.
        pub fn registry() -> Registry {
            let mut registry = Registry::new();
            $( registry.register::<$module::$kind>(); )*
            registry
        }
    };
}

stages! {
    call_audio => CallAudio,
    decode => Decode,
    encode => Encode,
    resample => Resample,
    vad => Vad,
    realtime => Realtime,
    call_playback => CallPlayback,
    classify_intent => ClassifyIntent,
    agent => Agent,
    // Tool kinds: real, for load tests, benches and `caly replay` (marked in `caly pipeline kinds`).
    replay => Replay,
    blackhole => Blackhole,
    tone_responder => ToneResponder,
}

/// The outside services the built-in kinds use, from the environment: the Realtime endpoint
/// (`OPENAI_REALTIME_URL`, `OPENAI_API_KEY`) and, when `SHOPIFY_STORE_DOMAIN` and
/// `SHOPIFY_ACCESS_TOKEN` are set, the Shopify client.
pub fn services_from_env() -> Services {
    let mut services = Services::new().with(realtime::RealtimeEndpoint::from_env());
    let shop = ShopifyConfig::from_env().and_then(|c| {
        Shopify::new(c)
            .map_err(|e| tracing::error!(error = %e, "Shopify is configured but unusable."))
            .ok()
    });
    if let Some(shop) = shop {
        services.insert::<Arc<Shopify>>(shop);
    }
    services
}

#[cfg(test)]
mod compliance;
