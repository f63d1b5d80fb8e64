//! Every shipped pipeline compiles; every bad fixture fails with exactly the errors its first
//! comment names, through the library and through `caly pipeline check`.

use std::collections::BTreeSet;
use std::process::Command;

use caly::graph::{self, LoadError};
use caly::registry::{CompileOptions, Registry};

use crate::helpers::repo;

fn files(dir: &str, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(repo(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "toml")
                && p.file_name().unwrap().to_string_lossy().starts_with(prefix)
        })
        .collect();
    out.sort();
    out
}

/// `# expect: code@line code@line` on the first line.
fn expected(path: &std::path::Path) -> BTreeSet<(String, usize)> {
    let text = std::fs::read_to_string(path).unwrap();
    let first = text.lines().next().unwrap();
    let list = first.strip_prefix("# expect:").unwrap_or_else(|| {
        panic!(
            "{}: first line must be `# expect: code@line …`",
            path.display()
        )
    });
    list.split_whitespace()
        .map(|t| {
            let (code, line) = t.split_once('@').unwrap();
            (code.to_owned(), line.parse().unwrap())
        })
        .collect()
}

#[test]
fn every_shipped_pipeline_compiles() {
    let registry = Registry::with_builtin();
    let shipped = files("pipelines", "");
    assert!(shipped.len() >= 2);
    for path in shipped {
        let graph = graph::load(&path, &registry, &CompileOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Every rate Exotel can ask for compiles too.
        for rate in [8000, 16000, 24000] {
            let options = CompileOptions {
                source_rate: Some(rate),
            };
            graph::load(&path, &registry, &options)
                .unwrap_or_else(|e| panic!("{} at {rate} Hz: {e}", path.display()));
        }
        assert!(!graph.name.is_empty());
    }
}

#[test]
fn every_bad_fixture_fails_with_exactly_the_errors_it_names() {
    let registry = Registry::with_builtin();
    let bad = files("fixtures/pipelines", "bad_");
    assert!(bad.len() >= 5);
    for path in bad {
        let want = expected(&path);
        let err = match graph::load(&path, &registry, &CompileOptions::default()) {
            Err(LoadError::Spec(e)) => e,
            other => panic!("{}: expected spec errors, got {other:?}", path.display()),
        };
        let got: BTreeSet<(String, usize)> = err
            .errors
            .iter()
            .map(|e| (e.kind.code().to_owned(), e.line.unwrap_or(0)))
            .collect();
        assert_eq!(got, want, "{}:\n{err}", path.display());
        assert_eq!(
            err.errors.len(),
            want.len(),
            "{}: duplicates",
            path.display()
        );
    }
}

#[test]
fn caly_pipeline_check_prints_each_error_with_file_and_line_and_exits_1() {
    for path in files("fixtures/pipelines", "bad_") {
        let out = Command::new(env!("CARGO_BIN_EXE_caly"))
            .args(["pipeline", "check"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", path.display());
        let stdout = String::from_utf8(out.stdout).unwrap();
        let shown: BTreeSet<(String, usize)> = stdout
            .lines()
            .map(|l| {
                // <file>:<line>: error[<code>]: …
                let rest = l
                    .strip_prefix(&format!("{}:", path.display()))
                    .unwrap_or_else(|| panic!("{l}"));
                let (line, rest) = rest.split_once(": error[").unwrap();
                let code = rest.split(']').next().unwrap();
                (code.to_owned(), line.parse().unwrap())
            })
            .collect();
        assert_eq!(shown, expected(&path), "{stdout}");
    }
    let ok = Command::new(env!("CARGO_BIN_EXE_caly"))
        .args(["pipeline", "check"])
        .args(files("pipelines", ""))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
}

#[test]
fn caly_pipeline_graph_prints_formats_rings_and_latency() {
    for format in ["dot", "mermaid"] {
        let out = Command::new(env!("CARGO_BIN_EXE_caly"))
            .args(["pipeline", "graph", "--format", format])
            .arg(repo("pipelines/front_half.toml"))
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("pcm16 24000 Hz · fused"), "{text}");
        assert!(
            text.contains("pcm16le 8000 Hz · ring 200 ms drop_oldest"),
            "{text}"
        );
        assert!(
            text.contains("caller → decode → resample → vad → sink: +10.0 ms"),
            "{text}"
        );
    }
}
