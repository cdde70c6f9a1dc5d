//! The client sessions a node runs: its load generator's clients and an embedded application's
//! one, with the one client-id scheme and the one latency histogram every runtime reports.

use crate::app::{AppLink, DeliveredValue};
use crate::protocol::{
    Actions, Client, ClientId, ClientValue, LearnerSnapshot, Message, NodeId, Position,
    ProtocolConfig, SubmitError,
};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A client's id: node id (16 bits), the session of this process (32 bits), client index (16
/// bits). Learners deliver each (client, seq) once, so a restarted node must not reuse its
/// predecessor's ids: its sequence numbers start again at 0.
pub fn client_id(node: NodeId, session: u32, k: usize) -> ClientId {
    ((node as u64) << 48) | ((session as u64) << 16) | (k as u64 & 0xFFFF)
}

/// The embedded application's client index (load clients use 0..0xFFFF).
pub const APP_CLIENT: usize = 0xFFFF;

/// Submit-to-delivery latency of acknowledged values, in microseconds.
pub struct Latency(hdrhistogram::Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // Bounded up front: saturating_record clamps to the current bound, and a histogram
        // that starts tiny and grows on demand would clamp every value to 2 ms.
        Latency(
            hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
        )
    }
}

impl Latency {
    pub fn record(&mut self, d: Duration) {
        self.0.saturating_record(d.as_micros().max(1) as u64);
    }

    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.0.value_at_quantile(q))
    }

    pub fn mean(&self) -> Duration {
        Duration::from_micros(self.0.mean() as u64)
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn add(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }
}

/// What a node's load generator submits: `outstanding` values per client, up to `limit` each
/// (0: no limit), until `hold` is set.
#[derive(Clone)]
pub struct Load {
    pub outstanding: usize,
    pub limit: u64,
    pub payload: Bytes,
    pub hold: Option<Arc<AtomicBool>>,
}

/// An embedded application's requests and its waiting acknowledgements.
struct App {
    link: AppLink,
    client: Client,
    waiting: HashMap<u64, crossbeam_channel::Sender<Result<u64, String>>>,
}

/// What one delivered value did to the sessions.
pub struct Acked {
    pub client: ClientId,
    pub seq: u64,
    pub latency: Duration,
}

pub struct Sessions {
    clients: Vec<Client>,
    /// Some load client may submit again (a value was acknowledged since the last top-up).
    room: bool,
    /// A redirect re-queued values that the next top-up must send.
    unflushed: bool,
    submitted: Vec<u64>,
    load: Option<Load>,
    app: Option<App>,
    latency: Latency,
    warmup: Duration,
}

impl Sessions {
    /// No sessions (a node without the client role).
    pub fn none() -> Sessions {
        Sessions {
            clients: Vec::new(),
            room: true,
            unflushed: false,
            submitted: Vec::new(),
            load: None,
            app: None,
            latency: Latency::default(),
            warmup: Duration::ZERO,
        }
    }

    /// `count` client sessions of node `node`, in process session `session`.
    pub fn new(
        node: NodeId,
        session: u32,
        count: usize,
        cfg: &ProtocolConfig,
        proposers: &[NodeId],
    ) -> Sessions {
        let clients: Vec<Client> = (0..count.min(APP_CLIENT))
            .map(|k| Client::new(client_id(node, session, k), cfg, proposers.to_vec()))
            .collect();
        Sessions {
            submitted: vec![0; clients.len()],
            clients,
            ..Sessions::none()
        }
    }

    /// Submits on its own: the load generator.
    pub fn with_load(mut self, load: Load) -> Sessions {
        self.load = Some(load);
        self
    }

    /// Latencies in the first `warmup` (since the start) are left out.
    pub fn with_warmup(mut self, warmup: Duration) -> Sessions {
        self.warmup = warmup;
        self
    }

    /// An embedded application's session (app.rs).
    pub fn with_app(
        mut self,
        link: AppLink,
        node: NodeId,
        session: u32,
        cfg: &ProtocolConfig,
        proposers: &[NodeId],
    ) -> Sessions {
        self.app = Some(App {
            link,
            client: Client::new(
                client_id(node, session, APP_CLIENT),
                cfg,
                proposers.to_vec(),
            ),
            waiting: HashMap::new(),
        });
        self
    }

    pub fn ids(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.clients.iter().map(Client::id)
    }

    /// Values submitted and not yet acknowledged, over every session.
    /// An application submits through these sessions.
    pub fn has_app(&self) -> bool {
        self.app.is_some()
    }

    pub fn outstanding(&self) -> usize {
        self.clients.iter().map(Client::outstanding).sum::<usize>()
            + self.app.as_ref().map_or(0, |a| a.client.outstanding())
    }

    /// Values client `k` submitted and has not seen acknowledged.
    pub fn outstanding_of(&self, k: usize) -> usize {
        self.clients.get(k).map_or(0, Client::outstanding)
    }

    pub fn latency(&self) -> &Latency {
        &self.latency
    }

    pub fn take_latency(&mut self) -> Latency {
        std::mem::take(&mut self.latency)
    }

