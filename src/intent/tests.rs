//! Classifier tests: normalisation through to the decision.

use super::*;

fn classify(text: &str) -> Prediction {
    Classifier::builtin().unwrap().classify(text)
}
