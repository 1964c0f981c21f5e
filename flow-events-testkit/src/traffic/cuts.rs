//! Connections through a proxy cut at an interval, or partitioned, while
//! events flow.

use std::time::{Duration, Instant};

use flow_events_core::{ConnectionMonitor, Resilient};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    Calls, LONG, Published, a_later_event_arrives, assert_nothing_lost_to_cuts,
    publish_each_confirmed, publish_paced, publish_until,
};
use crate::proxy::ProxyHandle;
use crate::received::Received;
use crate::wait::until;

/// The events of the cut scenario ([`through_cuts`]).
pub const CUT_EVENTS: u64 = 10_000;
/// The publishing tasks of the cut scenario.
pub const CUT_TASKS: u64 = 64;
/// How often the cut scenario cuts every connection.
pub const CUT_EVERY: Duration = Duration::from_millis(300);
/// Each task of the cut scenario publishes one event per `CUT_PACE`: about
/// 2 000 events a second in all, so that publishing lasts a few seconds and
/// many cuts fall in it.
pub const CUT_PACE: Duration = Duration::from_millis(30);

/// What the cut scenario saw.
#[derive(Debug, Clone, Copy)]
pub struct Cuts {
    /// How the publishes were answered.
    pub published: Published,
    /// How many times every connection was cut.
    pub cuts: u32,
    /// From the first publish until every event was confirmed.
    pub confirmed: Duration,
    /// From the first publish until every event was delivered.
    pub delivered: Duration,
}

impl std::fmt::Display for Cuts {
    /// For the figures a fault test prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{CUT_EVENTS} events from {CUT_TASKS} tasks {}, {} cuts every {CUT_EVERY:?}; \
             all confirmed after {:?}, all delivered after {:?}",
            self.published, self.cuts, self.confirmed, self.delivered
        )
    }
}

/// The cut scenario: `publisher` publishes [`CUT_EVENTS`] events from
/// [`CUT_TASKS`] tasks (see [`publish_paced`]) while `proxy` cuts every
/// connection through it every [`CUT_EVERY`]; then waits until every event
/// is confirmed and `received` has them all, checks that none was lost
/// ([`assert_nothing_lost_to_cuts`]) and that a later event arrives too.
pub async fn through_cuts(proxy: ProxyHandle, publisher: &Resilient, received: &Received) -> Cuts {
    let cutter = Cutter::start(proxy, CUT_EVERY);
    let started = Instant::now();
    let published = publish_paced(publisher, CUT_EVENTS, CUT_TASKS, CUT_PACE).await;
    let cuts = cutter.stop().await;
    until("buffer drained", LONG, || {
        publisher.status().pending_events == 0
    })
    .await;
    let confirmed = started.elapsed();
    let all = usize::try_from(CUT_EVENTS).unwrap_or(usize::MAX);
    received.wait_distinct(all, LONG).await;
    let delivered = started.elapsed();
    assert_nothing_lost_to_cuts(publisher, &published, CUT_EVENTS);
    a_later_event_arrives(publisher, received, CUT_EVENTS).await;
    Cuts {
        published,
        cuts,
        confirmed,
        delivered,
    }
}

/// The start of the partition scenario: publishes the events `0..before` of
/// [`numbered`](crate::received::numbered), each confirmed; blackholes
/// `proxy` (see [`ProxyHandle::blackhole`]); then goes on publishing the
/// events `before..before + during`, one every 20 ms, in the background
/// ([`publish_until`]).
pub async fn partitioned(
    publisher: &Resilient,
    proxy: &ProxyHandle,
    before: u64,
    during: u64,
) -> JoinHandle<Calls> {
    publish_each_confirmed(publisher, 0..before).await;
    proxy.blackhole();
    publish_until(
        publisher.clone(),
        before..before + during,
        Duration::from_millis(20),
        CancellationToken::new(),
    )
}

/// Cuts every connection through a proxy at an interval until stopped.
#[derive(Debug)]
pub struct Cutter {
    stop: CancellationToken,
    task: JoinHandle<u32>,
}

impl Cutter {
    /// Cuts the connections of `proxy` every `every`, the first cut one
    /// interval from now.
    pub fn start(proxy: ProxyHandle, every: Duration) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut cuts = 0u32;
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return cuts,
                        _ = tick.tick() => {
                            proxy.cut();
                            cuts += 1;
                        }
                    }
                }
            }
        });
        Self { stop, task }
    }

    /// Stops cutting; returns how many cuts there were.
    pub async fn stop(self) -> u32 {
        self.stop.cancel();
        self.task
            .await
            .unwrap_or_else(|e| panic!("the cutting task: {e}"))
    }
}
