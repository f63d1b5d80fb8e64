//! `blackhole` (test kind): a sink that accepts anything and discards it.
//!
//! Ends the front half in benches and `caly replay`; its frame count is in the pipeline's stats.
//! With `announce = true` it publishes `Consumed` on the bus for every frame, so a bench can time
//! a frame's trip through the graph.

use serde::Deserialize;

use crate::engine::format::{Caps, Format};
use crate::engine::frame::Frame;
use crate::engine::bus::BusKind;
use crate::engine::registry::{CompileOptions, NegotiateError, Negotiated, Role, StageKind};
use crate::engine::stage::{BuildCtx, BuildError, Output, Runnable, Stage, StageError};

/// Parameters of `blackhole`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeSpec {
    /// Publish `Consumed` on the bus for every frame.
    #[serde(default)]
    pub announce: bool,
}

/// Discards everything.
pub struct Blackhole {
    announce: bool,
    frames: u64,
}

impl StageKind for Blackhole {
    const NAME: &'static str = "blackhole";
    const SUMMARY: &'static str = "Test sink: discards everything (optionally announcing each frame).";
    const EXAMPLE: &'static str = "";
    const ROLE: Role = Role::Sink;
    const MAX_INPUTS: usize = 16;
    const TOOL: bool = true;
    type Spec = BlackholeSpec;

    fn input_caps(_: &BlackholeSpec) -> Caps {
        Caps::Any
    }

    fn negotiate(_: &BlackholeSpec, _: &[Format], _: &CompileOptions) -> Result<Negotiated, NegotiateError> {
        Ok(Negotiated::none())
    }

    fn build(spec: &BlackholeSpec, _: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        Ok(Runnable::Inline(Box::new(Blackhole {
            announce: spec.announce,
            frames: 0,
        })))
    }
}

impl Stage for Blackhole {
    fn process(&mut self, _: Frame<'_>, out: &mut Output<'_>) -> Result<(), StageError> {
        self.frames += 1;
        if self.announce {
            out.publish(BusKind::Consumed {
                frames: self.frames,
            });
        }
        Ok(())
    }
}
