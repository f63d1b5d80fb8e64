//! `Pipeline`: one running call, built from a shared [`Graph`].
//!
//! Each task of the graph becomes a tokio task: a fused group of synchronous stages driven by
//! its inlet, or a single [`TaskStage`]. A supervisor owns them all; dropping the `Pipeline`
//! aborts the supervisor, which aborts every task, so nothing outlives its call. A stage that
//! fails or panics ends its own call only: the supervisor aborts the other tasks of that call,
//! publishes the failure on the bus and reports it from [`Pipeline::finished`].
//!
//! The control lane is a small bounded channel per task, polled before any queued frame.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::Arc;

use futures::FutureExt;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::engine::bus::{Bus, BusEvent, BusKind};
use crate::engine::edge::{
    Addressed, ControlError, ControlRx, EdgeReader, EdgeWriter, Inlet, Peer, Peers, edge_ring,
};
use crate::engine::format::Format;
use crate::engine::frame::{Control, Frame};
use crate::engine::graph::Graph;
use crate::engine::ring::RingCounts;
use crate::engine::stage::{
    BuildCtx, BuildError, Disposition, Node, NodeCounts, NodeCtx, NodeStats, Panicked, Route,
    Runnable, StageError, TaskIo, TaskOutput, TaskStage, dispatch,
};

/// Control messages one task can have queued.
const CONTROL_CAPACITY: usize = 32;
/// Items a fused task takes from its inlet before it looks at its control lane again.
const PUMP_BATCH: usize = 16;

/// How a pipeline is started.
#[derive(Debug, Clone, Default)]
pub struct PipelineOptions {
    /// The call this pipeline serves (for logs).
    pub call_id: Option<Arc<str>>,
    /// Time every stage call (for `caly replay`'s per-stage cost).
    pub profile: bool,
    /// Publish on this bus instead of a new one: subscribe before starting and miss nothing.
    pub bus: Option<Bus>,
    /// Outside services (default: from the environment).
    pub services: Option<Arc<crate::engine::stage::Services>>,
    /// The caller's phone number, as the telephony provider gave it (for agents).
    pub caller: Option<String>,
    /// The id of the call's record in the call-records database, when it is recorded (what
    /// stages that write rows themselves, like the agents' ledger, file them under).
    pub record_id: Option<Arc<str>>,
}

/// How a call's pipeline ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Every input ended and everything drained.
    Completed,
    /// A stage ended the stream on purpose.
    Ended {
        /// Why.
        reason: String,
    },
    /// A stage failed or panicked; the call was ended.
    Failed {
        /// The stage.
        stage: String,
        /// What went wrong.
        error: String,
    },
}

/// The handle the transport uses to feed a synchronous source stage.
pub struct SourceHandle {
    writer: EdgeWriter,
}

impl SourceHandle {
    /// Offers a frame; the ring's policy applies when the pipeline falls behind (the phone line
    /// never waits).
    pub fn push(&mut self, frame: Frame<'_>) {
        self.writer.push_frame(frame);
    }

    /// Offers a frame and waits until it is queued (lossless feeding, e.g. `caly replay`).
    pub async fn send(&mut self, frame: Frame<'_>) {
        self.writer.send_frame(frame).await;
    }

    /// Ends the input stream.
    pub async fn close(self) {
        self.writer.close().await;
    }

    /// Counters of the source ring.
    pub fn counts(&self) -> RingCounts {
        self.writer.counts()
    }
}

/// The handle the transport uses to drain a sink's output (e.g. `call_playback`'s bot audio).
pub struct SinkHandle {
    reader: EdgeReader,
}

impl SinkHandle {
    /// Waits until a frame is available (`true`) or the stream has ended (`false`).
    pub async fn ready(&mut self) -> bool {
        poll_fn(|cx| self.reader.poll_ready(cx)).await;
        !self.reader.is_finished()
    }

