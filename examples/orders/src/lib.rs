//! The orders example: `POST /orders` writes an order and its
//! `order.created` event in one transaction (the transactional outbox), a
//! relay publishes the event, and a consumer counts each customer's orders
//! once per event (the inbox). See the README.

mod app;
mod counter;
pub mod settings;
mod store;

pub use app::{AppState, router};
pub use counter::count_orders;
pub use settings::Settings;
pub use store::{OrderStore, create_order, rolled_back_order};
