//! The `vad` stage against ground truth: every utterance of the speech fixtures found with onset
//! and offset within 100 ms, nothing in silence or steady noise. Prints frame accuracy
//! (`cargo test --test it vad_accuracy -- --nocapture`), which the README quotes.

use std::path::Path;

use caly::devtools::replay::{self, ReplayOptions, Segment};
use caly::testing::{signal, write_wav_mono};

use crate::helpers::{init, repo};

const TOLERANCE_S: f64 = 0.100;

fn truth() -> serde_json::Value {
    let text = std::fs::read_to_string(repo("fixtures/audio/truth.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

async fn detect(path: &Path) -> (Vec<Segment>, f64) {
    init();
    let options = ReplayOptions {
        pipeline: repo("pipelines/front_half.toml"),
        sample_rate: None,
    };
    let report = replay::run(path, &options).await.unwrap();
    assert_eq!(report.outcome, caly::engine::pipeline::Outcome::Completed);
    (report.segments, report.audio_seconds)
}

/// Share of 10 ms frames whose speech/non-speech label matches the truth.
fn frame_accuracy(found: &[Segment], truth: &[Segment], seconds: f64) -> (usize, usize) {
    let frames = (seconds * 100.0) as usize;
    let inside = |segs: &[Segment], t: f64| segs.iter().any(|s| s.start <= t && t < s.end);
    let right = (0..frames)
        .filter(|i| {
            let t = (*i as f64 + 0.5) / 100.0;
            inside(found, t) == inside(truth, t)
        })
        .count();
    (right, frames)
}

#[tokio::test]
async fn vad_finds_every_utterance_within_100_ms_of_the_truth() {
    let truth = truth();
    let mut total = (0, 0);
    for file in [
        "speech_en_hi_8k.wav",
        "speech_en_hi_noisy_16k.wav",
        "backchannel_haan_hmm_16k.wav",
        "dither_then_speech_hi_8k.wav",
    ] {
        let want: Vec<Segment> = truth[file]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Segment {
                start: s["start"].as_f64().unwrap(),
                end: s["end"].as_f64().unwrap(),
            })
            .collect();
        let (found, seconds) = detect(&repo(&format!("fixtures/audio/{file}"))).await;
        assert_eq!(
            found.len(),
            want.len(),
            "{file}: found {found:?}, truth {want:?}"
        );
        for (f, w) in found.iter().zip(&want) {
            assert!(
                (f.start - w.start).abs() <= TOLERANCE_S && (f.end - w.end).abs() <= TOLERANCE_S,
                "{file}: found {:.3}–{:.3} s, truth {:.3}–{:.3} s",
                f.start,
                f.end,
                w.start,
                w.end
            );
            println!(
                "{file}: onset {:+4.0} ms, offset {:+4.0} ms",
                (f.start - w.start) * 1000.0,
                (f.end - w.end) * 1000.0
            );
        }
        let (right, frames) = frame_accuracy(&found, &want, seconds);
        println!(
            "{file}: frame accuracy {:.1}% ({right}/{frames})",
            100.0 * right as f64 / frames as f64
        );
        total = (total.0 + right, total.1 + frames);
    }
    let accuracy = total.0 as f64 / total.1 as f64;
    println!(
        "all speech fixtures: frame accuracy {:.1}%",
        accuracy * 100.0
    );
    assert!(accuracy > 0.95, "frame accuracy {accuracy:.3}");
}

#[tokio::test]
async fn vad_reports_no_speech_in_steady_noise_or_silence() {
    let (noise, _) = detect(&repo("fixtures/audio/noise_pink_8k.wav")).await;
    assert!(noise.is_empty(), "pink noise: {noise:?}");
    let dir = std::env::temp_dir().join(format!("caly-vad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, rate, samples) in [
        ("silence_8k.wav", 8000, signal::silence(8000, 4.0)),
        (
            "white_noise_8k.wav",
            8000,
            signal::noise(8000, 4.0, 0.05, 3),
        ),
        (
            "white_noise_24k.wav",
            24000,
            signal::noise(24000, 4.0, 0.02, 4),
        ),
    ] {
        let path = dir.join(name);
        write_wav_mono(&path, rate, &samples).unwrap();
        let (found, _) = detect(&path).await;
        assert!(found.is_empty(), "{name}: {found:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn backchannels_are_speech_but_never_long_enough_to_barge_in() {
    let options = ReplayOptions {
        pipeline: repo("pipelines/front_half.toml"),
        sample_rate: None,
    };
    let report = replay::run(
        &repo("fixtures/audio/backchannel_haan_hmm_16k.wav"),
        &options,
    )
    .await
    .unwrap();
    let started = report
        .events
        .iter()
        .filter(|(_, e)| matches!(e, caly::engine::frame::Event::SpeechStarted { .. }))
        .count();
    let confirmed = report
        .events
        .iter()
        .filter(|(_, e)| matches!(e, caly::engine::frame::Event::SpeechConfirmed { .. }))
        .count();
    assert_eq!((started, confirmed), (2, 0), "{:?}", report.events);
    // The same words inside a long sentence are confirmed.
    let long = replay::run(&repo("fixtures/audio/speech_en_hi_8k.wav"), &options)
        .await
        .unwrap();
    let confirmed = long
        .events
        .iter()
        .filter(|(_, e)| matches!(e, caly::engine::frame::Event::SpeechConfirmed { .. }))
        .count();
    assert_eq!(confirmed, 4);
}

#[tokio::test]
async fn over_a_reply_every_sentence_can_barge_in_and_no_backchannel_does() {
    // Hindi, Indian-English and English sentences, and quick "haan", "hmm", "achha", "ji", as
    // a caller says them while the bot talks (`fixtures/generate.py`, `OVERLAP`).
    let options = ReplayOptions {
        pipeline: repo("pipelines/front_half.toml"),
        sample_rate: None,
    };
    let file = "overlap_speech_hi_en_8k.wav";
    let report = replay::run(&repo(&format!("fixtures/audio/{file}")), &options)
        .await
        .unwrap();
    let truth = truth();
    let items = truth[file].as_array().unwrap();
    let confirmed: Vec<f64> = report
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            caly::engine::frame::Event::SpeechConfirmed { at } => Some(at.as_secs_f64()),
            _ => None,
        })
        .collect();
    let of_kind = |kind: &str| {
        items
            .iter()
            .filter(|i| i["kind"] == kind)
            .map(|i| (i["start"].as_f64().unwrap(), i["end"].as_f64().unwrap()))
            .collect::<Vec<_>>()
    };
    let sentences = of_kind("speech");
    let backchannels = of_kind("backchannel");
    assert!(sentences.len() >= 6 && backchannels.len() >= 4, "{items:?}");
    assert_eq!(
        confirmed.len(),
        sentences.len(),
        "{confirmed:?} vs {sentences:?}"
    );
    for (at, (start, _)) in confirmed.iter().zip(&sentences) {
        assert!(
            (at - start).abs() <= TOLERANCE_S,
            "confirmed onset {at:.3} s, sentence at {start:.3} s"
        );
    }
    for (start, end) in &backchannels {
        assert!(
            !confirmed
                .iter()
                .any(|at| at >= &(start - TOLERANCE_S) && at <= end),
            "a backchannel at {start:.3} s was taken for a barge-in: {confirmed:?}"
        );
    }
}
