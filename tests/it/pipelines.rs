//! Every shipped pipeline compiles; every bad fixture fails with exactly the errors its first
//! comment names, through the library and through `caly pipeline check`.

use std::collections::BTreeSet;
use std::process::Command;

use caly::engine::graph::{self, LoadError};
use caly::engine::registry::CompileOptions;

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
    let registry = caly::call::registry();
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
    let registry = caly::call::registry();
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
fn test_only_kinds_are_not_listed_and_caly_serve_refuses_a_pipeline_naming_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_caly"))
        .args(["pipeline", "kinds"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let listed = String::from_utf8(out.stdout).unwrap();
    assert!(
        listed.contains("call_audio") && listed.contains("realtime"),
        "{listed}"
    );
    for test_only in [
        "fail_after",
        "slow_sink",
        "say_lines",
        "hang_up",
        "offer_tools",
    ] {
        assert!(!listed.contains(test_only), "{test_only} listed:\n{listed}");
    }
    let dir = crate::helpers::TempDir::new("test_kind");
    let out = Command::new(env!("CARGO_BIN_EXE_caly"))
        .args(["serve", "--port", "0", "--pipeline"])
        .arg(repo("fixtures/pipelines/bad_test_kind.toml"))
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.0.join("caly.db").display()),
        )
        .env_remove("CALY_PIPELINE")
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve must refuse it");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad_test_kind.toml:12")
            && stderr.contains("unknown stage kind `fail_after`"),
        "{stderr}"
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
            text.contains("caller → decode → vad → resample → sink: +10.0 ms"),
            "{text}"
        );
    }
}

/// A pipeline on the retiring `gpt-realtime`, written to a temp dir.
fn retiring_pipeline(dir: &crate::helpers::TempDir) -> std::path::PathBuf {
    let path = dir.0.join("old_model.toml");
    std::fs::write(
        &path,
        "[pipeline]\nname = \"old\"\n[stages.caller]\nkind = \"call_audio\"\n[stages.decode]\nkind = \"decode\"\n[stages.r]\nkind = \"resample\"\nsample_rate = 24000\n[stages.voice]\nkind = \"realtime\"\nmodel = \"gpt-realtime\"\n[stages.playback]\nkind = \"call_playback\"\ninputs = [\"voice.audio\"]\n",
    )
    .unwrap();
    path
}

fn check_on(path: &std::path::Path, today: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_caly"))
        .args(["pipeline", "check"])
        .arg(path)
        .env("CALY_TODAY", today)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_retiring_model_is_a_warning_with_its_line_and_replacement_and_an_error_after_its_date() {
    let dir = crate::helpers::TempDir::new("models");
    let path = retiring_pipeline(&dir);
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .position(|l| l == "model = \"gpt-realtime\"")
        .unwrap()
        + 1;
    let (code, out) = check_on(&path, "2026-12-03");
    assert_eq!(code, Some(0), "{out}");
    let expected = format!("{}:{line}: warning[model]: stage `voice`: ", path.display());
    assert!(out.contains(&expected), "{out}");
    assert!(
        out.contains("2027-01-20") && out.contains("gpt-realtime-2.1"),
        "{out}"
    );
    let (code, out) = check_on(&path, "2027-01-20");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("{}:{line}: error[invalid_value]", path.display()))
            && out.contains("was shut down on 2027-01-20")
            && out.contains("gpt-realtime-2.1"),
        "{out}"
    );
    // The server refuses to start on it past the date, naming the replacement.
    let out = Command::new(env!("CARGO_BIN_EXE_caly"))
        .args(["serve", "--port", "0", "--pipeline"])
        .arg(&path)
        .env("CALY_TODAY", "2027-01-21")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.0.join("caly.db").display()),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("was shut down") && stderr.contains("`gpt-realtime-2.1`"),
        "{stderr}"
    );
}

#[test]
fn reasoning_settings_are_refused_for_a_model_that_does_not_take_them() {
    let dir = crate::helpers::TempDir::new("models");
    let path = dir.0.join("no_reasoning.toml");
    std::fs::write(
        &path,
        "[pipeline]\nname = \"x\"\n[stages.caller]\nkind = \"call_audio\"\n[stages.decode]\nkind = \"decode\"\n[stages.r]\nkind = \"resample\"\nsample_rate = 24000\n[stages.voice]\nkind = \"realtime\"\nmodel = \"gpt-realtime-1.5\"\nreasoning_effort = \"high\"\nparallel_tool_calls = true\n[stages.playback]\nkind = \"call_playback\"\ninputs = [\"voice.audio\"]\n",
    )
    .unwrap();
    let (code, out) = check_on(&path, "2026-12-03");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(":13: error[invalid_value]") && out.contains("`reasoning_effort`"),
        "{out}"
    );
    assert!(
        out.contains(":14: error[invalid_value]") && out.contains("`parallel_tool_calls`"),
        "{out}"
    );
    // The default pipeline names no model with a shutdown date.
    let (code, out) = check_on(&repo("pipelines/default.toml"), "2027-06-01");
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("warning"), "{out}");
}
