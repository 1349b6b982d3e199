//! Filling a batch (docs/audit.md, "The writer's thread"): once the first event of a batch is in, the
//! writer waits until the batch interval has passed *or* the queue holds a whole batch, then takes what
//! is waiting in one go. It is not woken by each event in between: on a busy gateway a wake per
//! event was a cross-thread wake-up (a syscall on the request worker, a context switch on the writer's
//! thread) for every duplicate (docs/benchmarks.md, "The writer's wake-ups, and one typed pass over a webhook").

use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The senders' side of "a whole batch is waiting": told the queue's depth after each send, it wakes a
/// writer that waits in [`fill`] once that depth reaches the batch size.
#[derive(Debug)]
pub(super) struct BatchReady {
    size: usize,
    notify: Notify,
}

impl BatchReady {
    pub(super) fn new(size: usize) -> Self {
        Self {
            size: size.max(1),
            notify: Notify::new(),
        }
    }

    /// After a send: `depth` events are queued or reserved. One stored permit at most, so a queue
    /// that stays full costs an atomic operation per send, not a wake-up.
    pub(super) fn queued(&self, depth: usize) {
        if depth >= self.size {
            self.notify.notify_one();
        }
    }
}

/// Tops `batch` (which holds the batch's first events) up to `size`: waits until `interval` has passed
/// since the call, the queue holds a whole batch ([`BatchReady::queued`]) or `stop` is cancelled, then
/// takes the events waiting, up to `size`, without waiting for more.
pub(super) async fn fill<T>(
    rx: &mut mpsc::Receiver<T>,
    batch: &mut Vec<T>,
    size: usize,
    interval: Duration,
    ready: &BatchReady,
    stop: &CancellationToken,
) {
    if batch.len() >= size {
        return;
    }
    let deadline = Instant::now() + interval;
    tokio::select! {
        biased;
        () = stop.cancelled() => {}
        () = ready.notify.notified() => {}
        () = tokio::time::sleep_until(deadline) => {}
    }
    while batch.len() < size {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            // Empty, or every sender gone: the next `recv_many` tells the writer which.
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use futures::task::{ArcWake, waker};

    use super::*;

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl ArcWake for Wakes {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    const INTERVAL: Duration = Duration::from_millis(50);

    fn send(tx: &mpsc::Sender<u32>, ready: &BatchReady, item: u32) {
        tx.try_send(item).unwrap_or_else(|e| panic!("{e}"));
        ready.queued(tx.max_capacity() - tx.capacity());
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_of_events_is_taken_once_at_the_interval_with_one_wake_up() {
        let (tx, mut rx) = mpsc::channel(64);
        let ready = BatchReady::new(8);
        let stop = CancellationToken::new();
        let mut batch = vec![0];
        let wakes = Arc::new(Wakes::default());
        let waker = waker(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let started = Instant::now();
        {
            let mut filling = pin!(fill(&mut rx, &mut batch, 8, INTERVAL, &ready, &stop));
            assert!(filling.as_mut().poll(&mut cx).is_pending());
            for i in 1..5 {
                send(&tx, &ready, i);
                assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "woken by event {i}");
            }
            tokio::time::advance(INTERVAL).await;
            assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
            assert_eq!(filling.as_mut().poll(&mut cx), Poll::Ready(()));
        }
        assert_eq!(batch, [0, 1, 2, 3, 4]);
        assert_eq!(started.elapsed(), INTERVAL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_whole_batch_waiting_ends_the_wait_before_the_interval() {
        let (tx, mut rx) = mpsc::channel(64);
        let ready = BatchReady::new(4);
        let stop = CancellationToken::new();
        let mut batch = vec![0];
        let started = Instant::now();
        {
            let filling = fill(&mut rx, &mut batch, 4, INTERVAL, &ready, &stop);
            let sending = async {
                for i in 1..7 {
                    send(&tx, &ready, i);
                }
            };
            tokio::join!(filling, sending);
        }
        // Up to the batch size; the rest stays queued for the next batch.
        assert_eq!(batch, [0, 1, 2, 3]);
        assert_eq!(rx.len(), 3);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_with_what_is_queued() {
        let (tx, mut rx) = mpsc::channel(64);
        let ready = BatchReady::new(8);
        let stop = CancellationToken::new();
        let mut batch = vec![0];
        send(&tx, &ready, 1);
        stop.cancel();
        let started = Instant::now();
        fill(&mut rx, &mut batch, 8, INTERVAL, &ready, &stop).await;
        assert_eq!(batch, [0, 1]);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_returns_at_once() {
        let (_tx, mut rx) = mpsc::channel::<u32>(4);
        let ready = BatchReady::new(2);
        let stop = CancellationToken::new();
        let mut batch = vec![0, 1];
        let started = Instant::now();
        fill(&mut rx, &mut batch, 2, INTERVAL, &ready, &stop).await;
        assert_eq!(batch, [0, 1]);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
