//! A subscription's retry policy: how many attempts an event gets and how
//! long it waits before each retry.

use std::time::Duration;

use crate::source::Decision;

/// The longest a reason for dead-lettering is kept, in bytes: a longer one is
/// cut at a character boundary.
pub const MAX_REASON_BYTES: usize = 1024;

/// How a subscription retries: the attempts an event gets before it is
/// dead-lettered, and the delay before each retry, growing exponentially
/// from a first delay by a factor up to a cap, with or without jitter.
///
/// The delay after attempt `n` fails is `min(cap, first * factor^(n-1))`;
/// with jitter, a random delay between half of that and all of it ("equal
/// jitter"), so that consumers failing together do not come back together.
/// A handler that knows better answers [`Decision::RetryAfter`], and that
/// delay is kept as it is.
///
/// ```
/// use std::time::Duration;
/// use flow_events_core::{Decision, RetryPolicy};
///
/// let policy = RetryPolicy::exponential(Duration::from_millis(200))
///     .with_factor(2.0)
///     .with_max_delay(Duration::from_secs(30))
///     .with_jitter(false)
///     .with_max_attempts(4);
/// assert_eq!(policy.delay(1), Duration::from_millis(200));
/// assert_eq!(policy.delay(3), Duration::from_millis(800));
/// assert_eq!(policy.settle(Decision::Retry, 2), Decision::RetryAfter(Duration::from_millis(400)));
/// assert!(matches!(policy.settle(Decision::Retry, 4), Decision::Reject(_)));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    first: Duration,
    factor: f64,
    cap: Duration,
    jitter: bool,
}

// `factor` is never NaN (see `with_factor`), so equality is an equivalence.
impl Eq for RetryPolicy {}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::immediate()
    }
}

impl RetryPolicy {
    /// Retries at once (the broker delivers the event again without delay),
    /// 5 attempts. The default.
    pub fn immediate() -> Self {
        Self {
            max_attempts: 5,
            first: Duration::ZERO,
            factor: 2.0,
            cap: Duration::from_secs(300),
            jitter: false,
        }
    }

    /// Retries after `first`, then growing by a factor of 2 up to 5 minutes,
    /// with jitter, 5 attempts.
    pub fn exponential(first: Duration) -> Self {
        Self {
            first,
            jitter: true,
            ..Self::immediate()
        }
    }

    /// Deliveries of one event before a retry becomes a dead letter, at
    /// least 1. Default: 5.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The delay before the first retry. Default: zero for
    /// [`immediate`](Self::immediate), the given one for
    /// [`exponential`](Self::exponential).
    pub fn with_first_delay(mut self, first: Duration) -> Self {
        self.first = first;
        self
    }

    /// The factor each delay grows by, at least 1 (a NaN counts as 1).
    /// Default: 2.
    pub fn with_factor(mut self, factor: f64) -> Self {
        self.factor = if factor.is_nan() {
            1.0
        } else {
            factor.max(1.0)
        };
        self
    }

    /// The longest delay. Default: 5 minutes.
    pub fn with_max_delay(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// Whether each delay is drawn at random between half of it and all of
    /// it. Default: on for [`exponential`](Self::exponential).
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// The attempts an event gets.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delay before the retry that follows failed attempt `attempt`
    /// (from 1). Written here rather than taken from `backon`, whose
    /// backoffs are iterators with state: the attempt comes with the message
    /// (a header), so the delay has to follow from the attempt alone.
    pub fn delay(&self, attempt: u32) -> Duration {
        if self.first.is_zero() {
            return Duration::ZERO;
        }
        let exp = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.first.as_secs_f64() * self.factor.powi(exp);
        let full = if secs.is_finite() && secs < self.cap.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            self.cap
        };
        if self.jitter {
            let half = full / 2;
            half + half.mul_f64(fastrand::f64())
        } else {
            full
        }
    }

