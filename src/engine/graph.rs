//! `Graph::compile`: a [`PipelineSpec`] checked against the [`Registry`], with every input
//! resolved, cycles rejected, a format negotiated on every edge, the stages grouped into tasks
//! and a ring planned at every task boundary. A compiled graph is shared by all calls.
//!
//! Consecutive synchronous stages are fused into one task: a stage joins the task of its
//! producers when all of them are synchronous, live in one task, and its TOML asks for no ring.
//! Sources, task stages and stages with an explicit `ring` start a task of their own.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::format::Format;
use crate::engine::registry::{
    CompileOptions, DynSpec, KindInfo, Registry, Role, Section, SectionValue,
};
use crate::engine::ring::{RingConfig, WhenFull};
use crate::engine::spec::{
    DEFAULT_AUDIO_RING_MS, DEFAULT_FRAME_RING, PipelineSpec, ROOT_KEYS, RingSpec, SpecError,
    SpecErrorKind, SpecErrors, closest, unknown_key,
};
use crate::engine::stage::{Port, ToolSpec};

/// Marks on an audio edge (events between chunks) a ring holds at most.
const AUDIO_EDGE_FRAME_CAPACITY: usize = 64;
/// Capacity of the ring a sink's output leaves the graph through. The transport drains it as
/// soon as anything arrives (into its own paced queue), so it only has to absorb one burst.
const OUTLET_MS: u32 = 200;

/// A compiled pipeline, shared by every call that runs it.
#[derive(Debug)]
pub struct Graph {
    /// `[pipeline] name`.
    pub name: String,
    /// The file it came from.
    pub origin: String,
    /// What it was specialised with.
    pub options: CompileOptions,
    pub(crate) nodes: Vec<GraphNode>,
    pub(crate) edges: Vec<GraphEdge>,
    pub(crate) tasks: Vec<TaskPlan>,
    /// What compiled but deserves attention (a model that is being retired), in file order.
    pub warnings: Vec<Warning>,
    /// Every registered section's settings (its defaults where the file has no table).
    sections: Sections,
}

/// Parsed sections by name.
#[derive(Default)]
struct Sections(Vec<(&'static str, SectionValue)>);

impl std::fmt::Debug for Sections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

/// Something that compiled but deserves attention, with where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The line of the key (or of the stage's table when the key is a default).
    pub line: usize,
    /// The stage.
    pub stage: String,
    /// The key concerned.
    pub key: &'static str,
    /// What to do about it.
    pub message: String,
}

impl GraphNode {
    /// The stage's typed parameters, if it is of kind `K`.
    pub fn spec_of<K: crate::engine::registry::StageKind>(&self) -> Option<&K::Spec> {
        crate::engine::registry::downcast::<K>(self.spec.as_ref())
    }
}

impl Graph {
    /// The settings of section `T` (its defaults when the file has no such table); `None` if
    /// the registry the graph was compiled with does not have it.
    pub fn section<T: Section>(&self) -> Option<&T> {
        self.sections
            .0
            .iter()
            .find(|(name, _)| *name == T::NAME)
            .and_then(|(_, value)| value.downcast_ref::<T>())
    }

    /// The warnings as `file:line: warning[key]: stage `id`: message` lines.
    pub fn warning_lines(&self) -> Vec<String> {
        self.warnings
            .iter()
            .map(|w| {
                format!(
                    "{}:{}: warning[{}]: stage `{}`: {}",
                    self.origin, w.line, w.key, w.stage, w.message
                )
            })
            .collect()
    }
}

/// One stage of a compiled graph.
#[derive(Debug)]
pub struct GraphNode {
    /// Stage id.
    pub id: Arc<str>,
    /// Its kind.
    pub kind: &'static KindInfo,
    /// Line of its table in the file.
    pub line: usize,
    pub(crate) spec: Arc<dyn DynSpec>,
    /// Incoming edges (indices into [`Graph::edges`]) in `inputs` order.
    pub inputs: Vec<usize>,
    /// Formats of those edges.
    pub input_formats: Vec<Format>,
    /// Output ports and their formats.
    pub ports: Vec<Port>,
    /// Delay the stage adds.
    pub latency: Duration,
    /// The task it runs in (index into [`Graph::tasks`]).
    pub task: usize,
    /// For a synchronous source: the ring the outside world (the transport) feeds.
    pub source_ring: Option<RingPlan>,
    /// For a sink with an output port: the ring the outside world (the transport) drains.
    pub sink_ring: Option<RingPlan>,
    /// Tools offered by the stages that consume this one's outputs, in file order, each once.
    pub tools: Vec<ToolSpec>,
}

/// One edge of a compiled graph.
#[derive(Debug, Clone)]
pub struct GraphEdge {
    /// Producing node.
    pub from: usize,
    /// Port of the producing node.
    pub port: usize,
    /// Consuming node.
    pub to: usize,
    /// Which of the consumer's inputs this is.
    pub input: usize,
    /// Negotiated format.
    pub format: Format,
    /// The ring, when the edge crosses a task boundary; `None` when fused.
    pub ring: Option<RingPlan>,
}

/// Size and policy of one ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingPlan {
    /// What the ring is created with.
    pub config: RingConfig,
    /// The capacity as written, for audio edges.
    pub capacity_ms: Option<u32>,
}

