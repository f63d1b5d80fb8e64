//! `PipelineSpec`: a pipeline TOML file, parsed but not yet checked against the stage registry.
//!
//! Parsing keeps byte spans so that every problem can be reported as `file:line`, and it goes on
//! after a problem so that `caly pipeline check` reports every problem at once (Vector's
//! `compile()` collects, it does not stop at the first). Stage parameters stay as spanned TOML
//! until [`crate::engine::graph::Graph::compile`] deserializes them into each kind's typed spec.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::engine::ring::WhenFull;

/// Default capacity of an audio edge's ring.
pub const DEFAULT_AUDIO_RING_MS: u32 = 200;
/// Default capacity of a text or event edge's ring, in frames.
pub const DEFAULT_FRAME_RING: u32 = 64;

/// A pipeline file, parsed.
#[derive(Debug)]
pub struct PipelineSpec<'t> {
    /// Where it came from (a path, or `<inline>`), for error messages.
    pub origin: String,
    text: &'t str,
    /// `[pipeline] name`.
    pub name: String,
    /// `[pipeline] description`.
    pub description: Option<String>,
    /// `[defaults.ring]`.
    pub defaults: RingSpec,
    /// `[stages.*]` in file order.
    pub stages: Vec<StageSpec<'t>>,
    /// Every other top-level table (`[conversation]`, …): a section some layer above the
    /// engine reads ([`crate::engine::registry::Registry::add_section`]); the compiler
    /// reports one nobody registered as an unknown key.
    pub sections: Vec<SectionSpec<'t>>,
    /// Problems found while parsing; [`crate::engine::graph::Graph::compile`] reports them with its own.
    pub problems: Vec<SpecError>,
}

/// One `[stages.<id>]` table.
#[derive(Debug)]
pub struct StageSpec<'t> {
    /// The table name.
    pub id: String,
    /// Line of the table header.
    pub line: usize,
    /// `kind`, if present and a string.
    pub kind: Option<Located<String>>,
    /// `inputs`, if present.
    pub inputs: Option<Vec<Located<String>>>,
    /// `ring`, if present.
    pub ring: Option<Located<RingSpec>>,
    /// Every other key: the kind's own parameters, still spanned.
    pub params: Spanned<DeValue<'t>>,
}

/// A top-level table other than `[pipeline]`, `[defaults]` and `[stages]`, still spanned.
#[derive(Debug)]
pub struct SectionSpec<'t> {
    /// The table name.
    pub name: String,
    /// Line of its header.
    pub line: usize,
    /// Its keys.
    pub value: Spanned<DeValue<'t>>,
}

/// Top-level tables the engine itself reads.
pub const ROOT_KEYS: &[&str] = &["pipeline", "defaults", "stages"];

/// A value and the line it was written on.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// 1-based line.
    pub line: usize,
}

/// Ring settings: `[defaults.ring]` or a stage's `ring = { … }` (applied to its input edges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingSpec {
    /// Capacity of an audio edge, in milliseconds of audio at the edge's format.
    pub capacity_ms: Option<u32>,
    /// Capacity of a text or event edge, in frames.
    pub capacity: Option<u32>,
    /// What to do when full: `block`, `drop_oldest` or `drop_newest`.
    pub when_full: Option<WhenFull>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineMeta {
    name: String,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    #[allow(dead_code)] // read through its own spanned value
    ring: Option<RingSpec>,
}

/// Keys of a stage table that belong to the graph, not to the kind.
pub const STAGE_KEYS: &[&str] = &["kind", "inputs", "ring"];

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpecError {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The stage it concerns, when it concerns one.
    pub stage: Option<String>,
    /// What is wrong.
    pub kind: SpecErrorKind,
}

