//! The consuming side of a session: a stream of deliveries and their ackers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use flow_events_core::{Acker, BackendError, Decision, Delivery, IncomingDelivery};
use futures_util::Stream;

use crate::session::SessionGuard;
use crate::state::ConsumerRx;

/// The deliveries of one consumer. It ends when its session ends; dropping it
/// cancels the consumer and puts back what it received but never handed out.
#[derive(Debug)]
pub(crate) struct ConsumerStream {
    session: Arc<SessionGuard>,
    queue: Arc<str>,
    consumer: u64,
    rx: ConsumerRx,
}

impl ConsumerStream {
    pub(crate) fn new(
        session: Arc<SessionGuard>,
        queue: Arc<str>,
        consumer: u64,
        rx: ConsumerRx,
    ) -> Self {
        Self {
            session,
            queue,
            consumer,
            rx,
        }
    }
}

impl Stream for ConsumerStream {
    type Item = IncomingDelivery;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Once the session has ended, what is still buffered here has already
        // gone back to the queue: hand none of it out.
        if this.session.core.is_lost() {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(d)) if !this.session.core.is_lost() => {
                let delivery = Delivery::new((*d.event).clone(), d.redelivered, d.attempt);
                let acker = MemoryAcker {
                    session: Arc::clone(&this.session),
                    queue: Arc::clone(&this.queue),
                    tag: d.tag,
                    settled: false,
                };
                Poll::Ready(Some(IncomingDelivery::new(delivery, Box::new(acker))))
            }
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for ConsumerStream {
    fn drop(&mut self) {
        self.rx.close();
        let mut undelivered = Vec::new();
        while let Ok(d) = self.rx.try_recv() {
            undelivered.push(d.tag);
        }
        self.session
            .shared
            .lock()
            .cancel(&self.queue, self.consumer, &undelivered);
    }
}

/// Settles one delivery on the session it came from. Dropped unsettled, it
/// puts the delivery back (flagged as redelivered, as the next attempt).
#[derive(Debug)]
struct MemoryAcker {
    session: Arc<SessionGuard>,
    queue: Arc<str>,
    tag: u64,
    settled: bool,
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn settle(mut self: Box<Self>, decision: Decision) -> Result<(), BackendError> {
        self.settled = true;
        let delayed = self
            .session
            .shared
            .lock()
            .settle(&self.queue, self.tag, decision)?;
        if let Some(delayed) = delayed {
            // The task ends once the delay is over; it holds the broker only
            // weakly, so a dropped broker drops the message with the rest.
            let shared = Arc::downgrade(&self.session.shared);
            tokio::spawn(async move {
                tokio::time::sleep(delayed.after).await;
                if let Some(shared) = shared.upgrade() {
                    shared.lock().requeue(delayed);
                }
            });
        }
        Ok(())
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        if !self.settled {
            self.session.shared.lock().release(&self.queue, self.tag);
        }
    }
}