impl RingPlan {
    /// `200 ms drop_oldest` / `64 frames block`.
    pub fn describe(&self) -> String {
        let size = match self.capacity_ms {
            Some(ms) => format!("{ms} ms"),
            None => format!("{} frames", self.config.frame_capacity),
        };
        format!("ring {size} {}", self.config.when_full.name())
    }
}

/// One task of a running pipeline.
#[derive(Debug, Clone)]
pub struct TaskPlan {
    /// Its nodes, in topological order.
    pub nodes: Vec<usize>,
    /// Whether it is a single [`crate::engine::stage::TaskStage`] rather than fused synchronous stages.
    pub stage_task: bool,
}

/// The stages along one source-to-sink path and the delay they add together.
#[derive(Debug, Clone, PartialEq)]
pub struct PathLatency {
    /// Stage ids in order.
    pub stages: Vec<Arc<str>>,
    /// Sum of the stages' latencies.
    pub latency: Duration,
    /// Sum of the capacities of the audio rings on the path: the most queueing it can add.
    pub ring_ms: u32,
}

/// Checks one input edge's format against what the consuming stage accepts.
pub fn check_input(
    spec: &dyn DynSpec,
    from: &str,
    to: &str,
    format: &Format,
) -> Result<(), SpecErrorKind> {
    let caps = spec.input_caps();
    if caps.accepts(format) {
        Ok(())
    } else {
        Err(SpecErrorKind::FormatMismatch {
            from: from.to_owned(),
            to: to.to_owned(),
            offered: format.to_string(),
            accepted: caps.to_string(),
        })
    }
}

/// A pipeline file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file has problems; every one is listed.
    #[error("{0}")]
    Spec(#[from] SpecErrors),
}

/// Reads and compiles a pipeline file.
pub fn load(
    path: &std::path::Path,
    registry: &Registry,
    options: &CompileOptions,
) -> Result<Arc<Graph>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let spec = PipelineSpec::parse(&text, path.display().to_string())?;
    Ok(Graph::compile(&spec, registry, options)?)
}

/// A stage after negotiation: its input formats, the producer port of each input, and what it
/// negotiated.
type NegotiatedStage = (Vec<Format>, Vec<usize>, crate::engine::registry::Negotiated);

struct InputRef {
    from: usize,
    port: Option<String>,
    line: usize,
}

/// A stage's resolved inputs; `complete` is false when one of them could not be resolved (the
/// problem is reported; the stage is not negotiated, so it causes no follow-on errors).
struct Inputs {
    refs: Vec<InputRef>,
    complete: bool,
}

impl Graph {
    /// Compiles a spec. Fails with every problem found, not just the first.
    pub fn compile(
        spec: &PipelineSpec<'_>,
        registry: &Registry,
        options: &CompileOptions,
    ) -> Result<Arc<Graph>, SpecErrors> {
        let mut c = Compiler {
            spec,
            errors: spec.problems.clone(),
            warnings: Vec::new(),
        };
        let parsed = c.parse_kinds(registry);
        let sections = c.parse_sections(registry);
        let inputs = c.resolve_inputs(&parsed);
        let Some(order) = c.topological_order(&inputs) else {
            return Err(c.into_errors());
        };
        let negotiated = c.negotiate(&parsed, &inputs, &order, options);
        if !c.errors.is_empty() {
            return Err(c.into_errors());
        }
        let graph = c.assemble(parsed, inputs, order, negotiated, options);
        match graph {
            Some(mut g) if c.errors.is_empty() => {
                g.warnings = std::mem::take(&mut c.warnings);
                g.sections = sections;
                Ok(Arc::new(g))
            }
            _ => Err(c.into_errors()),
        }
    }

    /// Stages in topological order.
    pub fn nodes(&self) -> &[GraphNode] {
        &self.nodes
    }

    /// Edges.
    pub fn edges(&self) -> &[GraphEdge] {
        &self.edges
    }

