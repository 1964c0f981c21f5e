//! Durable outbox benchmarks.

fn main() {}
