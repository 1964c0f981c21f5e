//! Publisher confirms, with returned messages given to the right publish.
//!
//! lapin hands a returned (unroutable, `mandatory`) message to whichever
//! confirm it completes next. When the broker acknowledges several publishes
//! at once (`multiple`), that can be another publish of the batch: the
//! unroutable event would be reported confirmed and a routed one refused. So
//! one task follows every confirm of the channel, in the order lapin completes
//! them, and decides by the returned message's `message_id` (the event id)
//! which publish was returned.
//!
//! The router also waits for each publish to be written: a send hands lapin's
//! publish future over as soon as lapin has queued the frames, so that the
//! confirms are followed in publish order whoever awaits them, and in
//! whatever order.
//!
//! Without `mandatory` nothing comes back, there is nothing to pair, and the
//! publish skips the router: its caller waits for the write and the confirm
//! itself, which saves a task hop per publish.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use lapin::PublisherConfirm;
use lapin::message::BasicReturnMessage;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What the broker said about one publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Confirmed (routed, or dropped as unroutable without `mandatory`).
    Acked,
    /// Returned as unroutable (`mandatory`).
    Returned(String),
    /// Nacked.
    Nacked,
}

/// Why a publish got no answer from the broker.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Writing the publish failed.
    Write(lapin::Error),
    /// Writing the publish took longer than the limit.
    WriteTimeout(Duration),
    /// Waiting for the confirm failed.
    Confirm(lapin::Error),
}

impl Failure {
    /// lapin's error, if there is one.
    pub(crate) fn lapin_error(&self) -> Option<&lapin::Error> {
        match self {
            Self::Write(e) | Self::Confirm(e) => Some(e),
            Self::WriteTimeout(_) => None,
        }
    }
}

/// The answer for one publish.
pub(crate) type Answer = Result<Outcome, Failure>;

/// lapin's publish future: resolves once the frames are written, with the
/// confirm to await.
pub(crate) type Written = Pin<Box<dyn Future<Output = lapin::Result<PublisherConfirm>> + Send>>;

struct Job {
    id: String,
    written: Written,
    write_limit: Duration,
    reply: oneshot::Sender<Answer>,
}

/// Hands confirms to the router task; dropping it (or `stop`) ends the task.
#[derive(Debug)]
pub(crate) struct ConfirmRouter {
    jobs: mpsc::UnboundedSender<Job>,
    stop: CancellationToken,
}

impl Drop for ConfirmRouter {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Ids of returned messages whose confirm went to another publish, waiting
/// for their own confirm; bounded, oldest forgotten first.
#[derive(Debug, Default)]
struct Misplaced {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Misplaced {
    const CAPACITY: usize = 4096;

    fn insert(&mut self, id: String) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > Self::CAPACITY
                && let Some(old) = self.order.pop_front()
            {
                self.ids.remove(&old);
            }
        }
    }

    fn take(&mut self, id: &str) -> bool {
        if self.ids.remove(id) {
            self.order.retain(|i| i != id);
            true
        } else {
            false
        }
    }
}

fn returned_id(message: &BasicReturnMessage) -> Option<String> {
    message
        .delivery
        .properties
        .message_id()
        .as_ref()
        .map(|m| m.as_str().to_owned())
}

fn describe(message: &BasicReturnMessage) -> String {
    format!("{} {}", message.reply_code, message.reply_text)
}

