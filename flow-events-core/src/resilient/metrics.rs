//! What the decorator and its consumers report through the `metrics` facade
//! (feature `metrics`): one function or counter per thing that happens, so
//! that the publish path, the drain and the consume loop each report in one
//! line. Without the feature, the counters are plain atomics (for the status)
//! and the rest does nothing.
//!
//! The names are in [`crate::metrics`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::error::PublishError;
use crate::metrics as names;
use crate::sink::PublishOutcome;
use crate::source::Decision;

use super::service::Resilient;
use super::shared::Shared;

/// A count kept for the status and reported as a counter. It has the
/// interface of the `AtomicU64` it wraps, so that a call site reads as before.
pub(crate) struct Counted {
    value: AtomicU64,
    #[cfg(feature = "metrics")]
    metric: ::metrics::Counter,
}

impl Counted {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn new(name: &'static str) -> Self {
        Self {
            value: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            metric: ::metrics::counter!(name),
        }
    }

    pub(crate) fn fetch_add(&self, n: u64, order: Ordering) -> u64 {
        #[cfg(feature = "metrics")]
        self.metric.increment(n);
        self.value.fetch_add(n, order)
    }

    pub(crate) fn load(&self, order: Ordering) -> u64 {
        self.value.load(order)
    }

    pub(crate) fn store(&self, n: u64, order: Ordering) {
        #[cfg(feature = "metrics")]
        self.metric.absolute(n);
        self.value.store(n, order);
    }
}

impl fmt::Debug for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.value, f)
    }
}

/// The counters of a sink, shown in its status and reported as metrics.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) published: Counted,
    pub(crate) confirmed: Counted,
    pub(crate) buffered: Counted,
    /// Buffered events confirmed (the drain).
    pub(crate) drained: Counted,
    pub(crate) failed: Counted,
    pub(crate) dropped: Counted,
    pub(crate) expired: Counted,
    pub(crate) refused: Counted,
    pub(crate) unreadable: Counted,
    pub(crate) reconnects: Counted,
    latency: PublishLatency,
}

impl Default for Counters {
    fn default() -> Self {
        #[cfg(feature = "metrics")]
        names::describe();
        Self {
            published: Counted::new(names::PUBLISHED_TOTAL),
            confirmed: Counted::new(names::CONFIRMED_TOTAL),
            buffered: Counted::new(names::BUFFERED_TOTAL),
            drained: Counted::new(names::DRAINED_TOTAL),
            failed: Counted::new(names::FAILED_TOTAL),
            dropped: Counted::new(names::DROPPED_TOTAL),
            expired: Counted::new(names::EXPIRED_TOTAL),
            refused: Counted::new(names::REFUSED_TOTAL),
            unreadable: Counted::new(names::UNREADABLE_TOTAL),
            reconnects: Counted::new(names::RECONNECTS_TOTAL),
            latency: PublishLatency::new(),
        }
    }
}

impl Counters {
    /// A publish call answered `result` after `took`.
    pub(crate) fn publish_answered(
        &self,
        result: &Result<PublishOutcome, PublishError>,
        took: Duration,
    ) {
        self.latency.observe(result, took);
    }

    /// A buffered event was confirmed.
    pub(crate) fn drained(&self) {
        self.drained.fetch_add(1, Ordering::Relaxed);
        self.confirmed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The publish latency histogram, one series per outcome.
struct PublishLatency {
    #[cfg(feature = "metrics")]
    by_outcome: [::metrics::Histogram; 4],
}

impl fmt::Debug for PublishLatency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishLatency").finish_non_exhaustive()
    }
}

impl PublishLatency {
    #[cfg(feature = "metrics")]
    const OUTCOMES: [&'static str; 4] = ["confirmed", "buffered", "dropped", "refused"];

    fn new() -> Self {
        Self {
            #[cfg(feature = "metrics")]
            by_outcome: Self::OUTCOMES.map(
                |outcome| ::metrics::histogram!(names::PUBLISH_DURATION, "outcome" => outcome),
            ),
        }
    }

    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn observe(&self, result: &Result<PublishOutcome, PublishError>, took: Duration) {
        #[cfg(feature = "metrics")]
        {
            let i = match result {
                Ok(PublishOutcome::Confirmed) => 0,
                Ok(PublishOutcome::Buffered { .. }) => 1,
                Ok(_) => 2,
                Err(_) => 3,
            };
            self.by_outcome[i].record(took.as_secs_f64());
        }
    }
}

/// How often the gauges are set from the sink's state while it runs (a
/// scrape through `Resilient::record_metrics` sets them at once).
const GAUGE_PERIOD: Duration = Duration::from_secs(1);

/// Sets the gauges (state, pending events and bytes, oldest pending age...)
/// from the sink's state.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn record_gauges(shared: &Shared) {
    #[cfg(feature = "metrics")]
    {
        let (state, blocked, pending, bytes, oldest, attempts) = {
            let inner = shared.lock();
            (
                shared.state(),
                inner.blocked,
                inner.buffer.len(),
                inner.buffer.bytes(),
                inner.buffer.oldest(),
                inner.reconnect_attempts,
            )
        };
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        ::metrics::gauge!(names::CONNECTION_STATE).set(state.as_metric() as f64);
        ::metrics::gauge!(names::CONNECTED)
            .set(flag(state == crate::monitor::ConnectionState::Connected));
        ::metrics::gauge!(names::BLOCKED).set(flag(blocked));
        ::metrics::gauge!(names::PENDING_EVENTS).set(pending as f64);
        ::metrics::gauge!(names::PENDING_BYTES).set(bytes as f64);
        ::metrics::gauge!(names::OLDEST_PENDING_AGE)
            .set(oldest.map_or(0.0, |t| t.elapsed().as_secs_f64()));
        ::metrics::gauge!(names::RECONNECT_ATTEMPTS).set(f64::from(attempts));
    }
}

