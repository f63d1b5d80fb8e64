//! The runtime side of a stage: [`Stage`] (synchronous, fused), [`TaskStage`] (owns I/O and its
//! own async loop), the [`Output`] a stage pushes into, and the errors of each phase.
//!
//! Inside a fused task, [`Output::push`] calls the next stage's `process` directly with a
//! borrowed frame: no queue, no copy, no allocation, no context switch. Where the next stage lives
//! in another task, the push lands in a [`crate::engine::ring`] instead. A stage cannot tell the two apart.

use std::error::Error as StdError;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::Serialize;

use crate::engine::bus::{Bus, BusEvent, BusKind, Signal, SignalKind};
use crate::engine::edge::{ControlRx, EdgeWriter, Inlet};
use crate::engine::format::Format;
#[cfg(any(test, feature = "test-util"))]
use crate::engine::frame::OwnedFrame;
use crate::engine::frame::{Control, Frame};

/// A synchronous stage: called with one frame at a time, never awaits, never locks, and does not
/// allocate per frame (buffers are sized in `build`). Consecutive synchronous stages share a task.
pub trait Stage: Send + 'static {
    /// Handles one frame, pushing whatever it produces into `out`.
    fn process(&mut self, frame: Frame<'_>, out: &mut Output<'_>) -> Result<(), StageError>;

    /// Handles an out-of-band message addressed to this stage.
    fn control(&mut self, control: &Control, out: &mut Output<'_>) -> Result<(), StageError> {
        let _ = (control, out);
        Ok(())
    }

    /// The input has ended: push out whatever is still buffered. Nothing is pushed afterwards.
    fn finish(&mut self, out: &mut Output<'_>) -> Result<(), StageError> {
        let _ = out;
        Ok(())
    }

    /// Delay this stage adds: an input sample at time `t` leaves at `t + latency()`.
    fn latency(&self) -> Duration {
        Duration::ZERO
    }
}

/// A stage that owns network or timer I/O and runs its own loop in its own task.
pub trait TaskStage: Send + 'static {
    /// Runs until the input ends (or the stage decides the stream is over).
    fn run(self: Box<Self>, io: TaskIo) -> BoxFuture<'static, Result<(), StageError>>;
}

/// What `StageKind::build` returns.
pub enum Runnable {
    /// Runs inside a fused task.
    Inline(Box<dyn Stage>),
    /// Runs in its own task.
    Task(Box<dyn TaskStage>),
}

/// What the runner does about a failed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// The frame was bad (a corrupt packet): skip it, count it, carry on.
    Skip,
    /// The stream is over for this stage's call; end the call cleanly.
    EndStream,
    /// The call cannot go on: end it and report the failure. Other calls are untouched.
    Fatal,
}

/// A runtime failure of one stage.
#[derive(Debug)]
pub struct StageError {
    /// What the runner should do.
    pub disposition: Disposition,
    /// The stage that failed, filled in by the runner.
    pub stage: Option<Arc<str>>,
    source: Box<dyn StdError + Send + Sync>,
}

impl StageError {
    /// A bad frame that can be skipped.
    pub fn skip(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::new(Disposition::Skip, source)
    }

    /// A failure that ends the call.
    pub fn fatal(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::new(Disposition::Fatal, source)
    }

    /// A clean end of the stream decided by the stage.
    pub fn end(reason: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::new(Disposition::EndStream, reason)
    }

    fn new(disposition: Disposition, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        StageError {
            disposition,
            stage: None,
            source: source.into(),
        }
    }

    /// Names the stage, unless an inner stage was already named.
    pub fn at(mut self, stage: &Arc<str>) -> Self {
        if self.stage.is_none() {
            self.stage = Some(Arc::clone(stage));
        }
        self
    }
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.stage {
            Some(stage) => write!(f, "stage `{stage}`: {}", self.source),
            None => write!(f, "{}", self.source),
        }
    }
}

impl StdError for StageError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.source.as_ref())
    }
}

/// A stage could not be constructed for a call.
#[derive(Debug, thiserror::Error)]
#[error("stage `{stage}` could not be built: {source}")]
pub struct BuildError {
    /// The stage.
    pub stage: String,
    /// Why.
    #[source]
    pub source: Box<dyn StdError + Send + Sync>,
}

