//! Exotel AgentStream (PROTOCOLS.md §1): the wire types ([`wire`]), Exotel's rules for bot
//! audio ([`CHUNK_RULES`]), and the WebSocket adapter that makes a stream a
//! [`crate::call::Transport`] ([`adapter`]).

pub(crate) mod adapter;
pub mod wire;

use std::time::Duration;

use crate::call::playout::ChunkRules;

/// Exotel's rules for outbound `media` (PROTOCOLS.md §1.7): every chunk a multiple of 320
/// bytes, at least 3,200 and at most 100,000. We send 100 ms per chunk: 3,200 bytes at 8/16
/// kHz (the minimum wins at 8 kHz, 200 ms) and 4,800 at 24 kHz.
pub const CHUNK_RULES: ChunkRules = ChunkRules {
    min_bytes: 3200,
    max_bytes: 100_000,
    align: 320,
    target: Duration::from_millis(100),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_follow_exotels_rules_at_every_rate() {
        assert_eq!(CHUNK_RULES.chunk_bytes(8000), 3200);
        assert_eq!(CHUNK_RULES.chunk_bytes(16000), 3200);
        assert_eq!(CHUNK_RULES.chunk_bytes(24000), 4800);
        for len in [1, 319, 320, 3199, 3200, 3201, 4000, 200_000] {
            let p = CHUNK_RULES.padded(len);
            assert_eq!(p % 320, 0, "{len}");
            assert!((3200..=100_000).contains(&p), "{len} -> {p}");
            assert!(p >= len.min(99_840));
        }
    }
}