    /// Tasks.
    pub fn tasks(&self) -> &[TaskPlan] {
        &self.tasks
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&GraphNode> {
        self.nodes.iter().find(|n| &*n.id == id)
    }

    /// Every source-to-sink path with the latency it adds.
    pub fn paths(&self) -> Vec<PathLatency> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.inputs.is_empty() {
                let ring_ms = n.source_ring.and_then(|r| r.capacity_ms).unwrap_or(0);
                self.walk(i, Vec::new(), Duration::ZERO, ring_ms, &mut out);
            }
        }
        out
    }

    fn walk(
        &self,
        node: usize,
        mut stages: Vec<Arc<str>>,
        latency: Duration,
        ring_ms: u32,
        out: &mut Vec<PathLatency>,
    ) {
        let n = &self.nodes[node];
        stages.push(Arc::clone(&n.id));
        let latency = latency + n.latency;
        let next: Vec<&GraphEdge> = self.edges.iter().filter(|e| e.from == node).collect();
        if next.is_empty() {
            out.push(PathLatency {
                stages,
                latency,
                ring_ms,
            });
            return;
        }
        for e in next {
            let extra = e.ring.and_then(|r| r.capacity_ms).unwrap_or(0);
            self.walk(e.to, stages.clone(), latency, ring_ms + extra, out);
        }
    }

    fn edge_label(&self, e: &GraphEdge) -> String {
        let port = &self.nodes[e.from].ports[e.port];
        let port = if port.name == "out" {
            String::new()
        } else {
            format!("{} · ", port.name)
        };
        let hop = e.ring.map_or_else(|| "fused".to_owned(), |r| r.describe());
        format!("{port}{} · {hop}", e.format)
    }

    /// The graph as Graphviz DOT.
    pub fn to_dot(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "digraph {:?} {{", self.name);
        let _ = writeln!(
            s,
            "  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];"
        );
        for (t, task) in self.tasks.iter().enumerate() {
            let what = if task.stage_task {
                "task stage"
            } else {
                "fused"
            };
            let _ = writeln!(
                s,
                "  subgraph cluster_{t} {{\n    label=\"task {t} ({what})\";"
            );
            for &i in &task.nodes {
                let n = &self.nodes[i];
                let _ = writeln!(
                    s,
                    "    {:?} [label=\"{}\\n{}{}\"];",
                    &*n.id,
                    n.id,
                    n.kind.name,
                    latency_note(n.latency)
                );
            }
            let _ = writeln!(s, "  }}");
        }
        for n in &self.nodes {
            if let Some(r) = n.source_ring {
                let _ = writeln!(
                    s,
                    "  \"in:{}\" [shape=plaintext, label=\"transport\"];",
                    n.id
                );
                let _ = writeln!(
                    s,
                    "  \"in:{}\" -> {:?} [label=\"{} · {}\"];",
                    n.id,
                    &*n.id,
                    n.ports.first().map_or("?".into(), |p| p.format.to_string()),
                    r.describe()
                );
            }
        }
        for n in &self.nodes {
            if let (Some(r), Some(port)) = (n.sink_ring, n.ports.first()) {
                let _ = writeln!(
                    s,
                    "  \"out:{}\" [shape=plaintext, label=\"transport\"];",
                    n.id
                );
                let _ = writeln!(
                    s,
                    "  {:?} -> \"out:{}\" [label=\"{} · {}\"];",
                    &*n.id,
                    n.id,
                    port.format,
                    r.describe()
                );
            }
        }
        for e in &self.edges {
            let _ = writeln!(
                s,
                "  {:?} -> {:?} [label=\"{}\"];",
                &*self.nodes[e.from].id,
                &*self.nodes[e.to].id,
                self.edge_label(e)
            );
        }
        for p in self.paths() {
            let _ = writeln!(s, "  // {}", path_line(&p));
        }
        let _ = writeln!(s, "}}");
        s
    }

    /// The graph as a Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        let mut s = String::from("flowchart LR\n");
        let id = |i: usize| format!("n{i}");
        for (t, task) in self.tasks.iter().enumerate() {
            let what = if task.stage_task {
                "task stage"
            } else {
                "fused"
            };
            let _ = writeln!(s, "  subgraph t{t} [\"task {t} ({what})\"]");
            for &i in &task.nodes {
                let n = &self.nodes[i];
                let _ = writeln!(
                    s,
                    "    {}[\"{}<br/>{}{}\"]",
                    id(i),
                    n.id,
                    n.kind.name,
                    latency_note(n.latency)
                );
            }
            let _ = writeln!(s, "  end");
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(r) = n.source_ring {
                let _ = writeln!(
                    s,
                    "  in{i}((transport)) -->|\"{} · {}\"| {}",
                    n.ports.first().map_or("?".into(), |p| p.format.to_string()),
                    r.describe(),
                    id(i)
                );
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if let (Some(r), Some(port)) = (n.sink_ring, n.ports.first()) {
                let _ = writeln!(
                    s,
                    "  {} -->|\"{} · {}\"| out{i}((transport))",
                    id(i),
                    port.format,
                    r.describe()
                );
            }
        }
        for e in &self.edges {
            let _ = writeln!(
                s,
                "  {} -->|\"{}\"| {}",
                id(e.from),
                self.edge_label(e),
                id(e.to)
            );
        }
        for p in self.paths() {
            let _ = writeln!(s, "  %% {}", path_line(&p));
        }
        s
    }
}

/// The ring out of a sink: lossless (`block`): bot audio must not be dropped on its way out.
fn outlet_plan(format: Format) -> RingPlan {
    let (capacity, framed, capacity_ms) = match format {
        Format::Audio(a) => (a.samples_in_ms(OUTLET_MS), false, Some(OUTLET_MS)),
        Format::Encoded(e) => (
            e.bytes_in_ms(OUTLET_MS),
            e.encoding.is_framed(),
            Some(OUTLET_MS),
        ),
        Format::Text | Format::Events => (0, false, None),
    };
    RingPlan {
        config: RingConfig {
            capacity,
            frame_capacity: AUDIO_EDGE_FRAME_CAPACITY,
            when_full: WhenFull::Block,
            framed,
        },
        capacity_ms,
    }
}

