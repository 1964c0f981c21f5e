//! Exponential backoff with full jitter.
//!
//! `delay(n) = random(0, min(cap, base * 2^(n-1)))` for the n-th consecutive
//! failure (n from 1), as in the AWS architecture blog's "full jitter". Written
//! here rather than taken from `backon` because backon's jitter adds to the
//! exponential delay instead of drawing the whole delay at random, and the
//! bound `[0, min(cap, base * 2^n)]` is what this crate promises.

use std::time::Duration;

/// The upper bound of the delay after the `failures`-th consecutive failure.
pub(crate) fn ceiling(base: Duration, cap: Duration, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(32);
    base.checked_mul(1u32 << exp.min(31))
        .map_or(cap, |d| d.min(cap))
}

/// A random delay in `[0, ceiling]` after the `failures`-th consecutive failure.
pub(crate) fn delay(base: Duration, cap: Duration, failures: u32) -> Duration {
    let top = ceiling(base, cap, failures);
    let nanos = u64::try_from(top.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_then_caps() {
        let base = Duration::from_secs(5);
        let cap = Duration::from_secs(60);
        let got: Vec<u64> = (1..=7).map(|n| ceiling(base, cap, n).as_secs()).collect();
        assert_eq!(got, [5, 10, 20, 40, 60, 60, 60]);
        assert_eq!(ceiling(base, cap, u32::MAX), cap);
    }

    #[test]
    fn delays_stay_within_bounds() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        for n in 1..=40 {
            let top = ceiling(base, cap, n);
            for _ in 0..200 {
                let d = delay(base, cap, n);
                assert!(d <= top, "failure {n}: {d:?} > {top:?}");
            }
        }
    }

    #[test]
    fn delays_are_spread() {
        let base = Duration::from_secs(1);
        let samples: Vec<Duration> = (0..100).map(|_| delay(base, base, 1)).collect();
        let below_half = samples.iter().filter(|d| **d < base / 2).count();
        assert!(below_half > 10 && below_half < 90, "{below_half}");
    }
}
