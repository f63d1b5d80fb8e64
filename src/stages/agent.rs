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
use std::collections::HashMap;
use std::future::Future;

use tokio::task::JoinSet;

use crate::commerce::confirm::{self, Answer};
use crate::commerce::ledger::Actions;
use crate::metrics::AgentRuns;
use crate::commerce::shop::Shopify;
use crate::commerce::agents::{AgentConfig, AgentName, Args, Orchestrator, Outcome, ActionStatus};
use crate::engine::format::{Caps, Format};
use crate::engine::frame::{Control, Event, Frame};
use crate::vocab::Intent;
use crate::engine::bus::{BusKind, SignalKind};
use crate::engine::edge::Peers;
use crate::engine::registry::{CompileOptions, Invalid, NegotiateError, Negotiated, Role, StageKind};
use crate::engine::stage::{BuildCtx, BuildError, NodeCtx, Runnable, StageError, TaskIo, TaskStage, ToolSpec};

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
    /// The agents this call may run (others are refused). They are also the tools the
    /// `realtime` stage whose `tool_calls` feed this stage declares to the model.
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
    /// The server's count of runs (none outside a server).
    counted: Option<AgentRuns>,
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
                    "`{a}` is not an agent ({})",
                    crate::commerce::catalog::names()
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

    /// The agents it runs, offered as tools to the stage whose tool calls it reads.
    fn tools(spec: &AgentSpec) -> Vec<ToolSpec> {
        spec.agents
            .iter()
            .filter_map(|a| AgentName::from_name(a))
            .map(|a| crate::commerce::catalog::entry(a).tool())
            .collect()
    }

    fn negotiate(_: &AgentSpec, _: &[Format], _: &CompileOptions) -> Result<Negotiated, NegotiateError> {
        Ok(Negotiated::none())
    }

    fn build(spec: &AgentSpec, ctx: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        let config = AgentConfig {
            run_timeout: Duration::from_millis(spec.run_timeout_ms),
            confirm_wait: Duration::from_millis(spec.confirm_wait_ms),
            ..AgentConfig::default()
        };
        let call = ctx.call.call_id.as_deref().unwrap_or("call");
        // The process's ledger (the call-records database in a server); a ledger of this
        // call's own where there is none (replay, tests).
        let actions = ctx
            .services
            .get::<Arc<Actions>>()
            .cloned()
            .unwrap_or_else(Actions::in_memory);
        let orchestrator = Orchestrator::recorded(
            ctx.services.get::<Arc<Shopify>>().cloned(),
            call,
            ctx.call.record_id.as_deref().unwrap_or(call),
            ctx.call.caller.as_deref(),
            config,
            actions,
        );
        Ok(Runnable::Task(Box::new(Agent {
            orchestrator,
            counted: ctx.services.get::<AgentRuns>().cloned(),
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

/// What the caller hears when a run broke (it panicked): honest, and the model is not left
/// waiting on its function call.
const RUN_BROKE: &str = "Something went wrong on our side and I could not do that just now. Please try again, or I can connect you to a person.";

/// How a run ended, for `caly_agent_runs_total`: its status, or how it could not answer.
fn result_label(outcome: &Outcome) -> &'static str {
    match outcome.details.get("error").and_then(serde_json::Value::as_str) {
        Some("timeout") => "timeout",
        Some("run_broke") => "panicked",
        _ => outcome.status.name(),
    }
}

/// The stage's agent runs. Every run ends in a [`Done`], one that panicked too, so every tool
/// call gets its answer.
#[derive(Default)]
struct Runs {
    set: JoinSet<Done>,
    /// What each running task answers, for when it cannot answer itself.
    started: HashMap<tokio::task::Id, (AgentName, Reply)>,
}

impl Runs {
    fn len(&self) -> usize {
        self.set.len()
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    fn spawn(&mut self, agent: AgentName, reply: Reply, run: impl Future<Output = Outcome> + Send + 'static) {
        let answer = reply.clone();
        let handle = self.set.spawn(tracing::Instrument::in_current_span(async move {
            Done {
                agent,
                reply: answer,
                outcome: run.await,
            }
        }));
        self.started.insert(handle.id(), (agent, reply));
    }

    /// The next run to end; `None` when none is running.
    async fn next(&mut self) -> Option<Done> {
        match self.set.join_next_with_id().await? {
            Ok((id, done)) => {
                self.started.remove(&id);
                Some(done)
            }
            Err(e) => {
                let (agent, reply) = self.started.remove(&e.id())?;
                tracing::error!(agent = agent.name(), panicked = e.is_panic(), "An agent run broke; the caller is told, the call goes on.");
                Some(Done {
                    agent,
                    reply,
                    outcome: Outcome::new(ActionStatus::Failed, RUN_BROKE)
                        .with(serde_json::json!({"error": "run_broke"})),
                })
            }
        }
    }

    async fn shutdown(&mut self) {
        self.set.shutdown().await;
        self.started.clear();
    }
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
        // The key the run acted under (it names the change: the new address, the day), so two
        // different changes to one order are two records; the plain one for answers without
        // a side effect.
        let key = done.outcome.key.clone().unwrap_or_else(|| {
            self.orchestrator
                .key(done.agent, order.as_deref().unwrap_or("-"), None)
        });
        ctx.publish(BusKind::Event(Event::ActionTaken {
            action: done.agent.name().into(),
            order,
            key,
            status: done.outcome.status.name().into(),
            detail: done.outcome.message.clone(),
            recorded: done.outcome.ledger_row.is_some(),
        }));
        tracing::info!(
            agent = done.agent.name(),
            status = done.outcome.status.name(),
            "Agent run finished."
        );
        if let Some(counted) = &self.counted {
            counted.count(done.agent.name(), result_label(&done.outcome));
        }
        // A person was asked for and the model has been told to say so: the call controller
        // closes the stream once that has played, and the provider's flow connects a person.
        if done.agent == AgentName::TalkToHuman && done.outcome.status == ActionStatus::Done {
            ctx.signal(SignalKind::HandOff {
                reason: "the caller asked for a person".into(),
            });
        }
    }

    fn start(&self, runs: &mut Runs, agent: AgentName, args: Args, reply: Reply) -> Option<Done> {
        if !self.allowed.contains(&agent) {
            return Some(Done {
                agent,
                reply,
                outcome: Outcome::new(ActionStatus::Refused, "That is not something I can do on this line."),
            });
        }
        if runs.len() >= self.max_runs {
            return Some(Done {
                agent,
                reply,
                outcome: Outcome::new(ActionStatus::Failed, "I'm still working on the previous request; please hold on a moment."),
            });
        }
        let orchestrator = Arc::clone(&self.orchestrator);
        runs.spawn(agent, reply, async move { orchestrator.run(agent, args).await });
        None
    }

    fn on_event(&self, event: &Event, runs: &mut Runs) -> Option<Done> {
        match event {
            Event::ToolCall {
                call_id,
                name,
                arguments,
                turns_begun,
            } => {
                let reply = Reply::Tool(call_id.clone());
                let Some(agent) = AgentName::from_name(name) else {
                    return Some(Done {
                        agent: AgentName::TalkToHuman,
                        reply,
                        outcome: Outcome::new(ActionStatus::Refused, format!("There is no tool named {name}.")),
                    });
                };
                let args = Args {
                    asked_in_turn: *turns_begun,
                    ..Args::from_json(arguments)
                };
                self.start(runs, agent, args, reply)
            }
            Event::IntentDetected {
                intent,
                confidence,
                entities,
                text,
                is_final: true,
                accepted,
                turn,
                ..
            } => {
                self.orchestrator.heard(entities);
                // An action waiting for a yes is confirmed only by a clear one and dropped only
                // by a clear no; anything else leaves it open (the bot asks again).
                if let Some(waiting) = self.orchestrator.proposed() {
                    match confirm::judge(text, *intent, *confidence, waiting) {
                        Answer::Yes => {
                            let confirmed = self.orchestrator.affirmed(text, *turn);
                            let (agent, args) = confirmed.filter(|_| self.act_on_intents)?;
                            return self.start(runs, agent, args, Reply::Speak);
                        }
                        Answer::No => {
                            let dropped = self.orchestrator.denied();
                            let agent = dropped.filter(|_| self.act_on_intents)?;
                            return Some(Done {
                                agent,
                                reply: Reply::Speak,
                                outcome: Outcome::new(ActionStatus::Declined, "Okay, I won't go ahead with that."),
                            });
                        }
                        Answer::Unclear if matches!(intent, Intent::Affirm | Intent::Deny) => {
                            return None;
                        }
                        Answer::Unclear => {}
                    }
                }
                if !accepted || !self.act_on_intents {
                    return None;
                }
                // A request of its own (a yes or a no with nothing waiting is nothing).
                let agent = AgentName::for_intent(*intent)?;
                let args = Args {
                    asked_in_turn: *turn,
                    ..Args::default()
                };
                self.start(runs, agent, args, Reply::Speak)
            }
            _ => None,
        }
    }
}

impl TaskStage for Agent {
    fn run(self: Box<Self>, mut io: TaskIo) -> BoxFuture<'static, Result<(), StageError>> {
        async move {
            let mut runs = Runs::default();
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
                    Some(done) = runs.next(), if !runs.is_empty() => {
                        self.reply(&io.peers, &io.ctx, &done);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_run_that_panics_still_gets_its_answer() {
        let mut runs = Runs::default();
        runs.spawn(AgentName::CancelOrder, Reply::Tool("call_1".into()), async {
            panic!("a bug in an agent")
        });
        runs.spawn(AgentName::OrderStatus, Reply::Tool("call_2".into()), async {
            Outcome::new(ActionStatus::Done, "Shipped.")
        });
        let mut answered = Vec::new();
        while let Some(done) = runs.next().await {
            let Reply::Tool(call) = &done.reply else {
                panic!("a tool call's run answers the tool call")
            };
            answered.push((call.clone(), done.agent, done.outcome.status));
            let expected = if done.agent == AgentName::CancelOrder { "panicked" } else { "done" };
            assert_eq!(result_label(&done.outcome), expected, "counted by how it ended");
        }
        answered.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            answered,
            [
                ("call_1".to_owned(), AgentName::CancelOrder, ActionStatus::Failed),
                ("call_2".to_owned(), AgentName::OrderStatus, ActionStatus::Done),
            ]
        );
        assert!(runs.started.is_empty(), "nothing left behind");
    }
}
