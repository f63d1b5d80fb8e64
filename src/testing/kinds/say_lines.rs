//! `say_lines` (test kind): a source of transcript segments, as the `realtime` stage would emit
//! them, for tests and compliance runs of text stages. Each line becomes one final segment of
//! the given speaker, `gap_ms` apart (0: as fast as possible).

use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde::Deserialize;

use crate::engine::format::{Caps, Format};
use crate::engine::frame::{Frame, Speaker, TextChunk};
use crate::engine::registry::{
    CompileOptions, Invalid, NegotiateError, Negotiated, Role, StageKind,
};
use crate::engine::stage::{BuildCtx, BuildError, Runnable, StageError, TaskIo, TaskStage};

/// Parameters of `say_lines`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SayLinesSpec {
    /// The segments, in order.
    pub lines: Vec<String>,
    /// `caller` or `bot`.
    #[serde(default = "caller")]
    pub speaker: String,
    /// Pause before each line, ms.
    #[serde(default)]
    pub gap_ms: u64,
}

fn caller() -> String {
    "caller".into()
}

/// Emits transcript lines.
pub struct SayLines {
    lines: Vec<String>,
    speaker: Speaker,
    gap: Duration,
}

impl StageKind for SayLines {
    const NAME: &'static str = "say_lines";
    const SUMMARY: &'static str = "Test source: transcript segments, one per line.";
    const EXAMPLE: &'static str = "lines = [\"mera order kahan hai\", \"haan ji\"]";
    const ROLE: Role = Role::Source;
    const TASK: bool = true;
    type Spec = SayLinesSpec;

    fn input_caps(_: &SayLinesSpec) -> Caps {
        Caps::Any
    }

    fn validate(spec: &SayLinesSpec) -> Vec<Invalid> {
        if matches!(spec.speaker.as_str(), "caller" | "bot") {
            Vec::new()
        } else {
            vec![Invalid {
                key: "speaker",
                message: "`caller` or `bot`".into(),
            }]
        }
    }

    fn negotiate(
        _: &SayLinesSpec,
        _: &[Format],
        _: &CompileOptions,
    ) -> Result<Negotiated, NegotiateError> {
        Ok(Negotiated::out(Format::Text))
    }

    fn build(spec: &SayLinesSpec, _: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        Ok(Runnable::Task(Box::new(SayLines {
            lines: spec.lines.clone(),
            speaker: if spec.speaker == "bot" {
                Speaker::Bot
            } else {
                Speaker::Caller
            },
            gap: Duration::from_millis(spec.gap_ms),
        })))
    }
}

impl TaskStage for SayLines {
    fn run(self: Box<Self>, mut io: TaskIo) -> BoxFuture<'static, Result<(), StageError>> {
        async move {
            for (i, line) in self.lines.into_iter().enumerate() {
                if !self.gap.is_zero() {
                    tokio::time::sleep(self.gap).await;
                }
                let chunk = TextChunk {
                    pts: self.gap * i as u32,
                    text: line,
                    is_final: true,
                    speaker: self.speaker,
                    turn: None,
                };
                io.output.send(0, Frame::Text(&chunk)).await?;
            }
            io.output.close().await;
            Ok(())
        }
        .boxed()
    }
}