    /// Takes a frame if one is available now.
    pub fn try_next(&mut self) -> Option<Frame<'_>> {
        if self.reader.has_item() {
            self.reader.try_next()
        } else {
            None
        }
    }

    /// Discards everything available now (barge-in); returns how many frames went.
    pub fn discard(&mut self) -> usize {
        let mut n = 0;
        while self.try_next().is_some() {
            n += 1;
        }
        n
    }
}

/// Counters of a running pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineStats {
    /// Per stage, in graph order.
    pub stages: Vec<(Arc<str>, NodeCounts)>,
    /// Per ring (`from -> to`, or `transport -> stage`).
    pub rings: Vec<(Arc<str>, RingCounts)>,
}

/// One running call.
pub struct Pipeline {
    graph: Arc<Graph>,
    bus: Bus,
    sources: Vec<(Arc<str>, SourceHandle)>,
    sinks: Vec<(Arc<str>, SinkHandle)>,
    controls: HashMap<Arc<str>, (mpsc::Sender<Addressed>, usize)>,
    node_stats: Vec<(Arc<str>, Arc<NodeStats>)>,
    ring_stats: Vec<(Arc<str>, RingObserver, Format)>,
    supervisor: JoinHandle<()>,
    done: watch::Receiver<Option<Outcome>>,
    ending: watch::Receiver<Option<Outcome>>,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

/// Reads a ring's counters after its ends have moved into tasks.
pub(crate) struct RingObserver(Box<dyn Fn() -> RingCounts + Send + Sync>);

enum Group {
    Fused(FusedGroup),
    Task(Box<dyn TaskStage>, TaskIo),
}

struct FusedGroup {
    nodes: Vec<Node>,
    inlet: Inlet,
    control: mpsc::Receiver<Addressed>,
}

impl Pipeline {
    /// Builds every stage for one call and starts its tasks. Must run inside a tokio runtime.
    pub fn start(graph: Arc<Graph>, options: PipelineOptions) -> Result<Pipeline, BuildError> {
        let bus = options.bus.clone().unwrap_or_default();
        let mut parts = Parts::build(&graph, &bus, &options)?;
        let mut set = JoinSet::new();
        // Inside a call's span (the transport's), the tasks log in it; otherwise (replay,
        // tests) they get one of their own.
        let current = tracing::Span::current();
        let span = if current.metadata().is_some_and(|m| m.name() == "call") {
            current
        } else {
            tracing::info_span!(
                "call",
                call = options.call_id.as_deref().unwrap_or("-"),
                pipeline = %graph.name
            )
        };
        for group in parts.groups.drain(..) {
            let fut = run_group(group);
            set.spawn(tracing::Instrument::instrument(fut, span.clone()));
        }
        let (done_tx, done) = watch::channel(None);
        let (ending_tx, ending) = watch::channel(None);
        let supervisor = tokio::spawn(tracing::Instrument::instrument(
            supervise(set, bus.clone(), done_tx, ending_tx),
            span,
        ));
        Ok(Pipeline {
            graph,
            bus,
            sources: parts.sources,
            sinks: parts.sinks,
            controls: parts.controls,
            node_stats: parts.node_stats,
            ring_stats: parts.ring_stats,
            supervisor,
            done,
            ending,
        })
    }

    /// The graph it runs.
    pub fn graph(&self) -> &Arc<Graph> {
        &self.graph
    }

    /// The call's bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Takes the feed of a synchronous source stage (e.g. `call_audio`); each can be taken once.
    pub fn take_source(&mut self, stage: &str) -> Option<SourceHandle> {
        let i = self.sources.iter().position(|(id, _)| &**id == stage)?;
        Some(self.sources.swap_remove(i).1)
    }

    /// Takes the feed of the first synchronous source.
    pub fn take_first_source(&mut self) -> Option<(Arc<str>, SourceHandle)> {
        let first = self
            .graph
            .nodes()
            .iter()
            .find(|n| n.source_ring.is_some())
            .map(|n| Arc::clone(&n.id))?;
        let handle = self.take_source(&first)?;
        Some((first, handle))
    }

