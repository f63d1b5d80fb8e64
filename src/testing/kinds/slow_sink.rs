//! `slow_sink` (test kind): a sink that takes `delay_ms` over every frame.
//!
//! Runs in its own task behind a ring, so back-pressure tests can show each ring policy at work
//! and that a slow consumer never stalls the caller's audio edge when its policy drops.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;

use crate::engine::bus::BusKind;
use crate::engine::format::{Caps, Format};
use crate::engine::registry::{CompileOptions, NegotiateError, Negotiated, Role, StageKind};
use crate::engine::stage::{BuildCtx, BuildError, Runnable, StageError, TaskIo, TaskStage};

fn default_delay_ms() -> u32 {
    20
}

/// Parameters of `slow_sink`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowSinkSpec {
    /// Milliseconds spent on each frame.
    #[serde(default = "default_delay_ms")]
    pub delay_ms: u32,
    /// Publish `Consumed` on the bus after every frame.
    #[serde(default)]
    pub announce: bool,
}

/// A deliberately slow consumer.
pub struct SlowSink {
    delay: Duration,
    announce: bool,
}

impl StageKind for SlowSink {
    const NAME: &'static str = "slow_sink";
    const SUMMARY: &'static str =
        "Test sink: spends delay_ms on every frame (back-pressure tests).";
    const EXAMPLE: &'static str = "delay_ms = 1";
    const ROLE: Role = Role::Sink;
    const TASK: bool = true;
    type Spec = SlowSinkSpec;

    fn input_caps(_: &SlowSinkSpec) -> Caps {
        Caps::Any
    }

    fn negotiate(
        _: &SlowSinkSpec,
        _: &[Format],
        _: &CompileOptions,
    ) -> Result<Negotiated, NegotiateError> {
        Ok(Negotiated::none())
    }

    fn build(spec: &SlowSinkSpec, _: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        Ok(Runnable::Task(Box::new(SlowSink {
            delay: Duration::from_millis(u64::from(spec.delay_ms)),
            announce: spec.announce,
        })))
    }
}

impl TaskStage for SlowSink {
    fn run(self: Box<Self>, mut io: TaskIo) -> BoxFuture<'static, Result<(), StageError>> {
        async move {
            let mut frames = 0u64;
            while io.input.next().await.is_some() {
                frames += 1;
                tokio::time::sleep(self.delay).await;
                if self.announce {
                    io.ctx.publish(BusKind::Consumed { frames });
                }
            }
            Ok(())
        }
        .boxed()
    }
}
