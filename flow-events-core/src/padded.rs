//! Values written by many threads, each on cache lines of its own.

use std::ops::Deref;

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// A value alone on its cache lines (128 bytes: two lines, as the
/// adjacent-line prefetcher of x86 pairs them), so that writing it does not
/// take from other threads the line of what they only read.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CacheLine<T>(pub(crate) T);

impl<T> Deref for CacheLine<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// One notice with its waiters spread over several `Notify`s, each on its
/// own cache lines: waiters registering from different threads take
/// different locks (one `Notify` is one list of waiters behind one lock,
/// taken to register and again to drop), and the notice wakes them all.
#[derive(Debug, Default)]
pub(crate) struct ShardedNotify {
    shards: [CacheLine<Notify>; ShardedNotify::SHARDS],
}

impl ShardedNotify {
    const SHARDS: usize = 8;

    /// The notice for waiter `key` (a sequence number, a random number: any
    /// number that spreads the waiters).
    pub(crate) fn notified(&self, key: u64) -> Notified<'_> {
        // The remainder is below SHARDS: the cast loses nothing.
        self.shards[(key % Self::SHARDS as u64) as usize].notified()
    }

    /// Wakes every waiter registered.
    pub(crate) fn notify_waiters(&self) {
        for shard in &self.shards {
            shard.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_notice_wakes_the_waiters_of_every_shard() {
        let notice = ShardedNotify::default();
        let mut waiters: Vec<_> = (0..16u64)
            .map(|key| Box::pin(notice.notified(key)))
            .collect();
        for waiter in &mut waiters {
            waiter.as_mut().enable();
        }
        notice.notify_waiters();
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                .await
                .expect("a waiter was not woken");
        }
    }
}
