//! `fail_after` (test kind): passes `frames` frames through, then fails (or panics, or ends the
//! stream cleanly); or cannot be built at all.
//!
//! Shows that a failing or panicking stage ends its own call only, and lets the controller's
//! tests produce every way a pipeline ends. Any format in, the same out.

use serde::Deserialize;

use crate::engine::format::{Caps, Format};
use crate::engine::frame::Frame;
use crate::engine::registry::{CompileOptions, NegotiateError, Negotiated, Role, StageKind};
use crate::engine::stage::{BuildCtx, BuildError, Output, Runnable, Stage, StageError};

fn default_frames() -> u64 {
    10
}

/// Parameters of `fail_after`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailAfterSpec {
    /// Frames passed through before failing.
    #[serde(default = "default_frames")]
    pub frames: u64,
    /// Panic instead of returning an error.
    #[serde(default)]
    pub panic: bool,
    /// End the stream cleanly instead of failing.
    #[serde(default)]
    pub end_stream: bool,
    /// Fail when built for a call (the call's pipeline cannot start).
    #[serde(default)]
    pub fail_build: bool,
}

/// Fails on purpose.
pub struct FailAfter {
    left: u64,
    panic: bool,
    end_stream: bool,
}

impl StageKind for FailAfter {
    const NAME: &'static str = "fail_after";
    const SUMMARY: &'static str = "Test transform: passes N frames, then fails or panics.";
    const EXAMPLE: &'static str = "frames = 1000";
    const ROLE: Role = Role::Transform;
    type Spec = FailAfterSpec;

    fn input_caps(_: &FailAfterSpec) -> Caps {
        Caps::Any
    }

    fn negotiate(
        _: &FailAfterSpec,
        inputs: &[Format],
        _: &CompileOptions,
    ) -> Result<Negotiated, NegotiateError> {
        inputs
            .first()
            .map(|f| Negotiated::out(*f))
            .ok_or_else(|| "fail_after needs an input".into())
    }

    fn build(spec: &FailAfterSpec, ctx: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        if spec.fail_build {
            return Err(ctx.error("fail_after: cannot be built, on purpose"));
        }
        Ok(Runnable::Inline(Box::new(FailAfter {
            left: spec.frames,
            panic: spec.panic,
            end_stream: spec.end_stream,
        })))
    }
}

impl Stage for FailAfter {
    fn process(&mut self, frame: Frame<'_>, out: &mut Output<'_>) -> Result<(), StageError> {
        if self.left == 0 {
            if self.panic {
                panic!("fail_after: panicking on purpose");
            }
            if self.end_stream {
                return Err(StageError::end("fail_after: ending the stream on purpose"));
            }
            return Err(StageError::fatal("fail_after: failing on purpose"));
        }
        self.left -= 1;
        out.push(frame)
    }
}
