//! `StageKind` (the registered, static side of a stage) and the `Registry` that lists them all.
//!
//! A kind is one file in `src/stages/` plus one line in the `stages!` list (Symphonia's
//! `register_enabled_codecs`, gst's `plugin_init`). The registry erases each kind behind
//! [`DynSpec`]: a parsed spec that knows its own kind, so the graph compiler never downcasts.
//! Every registered kind gets the compliance tests at the bottom of this file for free.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::DeValue;

use crate::engine::format::{Caps, Format};
use crate::engine::spec::{
    ROOT_KEYS, STAGE_KEYS, SpecError, deserialize_spanned_with, field_names,
};
use crate::engine::stage::{BuildCtx, BuildError, Port, Runnable, ToolSpec};

/// Where a stage sits in a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Produces frames from outside the graph (the transport, a file); takes no inputs.
    Source,
    /// Consumes and produces frames.
    Transform,
    /// Consumes frames; its outputs, if any, leave the graph.
    Sink,
}

/// Options that specialise a graph for one call at compile time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CompileOptions {
    /// The caller's sample rate, from the transport (Exotel's `?sample-rate=`), overriding the
    /// `sample_rate` written on `call_audio` stages.
    pub source_rate: Option<u32>,
}

/// The outcome of negotiation: a format per output port and the delay the stage adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Output ports; the first is the default port.
    pub ports: Vec<Port>,
    /// Delay this stage adds to audio passing through.
    pub latency: Duration,
}

impl Negotiated {
    /// One default port `out` and no added delay.
    pub fn out(format: Format) -> Negotiated {
        Negotiated {
            ports: vec![Port {
                name: "out",
                format,
            }],
            latency: Duration::ZERO,
        }
    }

    /// No outputs (a sink).
    pub fn none() -> Negotiated {
        Negotiated {
            ports: Vec::new(),
            latency: Duration::ZERO,
        }
    }

    /// Sets the added delay.
    pub fn with_latency(mut self, latency: Duration) -> Negotiated {
        self.latency = latency;
        self
    }
}

/// A kind cannot work with the formats on its inputs (reported with both stages and the line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NegotiateError {
    /// What does not fit, in a sentence.
    pub message: String,
}

impl From<String> for NegotiateError {
    fn from(message: String) -> NegotiateError {
        NegotiateError { message }
    }
}

impl From<&str> for NegotiateError {
    fn from(message: &str) -> NegotiateError {
        NegotiateError {
            message: message.to_owned(),
        }
    }
}

/// A value the spec's type accepted but the kind rejects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The offending key.
    pub key: &'static str,
    /// What is expected.
    pub message: String,
}

/// The registered side of a stage kind.
pub trait StageKind: 'static {
    /// The TOML `kind`; equals the module file name.
    const NAME: &'static str;
    /// One line for `caly pipeline kinds` and docs.
    const SUMMARY: &'static str;
    /// The body of a `[stages.x]` table using this kind (without `kind`); compliance tests
    /// parse and build it.
    const EXAMPLE: &'static str;
    /// Source, transform or sink.
    const ROLE: Role;
    /// Whether it runs in its own task (network or timer I/O) instead of being fused.
    const TASK: bool = false;
    /// How many inputs it takes (sources: 0).
    const MAX_INPUTS: usize = 1;
    /// Whether it is a tool kind: real and safe to run, but for load tests, benches and
    /// `caly replay` rather than a call's own work (`caly pipeline kinds` marks it).
    const TOOL: bool = false;

    /// Typed parameters (`#[serde(deny_unknown_fields)]`).
    type Spec: DeserializeOwned + fmt::Debug + Send + Sync + 'static;

    /// What the kind accepts on every input.
    fn input_caps(spec: &Self::Spec) -> Caps;

    /// Checks values the type system cannot (ranges, combinations).
    fn validate(spec: &Self::Spec) -> Vec<Invalid> {
        let _ = spec;
        Vec::new()
    }

    /// What compiles but deserves a warning (`caly pipeline check` prints it with file:line,
    /// `caly serve` logs it at start-up).
    fn warnings(spec: &Self::Spec) -> Vec<Invalid> {
        let _ = spec;
        Vec::new()
    }

    /// The tools this stage offers to the stages whose outputs it consumes (none by default).
    fn tools(spec: &Self::Spec) -> Vec<ToolSpec> {
        let _ = spec;
        Vec::new()
    }

    /// Given accepted input formats, the output formats and added delay.
    fn negotiate(
        spec: &Self::Spec,
        inputs: &[Format],
        options: &CompileOptions,
    ) -> Result<Negotiated, NegotiateError>;

    /// Builds the runtime stage for one call. Allocate here, not per frame.
    fn build(spec: &Self::Spec, ctx: &BuildCtx<'_>) -> Result<Runnable, BuildError>;
}