    /// Takes the output of a sink stage with an output port (e.g. `call_playback`).
    pub fn take_sink(&mut self, stage: &str) -> Option<SinkHandle> {
        let i = self.sinks.iter().position(|(id, _)| &**id == stage)?;
        Some(self.sinks.swap_remove(i).1)
    }

    /// Takes the output of the first sink that has one.
    pub fn take_first_sink(&mut self) -> Option<(Arc<str>, SinkHandle)> {
        let first = self
            .graph
            .nodes()
            .iter()
            .find(|n| n.sink_ring.is_some())
            .map(|n| Arc::clone(&n.id))?;
        let handle = self.take_sink(&first)?;
        Some((first, handle))
    }

    /// Sends a control message to every stage (e.g. `Interrupt` on barge-in); a full lane
    /// refuses it for that stage only. Returns how many stages it reached.
    pub fn control_all(&self, control: &Control) -> usize {
        self.controls
            .values()
            .filter(|(tx, node)| {
                tx.try_send(Addressed {
                    node: *node,
                    control: control.clone(),
                })
                .is_ok()
            })
            .count()
    }

    /// Sends a control message to a stage, never waiting: a full lane refuses it.
    pub fn control(&self, stage: &str, control: Control) -> Result<(), ControlError> {
        let (tx, node) = self
            .controls
            .get(stage)
            .ok_or_else(|| ControlError::UnknownStage(stage.to_owned()))?;
        tx.try_send(Addressed {
            node: *node,
            control,
        })
        .map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ControlError::Full(stage.to_owned()),
            mpsc::error::TrySendError::Closed(_) => ControlError::Ended(stage.to_owned()),
        })
    }

    /// Counters of every stage and ring.
    pub fn stats(&self) -> PipelineStats {
        PipelineStats {
            stages: self
                .node_stats
                .iter()
                .map(|(id, s)| (Arc::clone(id), s.snapshot()))
                .collect(),
            rings: self
                .ring_stats
                .iter()
                .map(|(id, r, _)| (Arc::clone(id), (r.0)()))
                .collect(),
        }
    }

    /// Audio each ring has dropped for being full, as a duration at its edge's format.
    pub fn audio_dropped(&self) -> Vec<(Arc<str>, std::time::Duration)> {
        self.ring_stats
            .iter()
            .filter_map(|(id, r, format)| {
                let dropped = (r.0)().dropped;
                let duration = match format {
                    Format::Audio(a) => a.duration_of(dropped),
                    Format::Encoded(e) => e.duration_of_bytes(dropped),
                    Format::Text | Format::Events => return None,
                };
                Some((Arc::clone(id), duration))
            })
            .collect()
    }

    /// Waits until the call's pipeline is over for the caller: a stage ended the stream or
    /// failed (reported at once, before the other tasks have wound down), or every task
    /// finished. Cancel-safe and lossless: the first such outcome is kept until read.
    pub async fn ending(&mut self) -> Outcome {
        match self.ending.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or(Outcome::Completed),
            Err(_) => Outcome::Failed {
                stage: "-".into(),
                error: "pipeline supervisor stopped".into(),
            },
        }
    }

    /// Waits until the call's pipeline has ended (every task finished), and says how.
    pub async fn finished(&mut self) -> Outcome {
        match self.done.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or(Outcome::Completed),
            Err(_) => Outcome::Failed {
                stage: "-".into(),
                error: "pipeline supervisor stopped".into(),
            },
        }
    }
}

