//! Background workers (the outbox relay, the SLA scanner, the audit checkpointer and the
//! staff key refresher) in one idiom: a named task with a stop signal, stopped with a
//! timeout. A worker's loop ends when it is asked to stop *or* when the sender of its
//! stop signal is gone, so a dropped `Worker` (or a test's dropped sender) never leaves a
//! loop spinning.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A worker's side of its stop signal.
#[derive(Debug, Clone)]
pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    /// A signal and the sender that raises it (`send(true)`, or dropping it).
    pub fn new() -> (watch::Sender<bool>, Self) {
        let (stop, stopped) = watch::channel(false);
        (stop, Self(stopped))
    }

    /// Whether the worker should stop now: it was asked to, or nobody can ask any more.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Completes once the worker should stop (immediately if it already should).
    /// Cancel safe, for `tokio::select!`.
    pub async fn stopped(&mut self) {
        loop {
            if *self.0.borrow_and_update() {
                return;
            }
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }
}

impl From<watch::Receiver<bool>> for StopSignal {
    fn from(receiver: watch::Receiver<bool>) -> Self {
        Self(receiver)
    }
}

/// A running background task, with its name and the sender of its stop signal.
pub struct Worker {
    name: &'static str,
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Worker {
    /// Spawns `run` on the current runtime with a fresh stop signal.
    pub fn spawn<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, signal) = StopSignal::new();
        Self {
            name,
            task: tokio::spawn(run(signal)),
            stop,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Asks the worker to stop and waits for it, at most `timeout`. Returns whether it
    /// stopped in time (if not, it is logged and left to the runtime).
    pub async fn stop(self, timeout: Duration) -> bool {
        let _ = self.stop.send(true);
        if tokio::time::timeout(timeout, self.task).await.is_err() {
            tracing::warn!("{} did not stop within {} s", self.name, timeout.as_secs());
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_stops_when_asked() {
        let worker = Worker::spawn("test worker", |mut stop| async move {
            while !stop.is_stopped() {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(3600)) => {}
                    () = stop.stopped() => {}
                }
            }
        });
        assert_eq!(worker.name(), "test worker");
        assert!(worker.stop(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn a_loop_ends_when_the_sender_is_gone() {
        let (sender, mut signal) = StopSignal::new();
        let rounds = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = rounds.clone();
        let task = tokio::spawn(async move {
            while !signal.is_stopped() {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(3600)) => {}
                    () = signal.stopped() => {}
                }
            }
        });
        drop(sender);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop ended")
            .unwrap();
        assert!(rounds.load(std::sync::atomic::Ordering::Relaxed) <= 2);
    }

    #[tokio::test]
    async fn a_timeout_is_reported() {
        let worker = Worker::spawn("stubborn", |_stop| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        assert!(!worker.stop(Duration::from_millis(50)).await);
    }
}
