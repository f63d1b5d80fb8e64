//! A stage that fails or panics ends its own call, not its neighbours and not the process.

use std::sync::Arc;
use std::time::Duration;

use caly::engine::bus::BusKind;
use caly::engine::pipeline::{Outcome, Pipeline, PipelineOptions};
use caly::engine::registry::CompileOptions;
use caly::testing::within;

use crate::helpers::compile_with;

fn graph(fail: &str) -> Arc<caly::engine::graph::Graph> {
    compile_with(
        &format!(
            "[pipeline]\nname = \"iso\"\n[stages.src]\nkind = \"replay\"\nsample_rate = 16000\nduration_ms = 2000\n[stages.decode_like]\nkind = \"resample\"\nsample_rate = 8000\n{fail}\n[stages.sink]\nkind = \"blackhole\"\n"
        ),
        CompileOptions::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_panicking_stage_ends_only_its_own_call() {
    for (name, fail) in [
        (
            "error",
            "[stages.boom]\nkind = \"fail_after\"\nframes = 3\n",
        ),
        (
            "panic",
            "[stages.boom]\nkind = \"fail_after\"\nframes = 3\npanic = true\n",
        ),
    ] {
        let bus_handle = caly::engine::bus::Bus::new();
        let mut bus = bus_handle.subscribe();
        let options = PipelineOptions {
            bus: Some(bus_handle),
            ..PipelineOptions::default()
        };
        let mut bad = Pipeline::start(graph(fail), options).unwrap();
        let mut good = Pipeline::start(graph(""), PipelineOptions::default()).unwrap();
        let outcome = within(Duration::from_secs(10), "failing call", bad.finished()).await;
        match &outcome {
            Outcome::Failed { stage, error } => {
                assert_eq!(stage, "boom", "{name}");
                let expected = if name == "panic" {
                    "panicked: fail_after: panicking on purpose"
                } else {
                    "failing on purpose"
                };
                assert!(error.contains(expected), "{name}: {error}");
            }
            other => panic!("{name}: {other:?}"),
        }
        let failed = within(Duration::from_secs(5), "bus event", async {
            loop {
                if let Ok(e) = bus.recv().await
                    && matches!(e.kind, BusKind::Failed { .. })
                {
                    return e;
                }
            }
        })
        .await;
        assert_eq!(&*failed.stage, "boom");
        // The neighbour call, running at the same time, completes untouched.
        let outcome = within(Duration::from_secs(10), "healthy call", good.finished()).await;
        assert_eq!(outcome, Outcome::Completed, "{name}");
        let sink = good
            .stats()
            .stages
            .iter()
            .find(|(id, _)| &**id == "sink")
            .unwrap()
            .1;
        assert!(sink.frames_in > 0);
    }
}

#[tokio::test]
async fn dropping_a_pipeline_ends_all_its_tasks() {
    let text = "[pipeline]\nname = \"drop\"\n[stages.src]\nkind = \"replay\"\nsample_rate = 8000\nduration_ms = 60000\npaced = true\n[stages.sink]\nkind = \"slow_sink\"\ndelay_ms = 1\n";
    let graph = compile_with(text, CompileOptions::default());
    let p = Pipeline::start(graph, PipelineOptions::default()).unwrap();
    let bus = p.bus().clone();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(p);
    // Every task held a clone of the bus sender; once they are all gone, only ours remains.
    within(Duration::from_secs(5), "tasks to end", async {
        while bus.sender_count() > 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn control_messages_reach_their_stage_and_unknown_stages_are_refused() {
    let graph = compile_with(
        "[pipeline]\nname = \"ctl\"\n[stages.caller]\nkind = \"call_audio\"\n[stages.decode]\nkind = \"decode\"\n[stages.sink]\nkind = \"blackhole\"\n",
        CompileOptions::default(),
    );
    let mut p = Pipeline::start(graph, PipelineOptions::default()).unwrap();
    p.control(
        "decode",
        caly::engine::frame::Control::Interrupt {
            heard: Duration::ZERO,
        },
    )
    .unwrap();
    assert!(matches!(
        p.control(
            "nope",
            caly::engine::frame::Control::Interrupt {
                heard: Duration::ZERO
            }
        ),
        Err(caly::engine::edge::ControlError::UnknownStage(_))
    ));
    let source = p.take_source("caller").unwrap();
    source.close().await;
    assert_eq!(
        within(Duration::from_secs(5), "end", p.finished()).await,
        Outcome::Completed
    );
}
