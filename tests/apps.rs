//! Applications on a real cluster (3 replica processes on loopback UDP): the embedded client
//! API gets an acknowledgement per value and the ordered stream; `ethpaxos submit` sends
//! values; a learner's Unix-socket stream feeds `ethpaxos tail` and the key-value example,
//! which end up with exactly the submitted values, in order.

mod common;

use bytes::Bytes;
use common::free_port;
use ethpaxos::app::Embedded;
use ethpaxos::config::NodeConfig;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Cluster {
    dir: PathBuf,
    ports: Vec<(u16, u16)>,
    children: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cluster {
    /// Replicas 1-3 (replica 1 serves its stream on a socket) and configs for client nodes
    /// 8 (embedded) and 9 (`ethpaxos submit`).
    fn start(name: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!("ethpaxos-apps-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ports: Vec<(u16, u16)> = [1u16, 2, 3, 8, 9]
            .iter()
            .map(|id| (*id, free_port()))
            .collect();
        let mut c = Cluster {
            dir,
            ports,
            children: Vec::new(),
        };
        for id in [1u16, 2, 3, 8, 9] {
            std::fs::write(c.config(id), c.yaml(id)).unwrap();
        }
        for id in [1u16, 2, 3] {
            let log = std::fs::File::create(c.dir.join(format!("node-{id}.log"))).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
                .arg("run")
                .arg("--config")
                .arg(c.config(id))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            c.children.push(child);
        }
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
        self.dir.join(format!("node-{id}.yaml"))
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("stream-1.sock")
    }

    fn yaml(&self, id: u16) -> String {
        let mut y = format!("node_id: {id}\nmembers:\n");
        for (m, port) in &self.ports {
            let roles = if *m <= 3 {
                "[replica]"
            } else {
                "[learner, client]"
            };
            y += &format!("  - {{id: {m}, roles: {roles}, udp: \"127.0.0.1:{port}\"}}\n");
        }
        if id <= 3 {
            y += &format!(
                "storage: {{path: \"{}\"}}\n",
                self.dir.join("data").display()
            );
        }
        if id == 1 {
            y += &format!("output: {{socket: \"{}\"}}\n", self.socket().display());
        }
        y
    }
}

/// The kv example binary cargo built beside this test.
fn kv_example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    dir.join("examples").join("kv")
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
    let tail = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
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
    let kv = Command::new(kv_example())
        .arg(c.socket())
        .arg("40")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
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
        .map(|l| l.splitn(3, ' ').nth(2).unwrap())
        .collect();
    assert_eq!(got, values, "tail saw another stream");

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
    // The stream holds each of our values once, in submission order.
    let ours: Vec<String> = node
        .deliveries()
        .try_iter()
        .map(|d| String::from_utf8_lossy(&d.payload).into_owned())
        .collect();
    let want: Vec<String> = (0..20).map(|i| format!("value {i}")).collect();
    assert_eq!(ours, want);
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
