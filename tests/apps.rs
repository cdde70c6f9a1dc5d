//! Applications on a real cluster (3 replica processes on loopback UDP): the embedded client
//! API gets an acknowledgement per value and the ordered stream; `ethpaxos submit` sends
//! values; a learner's Unix-socket stream feeds `ethpaxos tail` and the key-value example,
//! which end up with exactly the submitted values, in order.

mod common;

use bytes::Bytes;
use common::cluster::{LoopNode, Loopback, ProcCluster};
use ethpaxos::app::Embedded;
use ethpaxos::config::NodeConfig;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Replicas 1-3 (replica 1 serves its stream on a socket) running, and configs for client
/// nodes 8 (embedded) and 9 (`ethpaxos submit`), which the tests run themselves.
struct Cluster(ProcCluster<Loopback>);

impl Cluster {
    fn start(name: &str) -> Cluster {
        Self::start_with(name, "")
    }

    /// With more YAML for replica 1.
    fn start_with(name: &str, replica1: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!("ethpaxos-apps-{name}-{}", std::process::id()));
        let socket = dir.join("stream-1.sock");
        let nodes = vec![
            LoopNode::new(1, "[replica]")
                .with(format!("output: {{socket: \"{}\"}}\n", socket.display()))
                .with(replica1),
            LoopNode::new(2, "[replica]"),
            LoopNode::new(3, "[replica]"),
            LoopNode::new(8, "[learner, client]").manual(),
            LoopNode::new(9, "[learner, client]").manual(),
        ];
        let c = Cluster(ProcCluster::start_all(Loopback::new(
            &format!("apps-{name}"),
            nodes,
        )));
        // Ready when replica 1 listens on its stream socket.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !c.socket().exists() {
            assert!(
                Instant::now() < deadline,
                "replica 1 never opened its stream socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        c
    }

    fn config(&self, id: u16) -> PathBuf {
        self.0.place.config(id)
    }

    fn socket(&self) -> PathBuf {
        self.0.dir().join("stream-1.sock")
    }
}

/// The kv example binary cargo built beside this test.
fn kv_example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    dir.join("examples").join("kv")
}

/// Waits (bounded) for a stream reader's first line on stderr, which it writes once it is
/// connected: from then on it gets every value delivered. The rest of its stderr is drained.
fn wait_connected(child: &mut Child, what: &str) {
    use std::io::BufRead;
    let err = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(err).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        for _ in lines {}
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} never said it was connected"));
    assert!(first.contains("stream of"), "{what}: {first}");
}

fn wait_output(child: Child, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut child = child;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "timed out; output so far:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn submit_tail_and_the_kv_example_agree() {
    let c = Cluster::start("kv");
    let values: Vec<String> = (0..40)
        .map(|i| match i % 4 {
            3 => format!("DEL k{}", i - 1),
            _ => format!("SET k{i} v{i} with spaces"),
        })
        .collect();
    // Readers first: the stream carries what is delivered after they connect.
    let mut tail = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
        .args(["tail", "--count", "40", "--socket"])
        .arg(c.socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        kv_example().exists(),
        "{} was not built",
        kv_example().display()
    );
    let mut kv = Command::new(kv_example())
        .arg(c.socket())
        .args(["--count", "40"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_connected(&mut tail, "ethpaxos tail");
    wait_connected(&mut kv, "the kv example");
    let out = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
        .arg("submit")
        .arg("--config")
        .arg(c.config(9))
        .args(&values)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("acknowledged"))
            .count(),
        40,
        "{text}"
    );

    let tailed = wait_output(tail, Duration::from_secs(20));
    let got: Vec<&str> = tailed
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap())
        .collect();
    assert_eq!(got, values, "tail saw another stream");
    // Each line starts with the value's position, and positions only grow.
    let positions: Vec<ethpaxos::protocol::Position> = tailed
        .lines()
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions out of order: {positions:?}"
    );

    let mut expected = std::collections::BTreeMap::new();
    for v in &values {
        let w: Vec<&str> = v.splitn(3, ' ').collect();
        match w[0] {
            "SET" => {
                expected.insert(w[1].to_string(), w[2].to_string());
            }
            _ => {
                expected.remove(w[1]);
            }
        }
    }
    let map: Vec<String> = expected.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let applied = wait_output(kv, Duration::from_secs(20));
    assert_eq!(applied.lines().collect::<Vec<_>>(), map);
}

