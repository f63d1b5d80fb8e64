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

use crate::format::{Caps, Format};
use crate::spec::{STAGE_KEYS, SpecError, deserialize_spanned_with, field_names};
use crate::stage::{BuildCtx, BuildError, Port, Runnable};

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
    /// Whether it exists for tests, benches and `caly replay` rather than calls.
    const TEST_ONLY: bool = false;

    /// Typed parameters (`#[serde(deny_unknown_fields)]`).
    type Spec: DeserializeOwned + fmt::Debug + Send + Sync + 'static;

    /// What the kind accepts on every input.
    fn input_caps(spec: &Self::Spec) -> Caps;

    /// Checks values the type system cannot (ranges, combinations).
    fn validate(spec: &Self::Spec) -> Vec<Invalid> {
        let _ = spec;
        Vec::new()
    }

    /// Given accepted input formats, the output formats and added delay.
    fn negotiate(
        spec: &Self::Spec,
        inputs: &[Format],
        options: &CompileOptions,
    ) -> Result<Negotiated, String>;

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
    /// [`StageKind::TEST_ONLY`].
    pub test_only: bool,
}

/// A parsed spec of some kind, able to run that kind's checks and build it.
pub trait DynSpec: fmt::Debug + Send + Sync {
    /// The kind.
    fn info(&self) -> &'static KindInfo;
    /// [`StageKind::validate`].
    fn validate(&self) -> Vec<Invalid>;
    /// [`StageKind::input_caps`].
    fn input_caps(&self) -> Caps;
    /// [`StageKind::negotiate`].
    fn negotiate(&self, inputs: &[Format], options: &CompileOptions) -> Result<Negotiated, String>;
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
        test_only: K::TEST_ONLY,
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
    fn negotiate(&self, inputs: &[Format], options: &CompileOptions) -> Result<Negotiated, String> {
        K::negotiate(&self.0, inputs, options)
    }
    fn build(&self, ctx: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        K::build(&self.0, ctx)
    }
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
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The registry with every built-in kind (the `stages!` list).
    pub fn with_builtin() -> Registry {
        let mut r = Registry::new();
        crate::stages::register_all(&mut r);
        r
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

#[cfg(test)]
mod tests {
    //! Compliance tests: every registered kind, without anyone listing it (STYLE.md §9.2).

    use std::collections::HashSet;
    use std::path::Path;

    use super::*;
    use crate::frame::Control;
    use crate::graph::{Graph, check_input};
    use crate::spec::{PipelineSpec, SpecErrorKind};
    use crate::testing::{Harness, frames_for, params_of};

    fn registry() -> Registry {
        Registry::with_builtin()
    }

    fn parse_example(entry: &KindEntry, extra: &str) -> Result<Arc<dyn DynSpec>, Vec<SpecError>> {
        let text = format!("{}\n{extra}\n", entry.info.example);
        entry.parse(&text, params_of(&text))
    }

    #[test]
    fn every_kind_name_is_its_module_file_and_unique() {
        let reg = registry();
        let mut seen = HashSet::new();
        for k in reg.kinds() {
            assert!(seen.insert(k.info.name), "duplicate kind {}", k.info.name);
            let file = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/stages")
                .join(format!("{}.rs", k.info.name));
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/stages")
                .join(k.info.name)
                .join("mod.rs");
            assert!(
                file.exists() || dir.exists(),
                "kind `{}` must live in src/stages/{}.rs",
                k.info.name,
                k.info.name
            );
        }
        assert!(seen.len() >= 9, "front-half and test kinds are registered");
    }

    #[test]
    fn every_example_parses_and_an_unknown_key_is_rejected() {
        for k in registry().kinds() {
            let spec = parse_example(k, "");
            assert!(
                spec.is_ok(),
                "{}: EXAMPLE does not parse: {:?}",
                k.info.name,
                spec.err()
            );
            let errors = parse_example(k, "surely_not_a_key = 1").unwrap_err();
            assert!(
                errors.iter().any(|e| matches!(&e.kind, SpecErrorKind::UnknownKey { key, .. } if key == "surely_not_a_key")),
                "{}: unknown key accepted: {errors:?}",
                k.info.name
            );
        }
    }

    #[test]
    fn every_kind_negotiates_its_caps_and_rejects_a_format_outside_them() {
        let options = CompileOptions::default();
        for k in registry().kinds() {
            let spec = parse_example(k, "").unwrap();
            let caps = spec.input_caps();
            if k.info.role == Role::Source {
                assert!(spec.negotiate(&[], &options).is_ok(), "{}", k.info.name);
                continue;
            }
            for format in caps.examples() {
                let n = spec.negotiate(&[format], &options);
                assert!(n.is_ok(), "{} refused {format}: {:?}", k.info.name, n.err());
            }
            if let Some(bad) = caps.counter_example() {
                let err = check_input(spec.as_ref(), "upstream", "this_stage", &bad)
                    .expect_err("a format outside the caps is refused");
                assert!(
                    matches!(&err, SpecErrorKind::FormatMismatch { from, to, .. } if from == "upstream" && to == "this_stage"),
                    "{}: {err:?}",
                    k.info.name
                );
            }
        }
    }

    #[test]
    fn every_kind_builds_into_a_send_runtime_stage() {
        for k in registry().kinds() {
            let spec = parse_example(k, "").unwrap();
            for format in input_formats(spec.as_ref()) {
                let inputs: Vec<Format> = format.into_iter().collect();
                let n = spec.negotiate(&inputs, &CompileOptions::default()).unwrap();
                let ctx = BuildCtx {
                    stage: "s",
                    inputs: &inputs,
                    outputs: &n.ports,
                    services: &crate::stage::Services::from_env(),
                    call: &crate::stage::CallInfo::default(),
                };
                let runnable = spec
                    .build(&ctx)
                    .unwrap_or_else(|e| panic!("{}: {e}", k.info.name));
                assert_eq!(
                    matches!(runnable, Runnable::Task(_)),
                    k.info.task,
                    "{}",
                    k.info.name
                );
                // Send: the runtime stage can move to another thread.
                std::thread::spawn(move || drop(runnable)).join().unwrap();
            }
        }
    }

    fn input_formats(spec: &dyn DynSpec) -> Vec<Option<Format>> {
        if spec.info().role == Role::Source {
            vec![None]
        } else {
            spec.input_caps().examples().into_iter().map(Some).collect()
        }
    }

    #[test]
    fn inline_kinds_drain_on_finish_and_survive_an_interrupt() {
        for k in registry().kinds().filter(|k| !k.info.task) {
            let spec = parse_example(k, "").unwrap();
            for format in input_formats(spec.as_ref()) {
                let Some(format) = format else { continue };
                let mut h = Harness::from_spec(spec.as_ref(), &[format]).unwrap();
                let frames = frames_for(format, Duration::from_millis(200));
                let (first, second) = frames.split_at(frames.len() / 2);
                for f in first {
                    h.push(f.as_frame()).unwrap();
                }
                h.control(&Control::Interrupt {
                    heard: Duration::ZERO,
                })
                .unwrap();
                for f in second {
                    h.push(f.as_frame()).unwrap_or_else(|e| {
                        panic!("{} after Interrupt on {format}: {e}", k.info.name)
                    });
                }
                h.finish().unwrap();
                assert!(
                    h.push(frames[0].as_frame()).is_err(),
                    "{}: nothing follows Eos",
                    k.info.name
                );
            }
        }
    }

    #[test]
    fn every_kind_runs_to_eos_inside_a_pipeline() {
        let reg = registry();
        for k in reg.kinds() {
            let text = crate::testing::pipeline_around(k, &reg);
            let spec = PipelineSpec::parse(&text, k.info.name).unwrap();
            let graph = Graph::compile(&spec, &reg, &CompileOptions::default())
                .unwrap_or_else(|e| panic!("{}:\n{e}\n{text}", k.info.name));
            let outcome = crate::testing::run_to_end(graph);
            assert!(outcome.is_ok(), "{}: {outcome:?}", k.info.name);
        }
    }
}