    /// Submits one value on client `k` (a caller that makes its own load, as the simulator
    /// does). Returns its id and sequence number.
    pub fn submit(
        &mut self,
        now: Duration,
        k: usize,
        payload: Bytes,
    ) -> Result<(ClientId, u64), SubmitError> {
        let c = &mut self.clients[k];
        let seq = c.submit(now, payload)?;
        self.submitted[k] += 1;
        self.unflushed = true;
        Ok((c.id(), seq))
    }

    /// Tops the load generator's clients up and takes the application's requests; a value
    /// the session refuses (too large, too many outstanding) is answered at once. Returns
    /// how many values it submitted.
    pub fn top_up(&mut self, now: Duration, out: &mut Actions) -> u64 {
        let mut submitted = 0;
        // Until an acknowledgement makes room, a top-up would find every client full: with
        // hundreds of clients, looking at each every turn costs more than the turn.
        if let Some(load) = self.load.as_ref().filter(|_| self.room) {
            self.room = false;
            let held = load
                .hold
                .as_ref()
                .is_some_and(|h| h.load(Ordering::Relaxed));
            for (k, c) in self.clients.iter_mut().enumerate() {
                while !held
                    && c.outstanding() < load.outstanding
                    && (load.limit == 0 || self.submitted[k] < load.limit)
                {
                    if c.submit(now, load.payload.clone()).is_err() {
                        break;
                    }
                    self.submitted[k] += 1;
                    submitted += 1;
                }
            }
        }
        let mut app_submitted = false;
        if let Some(app) = &mut self.app {
            while let Ok(req) = app.link.requests.try_recv() {
                match app.client.submit(now, req.value) {
                    Ok(seq) => {
                        app.waiting.insert(seq, req.ack);
                        submitted += 1;
                        app_submitted = true;
                    }
                    Err(e) => {
                        let _ = req.ack.send(Err(e.to_string()));
                    }
                }
            }
        }
        if submitted > 0 || app_submitted || std::mem::take(&mut self.unflushed) {
            self.flush(out);
        }
        submitted
    }

    /// Sends what the sessions have queued.
    pub fn flush(&mut self, out: &mut Actions) {
        self.clients.iter_mut().for_each(|c| c.flush(out));
        if let Some(app) = &mut self.app {
            app.client.flush(out);
        }
    }

    pub fn tick(&mut self, now: Duration, out: &mut Actions) {
        self.clients.iter_mut().for_each(|c| c.tick(now, out));
        if let Some(app) = &mut self.app {
            app.client.tick(now, out);
        }
    }

    /// A proposer's redirect for one of these sessions.
    pub fn redirect(&mut self, msg: &Message) {
        let Message::Redirect { client, .. } = msg else {
            return;
        };
        if let Some(c) = self.clients.iter_mut().find(|c| c.id() == *client) {
            c.handle(msg);
            self.unflushed = true;
        }
        if let Some(app) = self.app.as_mut().filter(|a| a.client.id() == *client) {
            app.client.handle(msg);
            self.unflushed = true;
        }
    }

    /// A value this node's learner delivered: the application sees every value; the session
    /// that submitted it (if it is here) is acknowledged.
    pub fn delivered(
        &mut self,
        now: Duration,
        position: Position,
        v: &ClientValue,
    ) -> Option<Acked> {
        if let Some(app) = &mut self.app {
            let _ = app.link.deliveries.send(DeliveredValue {
                position,
                client: v.client,
                seq: v.seq,
                payload: v.payload.clone(),
            });
            if app.client.id() == v.client {
                let latency = app.client.on_delivered(now, v.seq)?;
                if let Some(ack) = app.waiting.remove(&v.seq) {
                    let _ = ack.send(Ok(v.seq));
                }
                return Some(self.acked(now, v, latency));
            }
        }
        // Load clients are numbered from 0 in their id's low bits.
        let k = (v.client & 0xFFFF) as usize;
        let c = self.clients.get_mut(k).filter(|c| c.id() == v.client)?;
        let latency = c.on_delivered(now, v.seq)?;
        self.room = true;
        Some(self.acked(now, v, latency))
    }

    /// The learner installed a snapshot: values of these sessions its exactly-once table
    /// holds were delivered elsewhere, before the image, and are acknowledged now.
    pub fn installed(&mut self, now: Duration, learner: &LearnerSnapshot) -> Vec<Acked> {
        let mut acks = Vec::new();
        let clients = self
            .clients
            .iter_mut()
            .chain(self.app.as_mut().map(|a| &mut a.client));
        for c in clients {
            let Some(dedup) = learner.dedup.get(&c.id()) else {
                continue;
            };
            for (seq, latency) in c.on_installed(now, dedup) {
                acks.push((c.id(), seq, latency));
            }
        }
        if let Some(app) = &mut self.app {
            for (client, seq, _) in &acks {
                if *client == app.client.id() {
                    if let Some(ack) = app.waiting.remove(seq) {
                        let _ = ack.send(Ok(*seq));
                    }
                }
            }
        }
        if !acks.is_empty() {
            self.room = true;
        }
        acks.into_iter()
            .map(|(client, seq, latency)| Acked {
                client,
                seq,
                latency,
            })
            .collect()
    }

    fn acked(&mut self, now: Duration, v: &ClientValue, latency: Duration) -> Acked {
        if now >= self.warmup {
            self.latency.record(latency);
        }
        Acked {
            client: v.client,
            seq: v.seq,
            latency,
        }
    }
}
