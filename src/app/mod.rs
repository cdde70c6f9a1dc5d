//! How applications use a cluster.
//!
//! - [`Embedded`] runs a client node inside the application: `submit` returns once the value
//!   was delivered (its acknowledgement), retrying inside with the same sequence number so a
//!   retry never delivers a value twice; `deliveries` yields the ordered stream.
//! - A learner whose config sets `output.socket` serves the ordered stream on a Unix-domain
//!   socket (stream.rs): a reader asks for it `live` or `from POSITION`, and gets one line per
//!   value, `<position> <client> <seq> <payload as hex>`. `ethpaxos tail` prints it;
//!   examples/kv.rs applies it to a key-value map.

#![forbid(unsafe_code)]

mod stream;

pub use stream::{
    connect_stream, parse_stream_line, put_snapshot, stream_line, Connected, StreamServer,
    StreamStart, READER_BACKLOG,
};

pub use crate::driver::StateMachine;

use crate::config::{NodeConfig, Role};
use crate::node::{self, NodeError, NodeStats};
use crate::protocol::Position;
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// One delivered value, in the cluster's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveredValue {
    /// Where it stands in the cluster's order: every learner gives it the same position.
    pub position: Position,
    pub client: u64,
    pub seq: u64,
    pub payload: Bytes,
}

/// A value an application submits, and where its acknowledgement goes.
pub struct AppRequest {
    pub value: Bytes,
    pub ack: Sender<Result<u64, String>>,
}

/// The node loop's side of an embedded application.
pub struct AppLink {
    pub requests: Receiver<AppRequest>,
    pub deliveries: Sender<DeliveredValue>,
    /// The application's state machine, run by the node's learner (snapshots, restores).
    pub machine: Option<Box<dyn StateMachine>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] crate::config::NodeConfigError),
    #[error("the config must give this node the client and learner roles")]
    NotAClient,
    #[error("no acknowledgement within {0:?}; the value may still be delivered, once at most")]
    Timeout(Duration),
    #[error("value refused: {0}")]
    Refused(String),
    #[error("the embedded node stopped: {0}")]
    Stopped(String),
}

/// A client node running inside the application, on its own thread.
pub struct Embedded {
    requests: Option<Sender<AppRequest>>,
    deliveries: Receiver<DeliveredValue>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<NodeStats, NodeError>>>,
}

impl Embedded {
    /// Starts the node `cfg` describes; it must play client and learner. Its `load` section
    /// is ignored: the application is its only client.
    pub fn start(cfg: NodeConfig) -> Result<Embedded, AppError> {
        Self::launch(cfg, None)
    }

    /// Starts the node with the application's state machine, which its learner runs: every
    /// delivered value is applied to it in order; every `learner.snapshot_every` instances
    /// its snapshot goes into the learner's snapshot image (what peers install and acceptors
    /// trim by); at a restart it is restored from the newest image and the journal after
    /// it; a peer's installed image replaces its state. `deliveries` still yields every
    /// value.
    pub fn start_with(
        cfg: NodeConfig,
        machine: Box<dyn StateMachine>,
    ) -> Result<Embedded, AppError> {
        Self::launch(cfg, Some(machine))
    }

    fn launch(
        cfg: NodeConfig,
        machine: Option<Box<dyn StateMachine>>,
    ) -> Result<Embedded, AppError> {
        let cfg = cfg.validated()?.without_load_clients();
        let me = cfg.me();
        if !(me.plays(Role::Client) && me.plays(Role::Learner)) {
            return Err(AppError::NotAClient);
        }
        let (req_tx, req_rx) = crossbeam_channel::unbounded();
        let (del_tx, del_rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let link = AppLink {
            requests: req_rx,
            deliveries: del_tx,
            machine,
        };
        let thread = std::thread::Builder::new()
            .name(format!("ethpaxos-node-{}", cfg.node_id))
            .spawn(move || node::run_with(&cfg, &flag, Some(link)))
            .map_err(|e| AppError::Stopped(e.to_string()))?;
        Ok(Embedded {
            requests: Some(req_tx),
            deliveries: del_rx,
            stop,
            thread: Some(thread),
        })
    }

    /// Submits `value` and waits up to `timeout` for its delivery. Returns its sequence number.
    pub fn submit(&self, value: Bytes, timeout: Duration) -> Result<u64, AppError> {
        self.submit_async(value)?
            .recv_timeout(timeout)
            .map_err(|e| match e {
                crossbeam_channel::RecvTimeoutError::Timeout => AppError::Timeout(timeout),
                crossbeam_channel::RecvTimeoutError::Disconnected => {
                    AppError::Stopped("node thread ended".into())
                }
            })?
            .map_err(AppError::Refused)
    }

    /// Submits `value` without waiting: the receiver gets its sequence number on delivery.
    pub fn submit_async(&self, value: Bytes) -> Result<Receiver<Result<u64, String>>, AppError> {
        let (ack, rx) = crossbeam_channel::bounded(1);
        self.requests
            .as_ref()
            .ok_or_else(|| AppError::Stopped("stopped".into()))?
            .send(AppRequest { value, ack })
            .map_err(|_| AppError::Stopped("node thread ended".into()))?;
        Ok(rx)
    }

    /// Every value this node's learner delivers, in order (all clients', not only ours).
    pub fn deliveries(&self) -> &Receiver<DeliveredValue> {
        &self.deliveries
    }

    /// Stops the node and returns its counters.
    pub fn stop(mut self) -> Result<NodeStats, AppError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<NodeStats, AppError> {
        self.stop.store(true, Ordering::Relaxed);
        self.requests.take();
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| AppError::Stopped("node thread panicked".into()))?
                .map_err(|e| AppError::Stopped(e.to_string())),
            None => Err(AppError::Stopped("already stopped".into())),
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.shutdown();
        }
    }
}
