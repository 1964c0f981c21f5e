//! The broker's state: queues, consumers, outstanding deliveries and sessions.
//!
//! Everything here runs under the broker's one lock and never awaits: every
//! operation is a short, synchronous change followed by a dispatch that hands
//! ready messages to consumers with free prefetch.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use std::time::Duration;

use chrono::{DateTime, Utc};
use flow_events_core::{BackendError, DeadLetter, Decision, Event, EventType, TopicPattern};
use tokio::sync::mpsc;

use crate::session::SessionCore;

/// The state shared by a broker and everything connected to it.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    /// Locks the state. A panic while the lock was held leaves the state
    /// consistent (every change is applied whole), so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One message handed to a consumer's stream.
#[derive(Debug)]
pub(crate) struct Dispatched {
    pub(crate) tag: u64,
    pub(crate) event: Arc<Event>,
    pub(crate) redelivered: bool,
    pub(crate) attempt: u32,
}

/// The receiving end of a consumer.
pub(crate) type ConsumerRx = mpsc::UnboundedReceiver<Dispatched>;

#[derive(Debug, Clone)]
pub(crate) struct Message {
    event: Arc<Event>,
    redelivered: bool,
    attempt: u32,
    /// When a handler first asked for it again (retry or panic).
    first_failed_at: Option<DateTime<Utc>>,
}

/// A retried message waiting out its delay before it goes back to its queue
/// (as a message waits in a delay queue of a broker).
#[derive(Debug)]
pub(crate) struct Delayed {
    pub(crate) queue: String,
    pub(crate) message: Message,
    pub(crate) after: Duration,
}

impl Message {
    /// The message put back after a delivery that did not succeed (retried,
    /// or never settled: session lost, consumer gone, acker dropped). Every
    /// delivery counts as an attempt, as a quorum queue's delivery count does.
    fn returned(mut self) -> Self {
        self.redelivered = true;
        self.attempt = self.attempt.saturating_add(1);
        self
    }

    /// The message put back after a handler asked for it again.
    fn retried(mut self) -> Self {
        self.first_failed_at.get_or_insert_with(Utc::now);
        self.returned()
    }

    /// The copy kept in the dead-letter queue of `subscription`, saying why.
    fn dead(self, reason: String, subscription: &str) -> Arc<Event> {
        let mut account = DeadLetter::new(
            reason,
            self.attempt,
            self.event.event_type().as_str(),
            subscription,
        );
        if let Some(at) = self.first_failed_at {
            account = account.with_first_failed_at(at);
        }
        let mut event = Event::clone(&self.event);
        for (name, value) in account.headers() {
            event.headers_mut().insert(name.to_owned(), value);
        }
        Arc::new(event)
    }
}

#[derive(Debug)]
struct Outstanding {
    message: Message,
    consumer: u64,
    session: u64,
}

#[derive(Debug)]
struct Consumer {
    id: u64,
    session: u64,
    prefetch: usize,
    in_flight: usize,
    tx: mpsc::UnboundedSender<Dispatched>,
}

/// One durable queue: a subscription name.
#[derive(Debug, Default)]
struct Queue {
    bindings: Vec<TopicPattern>,
    ready: VecDeque<Message>,
    outstanding: HashMap<u64, Outstanding>,
    consumers: Vec<Consumer>,
    cursor: usize,
    dead: Vec<Arc<Event>>,
}

impl Queue {
    fn binds(&self, event_type: &EventType) -> bool {
        self.bindings.iter().any(|p| p.matches(event_type))
    }

    /// Hands ready messages to consumers with free prefetch, round-robin.
    fn dispatch(&mut self, ids: &mut u64) {
        while !self.ready.is_empty() {
            let Some(idx) = self.next_free_consumer() else {
                return;
            };
            let Some(message) = self.ready.pop_front() else {
                return;
            };
            *ids += 1;
            let tag = *ids;
            let consumer = &mut self.consumers[idx];
            let dispatched = Dispatched {
                tag,
                event: Arc::clone(&message.event),
                redelivered: message.redelivered,
                attempt: message.attempt,
            };
            if consumer.tx.send(dispatched).is_ok() {
                consumer.in_flight += 1;
                let (consumer, session) = (consumer.id, consumer.session);
                self.outstanding.insert(
                    tag,
                    Outstanding {
                        message,
                        consumer,
                        session,
                    },
                );
                self.cursor = idx + 1;
            } else {
                // Its stream was dropped and is about to cancel it; the message
                // was never delivered, so it goes back unchanged.
                self.consumers.remove(idx);
                self.ready.push_front(message);
            }
        }
    }