impl Resilient {
    /// Sets the gauges (state, pending events and bytes, age of the oldest
    /// pending event...) from the state now. The decorator sets them every
    /// second while it runs; an exporter that renders on scrape calls this
    /// first, so that they are exact. Without the `metrics` feature it does
    /// nothing.
    pub fn record_metrics(&self) {
        record_gauges(&self.shared);
    }
}

/// Runs `supervisor` and, beside it in the same task, sets the gauges every
/// [`GAUGE_PERIOD`] until the sink stops: whoever awaits the supervisor's
/// task (shutdown) knows that nothing holds the sink's state any more.
pub(crate) fn with_gauges<F>(
    shared: &Arc<Shared>,
    supervisor: F,
) -> impl Future<Output = ()> + use<F>
where
    F: Future<Output = ()>,
{
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let cancel = shared.cancel.clone();
    let gauges = async move {
        if !cfg!(feature = "metrics") {
            return;
        }
        let mut tick = tokio::time::interval(GAUGE_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = tick.tick() => match weak.upgrade() {
                    Some(shared) => record_gauges(&shared),
                    None => break,
                },
            }
        }
        // A last reading, so that a stopped sink shows its final state.
        if let Some(shared) = weak.upgrade() {
            record_gauges(&shared);
        }
    };
    async move {
        tokio::join!(supervisor, gauges);
    }
}

/// The metrics of one subscription: what its consume loop reports.
pub(crate) struct ConsumerMetrics {
    #[cfg(feature = "metrics")]
    handles: ConsumerHandles,
}

#[cfg(feature = "metrics")]
struct ConsumerHandles {
    delivered: ::metrics::Counter,
    duplicates: ::metrics::Counter,
    /// Ack, retry, reject, panic.
    handled: [::metrics::Counter; 4],
    retried: ::metrics::Counter,
    dead_lettered: ::metrics::Counter,
    duration: ::metrics::Histogram,
}

impl fmt::Debug for ConsumerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerMetrics").finish_non_exhaustive()
    }
}

/// What a handler call ended with, or what a delivery was settled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handled {
    /// Acknowledged.
    Ack,
    /// To be delivered again, at once or after a delay.
    Retry,
    /// Dead-lettered.
    Reject,
    /// The handler panicked.
    Panicked,
}

impl Handled {
    /// The kind of `decision`.
    pub(crate) fn of(decision: &Decision) -> Self {
        match decision {
            Decision::Ack => Self::Ack,
            Decision::Retry | Decision::RetryAfter(_) => Self::Retry,
            _ => Self::Reject,
        }
    }
}

impl ConsumerMetrics {
    /// The metrics of the subscription `name`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(name: &str) -> Self {
        #[cfg(feature = "metrics")]
        {
            let sub = name.to_owned();
            let counter =
                |metric: &'static str| ::metrics::counter!(metric, "subscription" => sub.clone());
            let handled = ["ack", "retry", "reject", "panic"].map(|decision| {
                ::metrics::counter!(names::HANDLED_TOTAL, "subscription" => sub.clone(), "decision" => decision)
            });
            Self {
                handles: ConsumerHandles {
                    delivered: counter(names::DELIVERED_TOTAL),
                    duplicates: counter(names::DUPLICATES_SKIPPED_TOTAL),
                    handled,
                    retried: counter(names::RETRIED_TOTAL),
                    dead_lettered: counter(names::DEAD_LETTERED_TOTAL),
                    duration: ::metrics::histogram!(names::HANDLER_DURATION, "subscription" => sub.clone()),
                },
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }

    /// A delivery arrived.
    pub(crate) fn delivered(&self) {
        #[cfg(feature = "metrics")]
        self.handles.delivered.increment(1);
    }

    /// A duplicate was acknowledged without calling the handler.
    pub(crate) fn duplicate(&self) {
        #[cfg(feature = "metrics")]
        self.handles.duplicates.increment(1);
    }

    /// The handler ended with `handled` after `took`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn handled(&self, handled: Handled, took: Duration) {
        #[cfg(feature = "metrics")]
        {
            let i = match handled {
                Handled::Ack => 0,
                Handled::Retry => 1,
                Handled::Reject => 2,
                Handled::Panicked => 3,
            };
            self.handles.handled[i].increment(1);
            self.handles.duration.record(took.as_secs_f64());
        }
    }

    /// The delivery is settled as `settled` (after the attempts bound).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn settled(&self, settled: Handled) {
        #[cfg(feature = "metrics")]
        match settled {
            Handled::Retry => self.handles.retried.increment(1),
            Handled::Reject => self.handles.dead_lettered.increment(1),
            Handled::Ack | Handled::Panicked => {}
        }
    }
}
