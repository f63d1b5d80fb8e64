//! Calls this server handed to a person, for the provider's flow to ask about right after the
//! stream closes (Exotel's Passthru applet: 302 for a hand-off). Bounded: the oldest entries
//! go first, and an entry counts only for [`KEEP_FOR`].

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most calls remembered.
const CAPACITY: usize = 10_000;
/// How long a hand-off is remembered: the flow asks within seconds.
const KEEP_FOR: Duration = Duration::from_secs(3600);
/// Longest call id kept.
const MAX_SID: usize = 128;

/// Recently handed-off calls, by the provider's call id.
#[derive(Debug, Default)]
pub struct HandOffs {
    recent: Mutex<VecDeque<(String, Instant)>>,
}

impl HandOffs {
    /// Remembers that `call_sid` was handed off now.
    pub fn insert(&self, call_sid: &str) {
        if call_sid.is_empty() || call_sid.len() > MAX_SID {
            return;
        }
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() >= CAPACITY {
            recent.pop_front();
        }
        recent.push_back((call_sid.to_owned(), Instant::now()));
    }

    /// Whether `call_sid` was handed off within the last hour.
    pub fn contains(&self, call_sid: &str) -> bool {
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        recent
            .iter()
            .rev()
            .any(|(sid, at)| sid == call_sid && at.elapsed() < KEEP_FOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_remembers_hand_offs_and_forgets_the_oldest_past_its_capacity() {
        let h = HandOffs::default();
        h.insert("first");
        assert!(h.contains("first"));
        assert!(!h.contains("other"));
        for i in 0..CAPACITY {
            h.insert(&format!("c{i}"));
        }
        assert!(!h.contains("first"));
        assert!(h.contains(&format!("c{}", CAPACITY - 1)));
        h.insert(&"x".repeat(MAX_SID + 1));
        assert!(!h.contains(&"x".repeat(MAX_SID + 1)));
    }
}