    fn next_free_consumer(&self) -> Option<usize> {
        let n = self.consumers.len();
        (0..n).map(|k| (self.cursor + k) % n).find(|&i| {
            let c = &self.consumers[i];
            c.in_flight < c.prefetch && !c.tx.is_closed()
        })
    }

    /// Takes the outstanding delivery `tag` off the books of its consumer.
    fn take_outstanding(&mut self, tag: u64) -> Option<Outstanding> {
        let out = self.outstanding.remove(&tag)?;
        if let Some(c) = self.consumers.iter_mut().find(|c| c.id == out.consumer) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        Some(out)
    }

    /// Puts the outstanding deliveries picked by `which` back at the front of
    /// the queue, in their original order, flagged as redelivered.
    fn return_outstanding(&mut self, which: impl Fn(u64, &Outstanding) -> bool) {
        let mut tags: Vec<u64> = self
            .outstanding
            .iter()
            .filter(|(tag, out)| which(**tag, out))
            .map(|(tag, _)| *tag)
            .collect();
        tags.sort_unstable_by(|a, b| b.cmp(a));
        for tag in tags {
            if let Some(out) = self.take_outstanding(tag) {
                self.ready.push_front(out.message.returned());
            }
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loss {
    /// The broker was taken down.
    BrokerDown,
    /// The session was closed or dropped by its owner.
    Closed,
}

impl Loss {
    pub(crate) fn error(self) -> BackendError {
        match self {
            Self::BrokerDown => BackendError::connection("memory broker is down"),
            Self::Closed => BackendError::closed("memory session is closed"),
        }
    }
}

/// The broker's state.
#[derive(Debug)]
pub(crate) struct State {
    up: bool,
    ids: u64,
    published: u64,
    queues: HashMap<String, Queue>,
    sessions: HashMap<u64, Arc<SessionCore>>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            up: true,
            ids: 0,
            published: 0,
            queues: HashMap::new(),
            sessions: HashMap::new(),
        }
    }
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.ids += 1;
        self.ids
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up
    }

    /// Opens a session, or fails while the broker is down.
    pub(crate) fn open_session(&mut self) -> Result<Arc<SessionCore>, BackendError> {
        if !self.up {
            return Err(Loss::BrokerDown.error());
        }
        let core = Arc::new(SessionCore::new(self.next_id()));
        self.sessions.insert(core.id(), Arc::clone(&core));
        Ok(core)
    }

    /// Ends a session: its consumers are cancelled (their streams end) and its
    /// outstanding deliveries go back to their queues, flagged as redelivered.
    pub(crate) fn end_session(&mut self, session: u64, loss: Loss) {
        let Some(core) = self.sessions.remove(&session) else {
            return;
        };
        core.mark_lost(loss);
        let ids = &mut self.ids;
        for queue in self.queues.values_mut() {
            queue.consumers.retain(|c| c.session != session);
            queue.return_outstanding(|_, out| out.session == session);
            queue.dispatch(ids);
        }
    }

    /// Takes the broker down: every session is lost.
    pub(crate) fn take_down(&mut self) {
        self.up = false;
        let sessions: Vec<u64> = self.sessions.keys().copied().collect();
        for session in sessions {
            self.end_session(session, Loss::BrokerDown);
        }
    }

    pub(crate) fn bring_up(&mut self) {
        self.up = true;
    }

    /// Routes `event` to every queue bound to its type. `session` must be open.
    pub(crate) fn publish(
        &mut self,
        session: &SessionCore,
        event: Arc<Event>,
    ) -> Result<(), BackendError> {
        session.check_open()?;
        let ids = &mut self.ids;
        for queue in self.queues.values_mut() {
            if queue.binds(event.event_type()) {
                queue.ready.push_back(Message {
                    event: Arc::clone(&event),
                    redelivered: false,
                    attempt: 1,
                    first_failed_at: None,
                });
                queue.dispatch(ids);
            }
        }
        self.published += 1;
        Ok(())
    }