/// Static facts about a kind.
#[derive(Debug, Clone, Copy)]
pub struct KindInfo {
    /// [`StageKind::NAME`].
    pub name: &'static str,
    /// [`StageKind::SUMMARY`].
    pub summary: &'static str,
    /// [`StageKind::EXAMPLE`].
    pub example: &'static str,
    /// [`StageKind::ROLE`].
    pub role: Role,
    /// [`StageKind::TASK`].
    pub task: bool,
    /// [`StageKind::MAX_INPUTS`].
    pub max_inputs: usize,
    /// [`StageKind::TOOL`].
    pub tool: bool,
}

/// A parsed spec of some kind, able to run that kind's checks and build it.
pub trait DynSpec: fmt::Debug + Send + Sync {
    /// The kind.
    fn info(&self) -> &'static KindInfo;
    /// [`StageKind::validate`].
    fn validate(&self) -> Vec<Invalid>;
    /// [`StageKind::input_caps`].
    fn input_caps(&self) -> Caps;
    /// [`StageKind::tools`].
    fn tools(&self) -> Vec<ToolSpec>;
    /// [`StageKind::warnings`].
    fn warnings(&self) -> Vec<Invalid>;
    /// The typed spec, for code that knows the kind ([`downcast`]).
    fn as_any(&self) -> &dyn std::any::Any;
    /// [`StageKind::negotiate`].
    fn negotiate(
        &self,
        inputs: &[Format],
        options: &CompileOptions,
    ) -> Result<Negotiated, NegotiateError>;
    /// [`StageKind::build`].
    fn build(&self, ctx: &BuildCtx<'_>) -> Result<Runnable, BuildError>;
}

struct Typed<K: StageKind>(K::Spec);

impl<K: StageKind> fmt::Debug for Typed<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

trait HasInfo {
    const INFO: KindInfo;
}

impl<K: StageKind> HasInfo for K {
    const INFO: KindInfo = KindInfo {
        name: K::NAME,
        summary: K::SUMMARY,
        example: K::EXAMPLE,
        role: K::ROLE,
        task: K::TASK,
        max_inputs: if matches!(K::ROLE, Role::Source) {
            0
        } else {
            K::MAX_INPUTS
        },
        tool: K::TOOL,
    };
}

impl<K: StageKind> DynSpec for Typed<K> {
    fn info(&self) -> &'static KindInfo {
        &<K as HasInfo>::INFO
    }
    fn validate(&self) -> Vec<Invalid> {
        K::validate(&self.0)
    }
    fn input_caps(&self) -> Caps {
        K::input_caps(&self.0)
    }
    fn tools(&self) -> Vec<ToolSpec> {
        K::tools(&self.0)
    }
    fn warnings(&self) -> Vec<Invalid> {
        K::warnings(&self.0)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn negotiate(
        &self,
        inputs: &[Format],
        options: &CompileOptions,
    ) -> Result<Negotiated, NegotiateError> {
        K::negotiate(&self.0, inputs, options)
    }
    fn build(&self, ctx: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        K::build(&self.0, ctx)
    }
}

/// The typed spec behind `spec`, if it is of kind `K`.
pub fn downcast<K: StageKind>(spec: &dyn DynSpec) -> Option<&K::Spec> {
    spec.as_any().downcast_ref::<Typed<K>>().map(|t| &t.0)
}

type ParseFn = fn(&str, Spanned<DeValue<'_>>) -> Result<Arc<dyn DynSpec>, Vec<SpecError>>;

/// One registered kind.
#[derive(Clone, Copy)]
pub struct KindEntry {
    /// Static facts.
    pub info: &'static KindInfo,
    parse: ParseFn,
    fields: fn() -> Option<&'static [&'static str]>,
}

impl fmt::Debug for KindEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KindEntry")
            .field("name", &self.info.name)
            .finish()
    }
}

impl KindEntry {
    /// Parses a stage's parameter table (`text` is the whole file, for line numbers).
    pub fn parse(
        &self,
        text: &str,
        params: Spanned<DeValue<'_>>,
    ) -> Result<Arc<dyn DynSpec>, Vec<SpecError>> {
        (self.parse)(text, params)
    }

