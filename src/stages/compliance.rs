//! Compliance tests: every registered kind, without anyone listing it (STYLE.md §9.2). They
//! live beside the `stages!` list because they run every kind the list registers.

use std::collections::HashSet;
use std::path::Path;

use std::sync::Arc;
use std::time::Duration;

use crate::engine::format::Format;
use crate::engine::frame::Control;
use crate::engine::graph::{Graph, check_input};
use crate::engine::registry::*;
use crate::engine::spec::SpecError;
use crate::engine::spec::{PipelineSpec, SpecErrorKind};
use crate::engine::stage::{BuildCtx, Runnable};
use crate::testing::{Harness, frames_for, params_of};

/// Every kind a pipeline can name, test-only kinds included.
fn registry() -> Registry {
    crate::testing::registry()
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
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let name = k.info.name;
        let found = ["src/stages", "src/testing/kinds"].iter().any(|dir| {
            root.join(dir).join(format!("{name}.rs")).exists()
                || root.join(dir).join(name).join("mod.rs").exists()
        });
        assert!(
            found,
            "kind `{name}` must live in src/stages/{name}.rs (or src/testing/kinds/ if test-only)"
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
                services: &crate::stages::services_from_env(),
                tools: &[],
                call: &crate::engine::stage::CallInfo::default(),
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
                h.push(f.as_frame())
                    .unwrap_or_else(|e| panic!("{} after Interrupt on {format}: {e}", k.info.name));
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
