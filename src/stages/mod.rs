//! Every built-in stage kind, in one list. Adding a kind = one file here + one line below.

use crate::registry::Registry;

/// Declares each kind's module and registers it: `module => Type`. The module file name is the
/// TOML `kind` (a compliance test checks it).
macro_rules! stages {
    ($($module:ident => $kind:ident,)*) => {
        $(
            mod $module;
            pub use $module::$kind;
        )*

        /// Registers every built-in kind.
        pub fn register_all(registry: &mut Registry) {
            $( registry.register::<$module::$kind>(); )*
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
    // Test, bench and replay kinds.
    replay => Replay,
    blackhole => Blackhole,
    slow_sink => SlowSink,
    fail_after => FailAfter,
    tone_responder => ToneResponder,
    say_lines => SayLines,
}

pub use realtime::{
    protocol as realtime_protocol, simulator as realtime_simulator, tools as realtime_tools,
};
pub(crate) use resample::StreamResampler;
