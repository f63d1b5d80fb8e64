//! `caly replay` on a WAV and on an Exotel capture, through the real binary.

use std::process::Command;

use crate::helpers::repo;

fn replay(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_caly"))
        .arg("replay")
        .args(args)
        .current_dir(repo(""))
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn replaying_an_exotel_capture_prints_the_timeline_and_skips_bad_lines() {
    let (ok, text) = replay(&["fixtures/exotel/call_pcm16_8k.jsonl"]);
    assert!(ok, "{text}");
    assert!(text.contains("(8000 Hz, 16.05 s of audio)"), "{text}");
    assert!(text.contains("skipped 2 malformed capture lines"), "{text}");
    assert!(text.contains("speech segments (4):"), "{text}");
    assert_eq!(text.matches("speech started").count(), 4, "{text}");
    assert!(text.contains("drops: none"), "{text}");
    for stage in ["caller", "decode", "resample", "vad", "sink"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(stage) && l.ends_with("µs")),
            "{stage}: {text}"
        );
    }
    assert!(text.contains(": completed"), "{text}");
}

#[test]
fn a_capture_and_the_wav_it_was_made_from_give_the_same_segments() {
    let (_, wav) = replay(&["fixtures/audio/speech_en_hi_8k.wav", "--json"]);
    let (_, capture) = replay(&["fixtures/exotel/call_pcm16_8k.jsonl", "--json"]);
    let wav: serde_json::Value = serde_json::from_str(&wav).unwrap();
    let capture: serde_json::Value = serde_json::from_str(&capture).unwrap();
    assert_eq!(wav["segments"], capture["segments"]);
    assert_eq!(wav["segments"].as_array().unwrap().len(), 4);
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_caly"))
        .args(["replay", "no/such/file.wav"])
        .current_dir(repo(""))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("cannot read no/such/file.wav"), "{err}");
}