    /// The parameter keys the kind knows.
    pub fn fields(&self) -> &'static [&'static str] {
        (self.fields)().unwrap_or(&[])
    }
}

fn parse_typed<K: StageKind>(
    text: &str,
    params: Spanned<DeValue<'_>>,
) -> Result<Arc<dyn DynSpec>, Vec<SpecError>> {
    deserialize_spanned_with::<K::Spec>(text, params, STAGE_KEYS)
        .map(|spec| Arc::new(Typed::<K>(spec)) as Arc<dyn DynSpec>)
}

/// Every stage kind the engine knows, in registration order.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    kinds: Vec<KindEntry>,
    sections: Vec<SectionEntry>,
}

/// A section's settings once parsed, as the graph keeps them.
pub type SectionValue = Arc<dyn std::any::Any + Send + Sync>;

/// A top-level table of pipeline files that a layer above the engine reads (the call
/// controller's `[conversation]`): the engine parses and checks it like a stage's parameters
/// (typed, unknown keys and invalid values refused with `file:line`) and keeps it on the graph
/// ([`crate::engine::graph::Graph::section`]) without knowing what it means.
pub trait Section: DeserializeOwned + Default + fmt::Debug + Send + Sync + 'static {
    /// The table's name.
    const NAME: &'static str;
    /// Values the type accepted but the section rejects.
    fn validate(&self) -> Vec<Invalid> {
        Vec::new()
    }
}

/// What parsing a section gives: its value and what its validation rejects.
type SectionParse = Result<(SectionValue, Vec<Invalid>), Vec<SpecError>>;

/// A registered [`Section`].
#[derive(Debug, Clone, Copy)]
pub struct SectionEntry {
    /// The table's name.
    pub name: &'static str,
    parse: fn(&str, Spanned<DeValue<'_>>) -> SectionParse,
    default: fn() -> SectionValue,
}

impl SectionEntry {
    /// Parses the table: its value and what its validation rejects.
    pub fn parse(
        &self,
        text: &str,
        value: Spanned<DeValue<'_>>,
    ) -> Result<(SectionValue, Vec<Invalid>), Vec<SpecError>> {
        (self.parse)(text, value)
    }

    /// The settings of a file that has no such table.
    pub fn default_value(&self) -> SectionValue {
        (self.default)()
    }
}

fn parse_section<T: Section>(text: &str, value: Spanned<DeValue<'_>>) -> SectionParse {
    let t = deserialize_spanned_with::<T>(text, value, &[])?;
    let invalid = t.validate();
    Ok((Arc::new(t) as SectionValue, invalid))
}

fn default_section<T: Section>() -> SectionValue {
    Arc::new(T::default())
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a kind.
    ///
    /// # Panics
    ///
    /// On a duplicate `NAME`: two kinds with one name is a programming error caught at startup
    /// (and by the compliance tests).
    pub fn register<K: StageKind>(&mut self) {
        assert!(
            self.get(K::NAME).is_none(),
            "stage kind `{}` registered twice",
            K::NAME
        );
        self.kinds.push(KindEntry {
            info: &<K as HasInfo>::INFO,
            parse: parse_typed::<K>,
            fields: field_names::<K::Spec>,
        });
    }

    /// Adds a top-level section `[T::NAME]` (`T::default()` for a file without one).
    ///
    /// # Panics
    ///
    /// On a duplicate name, or one the engine reads itself (`pipeline`, `defaults`, `stages`).
    pub fn add_section<T: Section>(&mut self) {
        let name = T::NAME;
        assert!(
            !ROOT_KEYS.contains(&name) && self.section(name).is_none(),
            "section `{name}` registered twice"
        );
        self.sections.push(SectionEntry {
            name,
            parse: parse_section::<T>,
            default: default_section::<T>,
        });
    }

    /// Looks a section up by name.
    pub fn section(&self, name: &str) -> Option<&SectionEntry> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Every section.
    pub fn sections(&self) -> impl Iterator<Item = &SectionEntry> {
        self.sections.iter()
    }

    /// Looks a kind up by name.
    pub fn get(&self, name: &str) -> Option<&KindEntry> {
        self.kinds.iter().find(|k| k.info.name == name)
    }

    /// Every kind.
    pub fn kinds(&self) -> impl Iterator<Item = &KindEntry> {
        self.kinds.iter()
    }

    /// Every kind name.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.iter().map(|k| k.info.name)
    }
}
