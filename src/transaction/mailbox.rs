//! The channel a task that owns a transaction hears on: responses of its branches,
//! retransmissions, CANCEL, ACK and the layer above's events ([`super::TxEvent`]).
//!
//! Why not tokio's unbounded channel: it allocates its shared state (cache-padded,
//! about 500 bytes) and a first block of 32 slots (32 events of 32 bytes) when it is
//! made, and every call, parked or ended and waiting out its timers, keeps its task's
//! channel: 1.7 KB per call of issue 13's 8 KiB per parked call. A task hears a handful
//! of events in its life. `futures-channel`'s unbounded queue allocates about 100 bytes
//! up front and one node per event, freed as the event is taken.

use futures_channel::mpsc;

/// The sending half: cheap to clone, held by the transaction tables, the parked-call
/// index and the task's own helpers.
#[derive(Debug)]
pub struct TaskSender<T>(mpsc::UnboundedSender<T>);

impl<T> Clone for TaskSender<T> {
    fn clone(&self) -> Self {
        TaskSender(self.0.clone())
    }
}

/// The receiving half, owned by the task.
#[derive(Debug)]
pub struct TaskReceiver<T>(mpsc::UnboundedReceiver<T>);

/// A new channel for one task.
pub fn task_channel<T>() -> (TaskSender<T>, TaskReceiver<T>) {
    let (tx, rx) = mpsc::unbounded();
    (TaskSender(tx), TaskReceiver(rx))
}

impl<T> TaskSender<T> {
    /// Queues `event` for the task; gives it back when the task has ended.
    pub fn send(&self, event: T) -> Result<(), T> {
        self.0.unbounded_send(event).map_err(|e| e.into_inner())
    }

    /// The task has ended (its receiver is gone).
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl<T> TaskReceiver<T> {
    /// The next event; `None` once every sender is gone and the queue is empty.
    /// Cancel-safe: a `select!` that drops it loses no event.
    pub async fn recv(&mut self) -> Option<T> {
        self.0.recv().await.ok()
    }

    /// The next event already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        self.0.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_arrive_in_order_and_the_end_is_seen() {
        let (tx, mut rx) = task_channel();
        let tx2 = tx.clone();
        tx.send(1).unwrap();
        tx2.send(2).unwrap();
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), None);
        drop((tx, tx2));
        assert_eq!(rx.recv().await, None, "every sender gone");
    }

    #[tokio::test]
    async fn a_send_to_an_ended_task_gives_the_event_back() {
        let (tx, rx) = task_channel();
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.send(7), Err(7));
    }

    #[tokio::test]
    async fn a_receiver_waits_for_a_later_send() {
        let (tx, mut rx) = task_channel();
        let t = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.send("late").unwrap();
        assert_eq!(t.await.unwrap(), Some("late"));
    }
}
