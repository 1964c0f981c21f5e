//! Publishing at a pace: from many tasks at once, or from one until stopped.

use std::time::{Duration, Instant};

use flow_events_core::{EventId, EventSink, PublishOutcome, Resilient};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::received::numbered;

/// What the publishing tasks of [`publish_paced`] saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Published {
    /// Publishes answered [`PublishOutcome::Confirmed`].
    pub confirmed: u64,
    /// Publishes answered [`PublishOutcome::Buffered`].
    pub buffered: u64,
    /// The longest a `publish` call took.
    pub longest: Duration,
    /// How long publishing took.
    pub took: Duration,
}

impl std::fmt::Display for Published {
    /// For the figures a fault test prints: how long publishing took and
    /// how the publishes were answered.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "in {:?} ({} confirmed at once, {} buffered, longest publish {:?})",
            self.took, self.confirmed, self.buffered, self.longest
        )
    }
}

/// Publishes the events `0..n` of [`numbered`] from `tasks` tasks, each one
/// event per `pace`; every publish must be accepted (confirmed or buffered).
pub async fn publish_paced(publisher: &Resilient, n: u64, tasks: u64, pace: Duration) -> Published {
    let started = Instant::now();
    let step = usize::try_from(tasks).unwrap_or_else(|_| panic!("{tasks} tasks"));
    let mut set = tokio::task::JoinSet::new();
    for first in 0..tasks {
        let publisher = publisher.clone();
        set.spawn(async move {
            let mut mine = Published::default();
            let mut tick = tokio::time::interval(pace);
            for seq in (first..n).step_by(step) {
                tick.tick().await;
                let one = Instant::now();
                match publisher.publish(numbered(seq)).await {
                    Ok(PublishOutcome::Confirmed) => mine.confirmed += 1,
                    Ok(PublishOutcome::Buffered { .. }) => mine.buffered += 1,
                    other => panic!("event {seq}: {other:?}"),
                }
                mine.longest = mine.longest.max(one.elapsed());
            }
            mine
        });
    }
    let mut all = Published::default();
    while let Some(done) = set.join_next().await {
        let mine = done.unwrap_or_else(|e| panic!("a publishing task: {e}"));
        all.confirmed += mine.confirmed;
        all.buffered += mine.buffered;
        all.longest = all.longest.max(mine.longest);
    }
    all.took = started.elapsed();
    all
}

/// What the task of [`publish_until`] was answered.
#[derive(Debug, Default)]
pub struct Calls {
    /// The ids of the events published, in order.
    pub ids: Vec<EventId>,
    /// Publishes answered [`PublishOutcome::Confirmed`].
    pub confirmed: usize,
    /// Publishes answered [`PublishOutcome::Buffered`].
    pub buffered: usize,
    /// The longest a `publish` call took.
    pub slowest: Duration,
}

/// A task that publishes the events `seqs` of [`numbered`], one every
/// `pace`, until they are all published or `stop` is cancelled; every
/// publish must be accepted (confirmed or buffered).
pub fn publish_until(
    publisher: Resilient,
    seqs: impl IntoIterator<Item = u64, IntoIter: Send> + Send + 'static,
    pace: Duration,
    stop: CancellationToken,
) -> JoinHandle<Calls> {
    tokio::spawn(async move {
        let mut calls = Calls::default();
        let mut tick = tokio::time::interval(pace);
        for seq in seqs {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let event = numbered(seq);
            let id = event.id();
            let started = Instant::now();
            let outcome = publisher.publish(event).await;
            calls.slowest = calls.slowest.max(started.elapsed());
            match outcome {
                Ok(PublishOutcome::Confirmed) => calls.confirmed += 1,
                Ok(PublishOutcome::Buffered { .. }) => calls.buffered += 1,
                other => panic!("event {seq}: {other:?}"),
            }
            calls.ids.push(id);
        }
        calls
    })
}

/// Publishes the events `seqs` of [`numbered`] one at a time; each must be
/// confirmed.
pub async fn publish_each_confirmed(publisher: &Resilient, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        let outcome = publisher.publish(numbered(seq)).await;
        assert!(
            matches!(outcome, Ok(PublishOutcome::Confirmed)),
            "event {seq}: {outcome:?}"
        );
    }
}