async fn supervise(
    mut set: JoinSet<Result<(), StageError>>,
    bus: Bus,
    done: watch::Sender<Option<Outcome>>,
    ending: watch::Sender<Option<Outcome>>,
) {
    let first = |o: &Outcome| {
        ending.send_if_modified(|e| {
            if e.is_none() {
                *e = Some(o.clone());
                true
            } else {
                false
            }
        });
    };
    let mut outcome = Outcome::Completed;
    while let Some(joined) = set.join_next().await {
        let error = match joined {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) if e.is_panic() => {
                StageError::fatal(Panicked::from_payload(e.into_panic().as_ref()))
            }
            Err(_) => continue, // aborted by us
        };
        let stage = error.stage.as_deref().unwrap_or("-").to_owned();
        if error.disposition == Disposition::EndStream {
            tracing::info!(%stage, reason = %error, "Stage ended the stream.");
            bus.publish(BusEvent {
                stage: Arc::from(stage.as_str()),
                kind: BusKind::Ended {
                    reason: error.to_string(),
                },
                at: std::time::Instant::now(),
            });
            if outcome == Outcome::Completed {
                outcome = Outcome::Ended {
                    reason: error.to_string(),
                };
            }
            first(&outcome);
            continue;
        }
        tracing::error!(%stage, error = %error, "Stage failed; ending the call.");
        bus.publish(BusEvent {
            stage: Arc::from(stage.as_str()),
            kind: BusKind::Failed {
                error: error.to_string(),
            },
            at: std::time::Instant::now(),
        });
        if !matches!(outcome, Outcome::Failed { .. }) {
            outcome = Outcome::Failed {
                stage,
                error: error.to_string(),
            };
        }
        first(&outcome);
        set.abort_all();
    }
    first(&outcome);
    let _ = done.send(Some(outcome));
}

async fn run_group(group: Group) -> Result<(), StageError> {
    match group {
        Group::Fused(g) => g.run().await,
        Group::Task(stage, io) => {
            let id = Arc::clone(&io.ctx.id);
            match std::panic::AssertUnwindSafe(stage.run(io))
                .catch_unwind()
                .await
            {
                Ok(r) => r.map_err(|e| e.at(&id)),
                Err(panic) => {
                    Err(StageError::fatal(Panicked::from_payload(panic.as_ref())).at(&id))
                }
            }
        }
    }
}

impl FusedGroup {
    async fn run(mut self) -> Result<(), StageError> {
        let mut control_open = true;
        loop {
            tokio::select! {
                biased;
                msg = self.control.recv(), if control_open => match msg {
                    Some(a) => self.control(a)?,
                    None => control_open = false,
                },
                more = self.inlet.ready() => {
                    if !more {
                        break;
                    }
                    self.pump()?;
                    self.flush().await;
                }
            }
        }
        self.finish()?;
        self.close().await;
        Ok(())
    }

    /// Processes what the inlet holds now, stopping early if a `block` ring filled up, and
    /// after [`PUMP_BATCH`] items so the control lane is never kept waiting behind audio.
    fn pump(&mut self) -> Result<(), StageError> {
        for _ in 0..PUMP_BATCH {
            let Some((target, frame)) = self.inlet.try_next() else {
                break;
            };
            dispatch(&mut self.nodes, 0, target, frame)?;
            if self.needs_flush() {
                break;
            }
        }
        Ok(())
    }

    fn control(&mut self, a: Addressed) -> Result<(), StageError> {
        let Some((_, tail)) = self.nodes.split_at_mut_checked(a.node) else {
            return Ok(());
        };
        if let Some((node, rest)) = tail.split_first_mut() {
            node.control(&a.control, rest, a.node + 1)?;
        }
        Ok(())
    }

    fn needs_flush(&self) -> bool {
        self.nodes.iter().any(|n| {
            n.routes
                .iter()
                .flatten()
                .any(|r| matches!(r, Route::Ring(w) if w.needs_flush()))
        })
    }

    async fn flush(&mut self) {
        for node in &mut self.nodes {
            for route in node.routes.iter_mut().flatten() {
                if let Route::Ring(w) = route {
                    w.flush().await;
                }
            }
        }
    }

    fn finish(&mut self) -> Result<(), StageError> {
        for i in 0..self.nodes.len() {
            let (head, rest) = self.nodes.split_at_mut(i + 1);
            if let Some(node) = head.last_mut() {
                node.finish(rest, i + 1)?;
            }
        }
        Ok(())
    }

