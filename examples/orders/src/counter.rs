//! The consumer: counts each customer's orders once per event, through the inbox.

use flow_events_core::{Decision, Delivery};
use flow_events_postgres::Inbox;
use flow_events_postgres::sqlx::{self, PgPool};

use crate::store::OrderStore;

/// Handles one `order.created` delivery: claims its id in the inbox and adds
/// one to the customer's count, in one transaction. A redelivered event
/// (the relay or the broker delivered it twice) finds its id claimed and
/// changes nothing. A database error retries the delivery; an event without
/// a customer is rejected (dead-lettered).
pub async fn count_orders(
    pool: &PgPool,
    inbox: &Inbox,
    store: &OrderStore,
    delivery: &Delivery,
) -> Decision {
    let event = delivery.event();
    let data = event.data();
    let Some(customer) = data["customer"].as_str() else {
        tracing::warn!(id = %event.id(), event_type = %event.event_type(), "order event without a customer, rejecting it");
        return Decision::reject("order event without a customer");
    };
    let counted = async {
        let mut tx = pool.begin().await?;
        let first = inbox.claim(&mut tx, delivery).await?;
        if first {
            sqlx::query(&format!(
                "INSERT INTO {0} (customer, orders) VALUES ($1, 1) \
                 ON CONFLICT (customer) DO UPDATE SET orders = {0}.orders + 1",
                store.counts
            ))
            .bind(customer)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        anyhow::Ok(first)
    }
    .await;
    match counted {
        Ok(true) => Decision::Ack,
        Ok(false) => {
            tracing::debug!(id = %event.id(), "order event already counted, skipping it");
            Decision::Ack
        }
        Err(e) => {
            tracing::warn!(id = %event.id(), error = %e, "could not count order event, retrying it: {e}");
            Decision::Retry
        }
    }
}
