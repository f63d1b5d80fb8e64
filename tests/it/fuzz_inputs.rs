//! Every kept fuzz input (the seed corpus and the crash regressions) through the fuzz
//! targets' entry points: none may panic.

use crate::helpers::repo;

#[test]
fn every_seed_and_every_past_crash_runs_through_its_target_without_panicking() {
    for (name, target) in caly::testing::fuzzing::TARGETS {
        let mut inputs = Vec::new();
        for dir in [
            format!("fuzz/corpus/{name}"),
            format!("fuzz/regressions/{name}"),
        ] {
            let Ok(entries) = std::fs::read_dir(repo(&dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                let kept = dir.contains("regressions") && !file.starts_with('.');
                if file.starts_with("seed-") || kept {
                    inputs.push(entry.path());
                }
            }
        }
        assert!(!inputs.is_empty(), "{name} has no seed inputs");
        for path in inputs {
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} panicked on {}", path.display());
        }
    }
}