/// What is wrong with a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpecErrorKind {
    /// Not valid TOML.
    Syntax {
        /// The parser's message.
        message: String,
    },
    /// A key nobody reads (in `[pipeline]`, `[defaults]`, a `ring` or a stage's parameters).
    UnknownKey {
        /// The key as written.
        key: String,
        /// The closest known key, if one is close.
        suggestion: Option<String>,
    },
    /// A required key is absent.
    MissingKey {
        /// The key.
        key: String,
    },
    /// A value has the wrong type or is out of range.
    InvalidValue {
        /// The key, when known.
        key: Option<String>,
        /// What is expected.
        message: String,
    },
    /// `${VAR}` names an environment variable that is not set.
    MissingEnv {
        /// The variable.
        var: String,
    },
    /// No stage kind of that name is registered.
    UnknownKind {
        /// The kind as written.
        kind: String,
        /// The closest registered kind, if one is close.
        suggestion: Option<String>,
    },
    /// An input names a stage that does not exist, or a stage that needs input has none.
    MissingInput {
        /// The input as written (empty when the stage has none at all).
        input: String,
        /// The closest stage id, if one is close.
        suggestion: Option<String>,
    },
    /// An input names a port the producing stage does not have.
    UnknownPort {
        /// The producing stage.
        stage: String,
        /// The port as written.
        port: String,
        /// Ports the producing stage has.
        available: Vec<String>,
    },
    /// More inputs than the kind takes (sources take none).
    TooManyInputs {
        /// How many the kind takes.
        max: usize,
        /// How many were given.
        given: usize,
    },
    /// The stages form a cycle.
    Cycle {
        /// The stages on the cycle, in order.
        stages: Vec<String>,
    },
    /// An edge carries a format the consuming stage does not accept.
    FormatMismatch {
        /// The producing stage.
        from: String,
        /// The consuming stage.
        to: String,
        /// What the producer offers.
        offered: String,
        /// What the consumer accepts.
        accepted: String,
    },
    /// The file has no stages.
    NoStages,
}

impl SpecErrorKind {
    /// A stable snake_case code, used by fixtures and tests.
    pub fn code(&self) -> &'static str {
        match self {
            SpecErrorKind::Syntax { .. } => "syntax",
            SpecErrorKind::UnknownKey { .. } => "unknown_key",
            SpecErrorKind::MissingKey { .. } => "missing_key",
            SpecErrorKind::InvalidValue { .. } => "invalid_value",
            SpecErrorKind::MissingEnv { .. } => "missing_env",
            SpecErrorKind::UnknownKind { .. } => "unknown_kind",
            SpecErrorKind::MissingInput { .. } => "missing_input",
            SpecErrorKind::UnknownPort { .. } => "unknown_port",
            SpecErrorKind::TooManyInputs { .. } => "too_many_inputs",
            SpecErrorKind::Cycle { .. } => "cycle",
            SpecErrorKind::FormatMismatch { .. } => "format_mismatch",
            SpecErrorKind::NoStages => "no_stages",
        }
    }
}