fn latency_note(latency: Duration) -> String {
    if latency.is_zero() {
        String::new()
    } else {
        format!(" +{:.1} ms", latency.as_secs_f64() * 1000.0)
    }
}

/// `caller → decode → resample → vad → sink: +10.0 ms (rings up to 400 ms)`.
pub fn path_line(p: &PathLatency) -> String {
    let names: Vec<&str> = p.stages.iter().map(|s| &**s).collect();
    format!(
        "path {}: +{:.1} ms added by stages (rings may queue up to {} ms)",
        names.join(" → "),
        p.latency.as_secs_f64() * 1000.0,
        p.ring_ms
    )
}

struct Compiler<'s, 't> {
    spec: &'s PipelineSpec<'t>,
    errors: Vec<SpecError>,
    warnings: Vec<Warning>,
}

impl Compiler<'_, '_> {
    fn error(&mut self, line: usize, stage: &str, kind: SpecErrorKind) {
        self.errors.push(SpecError {
            line: Some(line),
            stage: Some(stage.to_owned()),
            kind,
        });
    }

    fn into_errors(self) -> SpecErrors {
        SpecErrors::new(self.spec.origin.clone(), self.errors)
    }

    /// Parses every registered section (its default where the file has none) and reports a
    /// top-level table nobody registered.
    fn parse_sections(&mut self, registry: &Registry) -> Sections {
        let mut out = Vec::new();
        for entry in registry.sections() {
            let written = self.spec.sections.iter().find(|s| s.name == entry.name);
            let Some(written) = written else {
                out.push((entry.name, entry.default_value()));
                continue;
            };
            match entry.parse(self.spec.text(), written.value.clone()) {
                Ok((value, invalid)) => {
                    for inv in invalid {
                        let line = table_key_line(self.spec, &written.value, inv.key)
                            .unwrap_or(written.line);
                        self.errors.push(SpecError {
                            line: Some(line),
                            stage: None,
                            kind: SpecErrorKind::InvalidValue {
                                key: Some(format!("{}.{}", entry.name, inv.key)),
                                message: inv.message,
                            },
                        });
                    }
                    out.push((entry.name, value));
                }
                Err(errors) => self.errors.extend(errors),
            }
        }
        for written in &self.spec.sections {
            if registry.section(&written.name).is_none() {
                let known: Vec<&str> = ROOT_KEYS
                    .iter()
                    .copied()
                    .chain(registry.sections().map(|s| s.name))
                    .collect();
                self.errors.push(SpecError {
                    line: Some(written.line),
                    stage: None,
                    kind: unknown_key(&written.name, &known),
                });
            }
        }
        Sections(out)
    }

    /// Looks every kind up and deserializes every stage's parameters.
    fn parse_kinds(&mut self, registry: &Registry) -> Vec<Option<Arc<dyn DynSpec>>> {
        let mut parsed = Vec::with_capacity(self.spec.stages.len());
        for st in &self.spec.stages {
            let Some(kind) = &st.kind else {
                parsed.push(None);
                continue;
            };
            let Some(entry) = registry.get(&kind.value) else {
                let suggestion = closest(&kind.value, registry.names());
                self.error(
                    kind.line,
                    &st.id,
                    SpecErrorKind::UnknownKind {
                        kind: kind.value.clone(),
                        suggestion,
                    },
                );
                parsed.push(None);
                continue;
            };
            match entry.parse(self.spec.text(), st.params.clone()) {
                Ok(p) => {
                    for w in p.warnings() {
                        let line = self.key_line(st, w.key).unwrap_or(st.line);
                        self.warnings.push(Warning {
                            line,
                            stage: st.id.clone(),
                            key: w.key,
                            message: w.message,
                        });
                    }
                    let invalid = p.validate();
                    let ok = invalid.is_empty();
                    for inv in invalid {
                        let line = self.key_line(st, inv.key).unwrap_or(st.line);
                        self.error(
                            line,
                            &st.id,
                            SpecErrorKind::InvalidValue {
                                key: Some(inv.key.to_owned()),
                                message: inv.message,
                            },
                        );
                    }
                    parsed.push(ok.then_some(p));
                }
                Err(errors) => {
                    for mut e in errors {
                        e.stage = Some(st.id.clone());
                        self.errors.push(e);
                    }
                    parsed.push(None);
                }
            }
        }
        parsed
    }

    fn key_line(&self, st: &crate::engine::spec::StageSpec<'_>, key: &str) -> Option<usize> {
        table_key_line(self.spec, &st.params, key)
    }

