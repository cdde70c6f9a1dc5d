//! The one harness for tests that run node processes: a `ProcCluster` starts, kills (-9),
//! stops (SIGTERM), restarts and partitions nodes, waits for progress, and checks the final
//! streams. Where the nodes run is a `Placement`: `Loopback` (UDP on 127.0.0.1, no root) here,
//! or the network-namespace testbed (tests/testbed.rs). What it reads of a node is its JSON
//! summary (`output.summary`: refreshed while it runs, final when it stops), never its log
//! text; events are ordered by readiness signals (files and counts appearing), not sleeps.
//!
//! Every node of a placement writes into its directory: `node-<id>.log`,
//! `summary-<id>.json`, learners `delivered-<id>.txt`, the client node `acknowledged.txt`.

use super::{check_delivery, pairs, read_lines, terminate, wait_for_acks};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where and how a cluster's nodes run.
pub trait Placement {
    fn dir(&self) -> &Path;
    /// Every node, in start order.
    fn ids(&self) -> Vec<u16>;
    /// Whether node `id` plays `role` ("proposer", "acceptor", "learner" or "client").
    fn plays(&self, id: u16, role: &str) -> bool;
    /// Starts node `id` (its stderr into `node-<id>.log`).
    fn spawn(&self, id: u16) -> Child;
    /// Cuts (`up` false) or restores node `id`'s link.
    fn link(&self, id: u16, up: bool);
    /// Whether the cluster starts node `id` itself (false: the test starts it, or runs it
    /// embedded).
    fn autostart(&self, _id: u16) -> bool {
        true
    }
    /// Frees what the placement made (namespaces, links), pass or fail.
    fn teardown(&mut self) {}
}

pub struct ProcCluster<P: Placement> {
    pub place: P,
    children: HashMap<u16, Child>,
    /// Bound on every wait for progress.
    pub patience: Duration,
}

impl<P: Placement> Drop for ProcCluster<P> {
    fn drop(&mut self) {
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.place.teardown();
        if std::env::var_os("ETHPAXOS_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(self.place.dir());
        }
    }
}

impl<P: Placement> ProcCluster<P> {
    /// Starts every node the placement starts itself.
    pub fn start_all(place: P) -> ProcCluster<P> {
        let mut c = ProcCluster {
            place,
            children: HashMap::new(),
            patience: Duration::from_secs(30),
        };
        for id in c.place.ids() {
            if c.place.autostart(id) {
                c.start(id);
            }
        }
        c
    }

    pub fn dir(&self) -> &Path {
        self.place.dir()
    }

    pub fn running(&self, id: u16) -> bool {
        self.children.contains_key(&id)
    }

    pub fn start(&mut self, id: u16) {
        let child = self.place.spawn(id);
        self.children.insert(id, child);
    }

    /// `kill -9`: no chance to flush or sync anything.
    pub fn kill9(&mut self, id: u16) {
        let mut child = self.children.remove(&id).expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait (bounded) for a clean exit.
    pub fn terminate(&mut self, id: u16) {
        let mut child = self.children.remove(&id).expect("running");
        if let Err(e) = terminate(&mut child, &format!("node {id}")) {
            panic!("{e}{}", self.logs());
        }
    }

    /// Sends `sig` (e.g. "STOP", "CONT") to node `id`.
    pub fn signal(&self, id: u16, sig: &str) {
        let pid = self.children[&id].id();
        let ok = Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} node {id}");
    }

    /// `kill -9` node `id`, wait for `during` more acknowledgements (the cluster must go on
    /// without it), restart it, wait for `after` more.
    pub fn bounce(&mut self, id: u16, during: usize, after: usize) {
        self.kill9(id);
        self.progress(during, &format!("with node {id} killed"));
        self.start(id);
        self.progress(after, &format!("after node {id} restarted"));
    }

    pub fn acked(&self) -> PathBuf {
        self.dir().join("acknowledged.txt")
    }

    pub fn delivered(&self, id: u16) -> PathBuf {
        self.dir().join(format!("delivered-{id}.txt"))
    }

    /// Waits (bounded) for `more` acknowledgements beyond what the client has now.
    pub fn progress(&self, more: usize, why: &str) {
        if let Err(e) = wait_for_acks(&self.acked(), more, self.patience, why) {
            panic!("{e}{}", self.logs());
        }
    }