#[test]
fn the_embedded_client_is_acknowledged_once_per_value() {
    let c = Cluster::start("embedded");
    let cfg = NodeConfig::load(&c.config(8)).unwrap();
    let node = Embedded::start(cfg).unwrap();
    let mut seqs = Vec::new();
    for i in 0..20u32 {
        let seq = node
            .submit(Bytes::from(format!("value {i}")), Duration::from_secs(10))
            .unwrap();
        seqs.push(seq);
    }
    assert_eq!(seqs, (0..20).collect::<Vec<u64>>());
    // The stream holds each of our values once, in submission order, at growing positions.
    let delivered: Vec<_> = node.deliveries().try_iter().collect();
    let ours: Vec<String> = delivered
        .iter()
        .map(|d| String::from_utf8_lossy(&d.payload).into_owned())
        .collect();
    let want: Vec<String> = (0..20).map(|i| format!("value {i}")).collect();
    assert_eq!(ours, want);
    assert!(
        delivered.windows(2).all(|w| w[0].position < w[1].position),
        "positions out of order"
    );
    let stats = node.stop().unwrap();
    assert_eq!(stats.acknowledged, 20);
}

#[test]
fn binary_values_from_stdin_and_errors_that_quote_only_a_prefix() {
    use std::io::Write;
    let c = Cluster::start("binary");
    let submit = |args: &[&str], stdin: Option<&[u8]>| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
            .arg("submit")
            .arg("--config")
            .arg(c.config(9))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or_default()).unwrap();
        drop(input);
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let acked = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("acknowledged"))
            .count()
    };
    // Length-prefixed: any bytes, newlines and invalid UTF-8 included.
    let values: [&[u8]; 3] = [&[0, 159, 146, 150], &[0xFF; 10], b"two\nlines"];
    let mut input = Vec::new();
    for v in values {
        input.extend_from_slice(&(v.len() as u32).to_be_bytes());
        input.extend_from_slice(v);
    }
    let (ok, text) = submit(&["--format", "length-prefixed"], Some(&input));
    assert!(ok, "{text}");
    assert_eq!(acked(&text), 3, "{text}");
    // Text lines from standard input need not be UTF-8 either.
    let (ok, text) = submit(&[], Some(b"caf\xE9\nplain\n"));
    assert!(ok, "{text}");
    assert_eq!(acked(&text), 2, "{text}");
    // Hex arguments.
    let (ok, text) = submit(&["--format", "hex", "00ff10", "41"], None);
    assert!(ok, "{text}");
    assert_eq!(acked(&text), 2, "{text}");
    let (ok, text) = submit(&["--format", "hex", "0g"], None);
    assert!(!ok && text.contains("hex digits"), "{text}");
    // A length that runs past the input is named, not guessed at.
    let (ok, text) = submit(&["--format", "length-prefixed"], Some(&[0, 0, 0, 9, 1]));
    assert!(!ok && text.contains("its length says 9 bytes"), "{text}");
    // An oversized value is refused, and the error quotes 40 characters of it, not 5000.
    let big = "y".repeat(5000);
    let (ok, text) = submit(&[&big], None);
    assert!(!ok, "{text}");
    assert!(text.contains("(5000 bytes)"), "{text}");
    assert!(
        !text.contains(&"y".repeat(41)),
        "the whole value was echoed"
    );
    // `tail --count 0` is refused at once instead of waiting for ever.
    let out = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
        .args(["tail", "--count", "0", "--socket"])
        .arg(c.socket())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--count"));
}