    /// Resolves `inputs` (defaulting to the previous stage in file order) to stage indices.
    fn resolve_inputs(&mut self, parsed: &[Option<Arc<dyn DynSpec>>]) -> Vec<Inputs> {
        let stages = &self.spec.stages;
        let index: HashMap<&str, usize> = stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let mut all = Vec::with_capacity(stages.len());
        for (i, st) in stages.iter().enumerate() {
            let info = parsed[i].as_ref().map(|p| p.info());
            let is_source = info.is_some_and(|k| k.role == Role::Source);
            let mut complete = true;
            let written = match &st.inputs {
                Some(list) => list.clone(),
                None if is_source => Vec::new(),
                None if i > 0 => vec![crate::engine::spec::Located {
                    value: stages[i - 1].id.clone(),
                    line: st.line,
                }],
                None => {
                    complete = false;
                    if info.is_some() {
                        self.error(
                            st.line,
                            &st.id,
                            SpecErrorKind::MissingInput {
                                input: String::new(),
                                suggestion: None,
                            },
                        );
                    }
                    Vec::new()
                }
            };
            if let Some(k) = info
                && written.len() > k.max_inputs
            {
                let line = written.first().map_or(st.line, |w| w.line);
                self.error(
                    line,
                    &st.id,
                    SpecErrorKind::TooManyInputs {
                        max: k.max_inputs,
                        given: written.len(),
                    },
                );
            }
            let mut refs = Vec::new();
            for w in written {
                let (stage, port) = match w.value.split_once('.') {
                    Some((s, p)) => (s, Some(p.to_owned())),
                    None => (w.value.as_str(), None),
                };
                match index.get(stage) {
                    Some(&from) => refs.push(InputRef {
                        from,
                        port,
                        line: w.line,
                    }),
                    None => {
                        complete = false;
                        let suggestion = closest(stage, stages.iter().map(|s| s.id.as_str()));
                        self.error(
                            w.line,
                            &st.id,
                            SpecErrorKind::MissingInput {
                                input: w.value.clone(),
                                suggestion,
                            },
                        );
                    }
                }
            }
            all.push(Inputs { refs, complete });
        }
        all
    }

    /// Kahn's algorithm; on a cycle, reports one cycle and returns `None`.
    fn topological_order(&mut self, inputs: &[Inputs]) -> Option<Vec<usize>> {
        let n = inputs.len();
        let mut indegree: Vec<usize> = inputs.iter().map(|i| i.refs.len()).collect();
        let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (to, ins) in inputs.iter().enumerate() {
            for r in &ins.refs {
                consumers[r.from].push(to);
            }
        }
        // Ready stages in file order, so independent stages keep the order they were written in.
        let mut ready: std::collections::BTreeSet<usize> =
            (0..n).filter(|i| indegree[*i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &c in &consumers[i] {
                indegree[c] -= 1;
                if indegree[c] == 0 {
                    ready.insert(c);
                }
            }
        }
        if order.len() == n {
            return Some(order);
        }
        // Walk backwards along inputs from a stage left over until a stage repeats.
        let left: Vec<bool> = indegree.iter().map(|d| *d > 0).collect();
        let start = left.iter().position(|l| *l)?;
        let mut path = vec![start];
        let mut at = start;
        while let Some(prev) = inputs[at].refs.iter().map(|r| r.from).find(|f| left[*f]) {
            if let Some(pos) = path.iter().position(|p| *p == prev) {
                let mut cycle: Vec<usize> = path[pos..].to_vec();
                cycle.reverse();
                let first = cycle
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| **s)
                    .map_or(0, |(i, _)| i);
                cycle.rotate_left(first);
                let stages: Vec<String> = cycle
                    .iter()
                    .map(|i| self.spec.stages[*i].id.clone())
                    .collect();
                let st = &self.spec.stages[cycle[0]];
                let line = st
                    .inputs
                    .as_ref()
                    .and_then(|i| i.first())
                    .map_or(st.line, |i| i.line);
                let id = st.id.clone();
                self.error(line, &id, SpecErrorKind::Cycle { stages });
                break;
            }
            path.push(prev);
            at = prev;
        }
        None
    }