    /// Waits (bounded by `patience`) until `ready` holds of the cluster (its nodes' summaries,
    /// typically); panics naming `what` otherwise.
    pub fn wait_until(&self, what: &str, ready: &dyn Fn(&Self) -> bool) {
        if let Err(e) = super::wait_until(what, self.patience, || ready(self)) {
            panic!("{e}{}", self.logs());
        }
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for id in self.place.ids() {
            let log = read_lines(&self.dir().join(format!("node-{id}.log")));
            let tail: Vec<_> = log.iter().rev().take(5).rev().cloned().collect();
            s += &format!("\n--- node {id}:\n{}", tail.join("\n"));
        }
        s
    }

    /// Node `id`'s summary as it last wrote it (None before its first).
    pub fn summary(&self, id: u16) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir().join(format!("summary-{id}.json"))).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The running proposer that leads with the highest ballot, from the nodes' live
    /// summaries; waits (bounded) for one.
    pub fn leader(&self) -> u16 {
        let deadline = Instant::now() + self.patience;
        loop {
            let best = self
                .place
                .ids()
                .into_iter()
                .filter(|id| self.running(*id) && self.place.plays(*id, "proposer"))
                .filter_map(|id| {
                    let s = self.summary(id)?;
                    let round = s["leading_round"].as_u64()?;
                    s["running"].as_bool()?.then_some((round, id))
                })
                .max();
            if let Some((_, id)) = best {
                return id;
            }
            assert!(Instant::now() < deadline, "no leader:{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) until a running proposer other than `old` leads.
    pub fn leader_other_than(&self, old: u16) -> u16 {
        let deadline = Instant::now() + self.patience;
        loop {
            let now = self.leader();
            if now != old {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "nobody took over from {old}:{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Cuts the leader's link: another proposer must take over for the client to go on. Then
    /// heals it and waits for more progress.
    pub fn partition_leader_then_heal(&self) {
        let leader = self.leader();
        self.place.link(leader, false);
        self.progress(2000, &format!("with leader {leader} cut off"));
        self.leader_other_than(leader);
        self.place.link(leader, true);
        self.progress(2000, "after the heal");
    }

    /// Stops the client node, checks that every learner still running delivered every
    /// acknowledged value once and all in one order, stops every node cleanly and returns
    /// each node's final JSON summary.
    pub fn finish_and_check(mut self) -> HashMap<u16, serde_json::Value> {
        let client = self
            .place
            .ids()
            .into_iter()
            .find(|id| self.place.plays(*id, "client") && self.running(*id))
            .expect("a running client node");
        self.terminate(client);
        // Learners a test left down are not asked to deliver.
        let learners: Vec<(u16, PathBuf)> = self
            .place
            .ids()
            .into_iter()
            .filter(|id| *id != client && self.place.plays(*id, "learner") && self.running(*id))
            .map(|id| (id, self.delivered(id)))
            .collect();
        let installed_at = |id: u16| {
            self.summary(id)?["learner"]["snapshots"]["installed_at"]
                .as_str()?
                .parse()
                .ok()
        };
        let acked = check_delivery(&self.acked(), &learners, 200, self.patience, &installed_at)
            .unwrap_or_else(|e| panic!("{e}{}", self.logs()));
        if self.place.plays(client, "learner") {
            // The client node's own learner stopped with it: what it delivered is a prefix
            // of everybody's stream.
            let own = pairs(&self.delivered(client));
            let reference = learners
                .iter()
                .find(|(id, _)| installed_at(*id).is_none())
                .expect("a learner without a snapshot installed");
            let full = pairs(&reference.1);
            assert!(
                own.len() >= acked && full.starts_with(&own),
                "the client node's learner delivered another order ({} values)",
                own.len()
            );
        }
        eprintln!(
            "{acked} acknowledged values checked at {} learners",
            learners.len()
        );
        let mut ids: Vec<u16> = self.children.keys().copied().collect();
        ids.sort_unstable();
        for id in &ids {
            self.terminate(*id);
        }
        ids.push(client);
        ids.into_iter()
            .map(|id| {
                let s = self
                    .summary(id)
                    .unwrap_or_else(|| panic!("node {id} left no summary{}", self.logs()));
                assert_eq!(
                    s["running"].as_bool(),
                    Some(false),
                    "node {id}'s summary is not its final one"
                );
                (id, s)
            })
            .collect()
    }
}

/// A counter from a node's JSON summary, e.g. `dropped_bad_frame` (the transport's counters
/// are under `transport`, the acceptor's under `acceptor`).
pub fn counter(stats: &serde_json::Value, name: &str) -> u64 {
    stats
        .get(name)
        .or_else(|| stats["transport"].get(name))
        .or_else(|| stats["acceptor"].get(name))
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("no counter {name} in {stats}"))
}

/// One node of a loopback cluster: its id, roles (YAML list, e.g. "[replica]") and any
/// more YAML for its config.
pub struct LoopNode {
    pub id: u16,
    pub roles: &'static str,
    pub extra: String,
    pub autostart: bool,
}

impl LoopNode {
    pub fn new(id: u16, roles: &'static str) -> LoopNode {
        LoopNode {
            id,
            roles,
            extra: String::new(),
            autostart: true,
        }
    }

    pub fn with(mut self, yaml: impl Into<String>) -> LoopNode {
        self.extra += &yaml.into();
        self
    }

    /// Not started by the cluster (the test runs it, e.g. embedded).
    pub fn manual(mut self) -> LoopNode {
        self.autostart = false;
        self
    }
}

/// Nodes on loopback UDP, each config in `node-<id>.yaml`; proposers and acceptors keep
/// their storage under `data/`.
pub struct Loopback {
    dir: PathBuf,
    nodes: Vec<LoopNode>,
    ports: Vec<(u16, u16)>,
}

impl Loopback {
    /// Writes every node's config into a fresh directory named after the test.
    pub fn new(test: &str, nodes: Vec<LoopNode>) -> Loopback {
        let dir = std::env::temp_dir().join(format!("ethpaxos-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ports = nodes.iter().map(|n| (n.id, super::free_port())).collect();
        let l = Loopback { dir, nodes, ports };
        for n in &l.nodes {
            std::fs::write(l.config(n.id), l.yaml(n)).unwrap();
        }
        l
    }

    pub fn config(&self, id: u16) -> PathBuf {
        self.dir.join(format!("node-{id}.yaml"))
    }

    fn yaml(&self, n: &LoopNode) -> String {
        let mut y = format!("node_id: {}\nmembers:\n", n.id);
        for (m, port) in &self.ports {
            let roles = self.node(*m).roles;
            y += &format!("  - {{id: {m}, roles: {roles}, udp: \"127.0.0.1:{port}\"}}\n");
        }
        let mut output = vec![format!(
            "summary: \"{}\"",
            self.dir.join(format!("summary-{}.json", n.id)).display()
        )];
        // Learners keep their journal there too (learner-<id>).
        if ["proposer", "acceptor", "learner"]
            .iter()
            .any(|r| self.plays(n.id, r))
        {
            y += &format!(
                "storage: {{path: \"{}\"}}\n",
                self.dir.join("data").display()
            );
        }
        if self.plays(n.id, "learner") {
            output.push(format!(
                "delivered: \"{}\"",
                self.dir.join(format!("delivered-{}.txt", n.id)).display()
            ));
        }
        if self.plays(n.id, "client") {
            output.push(format!(
                "acknowledged: \"{}\"",
                self.dir.join("acknowledged.txt").display()
            ));
        }
        let extra_output = n
            .extra
            .lines()
            .find_map(|l| l.strip_prefix("output: {"))
            .map(|rest| rest.trim_end_matches('}').to_string());
        output.extend(extra_output);
        y += &format!("output: {{{}}}\n", output.join(", "));
        for l in n.extra.lines().filter(|l| !l.starts_with("output: ")) {
            y += l;
            y += "\n";
        }
        y
    }

    fn node(&self, id: u16) -> &LoopNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("a node of the cluster")
    }
}

impl Placement for Loopback {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn ids(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    fn plays(&self, id: u16, role: &str) -> bool {
        let roles = self.node(id).roles;
        roles.contains(role)
            || (roles.contains("replica") && ["proposer", "acceptor", "learner"].contains(&role))
    }

    fn spawn(&self, id: u16) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{id}.log")))
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
            .arg("run")
            .arg("--config")
            .arg(self.config(id))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn link(&self, _id: u16, _up: bool) {
        panic!("loopback nodes share one interface: partitions need the testbed");
    }

    fn autostart(&self, id: u16) -> bool {
        self.node(id).autostart
    }
}
