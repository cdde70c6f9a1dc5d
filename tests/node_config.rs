//! Node YAML: `ethpaxos check-config` accepts a good file and names the field of a bad one.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

const GOOD: &str = r#"
node_id: 11
members:
  - {id: 1, roles: [proposer], udp: "127.0.0.1:7101"}
  - {id: 11, roles: [acceptor], udp: "127.0.0.1:7111"}
  - {id: 12, roles: [acceptor], udp: "127.0.0.1:7112"}
  - {id: 13, roles: [acceptor], udp: "127.0.0.1:7113"}
  - {id: 21, roles: [learner], udp: "127.0.0.1:7121"}
storage: {fsync_policy: sync, path: "DATA"}
"#;

fn check(yaml: &str) -> (bool, String) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ethpaxos-cfg-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("node.yaml");
    std::fs::write(
        &file,
        yaml.replace("DATA", &dir.join("data").display().to_string()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_good_file_passes_and_is_summarised() {
    let (ok, text) = check(GOOD);
    assert!(ok, "{text}");
    assert!(text.contains("3 acceptors (quorum 2)"), "{text}");
}

#[test]
fn the_example_configs_pass() {
    for entry in std::fs::read_dir("config/loopback").unwrap() {
        let path = entry.unwrap().path();
        let out = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn bad_files_name_the_field() {
    for (bad, expect) in [
        (GOOD.replace("node_id: 11", "node_id: 99"), "node_id"),
        (
            GOOD.replace("id: 13, roles: [acceptor]", "id: 12, roles: [acceptor]"),
            "members[3].id",
        ),
        (GOOD.replace("7113", "7112"), "members[3].udp"),
        (
            GOOD.replace(
                "{id: 13, roles: [acceptor], udp: \"127.0.0.1:7113\"}",
                "{id: 13, roles: [learner], udp: \"127.0.0.1:7113\"}",
            ),
            "at least 3",
        ),
        (
            GOOD.replace(
                "storage: {fsync_policy: sync, path: \"DATA\"}",
                "storage: {fsync_policy: sync}",
            ),
            "storage.path",
        ),
        (
            GOOD.replace("fsync_policy: sync", "fsync_policy: sometimes"),
            "sometimes",
        ),
        (format!("{GOOD}colour: blue\n"), "colour"),
        (
            GOOD.replace("node_id: 11", "node_id: 1")
                .replace("fsync_policy: sync", "fsync_policy: async"),
            "storage.fsync_policy",
        ),
        (format!("{GOOD}protocol: {{max_frame: 40}}\n"), "max_frame"),
        (
            GOOD.replace("path: \"DATA\"}", "path: \"DATA\", memtable_mb: 0}"),
            "storage.memtable_mb",
        ),
        (
            GOOD.replace("DATA", env!("CARGO_BIN_EXE_ethpaxos")),
            "not a directory",
        ),
    ] {
        let (ok, text) = check(&bad);
        assert!(!ok, "accepted a bad config:\n{bad}");
        assert!(
            text.contains(expect),
            "error for {expect:?} does not name it:\n{text}"
        );
    }
}