impl ConfirmRouter {
    /// Starts the router task.
    pub(crate) fn start() -> Self {
        let (jobs, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        tokio::spawn(run(rx, stop.clone()));
        Self { jobs, stop }
    }

    /// Follows the publish of message `id`: waits (at most `write_limit`)
    /// for `written`, then for its confirm. Call in publish order. The
    /// receiver gets the answer (and closes without one if the router stops
    /// first).
    pub(crate) fn follow(
        &self,
        id: String,
        written: Written,
        write_limit: Duration,
    ) -> oneshot::Receiver<Answer> {
        let (reply, rx) = oneshot::channel();
        let _ = self.jobs.send(Job {
            id,
            written,
            write_limit,
            reply,
        });
        rx
    }
}

type Done = (
    String,
    oneshot::Sender<Answer>,
    Result<lapin::Confirmation, Failure>,
);

/// Waits for a publish to be written (at most `write_limit`), then for its confirm.
pub(crate) async fn confirmed(
    written: Written,
    write_limit: Duration,
) -> Result<lapin::Confirmation, Failure> {
    match tokio::time::timeout(write_limit, written).await {
        Ok(Ok(confirm)) => confirm.await.map_err(Failure::Confirm),
        Ok(Err(e)) => Err(Failure::Write(e)),
        Err(_) => Err(Failure::WriteTimeout(write_limit)),
    }
}

/// The outcome of a publish that cannot come back (no `mandatory`): there
/// is no returned message to pair.
pub(crate) fn unpaired(confirmation: lapin::Confirmation) -> Outcome {
    match confirmation {
        lapin::Confirmation::Nack(_) => Outcome::Nacked,
        lapin::Confirmation::Ack(Some(r)) => Outcome::Returned(describe(&r)),
        lapin::Confirmation::Ack(None) | lapin::Confirmation::NotRequested => Outcome::Acked,
    }
}

/// Waits for the publish of `job` to be written, then for its confirm.
async fn follow(job: Job) -> Done {
    let result = confirmed(job.written, job.write_limit).await;
    (job.id, job.reply, result)
}

async fn run(mut jobs: mpsc::UnboundedReceiver<Job>, stop: CancellationToken) {
    let mut pending = FuturesUnordered::new();
    let mut misplaced = Misplaced::default();
    let mut open = true;
    loop {
        let first: Done = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            job = jobs.recv(), if open => {
                match job {
                    Some(job) => pending.push(follow(job)),
                    None => open = false,
                }
                continue;
            }
            Some(done) = pending.next(), if !pending.is_empty() => done,
            else => return,
        };
        // lapin completes the confirms of one broker ack together: take all
        // that are done now (also publishes not yet handed to this task), so
        // that a misplaced return is seen before the confirm it belongs to.
        let mut batch = vec![first];
        loop {
            while let Ok(job) = jobs.try_recv() {
                pending.push(follow(job));
            }
            match pending.next().now_or_never() {
                Some(Some(done)) => batch.push(done),
                _ => break,
            }
        }
        for (id, _, result) in &batch {
            if let Ok(lapin::Confirmation::Ack(Some(r)) | lapin::Confirmation::Nack(Some(r))) =
                result
                && let Some(rid) = returned_id(r)
                && rid != *id
            {
                misplaced.insert(rid);
            }
        }
        for (id, reply, result) in batch {
            let answer = result.map(|confirmation| match confirmation {
                lapin::Confirmation::Nack(_) => Outcome::Nacked,
                lapin::Confirmation::Ack(Some(r)) if returned_id(&r).as_deref() == Some(&id) => {
                    Outcome::Returned(describe(&r))
                }
                lapin::Confirmation::Ack(Some(r)) if returned_id(&r).is_none() => {
                    // A return without an id: trust lapin's pairing.
                    Outcome::Returned(describe(&r))
                }
                lapin::Confirmation::Ack(_) | lapin::Confirmation::NotRequested => {
                    if misplaced.take(&id) {
                        Outcome::Returned("312 NO_ROUTE".to_owned())
                    } else {
                        Outcome::Acked
                    }
                }
            });
            let _ = reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misplaced_is_bounded_and_taken_once() {
        let mut m = Misplaced::default();
        m.insert("a".into());
        assert!(m.take("a"));
        assert!(!m.take("a"));
        for i in 0..Misplaced::CAPACITY + 10 {
            m.insert(i.to_string());
        }
        assert!(!m.take("0"));
        assert!(m.take(&(Misplaced::CAPACITY + 9).to_string()));
        assert!(m.order.len() <= Misplaced::CAPACITY);
    }
}