    fn negotiate(
        &mut self,
        parsed: &[Option<Arc<dyn DynSpec>>],
        inputs: &[Inputs],
        order: &[usize],
        options: &CompileOptions,
    ) -> Vec<Option<NegotiatedStage>> {
        let stages = &self.spec.stages;
        let mut done: Vec<Option<NegotiatedStage>> = (0..stages.len()).map(|_| None).collect();
        for &i in order {
            let Some(p) = &parsed[i] else { continue };
            if !inputs[i].complete {
                continue;
            }
            let mut formats = Vec::new();
            let mut ports = Vec::new();
            let mut ok = true;
            for r in &inputs[i].refs {
                let Some((_, _, up)) = &done[r.from] else {
                    ok = false; // the producer already failed; its error says why
                    continue;
                };
                let from = &stages[r.from].id;
                let port = match &r.port {
                    None if !up.ports.is_empty() => Some(0),
                    None => None,
                    Some(name) => up.ports.iter().position(|p| p.name == name),
                };
                let Some(port) = port else {
                    let available = up.ports.iter().map(|p| p.name.to_owned()).collect();
                    self.error(
                        r.line,
                        &stages[i].id,
                        SpecErrorKind::UnknownPort {
                            stage: from.clone(),
                            port: r.port.clone().unwrap_or_else(|| "out".into()),
                            available,
                        },
                    );
                    ok = false;
                    continue;
                };
                let format = up.ports[port].format;
                if let Err(kind) = check_input(p.as_ref(), from, &stages[i].id, &format) {
                    self.error(r.line, &stages[i].id, kind);
                    ok = false;
                }
                formats.push(format);
                ports.push(port);
            }
            if !ok {
                continue;
            }
            if let Some(ring) = &stages[i].ring {
                for format in &formats {
                    self.check_ring(i, *format, ring);
                }
            }
            match p.negotiate(&formats, options) {
                Ok(n) => {
                    if let (Some(ring), Role::Source, Some(port)) =
                        (&stages[i].ring, p.info().role, n.ports.first())
                    {
                        self.check_ring(i, port.format, ring);
                    }
                    done[i] = Some((formats, ports, n));
                }
                Err(e) => self.error(
                    stages[i].line,
                    &stages[i].id,
                    SpecErrorKind::InvalidValue {
                        key: None,
                        message: e.message,
                    },
                ),
            }
        }
        done
    }

    /// Checks a stage's own `ring` against the format of an edge it applies to.
    fn check_ring(
        &mut self,
        stage: usize,
        format: Format,
        ring: &crate::engine::spec::Located<RingSpec>,
    ) {
        let own = ring.value;
        let id = self.spec.stages[stage].id.clone();
        let invalid = |message: String| SpecErrorKind::InvalidValue {
            key: Some("ring".into()),
            message,
        };
        if own.capacity_ms == Some(0) || own.capacity == Some(0) {
            let kind = invalid("a ring needs a capacity above zero".into());
            self.error(ring.line, &id, kind);
        }
        if format.is_audio() && own.capacity.is_some() {
            let kind = invalid(format!(
                "this edge carries {format}: size it with `capacity_ms`, not `capacity`"
            ));
            self.error(ring.line, &id, kind);
        }
        if !format.is_audio() && own.capacity_ms.is_some() {
            let kind = invalid(format!(
                "this edge carries {format}: size it with `capacity` (frames), not `capacity_ms`"
            ));
            self.error(ring.line, &id, kind);
        }
    }

    /// Sizes the ring of an edge carrying `format` into `stage` (checked by `check_ring`).
    fn ring_plan(
        &self,
        format: Format,
        explicit: Option<&crate::engine::spec::Located<RingSpec>>,
    ) -> RingPlan {
        let defaults = self.spec.defaults;
        let own = explicit.map(|l| l.value).unwrap_or_default();
        match format {
            Format::Audio(_) | Format::Encoded(_) => {
                let ms = own
                    .capacity_ms
                    .or(defaults.capacity_ms)
                    .unwrap_or(DEFAULT_AUDIO_RING_MS)
                    .max(1);
                let (capacity, framed) = match format {
                    Format::Audio(a) => (a.samples_in_ms(ms), false),
                    Format::Encoded(e) => (e.bytes_in_ms(ms), e.encoding.is_framed()),
                    _ => (0, false),
                };
                RingPlan {
                    config: RingConfig {
                        capacity: capacity.max(1),
                        frame_capacity: AUDIO_EDGE_FRAME_CAPACITY,
                        when_full: own
                            .when_full
                            .or(defaults.when_full)
                            .unwrap_or(WhenFull::DropOldest),
                        framed,
                    },
                    capacity_ms: Some(ms),
                }
            }
            Format::Text | Format::Events => {
                let frames = own
                    .capacity
                    .or(defaults.capacity)
                    .unwrap_or(DEFAULT_FRAME_RING)
                    .max(1);
                RingPlan {
                    config: RingConfig {
                        capacity: 0,
                        frame_capacity: frames as usize,
                        // Lossless unless the stage's own ring says otherwise: `[defaults.ring]`
                        // `when_full` is about audio.
                        when_full: own.when_full.unwrap_or(WhenFull::Block),
                        framed: false,
                    },
                    capacity_ms: None,
                }
            }
        }
    }