fn did_you_mean(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

impl fmt::Display for SpecErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecErrorKind::Syntax { message } => write!(f, "invalid TOML: {message}"),
            SpecErrorKind::UnknownKey { key, suggestion } => {
                write!(f, "unknown key `{key}`{}", did_you_mean(suggestion))
            }
            SpecErrorKind::MissingKey { key } => write!(f, "missing key `{key}`"),
            SpecErrorKind::InvalidValue {
                key: Some(k),
                message,
            } => {
                write!(f, "invalid value for `{k}`: {message}")
            }
            SpecErrorKind::InvalidValue { key: None, message } => write!(f, "{message}"),
            SpecErrorKind::MissingEnv { var } => {
                write!(f, "environment variable `{var}` is not set")
            }
            SpecErrorKind::UnknownKind { kind, suggestion } => {
                write!(f, "unknown stage kind `{kind}`{}", did_you_mean(suggestion))
            }
            SpecErrorKind::MissingInput { input, suggestion } if input.is_empty() => {
                let _ = suggestion;
                write!(
                    f,
                    "no input: it is the first stage and not a source; set `inputs`"
                )
            }
            SpecErrorKind::MissingInput { input, suggestion } => write!(
                f,
                "input `{input}` is not a stage in this pipeline{}",
                did_you_mean(suggestion)
            ),
            SpecErrorKind::UnknownPort {
                stage,
                port,
                available,
            } => write!(
                f,
                "stage `{stage}` has no output port `{port}` (ports: {})",
                available.join(", ")
            ),
            SpecErrorKind::TooManyInputs { max: 0, given } => {
                write!(f, "a source takes no inputs, but {given} given")
            }
            SpecErrorKind::TooManyInputs { max, given } => {
                write!(f, "takes at most {max} input(s), but {given} given")
            }
            SpecErrorKind::Cycle { stages } => {
                write!(f, "cycle: {} -> {}", stages.join(" -> "), stages[0])
            }
            SpecErrorKind::FormatMismatch {
                from,
                to,
                offered,
                accepted,
            } => write!(
                f,
                "format mismatch: `{from}` produces {offered}, but `{to}` accepts {accepted}"
            ),
            SpecErrorKind::NoStages => write!(f, "no stages: add at least one [stages.<id>]"),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(stage) = &self.stage {
            write!(f, "stage `{stage}`: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

/// Every problem found in one pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors {
    /// The file.
    pub origin: String,
    /// The problems, sorted by line and deduplicated.
    pub errors: Vec<SpecError>,
}

impl SpecErrors {
    /// Sorts by line and removes duplicates.
    pub fn new(origin: String, mut errors: Vec<SpecError>) -> Self {
        errors.sort();
        errors.dedup();
        SpecErrors { origin, errors }
    }
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match e.line {
                Some(line) => write!(f, "{}:{line}: ", self.origin)?,
                None => write!(f, "{}: ", self.origin)?,
            }
            write!(f, "error[{}]: {e}", e.kind.code())?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

impl<'t> PipelineSpec<'t> {
    /// Parses a pipeline file. Fails only when the text is not TOML at all; every other
    /// problem is kept in [`problems`](Self::problems) and parsing carries on.
    pub fn parse(text: &'t str, origin: impl Into<String>) -> Result<Self, SpecErrors> {
        let origin = origin.into();
        let root = DeTable::parse(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            SpecErrors::new(
                origin.clone(),
                vec![SpecError {
                    line,
                    stage: None,
                    kind: SpecErrorKind::Syntax {
                        message: e.message().trim().to_owned(),
                    },
                }],
            )
        })?;
        let mut spec = PipelineSpec {
            origin,
            text,
            name: String::new(),
            description: None,
            defaults: RingSpec::default(),
            stages: Vec::new(),
            sections: Vec::new(),
            problems: Vec::new(),
        };
        spec.read_root(root);
        Ok(spec)
    }

    /// The whole file.
    pub fn text(&self) -> &'t str {
        self.text
    }

    /// The 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        line_of(self.text, offset)
    }

    fn problem(&mut self, line: Option<usize>, stage: Option<&str>, kind: SpecErrorKind) {
        self.problems.push(SpecError {
            line,
            stage: stage.map(str::to_owned),
            kind,
        });
    }

    fn read_root(&mut self, root: Spanned<DeTable<'t>>) {
        let root_span = root.span();
        let mut saw_pipeline = false;
        for (key, value) in root.into_inner() {
            let line = self.line_of(key.span().start);
            match key.get_ref().as_ref() {
                "pipeline" => {
                    saw_pipeline = true;
                    if let Ok(meta) = self.typed::<PipelineMeta>(value, None) {
                        self.name = meta.name;
                        self.description = meta.description;
                    }
                }
                "defaults" => {
                    let ring = value.get_ref().get("ring").cloned();
                    if self.typed::<Defaults>(value, None).is_ok()
                        && let Some(ring) = ring
                        && let Ok(r) = self.typed::<RingSpec>(ring, None)
                    {
                        self.defaults = r;
                    }
                }
                "stages" => self.read_stages(value),
                other => self.sections.push(SectionSpec {
                    name: other.to_owned(),
                    line,
                    value,
                }),
            }
        }
        if !saw_pipeline {
            let line = Some(self.line_of(root_span.start));
            self.problem(
                line,
                None,
                SpecErrorKind::MissingKey {
                    key: "pipeline".into(),
                },
            );
        }
        if self.stages.is_empty() {
            self.problem(None, None, SpecErrorKind::NoStages);
        }
    }

    fn read_stages(&mut self, value: Spanned<DeValue<'t>>) {
        let line = self.line_of(value.span().start);
        let DeValue::Table(table) = value.into_inner() else {
            self.problem(
                Some(line),
                None,
                SpecErrorKind::InvalidValue {
                    key: Some("stages".into()),
                    message: "expected a table of stages".into(),
                },
            );
            return;
        };
        let mut entries: Vec<_> = table.into_iter().collect();
        // File order: the default input of a stage is the stage written before it.
        entries.sort_by_key(|(k, _)| k.span().start);
        for (key, value) in entries {
            self.read_stage(key, value);
        }
    }

    fn read_stage(&mut self, key: Spanned<Cow<'t, str>>, value: Spanned<DeValue<'t>>) {
        let id = key.get_ref().to_string();
        let line = self.line_of(key.span().start);
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            self.problem(
                Some(line),
                Some(&id),
                SpecErrorKind::InvalidValue {
                    key: None,
                    message: "a stage must be a table".into(),
                },
            );
            return;
        };
        let mut stage = StageSpec {
            id: id.clone(),
            line,
            kind: None,
            inputs: None,
            ring: None,
            params: Spanned::new(span.clone(), DeValue::Table(DeTable::new())),
        };
        let mut params = DeTable::new();
        for (k, mut v) in table {
            let key_line = self.line_of(k.span().start);
            match k.get_ref().as_ref() {
                "kind" => match v.get_ref().as_str() {
                    Some(kind) => {
                        stage.kind = Some(Located {
                            value: kind.to_owned(),
                            line: key_line,
                        })
                    }
                    None => self.problem(
                        Some(key_line),
                        Some(&id),
                        SpecErrorKind::InvalidValue {
                            key: Some("kind".into()),
                            message: "expected a string".into(),
                        },
                    ),
                },
                "inputs" => stage.inputs = self.read_inputs(&id, key_line, &v),
                "ring" => {
                    if let Ok(ring) = self.typed::<RingSpec>(v, Some(&id)) {
                        stage.ring = Some(Located {
                            value: ring,
                            line: key_line,
                        });
                    }
                }
                _ => {
                    self.interpolate(&id, &mut v);
                    params.insert(k, v);
                }
            }
        }
        if stage.kind.is_none() {
            self.problem(
                Some(line),
                Some(&id),
                SpecErrorKind::MissingKey { key: "kind".into() },
            );
        }
        stage.params = Spanned::new(span, DeValue::Table(params));
        self.stages.push(stage);
    }

    fn read_inputs(
        &mut self,
        id: &str,
        line: usize,
        v: &Spanned<DeValue<'t>>,
    ) -> Option<Vec<Located<String>>> {
        let invalid = SpecErrorKind::InvalidValue {
            key: Some("inputs".into()),
            message: "expected a list of stage names, like [\"decode\"] or [\"s2s.transcript\"]"
                .into(),
        };
        let Some(items) = v.get_ref().as_array() else {
            self.problem(Some(line), Some(id), invalid);
            return None;
        };
        let mut inputs = Vec::new();
        for item in items.iter() {
            match item.get_ref().as_str() {
                Some(s) => inputs.push(Located {
                    value: s.to_owned(),
                    line: self.line_of(item.span().start),
                }),
                None => {
                    self.problem(Some(line), Some(id), invalid.clone());
                    return None;
                }
            }
        }
        Some(inputs)
    }

    /// Replaces `${VAR}` in string values with the environment variable's value.
    fn interpolate(&mut self, stage: &str, value: &mut Spanned<DeValue<'t>>) {
        let line = self.line_of(value.span().start);
        match value.get_mut() {
            DeValue::String(s) if s.contains("${") => match expand_env(s) {
                Ok(expanded) => *s = Cow::Owned(expanded),
                Err(var) => {
                    self.problem(Some(line), Some(stage), SpecErrorKind::MissingEnv { var })
                }
            },
            DeValue::Array(items) => {
                for item in items.iter_mut() {
                    self.interpolate(stage, item);
                }
            }
            DeValue::Table(table) => {
                for (_, v) in table.iter_mut() {
                    self.interpolate(stage, v);
                }
            }
            _ => {}
        }
    }

    /// Deserializes a spanned table into `T`, recording unknown keys (with a did-you-mean) and
    /// type errors (with their line) as problems.
    fn typed<T: DeserializeOwned>(
        &mut self,
        value: Spanned<DeValue<'t>>,
        stage: Option<&str>,
    ) -> Result<T, ()> {
        match deserialize_spanned::<T>(self.text, value) {
            Ok(t) => Ok(t),
            Err(errors) => {
                for mut e in errors {
                    e.stage = stage.map(str::to_owned);
                    self.problems.push(e);
                }
                Err(())
            }
        }
    }
}

