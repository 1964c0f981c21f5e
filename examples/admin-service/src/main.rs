//! The runnable flow-events service (health, event API, metrics); not written yet.

fn main() {}
