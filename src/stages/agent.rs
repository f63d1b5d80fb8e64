//! `agent`: the call's orchestrator stage. Turns Realtime tool calls, and (optionally) accepted
//! intents, into agent runs on the store, and sends the results back through the `realtime`
//! stage's control lane so the bot speaks them: a tool call gets a `ToolResult`, an
//! intent-driven run a `Say`. Every run and side effect is published as `ActionTaken`.
//!
//! Caller intents always feed the orchestrator: their entities fill slots (an order number said
//! in one turn serves the next), `affirm` confirms the action waiting for a yes, `deny` drops
//! it. With `act_on_intents = true` the stage also starts runs from accepted request intents
//! (for bots that do not call tools). Runs are tasks owned by this stage, each with a deadline,
//! at most `max_runs` at once; when the call ends, every run still going is cancelled.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::task::JoinSet;

use crate::agents::{AgentConfig, AgentName, Args, Orchestrator, Outcome, Status};
use crate::format::{Caps, Format};
use crate::frame::{Control, Event, Frame};
use crate::intent::Intent;
use crate::pipeline::{BusKind, Peers};
use crate::registry::{CompileOptions, Invalid, Negotiated, Role, StageKind};
use crate::stage::{BuildCtx, BuildError, NodeCtx, Runnable, StageError, TaskIo, TaskStage};

fn d_run_timeout_ms() -> u64 {
    8000
}
fn d_confirm_wait_ms() -> u64 {
    2500
}
fn d_max_runs() -> usize {
    4
}

/// Parameters of `agent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// The agents this call may run (others are refused).
    pub agents: Vec<String>,
    /// Start runs from accepted caller intents too (not only from tool calls).
    #[serde(default)]
    pub act_on_intents: bool,
    /// The stage that speaks results (default: every `realtime` stage of the call).
    pub reply_to: Option<String>,
    /// Deadline of one run, ms.
    #[serde(default = "d_run_timeout_ms")]
    pub run_timeout_ms: u64,
    /// How long a destructive run waits for a yes still being transcribed, ms.
    #[serde(default = "d_confirm_wait_ms")]
    pub confirm_wait_ms: u64,
    /// Runs at once; beyond it a request is answered "busy".
    #[serde(default = "d_max_runs")]
    pub max_runs: usize,
}

/// The orchestrator stage.
pub struct Agent {
    orchestrator: Arc<Orchestrator>,
    allowed: Vec<AgentName>,
    act_on_intents: bool,
    reply_to: Option<String>,
    max_runs: usize,
}

impl StageKind for Agent {
    const NAME: &'static str = "agent";
    const SUMMARY: &'static str =
        "Tool calls and intents → store actions (Shopify); results spoken through `realtime`.";
    const EXAMPLE: &'static str = "agents = [\"order_status\", \"cancel_order\"]";
    const ROLE: Role = Role::Sink;
    const TASK: bool = true;
    const MAX_INPUTS: usize = 4;
    type Spec = AgentSpec;

    fn input_caps(_: &AgentSpec) -> Caps {
        Caps::Events
    }

    fn validate(spec: &AgentSpec) -> Vec<Invalid> {
        let mut invalid: Vec<Invalid> = spec
            .agents
            .iter()
            .filter(|a| AgentName::from_name(a).is_none())
            .map(|a| Invalid {
                key: "agents",
                message: format!(
                    "`{a}` is not an agent (order_status, cancel_order, return_request, refund_status, address_change, reschedule_delivery, talk_to_human)"
                ),
            })
            .collect();
        if spec.max_runs == 0 || spec.max_runs > 64 {
            invalid.push(Invalid {
                key: "max_runs",
                message: "between 1 and 64".into(),
            });
        }
        if spec.run_timeout_ms == 0 || spec.run_timeout_ms > 60_000 {
            invalid.push(Invalid {
                key: "run_timeout_ms",
                message: "between 1 and 60000".into(),
            });
        }
        invalid
    }

    fn negotiate(_: &AgentSpec, _: &[Format], _: &CompileOptions) -> Result<Negotiated, String> {
        Ok(Negotiated::none())
    }

    fn build(spec: &AgentSpec, ctx: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        let config = AgentConfig {
            run_timeout: Duration::from_millis(spec.run_timeout_ms),
            confirm_wait: Duration::from_millis(spec.confirm_wait_ms),
            ..AgentConfig::default()
        };
        let call = ctx.call.call_id.as_deref().unwrap_or("call");
        let orchestrator = Orchestrator::new(
            ctx.services.shopify.clone(),
            call,
            ctx.call.caller.as_deref(),
            config,
        );
        Ok(Runnable::Task(Box::new(Agent {
            orchestrator,
            allowed: spec
                .agents
                .iter()
                .filter_map(|a| AgentName::from_name(a))
                .collect(),
            act_on_intents: spec.act_on_intents,
            reply_to: spec.reply_to.clone(),
            max_runs: spec.max_runs,
        })))
    }
}

/// Where a run's result goes.
#[derive(Debug, Clone)]
enum Reply {
    /// Back to the model as a tool result.
    Tool(String),
    /// Spoken (`Say`).
    Speak,
}

struct Done {
    agent: AgentName,
    reply: Reply,
    outcome: Outcome,
}

