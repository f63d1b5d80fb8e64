//! The intent classifier: `cargo bench --bench intent`.
//! - `classify_one`: one utterance (a long Hinglish one with an order number in words);
//! - `dev_set`: all 180 utterances of `data/intent/dev.jsonl`, one after another on one
//!   thread — divide 180 by the time for utterances per second.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use caly::intent::Classifier;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn intent(c: &mut Criterion) {
    let classifier = Classifier::builtin().unwrap();
    let lines: Vec<String> = include_str!("../data/intent/dev.jsonl")
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut g = c.benchmark_group("intent");
    let one = "order status check karna hai, number nau aath do teen zero ek chaar paanch chhe saat se kiya tha";
    g.bench_function("classify_one", |b| {
        b.iter(|| black_box(classifier.classify(black_box(one))))
    });
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("dev_set", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(classifier.classify(black_box(l)));
            }
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    targets = intent
}
criterion_main!(benches);
