//! Exponential backoff with jitter, for every retry loop (Realtime reconnects, Shopify).

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// `initial × 2^(attempt−1)`, capped at `max`, then scaled by a random factor in [0.5, 1.5)
/// so that calls retrying together spread out. `attempt` starts at 1.
pub fn delay(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = initial
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(max);
    exp.mul_f64(0.5 + unit())
}

/// A random number in [0, 1). std's `RandomState` is seeded from the OS once per thread and
/// advanced per instance, which is all the randomness jitter needs.
fn unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_within_half() {
        let (i, m) = (Duration::from_millis(100), Duration::from_millis(1000));
        for attempt in 1..10 {
            let base = (100u64 << (attempt - 1)).min(1000);
            let d = delay(i, m, attempt).as_millis() as u64;
            assert!(
                d >= base / 2 && d < base * 3 / 2 + 1,
                "attempt {attempt}: {d} ms"
            );
        }
        let spread: std::collections::HashSet<u128> =
            (0..20).map(|_| delay(i, m, 3).as_micros()).collect();
        assert!(spread.len() > 10, "jitter varies: {spread:?}");
    }
}