    /// What becomes of a handler's `decision` on attempt `attempt`: a retry
    /// after the last attempt is a [`Decision::Reject`] saying so; a plain
    /// [`Decision::Retry`] waits for this policy's delay
    /// ([`Decision::RetryAfter`], or `Retry` when the delay is zero); a
    /// reject's reason is cut to [`MAX_REASON_BYTES`]. Consumers call this
    /// before settling a delivery.
    pub fn settle(&self, decision: Decision, attempt: u32) -> Decision {
        match decision {
            Decision::Retry | Decision::RetryAfter(_) if attempt >= self.max_attempts => {
                Decision::Reject(format!("still failing after {attempt} attempts"))
            }
            Decision::Retry => match self.delay(attempt) {
                d if d.is_zero() => Decision::Retry,
                d => Decision::RetryAfter(d),
            },
            Decision::RetryAfter(d) if d.is_zero() => Decision::Retry,
            Decision::Reject(reason) => Decision::Reject(truncate_reason(reason)),
            other => other,
        }
    }

    /// What becomes of a delivery whose handler panicked with `message` on
    /// attempt `attempt`: retried as a [`Decision::Retry`] would be, or on
    /// the last attempt dead-lettered saying it panicked.
    pub fn settle_panic(&self, message: &str, attempt: u32) -> Decision {
        if attempt >= self.max_attempts {
            Decision::Reject(truncate_reason(format!(
                "handler panicked on attempt {attempt}: {message}"
            )))
        } else {
            self.settle(Decision::Retry, attempt)
        }
    }
}

/// The message of a panic's payload, when it is text.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// `reason` cut to at most [`MAX_REASON_BYTES`] bytes at a character boundary.
pub fn truncate_reason(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_the_factor_up_to_the_cap() {
        let p = RetryPolicy::exponential(Duration::from_millis(100))
            .with_factor(3.0)
            .with_max_delay(Duration::from_secs(1))
            .with_jitter(false);
        let got: Vec<u128> = (1..=5).map(|n| p.delay(n).as_millis()).collect();
        assert_eq!(got, [100, 300, 900, 1000, 1000]);
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(1));
        assert_eq!(RetryPolicy::immediate().delay(3), Duration::ZERO);
    }

    #[test]
    fn jitter_stays_between_half_and_whole() {
        let p = RetryPolicy::exponential(Duration::from_millis(400));
        let mut below = 0;
        for _ in 0..500 {
            let d = p.delay(2);
            assert!(d >= Duration::from_millis(400) && d <= Duration::from_millis(800));
            below += usize::from(d < Duration::from_millis(600));
        }
        assert!(
            below > 50 && below < 450,
            "spread: {below} of 500 below 600 ms"
        );
    }

    #[test]
    fn a_nan_or_shrinking_factor_is_one() {
        let p = RetryPolicy::exponential(Duration::from_millis(10)).with_jitter(false);
        assert_eq!(p.clone().with_factor(f64::NAN).delay(4), p.delay(1));
        assert_eq!(p.clone().with_factor(0.5).delay(4), p.delay(1));
    }

    #[test]
    fn settling_follows_the_attempts() {
        let p = RetryPolicy::immediate().with_max_attempts(3);
        assert_eq!(p.settle(Decision::Retry, 2), Decision::Retry);
        let asked = Decision::RetryAfter(Duration::from_secs(7));
        assert_eq!(p.settle(asked.clone(), 2), asked);
        assert_eq!(
            p.settle(Decision::RetryAfter(Duration::ZERO), 1),
            Decision::Retry
        );
        assert_eq!(
            p.settle(asked, 3),
            Decision::Reject("still failing after 3 attempts".into())
        );
        assert_eq!(p.settle(Decision::Ack, 9), Decision::Ack);
    }

    #[test]
    fn reasons_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_REASON_BYTES);
        let cut = truncate_reason(long);
        assert!(cut.len() <= MAX_REASON_BYTES && cut.len() >= MAX_REASON_BYTES - 1);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate_reason("short".into()), "short");
    }
}
