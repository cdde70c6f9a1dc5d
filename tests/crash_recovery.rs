//! Crash recovery with real OS processes: proposers, acceptors (RocksDB, fsync policy sync),
//! learners and a client node each run as `ethpaxos run` over loopback UDP. Under client load
//! the tests `kill -9` acceptors and the leader and restart them, then check that every value
//! the client saw acknowledged was delivered exactly once, in the same order, at every learner.
//! Every wait is bounded; every process is killed and every file removed, pass or fail.

mod common;

use common::{check_delivery, free_port, terminate, wait_for_acks};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PROPOSERS: [u16; 2] = [1, 2];
const ACCEPTORS: [u16; 3] = [11, 12, 13];
const LEARNERS: [u16; 2] = [21, 22];
const CLIENT: u16 = 23;

struct Cluster {
    dir: PathBuf,
    ports: Vec<(u16, u16)>,
    children: Vec<(u16, Child)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::env::var_os("ETHPAXOS_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Cluster {
    fn new(name: &str) -> Cluster {
        let dir =
            std::env::temp_dir().join(format!("ethpaxos-crash-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ids: Vec<u16> = PROPOSERS
            .iter()
            .chain(&ACCEPTORS)
            .chain(&LEARNERS)
            .copied()
            .chain([CLIENT])
            .collect();
        let ports = ids.iter().map(|id| (*id, free_port())).collect();
        let mut c = Cluster {
            dir,
            ports,
            children: Vec::new(),
        };
        for id in ids {
            c.write_config(id);
            c.start(id);
        }
        c
    }

    fn write_config(&self, id: u16) {
        let mut y = format!("node_id: {id}\nmembers:\n");
        for (m, port) in &self.ports {
            let role = if PROPOSERS.contains(m) {
                "[proposer]"
            } else if ACCEPTORS.contains(m) {
                "[acceptor]"
            } else if *m == CLIENT {
                "[learner, client]"
            } else {
                "[learner]"
            };
            y += &format!("  - {{id: {m}, roles: {role}, udp: \"127.0.0.1:{port}\"}}\n");
        }
        if PROPOSERS.contains(&id) || ACCEPTORS.contains(&id) {
            y += &format!(
                "storage: {{path: \"{}\"}}\n",
                self.dir.join("data").display()
            );
        }
        if LEARNERS.contains(&id) {
            y += &format!(
                "output: {{delivered: \"{}\"}}\n",
                self.delivered(id).display()
            );
        }
        if id == CLIENT {
            y += &format!(
                "load: {{clients: 4, outstanding: 8, value_size: 32}}\noutput: {{acknowledged: \"{}\"}}\n",
                self.acked().display()
            );
        }
        std::fs::write(self.dir.join(format!("node-{id}.yaml")), y).unwrap();
    }

    fn delivered(&self, id: u16) -> PathBuf {
        self.dir.join(format!("delivered-{id}.txt"))
    }

    fn acked(&self) -> PathBuf {
        self.dir.join("acknowledged.txt")
    }

    fn start(&mut self, id: u16) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{id}.log")))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
            .arg("run")
            .arg("--config")
            .arg(self.dir.join(format!("node-{id}.yaml")))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push((id, child));
    }

    /// `kill -9`: no chance to flush or sync anything.
    fn kill9(&mut self, id: u16) {
        let k = self
            .children
            .iter()
            .position(|(i, _)| *i == id)
            .expect("running");
        let (_, mut child) = self.children.remove(k);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, and wait for the clean exit.
    fn terminate(&mut self, id: u16) {
        let k = self
            .children
            .iter()
            .position(|(i, _)| *i == id)
            .expect("running");
        let (_, mut child) = self.children.remove(k);
        if let Err(e) = terminate(&mut child, &format!("node {id}")) {
            panic!("{e}{}", self.logs());
        }
    }

    /// `kill -9` node `id`, wait for `during` more acknowledgements, restart it, wait for
    /// `after` more.
    fn bounce(&mut self, id: u16, during: usize, after: usize) {
        self.kill9(id);
        self.progress(during, &format!("with node {id} killed"));
        self.start(id);
        self.progress(after, &format!("after node {id} restarted"));
    }

    /// Waits (bounded) until the client has `more` acknowledgements beyond what it had.
    fn progress(&self, more: usize, why: &str) {
        if let Err(e) = wait_for_acks(&self.acked(), more, Duration::from_secs(20), why) {
            panic!("{e}{}", self.logs());
        }
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for (id, _) in &self.ports {
            let log = std::fs::read_to_string(self.dir.join(format!("node-{id}.log")))
                .unwrap_or_default();
            s += &format!(
                "\n--- node {id}:\n{}",
                log.lines().rev().take(5).collect::<Vec<_>>().join("\n")
            );
        }
        s
    }

    /// Stops the client, waits until both learners hold every acknowledged value, and checks
    /// exactly-once delivery and one order.
    fn finish_and_check(mut self) {
        self.terminate(CLIENT);
        let learners: Vec<(u16, PathBuf)> =
            LEARNERS.iter().map(|l| (*l, self.delivered(*l))).collect();
        if let Err(e) = check_delivery(&self.acked(), &learners, 100, Duration::from_secs(30)) {
            panic!("{e}{}", self.logs());
        }
        for id in PROPOSERS.iter().chain(&ACCEPTORS).chain(&LEARNERS) {
            self.terminate(*id);
        }
    }
}

#[test]
fn kill_one_acceptor_and_restart_it() {
    let mut c = Cluster::new("one");
    c.progress(2000, "at start");
    c.bounce(11, 2000, 2000);
    c.finish_and_check();
}

#[test]
fn kill_two_acceptors_one_after_the_other() {
    let mut c = Cluster::new("two");
    c.progress(2000, "at start");
    c.bounce(11, 1000, 1000);
    c.bounce(12, 1000, 2000);
    c.finish_and_check();
}

#[test]
fn kill_the_leader_and_restart_it() {
    let mut c = Cluster::new("leader");
    c.progress(2000, "at start");
    // Proposer 1 is first in rank, so it leads once the cluster has settled; the client can
    // only make progress while it is down if the standby took over.
    c.bounce(1, 2000, 2000);
    c.finish_and_check();
}
