//! Delayed retries without a broker plugin: per subscription, one delay queue
//! per delay tier, with a queue-level message TTL, dead-lettering back to the
//! subscription's queue through the default exchange.
//!
//! A queue-level TTL rather than a per-message one: RabbitMQ expires messages
//! only at the head of a queue, so mixed per-message delays in one queue
//! would block each other. The tiers are a fixed ladder (100 ms times powers
//! of the square root of 2, up to about 29 hours): a delay is rounded up to
//! the next tier (at most about 41 % more), and only the tiers a
//! subscription uses are declared, when it first uses them.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use flow_events_core::BackendError;
use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::errors::Scrub;
use crate::topology::{short, within};

/// The shortest tier, in milliseconds.
const FIRST_TIER_MS: f64 = 100.0;
/// Tiers in the ladder: the last is 100 ms * 2^20, about 29 hours.
const TIERS: u32 = 41;

/// The tier, in milliseconds, a retry after `delay` waits in: the smallest
/// one at least as long (the longest one for a longer delay).
pub(crate) fn tier_ms(delay: Duration) -> u64 {
    let asked = delay.as_secs_f64() * 1000.0;
    (0..TIERS)
        .map(tier)
        .find(|&t| t as f64 >= asked)
        .unwrap_or_else(|| tier(TIERS - 1))
}

/// Tier `k` in milliseconds: 100 ms * 2^(k/2), rounded.
fn tier(k: u32) -> u64 {
    // At most 100 * 2^20: far within u64 and exact for even k.
    (FIRST_TIER_MS * 2f64.powf(f64::from(k) / 2.0)).round() as u64
}

/// The delay queue of `queue` for the tier of `ms` milliseconds.
pub(crate) fn delay_queue(queue: &str, ms: u64) -> String {
    format!("{queue}.delay.{ms}ms")
}

/// Every delay queue the subscription queue `queue` may have, one per tier,
/// shortest first: for deleting a subscription with everything it declared.
///
/// ```
/// let names = flow_events_amqp::delay_queues("billing");
/// assert_eq!(names[0], "billing.delay.100ms");
/// assert!(names.contains(&"billing.delay.400ms".to_owned()));
/// ```
pub fn delay_queues(queue: &str) -> Vec<String> {
    (0..TIERS).map(|k| delay_queue(queue, tier(k))).collect()
}

/// The delay queues one subscription has declared on its channel.
#[derive(Debug, Default)]
pub(crate) struct DelayQueues {
    declared: Mutex<HashSet<u64>>,
}

impl DelayQueues {
    /// The delay queue for a retry of a message of `queue` after `delay`,
    /// declared on `channel` if this subscription has not declared it yet.
    pub(crate) async fn for_delay(
        &self,
        channel: &Channel,
        queue: &str,
        delay: Duration,
        limit: Duration,
        scrub: &Scrub,
    ) -> Result<ShortString, BackendError> {
        let ms = tier_ms(delay);
        let name = short("delay queue", &delay_queue(queue, ms))?;
        let known = self.declared.lock().is_ok_and(|d| d.contains(&ms));
        if !known {
            let mut args = FieldTable::default();
            args.insert(
                ShortString::from("x-message-ttl"),
                AMQPValue::LongLongInt(i64::try_from(ms).unwrap_or(i64::MAX)),
            );
            args.insert(
                ShortString::from("x-dead-letter-exchange"),
                AMQPValue::LongString(LongString::from("")),
            );
            args.insert(
                ShortString::from("x-dead-letter-routing-key"),
                AMQPValue::LongString(LongString::from(queue)),
            );
            within(
                limit,
                &format!("declaring delay queue {name}"),
                scrub,
                channel.queue_declare(
                    name.clone(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    args,
                ),
            )
            .await?;
            if let Ok(mut d) = self.declared.lock() {
                d.insert(ms);
            }
        }
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_to_a_tier() {
        let ms = |n| tier_ms(Duration::from_millis(n));
        assert_eq!(ms(1), 100);
        assert_eq!(ms(100), 100);
        assert_eq!(ms(101), 141);
        assert_eq!(ms(200), 200);
        assert_eq!(ms(400), 400);
        assert_eq!(ms(800), 800);
        assert_eq!(ms(1000), 1131);
        assert_eq!(ms(60_000), 72_408);
        assert_eq!(tier_ms(Duration::from_secs(10 * 86_400)), 104_857_600);
        for k in 1..TIERS {
            let (lo, hi) = (tier(k - 1) as f64, tier(k) as f64);
            assert!(hi > lo && hi / lo < 1.42, "tier {k}: {lo} -> {hi}");
        }
    }

    #[test]
    fn names_say_the_tier() {
        assert_eq!(delay_queue("billing", 400), "billing.delay.400ms");
    }
}
