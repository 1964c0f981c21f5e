//! [`DeliverySource`]: a subscription's deliveries, one at a time, as a
//! [`DeliveryStream`].

use std::future::Future;

use futures_util::StreamExt;

use crate::backend::{DeliveryStream, IncomingDelivery};

/// What a backend pulls one subscription's deliveries from: its consumer and
/// whatever settling them needs.
pub trait DeliverySource: Send + 'static {
    /// The next delivery for the handler; `None` ends the stream (the session
    /// is lost or closed).
    fn next_delivery(&mut self) -> impl Future<Output = Option<IncomingDelivery>> + Send;
}

/// The stream of `source`'s deliveries, what
/// [`Session::subscribe`](crate::Session::subscribe) returns; it ends at the
/// first `None`.
pub fn delivery_stream(source: impl DeliverySource) -> DeliveryStream {
    futures_util::stream::unfold(source, |mut source| async move {
        let next = source.next_delivery().await?;
        Some((next, source))
    })
    .boxed()
}