impl Agent {
    fn reply(&self, peers: &Peers, ctx: &NodeCtx, done: &Done) {
        let control = match &done.reply {
            Reply::Tool(call_id) => Control::ToolResult {
                call_id: call_id.clone(),
                output: done.outcome.to_tool_output(),
            },
            Reply::Speak => Control::Say(done.outcome.message.clone()),
        };
        let reached = match &self.reply_to {
            Some(stage) => usize::from(peers.send(stage, control).is_ok()),
            None => peers.send_to_kind("realtime", &control),
        };
        if reached == 0 {
            tracing::warn!(agent = done.agent.name(), "No stage took the agent's answer.");
        }
        let order = done.outcome.order.clone();
        let key = self
            .orchestrator
            .key(done.agent, order.as_deref().unwrap_or("-"), None);
        ctx.publish(BusKind::Event(Event::ActionTaken {
            action: done.agent.name().into(),
            order,
            key,
            status: done.outcome.status.name().into(),
            detail: done.outcome.message.clone(),
        }));
        tracing::info!(
            agent = done.agent.name(),
            status = done.outcome.status.name(),
            "Agent run finished."
        );
    }

    fn start(&self, runs: &mut JoinSet<Done>, agent: AgentName, args: Args, reply: Reply) -> Option<Done> {
        if !self.allowed.contains(&agent) {
            return Some(Done {
                agent,
                reply,
                outcome: Outcome {
                    status: Status::Refused,
                    message: "That is not something I can do on this line.".into(),
                    order: None,
                    details: serde_json::Value::Null,
                },
            });
        }
        if runs.len() >= self.max_runs {
            return Some(Done {
                agent,
                reply,
                outcome: Outcome {
                    status: Status::Failed,
                    message: "I'm still working on the previous request; please hold on a moment.".into(),
                    order: None,
                    details: serde_json::Value::Null,
                },
            });
        }
        let orchestrator = Arc::clone(&self.orchestrator);
        runs.spawn(tracing::Instrument::in_current_span(async move {
            let outcome = orchestrator.run(agent, args).await;
            Done {
                agent,
                reply,
                outcome,
            }
        }));
        None
    }

    fn on_event(&self, event: &Event, runs: &mut JoinSet<Done>) -> Option<Done> {
        match event {
            Event::ToolCall {
                call_id,
                name,
                arguments,
            } => {
                let reply = Reply::Tool(call_id.clone());
                let Some(agent) = AgentName::from_name(name) else {
                    return Some(Done {
                        agent: AgentName::TalkToHuman,
                        reply,
                        outcome: Outcome {
                            status: Status::Refused,
                            message: format!("There is no tool named {name}."),
                            order: None,
                            details: serde_json::Value::Null,
                        },
                    });
                };
                self.start(runs, agent, Args::from_json(arguments), reply)
            }
            Event::IntentDetected {
                intent,
                entities,
                is_final: true,
                accepted,
                ..
            } => {
                self.orchestrator.heard(entities);
                if !accepted {
                    return None;
                }
                match intent {
                    Intent::Affirm => {
                        let confirmed = self.orchestrator.affirmed();
                        if self.act_on_intents
                            && let Some((agent, args)) = confirmed
                        {
                            return self.start(runs, agent, args, Reply::Speak);
                        }
                        None
                    }
                    Intent::Deny => {
                        let dropped = self.orchestrator.denied();
                        if self.act_on_intents
                            && let Some(agent) = dropped
                        {
                            return Some(Done {
                                agent,
                                reply: Reply::Speak,
                                outcome: Outcome {
                                    status: Status::Declined,
                                    message: "Okay, I won't go ahead with that.".into(),
                                    order: None,
                                    details: serde_json::Value::Null,
                                },
                            });
                        }
                        None
                    }
                    other if self.act_on_intents => {
                        let agent = AgentName::for_intent(*other)?;
                        self.start(runs, agent, Args::default(), Reply::Speak)
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

impl TaskStage for Agent {
    fn run(self: Box<Self>, mut io: TaskIo) -> BoxFuture<'static, Result<(), StageError>> {
        async move {
            let mut runs: JoinSet<Done> = JoinSet::new();
            loop {
                tokio::select! {
                    item = io.input.next() => {
                        let Some((_, frame)) = item else { break };
                        if let Frame::Event(e) = frame {
                            let e = e.clone();
                            if let Some(done) = self.on_event(&e, &mut runs) {
                                self.reply(&io.peers, &io.ctx, &done);
                            }
                        }
                    }
                    Some(joined) = runs.join_next(), if !runs.is_empty() => {
                        match joined {
                            Ok(done) => self.reply(&io.peers, &io.ctx, &done),
                            Err(e) if e.is_panic() => {
                                tracing::error!("An agent run panicked; the call goes on.");
                            }
                            Err(_) => {}
                        }
                    }
                    control = io.control.recv() => {
                        if control.is_none() {
                            // The pipeline is gone.
                            break;
                        }
                    }
                }
            }
            if !runs.is_empty() {
                tracing::info!(runs = runs.len(), "The call ended; cancelling agent runs still going.");
            }
            runs.shutdown().await;
            Ok(())
        }
        .boxed()
    }
}