    async fn close(&mut self) {
        for node in &mut self.nodes {
            for routes in &mut node.routes {
                for route in routes.drain(..) {
                    if let Route::Ring(w) = route {
                        w.close().await;
                    }
                }
            }
        }
    }
}

/// Everything [`Pipeline::start`] wires up before spawning.
struct Parts {
    groups: Vec<Group>,
    sources: Vec<(Arc<str>, SourceHandle)>,
    sinks: Vec<(Arc<str>, SinkHandle)>,
    controls: HashMap<Arc<str>, (mpsc::Sender<Addressed>, usize)>,
    node_stats: Vec<(Arc<str>, Arc<NodeStats>)>,
    ring_stats: Vec<(Arc<str>, RingObserver, Format)>,
}

/// A stage's output ports with no spare room: they live as long as the call, and a `Vec` grown
/// by pushing keeps room for four writers where a port usually has one.
fn exact(mut ports: Vec<Vec<EdgeWriter>>) -> Vec<Vec<EdgeWriter>> {
    for port in &mut ports {
        port.shrink_to_fit();
    }
    ports.shrink_to_fit();
    ports
}

fn observer(w: &EdgeWriter) -> RingObserver {
    // Counters live in the ring's shared state; keep a reader of them without either end.
    let counts = match w {
        EdgeWriter::Samples(w) => w.observer(),
        EdgeWriter::Bytes(w) | EdgeWriter::Frames(w) => w.observer(),
    };
    RingObserver(counts)
}

