//! `hang_up` (test kind): a sink that asks the call controller to hang up when the caller
//! presses `key`, the way a real stage ends a call ([`SignalKind::Hangup`]). Any format in.

use serde::Deserialize;

use crate::engine::bus::SignalKind;
use crate::engine::format::{Caps, Format};
use crate::engine::frame::{Event, Frame};
use crate::engine::registry::{CompileOptions, NegotiateError, Negotiated, Role, StageKind};
use crate::engine::stage::{BuildCtx, BuildError, Output, Runnable, Stage, StageError};

fn default_key() -> char {
    '#'
}

/// Parameters of `hang_up`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HangUpSpec {
    /// The key that ends the call.
    #[serde(default = "default_key")]
    pub key: char,
}

/// Hangs up on a key.
pub struct HangUp {
    key: char,
}

impl StageKind for HangUp {
    const NAME: &'static str = "hang_up";
    const SUMMARY: &'static str = "Test sink: asks the controller to hang up on a DTMF key.";
    const EXAMPLE: &'static str = "key = \"#\"";
    const ROLE: Role = Role::Sink;
    type Spec = HangUpSpec;

    fn input_caps(_: &HangUpSpec) -> Caps {
        Caps::Any
    }

    fn negotiate(
        _: &HangUpSpec,
        _: &[Format],
        _: &CompileOptions,
    ) -> Result<Negotiated, NegotiateError> {
        Ok(Negotiated::none())
    }

    fn build(spec: &HangUpSpec, _: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        Ok(Runnable::Inline(Box::new(HangUp { key: spec.key })))
    }
}

impl Stage for HangUp {
    fn process(&mut self, frame: Frame<'_>, out: &mut Output<'_>) -> Result<(), StageError> {
        if let Frame::Event(Event::Dtmf { digit }) = frame
            && *digit == self.key
        {
            out.signal(SignalKind::Hangup {
                reason: format!("the caller pressed {digit}"),
            });
        }
        Ok(())
    }
}
