//! The connection side of [`Step::JsonRpc`](crate::Step::JsonRpc): the IO loop that feeds
//! messages to the [`RpcServer`] and performs what it decides.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::time::Instant;
use tokio_websockets::Message;

use super::{parse, HeartbeatTick, RpcLink, RpcServer, RpcUntil};
use crate::conn::{Flow, Session};

/// Sleep until `t`, or forever if there is none.
async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// State of one JSON-RPC step.
#[derive(Default)]
struct StepState {
    /// Delayed responses: (due, arrival number, text); earliest first, ties in arrival order.
    delayed: BinaryHeap<Reverse<(Instant, u64, String)>>,
    /// Responses held by `hold_and_reverse`.
    held: Vec<String>,
    /// Requests received in this step.
    received: usize,
    /// Responses written in this step.
    answered: usize,
}

impl Session {
    /// Run a JSON-RPC step: `End` when the connection ends, `Continue` when `until` is met.
    pub(crate) async fn json_rpc(&mut self, rpc: RpcServer, until: Option<RpcUntil>) -> Flow {
        let mut link = match self.rpc_links.iter().position(|l| l.rpc == rpc) {
            Some(i) => self.rpc_links.swap_remove(i),
            None => rpc.link(self.conn),
        };
        self.serving.store(true, Ordering::SeqCst);
        self.shared.notify();
        let flow = self.json_rpc_loop(&mut link, until.as_ref()).await;
        self.serving.store(false, Ordering::SeqCst);
        self.shared.notify();
        // Broadcasts queued for a step that has ended are discarded (as in `Step::Serve`).
        while self.rx.try_recv().is_ok() {}
        self.rpc_links.push(link);
        flow
    }

    async fn json_rpc_loop(&mut self, link: &mut RpcLink, until: Option<&RpcUntil>) -> Flow {
        if matches!(until, Some(RpcUntil::Requests(0) | RpcUntil::Answered(0))) {
            return Flow::Continue;
        }
        let rpc = link.rpc.clone();
        let start = Instant::now();
        let end_at = match until {
            Some(RpcUntil::After(d)) => Some(start + *d),
            _ => None,
        };
        let publish = rpc.auto_publish();
        let mut publish_next = publish.map(|d| start + d);
        if link.heartbeat_next.is_none() {
            link.heartbeat_next = rpc.heartbeat_interval(self.conn).map(|d| start + d);
        }
        let mut st = StepState::default();
        loop {
            let due = st.delayed.peek().map(|Reverse((t, _, _))| *t);
            tokio::select! {
                msg = self.ws.next() => {
                    let msg = match msg {
                        None => return Flow::End,
                        Some(Err(e)) => {
                            tracing::debug!(conn = self.conn, error = %e, "testkit: read error");
                            let _ = self.ws.flush().await;
                            return Flow::End;
                        }
                        Some(Ok(msg)) => msg,
                    };
                    self.record(&msg);
                    if let Some(text) = msg.as_text() {
                        if let Some(flow) = self.rpc_message(&rpc, link, &mut st, text, until).await {
                            return flow;
                        }
                    } else if msg.is_ping() || msg.is_close() {
                        // Send the automatic pong or close reply now.
                        if let Flow::End = self.flush().await {
                            return Flow::End;
                        }
                    }
                }
                Some(text) = self.rx.recv() => {
                    if let Flow::End = self.send(Message::text(text)).await {
                        return Flow::End;
                    }
                }
                Some(text) = link.rx.recv() => {
                    if let Flow::End = self.send(Message::text(text)).await {
                        return Flow::End;
                    }
                }
                () = sleep_until(due) => {
                    let now = Instant::now();
                    while let Some(Reverse((t, _, _))) = st.delayed.peek() {
                        if *t > now {
                            break;
                        }
                        let Some(Reverse((_, _, text))) = st.delayed.pop() else { break };
                        if let Some(flow) = self.rpc_ready(&rpc, &mut st, text, until).await {
                            return flow;
                        }
                    }
                }
                () = sleep_until(link.heartbeat_next) => {
                    match rpc.heartbeat_tick(self.conn, Instant::now()) {
                        HeartbeatTick::Send(text, next) => {
                            link.heartbeat_next = Some(next);
                            if let Flow::End = self.send(Message::text(text)).await {
                                return Flow::End;
                            }
                        }
                        HeartbeatTick::Close(code) => {
                            tracing::debug!(conn = self.conn, code, "testkit: heartbeat unanswered");
                            return self.close(code, "heartbeat close").await;
                        }
                        HeartbeatTick::Off => link.heartbeat_next = None,
                    }
                }
                () = sleep_until(publish_next) => {
                    if let (Some(next), Some(every)) = (publish_next, publish) {
                        publish_next = Some(next + every);
                    }
                    for text in rpc.publish_tick(self.conn) {
                        if let Err(e) = self.ws.feed(Message::text(text)).await {
                            return self.ended(&e);
                        }
                    }
                    if let Flow::End = self.flush().await {
                        return Flow::End;
                    }
                }
                () = sleep_until(end_at) => return Flow::Continue,
            }
        }
    }

    /// Handle one text message. `Some(flow)` ends the step.
    async fn rpc_message(
        &mut self,
        rpc: &RpcServer,
        link: &mut RpcLink,
        st: &mut StepState,
        text: &str,
        until: Option<&RpcUntil>,
    ) -> Option<Flow> {
        let now = Instant::now();
        let req = match parse(text) {
            Ok(req) => req,
            Err(response) => {
                rpc.count_invalid();
                return match self.send(Message::text(response)).await {
                    Flow::End => Some(Flow::End),
                    Flow::Continue => None,
                };
            }
        };
        st.received += 1;
        let ends = match until {
            Some(RpcUntil::Requests(n)) => st.received >= *n,
            Some(RpcUntil::Method(m)) => req.method == *m,
            _ => false,
        };
        let out = rpc.handle(self.conn, req, now, ends);
        if out.end_step {
            tracing::debug!(conn = self.conn, "testkit: JSON-RPC step ends");
            return Some(Flow::Continue);
        }
        if let Some(heartbeat) = out.heartbeat {
            link.heartbeat_next = heartbeat.map(|d| now + d);
        }
        if let Some(code) = out.close {
            if let Some(reply) = out.reply {
                if let Flow::End = self.send(Message::text(reply)).await {
                    return Some(Flow::End);
                }
            }
            return Some(self.close(code, "too_many_requests").await);
        }
        let reply = out.reply?;
        if out.delay.is_zero() {
            self.rpc_ready(rpc, st, reply, until).await
        } else {
            let n = st.received as u64;
            st.delayed.push(Reverse((now + out.delay, n, reply)));
            None
        }
    }

    /// A response is ready: hold it or write it. `Some(flow)` ends the step.
    async fn rpc_ready(
        &mut self,
        rpc: &RpcServer,
        st: &mut StepState,
        reply: String,
        until: Option<&RpcUntil>,
    ) -> Option<Flow> {
        let batch = match rpc.hold() {
            Some(n) => {
                st.held.push(reply);
                if st.held.len() < n {
                    return None;
                }
                let mut batch = std::mem::take(&mut st.held);
                batch.reverse();
                batch
            }
            None => vec![reply],
        };
        for text in batch {
            if let Flow::End = self.send(Message::text(text)).await {
                return Some(Flow::End);
            }
            st.answered += 1;
        }
        match until {
            Some(RpcUntil::Answered(n)) if st.answered >= *n => Some(Flow::Continue),
            _ => None,
        }
    }
}
