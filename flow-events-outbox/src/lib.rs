#![doc = include_str!("../README.md")]

mod dedup;
mod error;
mod group;
mod inspect;
mod open;
mod record;
mod salvage;
mod store;
mod writer;

pub use dedup::RedbDedupStore;
pub use inspect::read;
pub use store::RedbStore;