/// A named output of a stage and the format negotiated for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    /// `"out"` for the default port; otherwise the name used in `inputs = ["stage.port"]`.
    pub name: &'static str,
    /// What it carries.
    pub format: Format,
}

/// A function a stage offers to the stage that produces its input events: the `agent` stage's
/// agents, which the `realtime` stage declares to the model as tools. The engine only carries
/// them from the consumer's spec to the producer's [`BuildCtx`].
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The name a call of it carries.
    pub name: &'static str,
    /// What it does, for the model.
    pub description: &'static str,
    /// JSON Schema of its arguments (shared: every call declares the same one).
    pub parameters: Arc<serde_json::Value>,
}

/// What a stage is built with: its id, the formats negotiated on its edges, and the outside
/// services the process decided on.
#[derive(Debug, Clone, Copy)]
pub struct BuildCtx<'a> {
    /// The stage's id in the pipeline.
    pub stage: &'a str,
    /// Formats of its inputs, in `inputs` order.
    pub inputs: &'a [Format],
    /// Its output ports.
    pub outputs: &'a [Port],
    /// Where outside services are.
    pub services: &'a Services,
    /// Tools offered by the stages that consume this one's outputs ([`StageKind::tools`]).
    ///
    /// [`StageKind::tools`]: crate::engine::registry::StageKind::tools
    pub tools: &'a [ToolSpec],
    /// Which call this is.
    pub call: &'a CallInfo,
}

/// The call a pipeline serves.
#[derive(Debug, Clone, Default)]
pub struct CallInfo {
    /// Its id (the provider's call or stream id).
    pub call_id: Option<String>,
    /// The caller's phone number, as the provider gave it.
    pub caller: Option<String>,
    /// The id of the call's record, when it is recorded.
    pub record_id: Option<String>,
}

/// Outside services stages talk to, decided by the process: one value per type (the Realtime
/// endpoint, the Shopify client, …), looked up by the stage kinds that use them. The engine
/// knows none of those types; a stage that finds nothing of its type falls back to its own
/// default (the environment, or "not configured").
#[derive(Clone, Default)]
pub struct Services {
    by_type: std::collections::HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>,
}

impl Services {
    /// No services.
    pub fn new() -> Services {
        Services::default()
    }

    /// Adds (or replaces) the service of type `T`.
    pub fn with<T: std::any::Any + Send + Sync>(mut self, service: T) -> Services {
        self.insert(service);
        self
    }

    /// Adds (or replaces) the service of type `T`.
    pub fn insert<T: std::any::Any + Send + Sync>(&mut self, service: T) {
        self.by_type
            .insert(std::any::TypeId::of::<T>(), Arc::new(service));
    }

    /// The service of type `T`, if the process set one.
    pub fn get<T: std::any::Any + Send + Sync>(&self) -> Option<&T> {
        self.by_type
            .get(&std::any::TypeId::of::<T>())
            .and_then(|s| s.downcast_ref::<T>())
    }
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Services")
            .field("count", &self.by_type.len())
            .finish()
    }
}

impl BuildCtx<'_> {
    /// The format of the first input (every non-source stage has one after compilation).
    pub fn input(&self) -> Option<Format> {
        self.inputs.first().copied()
    }

    /// Turns an error into a [`BuildError`] for this stage.
    pub fn error(&self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> BuildError {
        BuildError {
            stage: self.stage.to_owned(),
            source: source.into(),
        }
    }
}

/// Per-stage runtime counters.
#[derive(Debug, Default)]
pub struct NodeStats {
    frames_in: AtomicU64,
    skipped: AtomicU64,
    busy_ns: AtomicU64,
}

/// A snapshot of [`NodeStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NodeCounts {
    /// Frames handed to the stage.
    pub frames_in: u64,
    /// Frames the stage skipped as bad.
    pub skipped: u64,
    /// Time spent inside the stage itself (excluding downstream stages), when profiling.
    pub busy_ns: u64,
}