    fn assemble(
        &mut self,
        parsed: Vec<Option<Arc<dyn DynSpec>>>,
        inputs: Vec<Inputs>,
        order: Vec<usize>,
        mut negotiated: Vec<Option<NegotiatedStage>>,
        options: &CompileOptions,
    ) -> Option<Graph> {
        let stages = &self.spec.stages;
        let mut position = vec![0usize; stages.len()];
        for (pos, &i) in order.iter().enumerate() {
            position[i] = pos;
        }
        let mut nodes: Vec<GraphNode> = Vec::with_capacity(order.len());
        let mut edges: Vec<GraphEdge> = Vec::new();
        let mut tasks: Vec<TaskPlan> = Vec::new();
        for &i in &order {
            let spec = parsed[i].clone()?;
            let (formats, ports, neg) = negotiated[i].take()?;
            let info = spec.info();
            let v = nodes.len();
            let explicit = stages[i].ring.as_ref();
            let mut input_edges = Vec::new();
            for (k, (r, port)) in inputs[i].refs.iter().zip(&ports).enumerate() {
                input_edges.push(edges.len());
                edges.push(GraphEdge {
                    from: position[r.from],
                    port: *port,
                    to: v,
                    input: k,
                    format: formats[k],
                    ring: None,
                });
            }
            let producer_tasks: Vec<usize> = input_edges
                .iter()
                .map(|e| nodes[edges[*e].from].task)
                .collect();
            let producers_sync = input_edges.iter().all(|e| !nodes[edges[*e].from].kind.task);
            let fuse = !info.task
                && info.role != Role::Source
                && explicit.is_none()
                && !producer_tasks.is_empty()
                && producers_sync
                && producer_tasks.iter().all(|t| *t == producer_tasks[0]);
            let task = if fuse {
                let t = producer_tasks[0];
                tasks[t].nodes.push(v);
                t
            } else {
                tasks.push(TaskPlan {
                    nodes: vec![v],
                    stage_task: info.task,
                });
                tasks.len() - 1
            };
            for e in &input_edges {
                if nodes[edges[*e].from].task != task {
                    let plan = self.ring_plan(edges[*e].format, explicit);
                    edges[*e].ring = Some(plan);
                }
            }
            let sink_ring = match (info.role, neg.ports.first()) {
                (Role::Sink, Some(port)) => Some(outlet_plan(port.format)),
                _ => None,
            };
            let source_ring = if info.role == Role::Source && !info.task {
                neg.ports
                    .first()
                    .map(|p| self.ring_plan(p.format, explicit))
            } else {
                None
            };
            nodes.push(GraphNode {
                id: Arc::from(stages[i].id.as_str()),
                kind: info,
                line: stages[i].line,
                spec,
                inputs: input_edges,
                input_formats: formats,
                ports: neg.ports,
                latency: neg.latency,
                task,
                source_ring,
                sink_ring,
                tools: Vec::new(),
            });
        }
        // Each stage gets the tools of the stages fed by it.
        for i in 0..nodes.len() {
            let mut tools: Vec<ToolSpec> = Vec::new();
            for e in edges.iter().filter(|e| e.from == i) {
                for t in nodes[e.to].spec.tools() {
                    if !tools.iter().any(|have| have.name == t.name) {
                        tools.push(t);
                    }
                }
            }
            nodes[i].tools = tools;
        }
        Some(Graph {
            name: self.spec.name.clone(),
            origin: self.spec.origin.clone(),
            options: *options,
            nodes,
            edges,
            tasks,
            warnings: Vec::new(),
            sections: Sections::default(),
        })
    }
}

