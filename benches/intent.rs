//! The intent classifier: `cargo bench --bench intent`.
//! - `classify_one`: one utterance (a long Hinglish one with an order number in words);
//! - `classify_long`: one rambling 60-word turn (mixed scripts, numbers, a negation);
//! - `dev_set`: all 180 utterances of `data/intent/dev.jsonl`, one after another on one
//!   thread — divide 180 by the time for utterances per second;
//! - `corpus`: every labelled utterance in `data/intent/` (train, corpus and held-out
//!   batches), one after another on one thread.
//!
//! Before criterion runs, the long turn is classified 20,000 times one by one and the p50,
//! p99 and max of those single calls are printed (the stage runs once per caller turn, so the
//! tail of one call is what a caller could feel).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use caly::intent::Classifier;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const LONG: &str = "hello haan ji main bol rahi hoon, dekhiye maine pichhle hafte ek mixer grinder \
    order kiya tha order number चार सात दो एक, aur wo abhi tak nahi aaya, cancel mat karna please \
    kyunki mujhe wo chahiye, bas ye batao ki kab tak aayega, delivery wala bhi phone nahi utha \
    raha, mera number 98230 14567 hai, pincode 560034, बहुत परेशान हूँ";

fn texts(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn corpus() -> Vec<String> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/intent");
    let mut files = vec![data.join("train.jsonl")];
    for dir in ["corpus", "heldout"] {
        let mut more: Vec<_> = std::fs::read_dir(data.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        more.sort();
        files.extend(more);
    }
    files
        .iter()
        .flat_map(|f| texts(&std::fs::read_to_string(f).unwrap()))
        .collect()
}

fn single_call_tail(classifier: &Classifier) {
    let mut took: Vec<Duration> = (0..20_000)
        .map(|_| {
            let t = Instant::now();
            black_box(classifier.classify(black_box(LONG)));
            t.elapsed()
        })
        .collect();
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
    eprintln!(
        "intent/classify_long single calls ({} words): p50 {:?}, p99 {:?}, max {:?} over {} calls",
        LONG.split_whitespace().count(),
        at(0.5),
        at(0.99),
        took[took.len() - 1],
        took.len()
    );
}

fn intent(c: &mut Criterion) {
    let classifier = Classifier::builtin().unwrap();
    single_call_tail(&classifier);
    let dev = texts(include_str!("../data/intent/dev.jsonl"));
    let all = corpus();
    let mut g = c.benchmark_group("intent");
    let one = "order status check karna hai, number nau aath do teen zero ek chaar paanch chhe saat se kiya tha";
    g.bench_function("classify_one", |b| {
        b.iter(|| black_box(classifier.classify(black_box(one))))
    });
    g.bench_function("classify_long", |b| {
        b.iter(|| black_box(classifier.classify(black_box(LONG))))
    });
    g.throughput(Throughput::Elements(dev.len() as u64));
    g.bench_function("dev_set", |b| {
        b.iter(|| {
            for l in &dev {
                black_box(classifier.classify(black_box(l)));
            }
        })
    });
    g.throughput(Throughput::Elements(all.len() as u64));
    g.bench_function("corpus", |b| {
        b.iter(|| {
            for l in &all {
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
