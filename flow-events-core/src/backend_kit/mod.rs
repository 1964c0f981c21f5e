//! For backend authors: the broker-agnostic pieces every backend needs,
//! written once.
//!
//! - [`UrlRotation`]: connecting to one of several URLs, each tried in turn,
//!   with the most telling error when none could be used.
//! - [`SessionLoss`]: whether a session is lost and why, set by whichever of
//!   its tasks sees it first and awaited by the others.
//! - [`decode_body`]: the event a message body holds (the JSON of
//!   [`Event::encode`](crate::Event::encode)), or why it holds none, without
//!   quoting it.
//! - [`DeliverySource`] and [`delivery_stream`]: a subscription's deliveries
//!   as the stream [`Session::subscribe`](crate::Session::subscribe) returns.
//! - [`Scrub`]: known secrets (a URL with its password, a token) kept out of
//!   text that came from a client library or the broker.
//! - [`parse_bool`], [`parse_num`] and [`parse_secs`]: reading a backend's
//!   own variables the way core reads its own, errors naming the variable.
//!
//! A service never needs this module; it uses a backend.

mod body;
mod loss;
mod scrub;
mod stream;
mod urls;

pub use crate::config_parse::{parse_bool, parse_num, parse_secs};
pub use body::decode_body;
pub use loss::SessionLoss;
pub use scrub::Scrub;
pub use stream::{DeliverySource, delivery_stream};
pub use urls::{AfterConnect, UrlRotation};