/// Deserializes a spanned TOML table into `T`, checking keys against `T`'s fields first so that
/// an unknown key gets a did-you-mean and its own line.
pub fn deserialize_spanned<T: DeserializeOwned>(
    text: &str,
    value: Spanned<DeValue<'_>>,
) -> Result<T, Vec<SpecError>> {
    deserialize_spanned_with::<T>(text, value, &[])
}

/// [`deserialize_spanned`], also suggesting `also_known` keys (read elsewhere) for typos.
pub fn deserialize_spanned_with<T: DeserializeOwned>(
    text: &str,
    value: Spanned<DeValue<'_>>,
    also_known: &[&str],
) -> Result<T, Vec<SpecError>> {
    let mut errors = Vec::new();
    if let (DeValue::Table(table), Some(fields)) = (value.get_ref(), field_names::<T>()) {
        for (k, _) in table.iter() {
            let key: &str = k.get_ref();
            if !fields.contains(&key) {
                let known = fields.iter().chain(also_known).copied();
                errors.push(SpecError {
                    line: Some(line_of(text, k.span().start)),
                    stage: None,
                    kind: SpecErrorKind::UnknownKey {
                        key: key.to_owned(),
                        suggestion: closest(key, known),
                    },
                });
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let span = value.span();
    T::deserialize(ValueDeserializer::from(value)).map_err(|e| {
        let at = e.span().unwrap_or(span);
        let message = e.message().trim().to_owned();
        vec![SpecError {
            line: Some(line_of(text, at.start)),
            stage: None,
            kind: SpecErrorKind::InvalidValue {
                key: key_in_message(&message),
                message,
            },
        }]
    })
}

fn key_in_message(message: &str) -> Option<String> {
    let rest = message.split("field `").nth(1)?;
    rest.split('`').next().map(str::to_owned)
}

/// An unknown-key problem with the closest of `known` as a suggestion.
pub fn unknown_key(key: &str, known: &[&str]) -> SpecErrorKind {
    SpecErrorKind::UnknownKey {
        key: key.to_owned(),
        suggestion: closest(key, known.iter().copied()),
    }
}

/// The candidate closest to `word`, if it is close enough to be a plausible typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_owned())
}

/// The 1-based line of a byte offset in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Expands `${VAR}` from the environment; returns the first unset variable on failure.
pub fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let var = &after[..end];
        match std::env::var(var) {
            Ok(v) => out.push_str(&v),
            Err(_) => return Err(var.to_owned()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The field names of a `#[derive(Deserialize)]` struct, read by asking it to deserialize from
/// a deserializer that records what `deserialize_struct` is called with.
pub fn field_names<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut fields = None;
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> de::Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[pipeline]
name = "t"

[defaults.ring]
capacity_ms = 120
when_full = "drop_newest"

[stages.b]
kind = "decode"

[stages.a]
kind = "resample"
sample_rate = 16000
ring = { capacity_ms = 40 }
"#;

    #[test]
    fn stages_keep_file_order_and_split_graph_keys_from_params() {
        let spec = PipelineSpec::parse(GOOD, "good.toml").unwrap();
        assert!(spec.problems.is_empty(), "{:?}", spec.problems);
        let ids: Vec<_> = spec.stages.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["b", "a"]);
        assert_eq!(spec.defaults.capacity_ms, Some(120));
        assert_eq!(spec.defaults.when_full, Some(WhenFull::DropNewest));
        let a = &spec.stages[1];
        assert_eq!(a.line, 12);
        assert_eq!(a.ring.as_ref().unwrap().value.capacity_ms, Some(40));
        let DeValue::Table(params) = a.params.get_ref() else {
            panic!("params are a table")
        };
        let keys: Vec<&str> = params.keys().map(|k| k.get_ref().as_ref()).collect();
        assert_eq!(keys, ["sample_rate"]);
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = "[pipeline]\nnme = \"x\"\n\n[stages.a]\ninputs = [1]\n\n[bogus]\n";
        let spec = PipelineSpec::parse(text, "bad.toml").unwrap();
        // A top-level table the engine does not read is kept for the registry's sections;
        // compiling reports it when none is registered under its name.
        assert_eq!(spec.sections.len(), 1);
        assert_eq!(
            (spec.sections[0].name.as_str(), spec.sections[0].line),
            ("bogus", 7)
        );
        let compiled = crate::engine::graph::Graph::compile(
            &spec,
            &crate::engine::registry::Registry::new(),
            &crate::engine::registry::CompileOptions::default(),
        )
        .err()
        .map(|e| e.errors)
        .unwrap_or_default();
        let mut got: Vec<_> = compiled.iter().map(|p| (p.kind.code(), p.line)).collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("invalid_value", Some(5)),
                ("missing_key", Some(4)),
                ("unknown_key", Some(2)),
                ("unknown_key", Some(7)),
            ]
        );
        let nme = spec.problems.iter().find(|p| p.line == Some(2)).unwrap();
        assert_eq!(nme.to_string(), "unknown key `nme` (did you mean `name`?)");
    }

    #[test]
    fn a_toml_syntax_error_stops_parsing_with_its_line() {
        let err = PipelineSpec::parse("[pipeline]\nname = \n", "x.toml").unwrap_err();
        assert_eq!(err.errors.len(), 1);
        assert_eq!(err.errors[0].kind.code(), "syntax");
        assert_eq!(err.errors[0].line, Some(2));
        assert!(err.to_string().starts_with("x.toml:2: error[syntax]"));
    }

    #[test]
    fn env_variables_are_interpolated_in_stage_parameters() {
        // SAFETY-free: a variable name no other test uses.
        let text =
            "[pipeline]\nname='t'\n[stages.a]\nkind='x'\npath='${CALY_SPEC_TEST_UNSET_VAR}/a'\n";
        let spec = PipelineSpec::parse(text, "e.toml").unwrap();
        assert_eq!(
            spec.problems[0].kind,
            SpecErrorKind::MissingEnv {
                var: "CALY_SPEC_TEST_UNSET_VAR".into()
            }
        );
        assert_eq!(
            expand_env("a${PATH}b").unwrap(),
            format!("a{}b", std::env::var("PATH").unwrap())
        );
        assert_eq!(expand_env("plain").unwrap(), "plain");
    }

    #[test]
    fn field_names_are_read_from_the_derive() {
        assert_eq!(
            field_names::<RingSpec>().unwrap(),
            ["capacity_ms", "capacity", "when_full"]
        );
    }

    #[test]
    fn closest_suggests_only_plausible_typos() {
        assert_eq!(
            closest("resampel", ["resample", "decode"]).as_deref(),
            Some("resample")
        );
        assert_eq!(closest("zzzzzz", ["resample", "decode"]), None);
    }
}