impl NodeStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> NodeCounts {
        NodeCounts {
            frames_in: self.frames_in.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            busy_ns: self.busy_ns.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add_busy(&self, ns: u64) {
        self.busy_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// Identity and shared handles of one running stage.
#[derive(Clone)]
pub struct NodeCtx {
    /// The stage id.
    pub id: Arc<str>,
    /// The call's bus.
    pub bus: Bus,
    /// Counters.
    pub stats: Arc<NodeStats>,
    /// Whether to time every call into the stage.
    pub profile: bool,
}

impl NodeCtx {
    /// Raises a signal for the call controller (e.g. [`SignalKind::Hangup`]).
    pub fn signal(&self, kind: SignalKind) {
        self.bus.signal(Signal {
            stage: Arc::clone(&self.id),
            kind,
            at: Instant::now(),
        });
    }

    /// Publishes on the call's bus, attributed to this stage.
    pub fn publish(&self, kind: BusKind) {
        self.bus.publish(BusEvent {
            stage: Arc::clone(&self.id),
            kind,
            at: Instant::now(),
        });
    }
}

/// Where one output port's frames go.
pub(crate) enum Route {
    /// Another stage in the same task (index into the task's node list).
    Local(usize),
    /// Another task, through a ring.
    Ring(Box<EdgeWriter>),
    /// A test keeping copies (`testing::Harness`).
    #[cfg(any(test, feature = "test-util"))]
    Capture(Vec<OwnedFrame>),
}

/// One synchronous stage inside a fused task, with its routes.
pub(crate) struct Node {
    pub(crate) stage: Box<dyn Stage>,
    pub(crate) routes: Vec<Vec<Route>>,
    pub(crate) ctx: NodeCtx,
    skipping: bool,
}

impl Node {
    pub(crate) fn new(stage: Box<dyn Stage>, ports: usize, ctx: NodeCtx) -> Node {
        Node {
            stage,
            routes: (0..ports.max(1)).map(|_| Vec::new()).collect(),
            ctx,
            skipping: false,
        }
    }

    /// Runs `f` against the stage with an [`Output`] wired to the following nodes; catches a
    /// panic and turns it into a fatal error naming this stage. Returns inclusive nanoseconds.
    fn call(
        &mut self,
        rest: &mut [Node],
        base: usize,
        f: impl FnOnce(&mut dyn Stage, &mut Output<'_>) -> Result<(), StageError>,
    ) -> Result<u64, StageError> {
        let Node {
            stage,
            routes,
            ctx,
            skipping,
        } = self;
        let start = ctx.profile.then(Instant::now);
        let mut out = Output {
            routes,
            rest,
            base,
            ctx,
            child_ns: 0,
        };
        let result = match catch_unwind(AssertUnwindSafe(|| f(stage.as_mut(), &mut out))) {
            Ok(result) => result,
            Err(panic) => Err(StageError::fatal(Panicked::from_payload(panic.as_ref()))),
        };
        let child_ns = out.child_ns;
        let inclusive = start.map_or(0, |s| s.elapsed().as_nanos() as u64);
        if ctx.profile {
            ctx.stats.add_busy(inclusive.saturating_sub(child_ns));
        }
        match result {
            Ok(()) => {
                *skipping = false;
                Ok(inclusive)
            }
            Err(e) if e.disposition == Disposition::Skip && e.stage.is_none() => {
                ctx.stats.skipped.fetch_add(1, Ordering::Relaxed);
                if !*skipping {
                    *skipping = true;
                    tracing::warn!(stage = %ctx.id, error = %e, "Skipping bad frames.");
                }
                Ok(inclusive)
            }
            Err(e) => Err(e.at(&ctx.id)),
        }
    }

    pub(crate) fn process(
        &mut self,
        frame: Frame<'_>,
        rest: &mut [Node],
        base: usize,
    ) -> Result<u64, StageError> {
        self.ctx.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        self.call(rest, base, |stage, out| stage.process(frame, out))
    }

    pub(crate) fn control(
        &mut self,
        control: &Control,
        rest: &mut [Node],
        base: usize,
    ) -> Result<u64, StageError> {
        self.call(rest, base, |stage, out| stage.control(control, out))
    }

    pub(crate) fn finish(&mut self, rest: &mut [Node], base: usize) -> Result<u64, StageError> {
        self.call(rest, base, |stage, out| stage.finish(out))
    }
}

/// Hands `frame` to node `target` (an index into the task's node list; `nodes` starts at `base`).
pub(crate) fn dispatch(
    nodes: &mut [Node],
    base: usize,
    target: usize,
    frame: Frame<'_>,
) -> Result<u64, StageError> {
    let tail = target
        .checked_sub(base)
        .and_then(|offset| nodes.get_mut(offset..));
    let Some((node, after)) = tail.and_then(|t| t.split_first_mut()) else {
        return Err(StageError::fatal(format!(
            "route to stage #{target} points backwards; the graph compiler orders stages"
        )));
    };
    node.process(frame, after, target + 1)
}

/// Where a synchronous stage pushes its output.
pub struct Output<'a> {
    routes: &'a mut [Vec<Route>],
    rest: &'a mut [Node],
    base: usize,
    ctx: &'a NodeCtx,
    child_ns: u64,
}

impl Output<'_> {
    /// Pushes a frame out of the default port.
    pub fn push(&mut self, frame: Frame<'_>) -> Result<(), StageError> {
        self.push_to(0, frame)
    }

    /// Pushes a frame out of port `port` (index into the ports `negotiate` returned).
    pub fn push_to(&mut self, port: usize, frame: Frame<'_>) -> Result<(), StageError> {
        let Some(routes) = self.routes.get_mut(port) else {
            return Err(StageError::fatal(format!("no output port #{port}")));
        };
        for route in routes.iter_mut() {
            match route {
                Route::Local(target) => {
                    self.child_ns += dispatch(self.rest, self.base, *target, frame)?;
                }
                Route::Ring(writer) => writer.push_frame(frame),
                #[cfg(any(test, feature = "test-util"))]
                Route::Capture(frames) => frames.push(OwnedFrame::from_frame(frame)),
            }
        }
        Ok(())
    }

    /// Publishes on the call's bus (for the transport, the store, `caly replay`).
    pub fn publish(&self, kind: BusKind) {
        self.ctx.publish(kind);
    }

    /// Raises a signal for the call controller.
    pub fn signal(&self, kind: SignalKind) {
        self.ctx.signal(kind);
    }

    /// The id of the stage this output belongs to.
    pub fn stage(&self) -> &str {
        &self.ctx.id
    }
}

/// What a [`TaskStage`] gets to work with.
pub struct TaskIo {
    /// Its inputs, merged.
    pub input: Inlet,
    /// Its outputs.
    pub output: TaskOutput,
    /// Control messages addressed to it.
    pub control: ControlRx,
    /// Identity, bus and counters.
    pub ctx: NodeCtx,
    /// The other stages of the call, to send them control messages.
    pub peers: crate::engine::edge::Peers,
}

/// The outputs of a [`TaskStage`]: every port leads to a ring.
pub struct TaskOutput {
    pub(crate) ports: Vec<Vec<EdgeWriter>>,
}

impl TaskOutput {
    /// Pushes a frame out of `port` and waits while a `block` ring is full.
    pub async fn push(&mut self, port: usize, frame: Frame<'_>) -> Result<(), StageError> {
        let Some(writers) = self.ports.get_mut(port) else {
            return Err(StageError::fatal(format!("no output port #{port}")));
        };
        for w in writers.iter_mut() {
            w.push_frame(frame);
        }
        for w in writers.iter_mut() {
            w.flush().await;
        }
        Ok(())
    }

    /// Pushes a frame and waits until it is in every ring, whatever their policy (lossless
    /// sources running faster than real time).
    pub async fn send(&mut self, port: usize, frame: Frame<'_>) -> Result<(), StageError> {
        let Some(writers) = self.ports.get_mut(port) else {
            return Err(StageError::fatal(format!("no output port #{port}")));
        };
        for w in writers.iter_mut() {
            w.send_frame(frame).await;
        }
        Ok(())
    }

    /// Ends every output stream after what was pushed.
    pub async fn close(self) {
        for w in self.ports.into_iter().flatten() {
            w.close().await;
        }
    }
}

/// A stage panicked; the panic was caught and ended only its call.
#[derive(Debug, thiserror::Error)]
#[error("panicked: {message}")]
pub struct Panicked {
    /// The panic message.
    pub message: String,
}

impl Panicked {
    /// Reads the message out of a panic payload.
    pub fn from_payload(payload: &(dyn std::any::Any + Send)) -> Panicked {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned());
        Panicked { message }
    }
}