/// The line of `key` in a spanned table, if it is written there.
fn table_key_line(
    spec: &PipelineSpec<'_>,
    table: &toml::Spanned<toml::de::DeValue<'_>>,
    key: &str,
) -> Option<usize> {
    let toml::de::DeValue::Table(t) = table.get_ref() else {
        return None;
    };
    t.iter()
        .find(|(k, _)| {
            let k: &str = k.get_ref();
            k == key
        })
        .map(|(k, _)| spec.line_of(k.span().start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<Arc<Graph>, SpecErrors> {
        let spec = PipelineSpec::parse(text, "t.toml")?;
        Graph::compile(
            &spec,
            &crate::testing::registry(),
            &CompileOptions::default(),
        )
    }

    fn codes(err: &SpecErrors) -> Vec<(&'static str, Option<usize>)> {
        err.errors.iter().map(|e| (e.kind.code(), e.line)).collect()
    }

    const FRONT: &str = r#"
[pipeline]
name = "front"

[stages.caller]
kind = "call_audio"
sample_rate = 8000

[stages.decode]
kind = "decode"

[stages.resample]
kind = "resample"
sample_rate = 24000

[stages.vad]
kind = "vad"

[stages.sink]
kind = "blackhole"
"#;

    #[test]
    fn the_front_half_is_fused_into_one_task_with_formats_on_every_edge() {
        let g = compile(FRONT).unwrap();
        assert_eq!(g.tasks().len(), 1);
        let formats: Vec<String> = g.edges().iter().map(|e| e.format.to_string()).collect();
        assert_eq!(
            formats,
            [
                "pcm16le 8000 Hz",
                "pcm16 8000 Hz",
                "pcm16 24000 Hz",
                "pcm16 24000 Hz"
            ]
        );
        assert!(g.edges().iter().all(|e| e.ring.is_none()));
        let caller = g.node("caller").unwrap();
        let ring = caller.source_ring.unwrap();
        assert_eq!(
            ring.config.capacity,
            200 * 16,
            "200 ms of 8 kHz pcm16le bytes"
        );
        assert_eq!(ring.config.when_full, WhenFull::DropOldest);
        let paths = g.paths();
        assert_eq!(paths.len(), 1);
        assert_eq!(paths[0].latency, Duration::from_millis(10));
    }

    #[test]
    fn an_explicit_ring_and_a_task_stage_start_new_tasks() {
        let text = format!(
            "{FRONT}\n[stages.slow]\nkind = \"slow_sink\"\ninputs = [\"vad\"]\n\n[stages.tap]\nkind = \"blackhole\"\ninputs = [\"decode\"]\nring = {{ capacity_ms = 60, when_full = \"drop_newest\" }}\n"
        );
        let g = compile(&text).unwrap();
        assert_eq!(g.tasks().len(), 3);
        let ringed: Vec<String> = g
            .edges()
            .iter()
            .filter_map(|e| {
                e.ring.map(|r| {
                    format!(
                        "{}->{} {}",
                        g.nodes[e.from].id,
                        g.nodes[e.to].id,
                        r.describe()
                    )
                })
            })
            .collect();
        assert_eq!(
            ringed,
            [
                "vad->slow ring 200 ms drop_oldest",
                "decode->tap ring 60 ms drop_newest"
            ]
        );
    }

    #[test]
    fn detects_cycles_naming_the_stages() {
        let text = r#"
[pipeline]
name = "c"
[stages.a]
kind = "fail_after"
inputs = ["c"]
[stages.b]
kind = "fail_after"
[stages.c]
kind = "fail_after"
"#;
        let err = compile(text).unwrap_err();
        assert_eq!(codes(&err), [("cycle", Some(6))]);
        assert_eq!(
            err.errors[0].kind,
            SpecErrorKind::Cycle {
                stages: vec!["a".into(), "b".into(), "c".into()]
            }
        );
    }

    #[test]
    fn detects_format_mismatches_naming_both_stages() {
        let text = FRONT.replace("sample_rate = 24000", "sample_rate = 44100");
        let err = compile(&text).unwrap_err();
        assert_eq!(codes(&err), [("format_mismatch", Some(16))]);
        assert_eq!(
            err.to_string(),
            "t.toml:16: error[format_mismatch]: stage `vad`: format mismatch: `resample` produces pcm16 44100 Hz, but `vad` accepts pcm16 at 8/16/24/48 kHz"
        );
    }

    #[test]
    fn reports_every_problem_at_once() {
        let text = r#"
[pipeline]
name = "many"
[stages.caller]
kind = "call_audio"
sample_rat = 8000
[stages.decode]
kind = "decod"
[stages.resample]
kind = "resample"
inputs = ["decoder"]
sample_rate = 16000
[stages.sink]
kind = "blackhole"
inputs = ["resample.nope"]
"#;
        let err = compile(text).unwrap_err();
        assert_eq!(
            codes(&err),
            [
                ("unknown_key", Some(6)),
                ("unknown_kind", Some(8)),
                ("missing_input", Some(11)),
            ]
        );
        let shown = err.to_string();
        assert!(
            shown.contains("unknown key `sample_rat` (did you mean `sample_rate`?)"),
            "{shown}"
        );
        assert!(
            shown.contains("unknown stage kind `decod` (did you mean `decode`?)"),
            "{shown}"
        );
        assert!(
            shown.contains(
                "input `decoder` is not a stage in this pipeline (did you mean `decode`?)"
            ),
            "{shown}"
        );
    }

    #[test]
    fn a_missing_port_lists_the_ports_there_are() {
        let text = FRONT.replace(
            "kind = \"blackhole\"",
            "kind = \"blackhole\"\ninputs = [\"vad.events\"]",
        );
        let err = compile(&text).unwrap_err();
        assert_eq!(codes(&err), [("unknown_port", Some(21))]);
        assert!(
            err.to_string()
                .contains("stage `vad` has no output port `events` (ports: out)")
        );
    }

    #[test]
    fn the_source_rate_can_be_set_per_call() {
        let spec = PipelineSpec::parse(FRONT, "t.toml").unwrap();
        let reg = crate::testing::registry();
        let options = CompileOptions {
            source_rate: Some(16000),
        };
        let g = Graph::compile(&spec, &reg, &options).unwrap();
        assert_eq!(g.edges()[0].format.to_string(), "pcm16le 16000 Hz");
        let bad = CompileOptions {
            source_rate: Some(11025),
        };
        let err = Graph::compile(&spec, &reg, &bad).unwrap_err();
        assert_eq!(codes(&err), [("invalid_value", Some(5))]);
    }

    #[test]
    fn dot_and_mermaid_show_formats_rings_and_latency() {
        let g = compile(FRONT).unwrap();
        let dot = g.to_dot();
        assert!(
            dot.contains("\"resample\" -> \"vad\" [label=\"pcm16 24000 Hz · fused\"]"),
            "{dot}"
        );
        assert!(
            dot.contains("pcm16le 8000 Hz · ring 200 ms drop_oldest"),
            "{dot}"
        );
        assert!(
            dot.contains("caller → decode → resample → vad → sink: +10.0 ms"),
            "{dot}"
        );
        let mermaid = g.to_mermaid();
        assert!(mermaid.starts_with("flowchart LR"));
        assert!(
            mermaid.contains("-->|\"pcm16 8000 Hz · fused\"|"),
            "{mermaid}"
        );
    }
}
