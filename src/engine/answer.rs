//! The immediate answer to a request (an adapter's acknowledgement) and
//! how the engine speaks: plain replies are gathered into the answer until
//! its deadline, everything else goes through the reply port.

use super::reply::Reply;
use super::Engine;
use crate::event::{Event, ReplyTarget};
use std::sync::Arc;
use std::time::Duration;

tokio::task_local! {
    /// Set while an adapter waits for the immediate answer to one request
    /// (Slack's ack body): plain replies are collected instead of sent,
    /// until the answer's deadline closes it.
    static COLLECT: Arc<Responder>;
}

/// The immediate answer to one request being gathered: plain replies made
/// before its deadline go into it; once closed, they go to the channel.
#[derive(Default)]
struct Responder {
    state: std::sync::Mutex<(bool, Vec<Reply>)>,
}

impl Responder {
    /// Takes `reply` into the answer, unless the answer is closed (then
    /// hands it back to be sent).
    fn offer(&self, reply: Reply) -> Option<Reply> {
        let mut state = self.state.lock().expect("responder lock");
        if state.0 {
            return Some(reply);
        }
        state.1.push(reply);
        None
    }

    /// Closes the answer and takes what it holds; later replies are sent.
    fn close(&self) -> Vec<Reply> {
        let mut state = self.state.lock().expect("responder lock");
        state.0 = true;
        std::mem::take(&mut state.1)
    }
}

/// What [`Engine::handle_collecting`] gives back.
#[derive(Debug)]
pub struct Handled {
    /// The event was a duplicate delivery; nothing was done.
    pub duplicate: bool,
    /// Plain replies made while handling it (before the deadline).
    pub replies: Vec<Reply>,
    /// The deadline came first: handling goes on, and what it says from
    /// now on goes to the channel through the sink.
    pub deferred: bool,
}

impl Engine {
    /// Handles `event` like [`Engine::handle`], but returns the plain replies
    /// (text and private notes) made while handling it instead of sending them,
    /// so an adapter can put them in its acknowledgement. Cards, progress and
    /// outcomes still go through the sink, where they can be threaded and updated.
    ///
    /// The answer closes at `deadline`: if handling is still going on then
    /// (a backend slow to answer a `/status`), it goes on in a tracked task
    /// of its own, and whatever it says afterwards is sent to the channel.
    pub async fn handle_collecting(self: &Arc<Self>, event: Event, deadline: Duration) -> Handled {
        let responder = Arc::new(Responder::default());
        let target = match &event {
            Event::Command { reply, .. } | Event::Vote { reply, .. } => reply.clone(),
        };
        let engine = self.clone();
        let mut work = Box::pin(COLLECT.scope(responder.clone(), async move { engine.handle(event).await }));
        match tokio::time::timeout(deadline, &mut work).await {
            Ok(handled) => Handled { duplicate: !handled, replies: responder.close(), deferred: false },
            Err(_) => {
                let replies = responder.close();
                let engine = self.clone();
                let continuation = async move {
                    use futures_util::FutureExt;
                    if let Err(panic) = std::panic::AssertUnwindSafe(work).catch_unwind().await {
                        engine.health.request_panicked("a request answered after its deadline", &panic);
                        // The ack promised an answer: say there will be none
                        // (unless the same bug strikes the sink too).
                        let text =
                            "opsbot could not finish answering that (an internal error; see its log)".to_string();
                        let told = std::panic::AssertUnwindSafe(engine.send_reply(&target, Reply::Text(text)))
                            .catch_unwind()
                            .await;
                        if let Err(again) = told {
                            engine.health.request_panicked("telling the channel there is no answer", &again);
                        }
                    }
                };
                if self.stopped.load(std::sync::atomic::Ordering::Acquire) {
                    // Shutdown no longer waits for tasks: finish here, late,
                    // rather than unseen.
                    continuation.await;
                } else {
                    self.tracker.spawn(continuation);
                }
                Handled { duplicate: false, replies, deferred: true }
            }
        }
    }

    /// Sends a reply through the sink (for adapters that answered part of a
    /// request themselves).
    pub async fn send_reply(&self, target: &ReplyTarget, reply: Reply) {
        if let Err(e) = self.chat.send(target, reply).await {
            tracing::warn!(error = %e, channel = %target.channel, "reply not delivered");
        }
    }

    /// Sends a reply and says whether the adapter took it.
    pub async fn try_send_reply(
        &self,
        target: &ReplyTarget,
        reply: Reply,
    ) -> Result<(), crate::engine::reply::ChatError> {
        self.chat.send(target, reply).await
    }

    /// Sends a reply; a delivery failure is logged, never fatal to the action.
    pub(super) async fn say(&self, target: &ReplyTarget, reply: Reply) {
        let reply = if matches!(reply, Reply::Text(_) | Reply::Private { .. }) {
            match COLLECT.try_with(|responder| responder.clone()) {
                Ok(responder) => match responder.offer(reply) {
                    None => return,
                    Some(reply) => reply,
                },
                Err(_) => reply,
            }
        } else {
            reply
        };
        self.send_reply(target, reply).await;
    }
}