impl Parts {
    fn build(graph: &Graph, bus: &Bus, options: &PipelineOptions) -> Result<Parts, BuildError> {
        let services = options.services.clone().unwrap_or_default();
        let call = crate::engine::stage::CallInfo {
            call_id: options.call_id.as_deref().map(str::to_owned),
            caller: options.caller.clone(),
            record_id: options.record_id.as_deref().map(str::to_owned),
        };
        let nodes = graph.nodes();
        // Where each node lives: (task, index within the task).
        let mut local = vec![(0usize, 0usize); nodes.len()];
        for (t, task) in graph.tasks().iter().enumerate() {
            for (k, &n) in task.nodes.iter().enumerate() {
                local[n] = (t, k);
            }
        }
        let mut node_stats = Vec::with_capacity(nodes.len());
        let mut runnables: Vec<Option<Runnable>> = Vec::with_capacity(nodes.len());
        let mut ctxs = Vec::with_capacity(nodes.len());
        for n in nodes {
            let stats = Arc::new(NodeStats::default());
            node_stats.push((Arc::clone(&n.id), Arc::clone(&stats)));
            let ctx = BuildCtx {
                stage: &n.id,
                inputs: &n.input_formats,
                outputs: &n.ports,
                services: &services,
                tools: &n.tools,
                call: &call,
            };
            runnables.push(Some(n.spec.build(&ctx)?));
            ctxs.push(NodeCtx {
                id: Arc::clone(&n.id),
                bus: bus.clone(),
                stats,
                profile: options.profile,
            });
        }
        // Routes per node and port; inlets per task.
        let mut routes: Vec<Vec<Vec<Route>>> = nodes
            .iter()
            .map(|n| (0..n.ports.len().max(1)).map(|_| Vec::new()).collect())
            .collect();
        let mut task_routes: Vec<Vec<Vec<EdgeWriter>>> = nodes
            .iter()
            .map(|n| (0..n.ports.len().max(1)).map(|_| Vec::new()).collect())
            .collect();
        let mut inlets: Vec<Inlet> = graph.tasks().iter().map(|_| Inlet::default()).collect();
        let mut ring_stats = Vec::new();
        let mut sources = Vec::new();
        for e in graph.edges() {
            let (to_task, to_index) = local[e.to];
            let target = if graph.tasks()[to_task].stage_task {
                e.input
            } else {
                to_index
            };
            match &e.ring {
                None => routes[e.from][e.port].push(Route::Local(local[e.to].1)),
                Some(plan) => {
                    let label: Arc<str> =
                        format!("{} -> {}", nodes[e.from].id, nodes[e.to].id).into();
                    let (w, r) = edge_ring(plan.config, e.format, Arc::clone(&label));
                    ring_stats.push((label, observer(&w), e.format));
                    inlets[to_task].add(r, target);
                    if nodes[e.from].kind.task {
                        task_routes[e.from][e.port].push(w);
                    } else {
                        routes[e.from][e.port].push(Route::Ring(Box::new(w)));
                    }
                }
            }
        }
        let mut sinks = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            if let (Some(plan), Some(port)) = (&n.sink_ring, n.ports.first()) {
                let label: Arc<str> = format!("{} -> transport", n.id).into();
                let (w, r) = edge_ring(plan.config, port.format, Arc::clone(&label));
                ring_stats.push((label, observer(&w), port.format));
                if n.kind.task {
                    task_routes[i][0].push(w);
                } else {
                    routes[i][0].push(Route::Ring(Box::new(w)));
                }
                sinks.push((Arc::clone(&n.id), SinkHandle { reader: r }));
            }
        }
        for (i, n) in nodes.iter().enumerate() {
            if let (Some(plan), Some(port)) = (&n.source_ring, n.ports.first()) {
                let label: Arc<str> = format!("transport -> {}", n.id).into();
                let (w, r) = edge_ring(plan.config, port.format, Arc::clone(&label));
                ring_stats.push((label, observer(&w), port.format));
                inlets[local[i].0].add(r, local[i].1);
                sources.push((Arc::clone(&n.id), SourceHandle { writer: w }));
            }
        }
        // Assemble each task.
        let peers = Peers::default();
        let mut controls = HashMap::new();
        let mut groups = Vec::with_capacity(graph.tasks().len());
        let mut inlets = inlets.into_iter();
        for task in graph.tasks() {
            let inlet = inlets.next().unwrap_or_default();
            let (tx, rx) = mpsc::channel(CONTROL_CAPACITY);
            if task.stage_task {
                let Some(&n) = task.nodes.first() else {
                    continue;
                };
                let Some(Runnable::Task(stage)) = runnables[n].take() else {
                    return Err(wrong_mode(&nodes[n].id));
                };
                controls.insert(Arc::clone(&nodes[n].id), (tx, 0));
                let io = TaskIo {
                    input: inlet,
                    output: TaskOutput {
                        ports: exact(std::mem::take(&mut task_routes[n])),
                    },
                    control: ControlRx(rx),
                    ctx: ctxs[n].clone(),
                    peers: peers.clone(),
                };
                groups.push(Group::Task(stage, io));
            } else {
                let mut group_nodes = Vec::with_capacity(task.nodes.len());
                for (k, &n) in task.nodes.iter().enumerate() {
                    let Some(Runnable::Inline(stage)) = runnables[n].take() else {
                        return Err(wrong_mode(&nodes[n].id));
                    };
                    let mut node = Node::new(stage, nodes[n].ports.len(), ctxs[n].clone());
                    node.routes = std::mem::take(&mut routes[n]);
                    group_nodes.push(node);
                    controls.insert(Arc::clone(&nodes[n].id), (tx.clone(), k));
                }
                groups.push(Group::Fused(FusedGroup {
                    nodes: group_nodes,
                    inlet,
                    control: rx,
                }));
            }
        }
        let list = controls
            .iter()
            .map(|(id, (tx, node))| Peer {
                id: Arc::clone(id),
                kind: nodes
                    .iter()
                    .find(|n| n.id == *id)
                    .map_or("", |n| n.kind.name),
                tx: tx.downgrade(),
                node: *node,
            })
            .collect();
        let _ = peers.0.set(list);
        Ok(Parts {
            groups,
            sources,
            sinks,
            controls,
            node_stats,
            ring_stats,
        })
    }
}

