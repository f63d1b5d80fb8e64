//! `fail_after` (test kind): passes `frames` frames through, then fails (or panics).
//!
//! Shows that a failing or panicking stage ends its own call only. Any format in, the same out.

use serde::Deserialize;

use crate::format::{Caps, Format};
use crate::frame::Frame;
use crate::registry::{CompileOptions, Negotiated, Role, StageKind};
use crate::stage::{BuildCtx, BuildError, Output, Runnable, Stage, StageError};

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
}

/// Fails on purpose.
pub struct FailAfter {
    left: u64,
    panic: bool,
}

impl StageKind for FailAfter {
    const NAME: &'static str = "fail_after";
    const SUMMARY: &'static str = "Test transform: passes N frames, then fails or panics.";
    const EXAMPLE: &'static str = "frames = 1000";
    const ROLE: Role = Role::Transform;
    const TEST_ONLY: bool = true;
    type Spec = FailAfterSpec;

    fn input_caps(_: &FailAfterSpec) -> Caps {
        Caps::Any
    }

    fn negotiate(_: &FailAfterSpec, inputs: &[Format], _: &CompileOptions) -> Result<Negotiated, String> {
        inputs
            .first()
            .map(|f| Negotiated::out(*f))
            .ok_or_else(|| "fail_after needs an input".to_owned())
    }

    fn build(spec: &FailAfterSpec, _: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        Ok(Runnable::Inline(Box::new(FailAfter {
            left: spec.frames,
            panic: spec.panic,
        })))
    }
}

impl Stage for FailAfter {
    fn process(&mut self, frame: Frame<'_>, out: &mut Output<'_>) -> Result<(), StageError> {
        if self.left == 0 {
            if self.panic {
                panic!("fail_after: panicking on purpose");
            }
            return Err(StageError::fatal("fail_after: failing on purpose"));
        }
        self.left -= 1;
        out.push(frame)
    }
}