/// Submits `values` through node 9 with `ethpaxos submit`; all must be acknowledged.
fn submit_all(c: &Cluster, values: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
        .arg("submit")
        .arg("--config")
        .arg(c.config(9))
        .args(values)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 30 kv commands whose keys are overwritten and deleted (the map depends on applying each
/// once, in order), and the map they leave as the kv example prints it.
fn kv_commands() -> (Vec<String>, String) {
    let values: Vec<String> = (0..30)
        .map(|i| match i % 5 {
            4 => format!("DEL k{}", i % 7),
            _ => format!("SET k{} v{i}", i % 7),
        })
        .collect();
    let mut want = std::collections::BTreeMap::new();
    for v in &values {
        let w: Vec<&str> = v.split(' ').collect();
        match w[0] {
            "SET" => want.insert(w[1].to_string(), w[2].to_string()),
            _ => want.remove(w[1]),
        };
    }
    let want = want.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    (values, want)
}

/// Runs the kv example against replica 1's stream with a state file; returns its map lines.
fn kv_run(c: &Cluster, state: &std::path::Path, count: usize) -> String {
    let kv = Command::new(kv_example())
        .arg(c.socket())
        .arg("--state")
        .arg(state)
        .args(["--count", &count.to_string(), "--snapshot-every", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(kv, Duration::from_secs(20))
}

#[test]
fn the_kv_store_and_its_learner_restart_and_apply_every_value_once() {
    let mut c = Cluster::start("kvrestart");
    // Keys are overwritten and deleted, so the map depends on applying each value once and
    // in order.
    let (values, want) = kv_commands();
    submit_all(&c, &values);
    let state = c.0.dir().join("kv-state.json");
    // The store applies the first 11 values and stops (its state file holds them) ...
    kv_run(&c, &state, 11);
    // ... its learner is killed and restarted (it serves the stream from its journal) ...
    let summary = c.0.dir().join("summary-1.json");
    c.0.kill9(1);
    std::fs::remove_file(&summary).unwrap();
    c.0.start(1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.0.summary(1).is_none() {
        assert!(
            Instant::now() < deadline,
            "replica 1 did not restart{}",
            c.0.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // ... and the store, restarted from its state file, applies the other 19: the map is the
    // one of all 30 applied once each, in order.
    assert_eq!(kv_run(&c, &state, 19), want);
    let s = c.0.summary(1).unwrap();
    assert!(s["learner"]["resumed_at"].as_u64().unwrap() > 0, "{s}");
    // A damaged state file is refused by name, not applied.
    let text = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, text.replacen("k", "K", 1)).unwrap();
    let out = Command::new(kv_example())
        .arg(c.socket())
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum"),
        "{out:?}"
    );
}

#[test]
fn the_stream_resumes_from_a_position_and_refuses_bad_ones_by_name() {
    use std::io::{BufRead, Write};
    let c = Cluster::start("from");
    let values: Vec<String> = (0..12).map(|i| format!("value {i}")).collect();
    submit_all(&c, &values);
    let tail = |from: &str, count: usize| {
        Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
            .args([
                "tail",
                "--from",
                from,
                "--count",
                &count.to_string(),
                "--socket",
            ])
            .arg(c.socket())
            .output()
            .unwrap()
    };
    // From the start: every value, in order.
    let out = tail("0.0", 12);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let got: Vec<&str> = lines
        .iter()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap())
        .collect();
    assert_eq!(got, values);
    // From the position of the 8th: the last five.
    let eighth = lines[7].split(' ').next().unwrap().to_string();
    let out = tail(&eighth, 5);
    assert!(out.status.success(), "{out:?}");
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap().to_string())
        .collect();
    assert_eq!(got, values[7..]);
    // A position past the end is refused, naming the end.
    let out = tail("99999999.0", 1);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("past the end") && err.contains("below"),
        "{err}"
    );
    // A malformed one is refused before connecting.
    let out = tail("seven", 1);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("INSTANCE.INDEX"));
    // A reader that sends garbage for a handshake is told what to send, and closed.
    let mut raw = std::os::unix::net::UnixStream::connect(c.socket()).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(b"GET / HTTP/1.0\n").unwrap();
    let mut answer = String::new();
    std::io::BufReader::new(&raw)
        .read_line(&mut answer)
        .unwrap();
    assert!(
        answer.starts_with("error ") && answer.contains("live"),
        "{answer}"
    );
}

/// The embedded test's application: a key-value map (and how many values it applied), shared
/// with the test.
#[derive(Clone, Default)]
struct KvMachine(
    std::sync::Arc<std::sync::Mutex<(std::collections::BTreeMap<String, String>, u64)>>,
);

impl ethpaxos::app::StateMachine for KvMachine {
    fn apply(
        &mut self,
        _position: ethpaxos::protocol::Position,
        v: &ethpaxos::protocol::ClientValue,
    ) {
        let text = String::from_utf8_lossy(&v.payload).into_owned();
        let mut s = self.0.lock().unwrap();
        if let Some(("SET", kv)) = text.split_once(' ') {
            if let Some((k, val)) = kv.split_once(' ') {
                s.0.insert(k.into(), val.into());
            }
        }
        s.1 += 1;
    }
    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&*self.0.lock().unwrap()).unwrap()
    }
    fn restore(
        &mut self,
        _below: ethpaxos::protocol::Position,
        state: &[u8],
    ) -> Result<(), String> {
        *self.0.lock().unwrap() = serde_json::from_slice(state).map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[test]
fn an_embedded_state_machine_takes_snapshots_and_restarts_from_them_and_the_journal() {
    let c = Cluster::start("machine");
    let mut cfg = NodeConfig::load(&c.config(8)).unwrap();
    // A snapshot every 4 instances: the restart restores one and replays the journal after.
    cfg.learner.snapshot_every = 4;
    let mut want = std::collections::BTreeMap::new();
    let submit =
        |node: &Embedded, i: u32, want: &mut std::collections::BTreeMap<String, String>| {
            node.submit(
                Bytes::from(format!("SET k{} v{i}", i % 5)),
                Duration::from_secs(10),
            )
            .unwrap();
            want.insert(format!("k{}", i % 5), format!("v{i}"));
        };
    let first = KvMachine::default();
    let node = Embedded::start_with(cfg.clone(), Box::new(first.clone())).unwrap();
    for i in 0..23 {
        submit(&node, i, &mut want);
    }
    let stats = node.stop().unwrap();
    let snaps = &stats.learner.as_ref().unwrap().snapshots;
    assert!(snaps.as_ref().unwrap().taken >= 2, "{snaps:?}");
    assert_eq!(first.0.lock().unwrap().0, want);
    // A fresh machine, restored by the node from its newest image and its journal: the
    // same map, every value applied once.
    let second = KvMachine::default();
    let node = Embedded::start_with(cfg, Box::new(second.clone())).unwrap();
    submit(&node, 23, &mut want);
    node.stop().unwrap();
    let (map, applied) = second.0.lock().unwrap().clone();
    assert_eq!(map, want);
    assert_eq!(applied, 24);
}

/// Runs the kv example against replica 1's stream with extra arguments; returns (success,
/// stdout, stderr).
fn kv_with(c: &Cluster, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(kv_example())
        .arg(c.socket())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut child = out;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kv {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_kv_store_hands_its_learner_snapshots_and_a_fresh_store_restores_from_one() {
    // Replica 1's learner keeps its application's snapshots (it takes none of its own).
    let c = Cluster::start_with("kvsnap", "learner: {snapshot_every: 0}\n");
    // Nothing held yet: `from snapshot` says so, naming where to start instead.
    let out = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
        .args(["tail", "--from", "snapshot", "--socket"])
        .arg(c.socket())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no snapshot yet"),
        "{out:?}"
    );
    let (values, want) = kv_commands();
    submit_all(&c, &values);
    // A store with nothing applies the whole stream and hands its learner a snapshot every
    // 7 values.
    let (ok, map, err) = kv_with(&c, &["--restore", "--count", "30", "--snapshot-every", "7"]);
    assert!(ok, "{err}");
    assert_eq!(map, want);
    // Another store with nothing restores the newest (after 28 values) and applies the
    // last 2: the same map.
    let (ok, map, err) = kv_with(&c, &["--restore", "--count", "2", "--snapshot-every", "0"]);
    assert!(ok, "{err}");
    assert!(err.contains("restored the learner's snapshot"), "{err}");
    assert_eq!(map, want);
    // `tail --from snapshot` starts at the image and gives the values after it.
    let out = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
        .args(["tail", "--from", "snapshot", "--count", "2", "--socket"])
        .arg(c.socket())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap().to_string())
        .collect();
    assert_eq!(lines, values[28..].to_vec());
    // A snapshot handed with a length its bytes do not match, or at a position the stream
    // has not reached, is refused by name.
    use std::io::{Read, Write};
    let put = |line: &str, body: &[u8]| {
        let mut s = std::os::unix::net::UnixStream::connect(c.socket()).unwrap();
        s.write_all(line.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    };
    let a = put("put snapshot 1.0 5\n", b"toolong");
    assert!(a.starts_with("error") && a.contains("follow"), "{a}");
    let a = put("put snapshot 99999.0 2\n", b"{}");
    assert!(a.starts_with("error") && a.contains("past the end"), "{a}");
    let a = put("put snapshot one 2\n", b"{}");
    assert!(
        a.starts_with("error") && a.contains("put snapshot INSTANCE.INDEX LENGTH"),
        "{a}"
    );
    let a = put("put snapshot 1.0 2\n", b"{}");
    assert!(a.starts_with("ok stored 1.0"), "{a}");
}

#[test]
fn a_learner_that_takes_its_own_snapshots_refuses_an_applications() {
    let c = Cluster::start("kvown");
    let (ok, _, err) = kv_with(&c, &["--restore", "--count", "0", "--snapshot-every", "1"]);
    assert!(ok, "{err}");
    let out = {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(c.socket()).unwrap();
        s.write_all(b"put snapshot 0.0 2\n{}").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    };
    assert!(out.contains("snapshot_every"), "{out}");
}
