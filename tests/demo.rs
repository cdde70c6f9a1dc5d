//! `ethpaxos demo` end to end: the binary runs a cluster, survives a leader kill, and both
//! learners deliver the identical sequence. Correctness only; throughput is a benchmark.

use std::process::Command;

fn demo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
        .arg("demo")
        .args(args)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn digests(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("learner "))
        .filter_map(|l| l.rsplit(' ').next().map(str::to_string))
        .collect()
}

#[test]
fn demo_learners_agree() {
    let text = demo(&[
        "--duration",
        "1500ms",
        "--clients",
        "4",
        "--outstanding",
        "8",
    ]);
    assert!(
        text.contains("learners agree: identical sequences"),
        "{text}"
    );
    let d = digests(&text);
    assert_eq!(d.len(), 2);
    assert_eq!(d[0], d[1]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("t=") && l.contains("values/s")),
        "progress is printed each second:\n{text}"
    );
}

#[test]
fn demo_survives_leader_kill() {
    let text = demo(&[
        "--duration",
        "2s",
        "--kill-leader-after",
        "700ms",
        "--config",
        "config/demo.yaml",
    ]);
    assert!(text.contains("killed leader"), "{text}");
    assert!(
        text.contains("2 leader election(s)"),
        "the standby took over:\n{text}"
    );
    assert!(
        text.contains("learners agree: identical sequences"),
        "{text}"
    );
}

#[test]
fn demo_on_rocksdb_keeps_the_data_dir_it_was_given() {
    let dir = std::env::temp_dir().join(format!("ethpaxos-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let text = demo(&[
        "--duration",
        "1500ms",
        "--policy",
        "sync",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(
        text.contains("storage: RocksDB, fsync policy sync"),
        "{text}"
    );
    assert!(
        text.contains("learners agree: identical sequences"),
        "{text}"
    );
    for a in [11, 12, 13] {
        assert!(
            dir.join(format!("acceptor-{a}")).join("CURRENT").exists(),
            "acceptor {a}'s RocksDB"
        );
    }
    // A second run on the same directory is refused: its acceptors would hold another
    // cluster's votes.
    let out = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
        .args(["demo", "--duration", "1s", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
}

#[test]
fn demo_stops_cleanly_on_sigterm_and_removes_its_scratch_directory() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
        .args(["demo", "--duration", "60s"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    // Interrupted once it is running: after its first progress line.
    let stdout = child.stdout.take().expect("stdout is piped");
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut text = String::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("t=") {
                let _ = first_tx.send(());
            }
            text += &line;
            text.push('\n');
        }
        text
    });
    first_rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the demo printed a progress line");
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = child.wait().expect("exits");
    let text = reader.join().expect("the reader thread");
    assert!(exit.success(), "{text}");
    assert!(text.contains("interrupted at"), "{text}");
    assert!(
        text.contains("learners agree: identical sequences"),
        "{text}"
    );
    let dir = text
        .lines()
        .find_map(|l| l.strip_prefix("storage: RocksDB, fsync policy sync, "))
        .and_then(|rest| rest.split(';').next())
        .expect("the summary names the data directory");
    assert!(!std::path::Path::new(dir).exists(), "{dir} was left behind");
}

#[test]
fn demo_runs_under_every_policy() {
    for policy in ["async", "none"] {
        let text = demo(&["--duration", "1200ms", "--policy", policy]);
        assert!(
            text.contains("learners agree: identical sequences"),
            "{policy}: {text}"
        );
    }
}

#[test]
fn demo_refuses_bad_input_with_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
        .args(["demo", "--value-size", "5000"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--value-size 5000") && err.contains("max_frame"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("ethpaxos-bad-config-{}", std::process::id()));
    std::fs::write(&dir, "window: 8\nwindw: 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
        .args(["demo", "--config"])
        .arg(&dir)
        .output()
        .expect("runs");
    let _ = std::fs::remove_file(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("windw"), "{err}");
}

#[test]
fn simulate_reports_and_replays() {
    let out = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
        .args([
            "simulate",
            "--seeds",
            "8",
            "--start-seed",
            "40",
            "--verbose",
        ])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("seed ")).count(), 8);
    assert!(
        text.contains("8 seeds from 40: 8 passed, 0 failed"),
        "{text}"
    );
}