    /// Declares the queue `name` (if new), binds it to `pattern` (if not yet)
    /// and attaches a consumer for `session`.
    pub(crate) fn consume(
        &mut self,
        session: &SessionCore,
        name: &str,
        pattern: &TopicPattern,
        prefetch: usize,
    ) -> Result<(u64, ConsumerRx), BackendError> {
        session.check_open()?;
        let id = self.next_id();
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = self.queues.entry(name.to_owned()).or_default();
        if !queue.bindings.contains(pattern) {
            queue.bindings.push(pattern.clone());
        }
        queue.consumers.push(Consumer {
            id,
            session: session.id(),
            prefetch: prefetch.max(1),
            in_flight: 0,
            tx,
        });
        queue.dispatch(&mut self.ids);
        Ok((id, rx))
    }

    /// Detaches a consumer whose stream was dropped; `undelivered` are the
    /// tags its stream had received but never handed out: they go back.
    pub(crate) fn cancel(&mut self, queue: &str, consumer: u64, undelivered: &[u64]) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        q.consumers.retain(|c| c.id != consumer);
        q.return_outstanding(|tag, out| out.consumer == consumer && undelivered.contains(&tag));
        q.dispatch(&mut self.ids);
    }

    /// Settles the outstanding delivery `tag`. Fails if it is no longer
    /// outstanding (its session was lost or closed, and it went back). A
    /// retry after a delay comes back as [`Delayed`], for the caller to put
    /// back with [`State::requeue`] once the delay is over.
    pub(crate) fn settle(
        &mut self,
        queue: &str,
        tag: u64,
        decision: Decision,
    ) -> Result<Option<Delayed>, BackendError> {
        let Some(q) = self.queues.get_mut(queue) else {
            return Err(gone());
        };
        let Some(out) = q.take_outstanding(tag) else {
            return Err(gone());
        };
        let message = out.message;
        let mut delayed = None;
        match decision {
            Decision::Ack => {}
            Decision::Retry => q.ready.push_front(message.retried()),
            Decision::RetryAfter(after) => {
                delayed = Some(Delayed {
                    queue: queue.to_owned(),
                    message: message.retried(),
                    after,
                });
            }
            Decision::Reject(reason) => q.dead.push(message.dead(reason, queue)),
            other => {
                let reason = format!("unknown decision {other:?}");
                q.dead.push(message.dead(reason, queue));
            }
        }
        q.dispatch(&mut self.ids);
        Ok(delayed)
    }

    /// Puts a retried message back at the end of its queue once its delay is over.
    pub(crate) fn requeue(&mut self, delayed: Delayed) {
        let q = self.queues.entry(delayed.queue).or_default();
        q.ready.push_back(delayed.message);
        q.dispatch(&mut self.ids);
    }

    /// Puts back a delivery whose acker was dropped unsettled.
    pub(crate) fn release(&mut self, queue: &str, tag: u64) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        if let Some(out) = q.take_outstanding(tag) {
            q.ready.push_front(out.message.returned());
            q.dispatch(&mut self.ids);
        }
    }

    pub(crate) fn ready_len(&self, queue: &str) -> usize {
        self.queues.get(queue).map_or(0, |q| q.ready.len())
    }

    pub(crate) fn unacked_len(&self, queue: &str) -> usize {
        self.queues.get(queue).map_or(0, |q| q.outstanding.len())
    }

    pub(crate) fn consumer_count(&self, queue: &str) -> usize {
        self.queues.get(queue).map_or(0, |q| q.consumers.len())
    }

    pub(crate) fn has_queue(&self, queue: &str) -> bool {
        self.queues.contains_key(queue)
    }

    pub(crate) fn dead_letters(&self, queue: &str) -> Vec<Arc<Event>> {
        self.queues
            .get(queue)
            .map_or_else(Vec::new, |q| q.dead.clone())
    }

    pub(crate) fn published(&self) -> u64 {
        self.published
    }

    pub(crate) fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

fn gone() -> BackendError {
    BackendError::closed("delivery is no longer outstanding: its session was lost or closed")
}