fn wrong_mode(stage: &str) -> BuildError {
    BuildError {
        stage: stage.to_owned(),
        source: "built a task stage where the graph planned a fused one (or the reverse)".into(),
    }
}

/// A graph whose stages all fuse into one task, driven synchronously: no rings, no tasks, no
/// waiting. Benches and the allocation test measure the front half through it.
pub struct FusedChain {
    nodes: Vec<Node>,
    bus: Bus,
}

impl FusedChain {
    /// Builds every stage of a single-task graph.
    pub fn new(graph: &Graph, options: PipelineOptions) -> Result<FusedChain, BuildError> {
        if graph.tasks().len() != 1 || graph.tasks()[0].stage_task {
            return Err(BuildError {
                stage: graph.name.clone(),
                source: "a fused chain needs a graph of synchronous stages in one task".into(),
            });
        }
        let bus = Bus::new();
        let services = options.services.clone().unwrap_or_default();
        let call = crate::engine::stage::CallInfo {
            call_id: options.call_id.as_deref().map(str::to_owned),
            caller: options.caller.clone(),
            record_id: options.record_id.as_deref().map(str::to_owned),
        };
        let mut nodes = Vec::with_capacity(graph.nodes().len());
        for n in graph.nodes() {
            let ctx = BuildCtx {
                stage: &n.id,
                inputs: &n.input_formats,
                outputs: &n.ports,
                services: &services,
                tools: &n.tools,
                call: &call,
            };
            let Runnable::Inline(stage) = n.spec.build(&ctx)? else {
                return Err(wrong_mode(&n.id));
            };
            let node_ctx = NodeCtx {
                id: Arc::clone(&n.id),
                bus: bus.clone(),
                stats: Arc::new(NodeStats::default()),
                profile: options.profile,
            };
            nodes.push(Node::new(stage, n.ports.len(), node_ctx));
        }
        for e in graph.edges() {
            if let Some(node) = nodes.get_mut(e.from) {
                node.routes[e.port].push(Route::Local(e.to));
            }
        }
        Ok(FusedChain { nodes, bus })
    }

    /// Pushes a frame into the first stage.
    pub fn push(&mut self, frame: Frame<'_>) -> Result<(), StageError> {
        dispatch(&mut self.nodes, 0, 0, frame).map(|_| ())
    }

    /// Ends the input: every stage drains in order.
    pub fn finish(&mut self) -> Result<(), StageError> {
        for i in 0..self.nodes.len() {
            let (head, rest) = self.nodes.split_at_mut(i + 1);
            if let Some(node) = head.last_mut() {
                node.finish(rest, i + 1)?;
            }
        }
        Ok(())
    }

    /// The chain's bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Per-stage counters.
    pub fn stats(&self) -> Vec<(Arc<str>, NodeCounts)> {
        self.nodes
            .iter()
            .map(|n| (Arc::clone(&n.ctx.id), n.ctx.stats.snapshot()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ring::{RingConfig, WhenFull};

    #[test]
    fn a_stage_s_output_ports_keep_no_spare_room() {
        let config = RingConfig {
            capacity: 160,
            frame_capacity: 8,
            when_full: WhenFull::Block,
            framed: false,
        };
        let format = Format::Audio(crate::engine::format::AudioFormat::pcm16(8000));
        let mut ports: Vec<Vec<EdgeWriter>> = (0..3).map(|_| Vec::new()).collect();
        ports[0].push(edge_ring(config, format, "a".into()).0);
        ports[2].push(edge_ring(config, format, "b".into()).0);
        ports[2].push(edge_ring(config, format, "c".into()).0);
        let ports = exact(ports);
        assert_eq!(ports.iter().map(Vec::len).collect::<Vec<_>>(), [1, 0, 2]);
        assert!(ports.iter().all(|p| p.capacity() == p.len()));
        assert_eq!(ports.capacity(), 3);
    }
}
