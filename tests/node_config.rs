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
    let dirs = [
        "config/loopback",
        "config/afpacket",
        "config/afpacket-replicas",
        "config/dpdk",
    ];
    for path in dirs
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().path())
    {
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

const RAW: &str = r#"
node_id: 11
transport: afpacket
interface: eth0
members:
  - {id: 1, roles: [proposer], mac: "02:00:00:00:00:01"}
  - {id: 11, roles: [acceptor], mac: "02:00:00:00:00:0b"}
  - {id: 12, roles: [acceptor], mac: "02:00:00:00:00:0c"}
  - {id: 13, roles: [acceptor], mac: "02:00:00:00:00:0d"}
  - {id: 21, roles: [learner], mac: "02:00:00:00:00:15"}
storage: {fsync_policy: sync, path: "DATA"}
"#;

#[test]
fn a_raw_ethernet_file_passes_and_bad_macs_are_named() {
    let (ok, text) = check(RAW);
    assert!(
        ok && text.contains("afpacket eth0 (02:00:00:00:00:0b)"),
        "{text}"
    );
    for (bad, expect) in [
        (
            RAW.replace("02:00:00:00:00:0c", "02:00:00:00:0c"),
            "members[2].mac",
        ),
        (
            RAW.replace("02:00:00:00:00:0c", "02:00:00:00:00:zz"),
            "members[2].mac",
        ),
        (
            RAW.replace("02:00:00:00:00:0c", "02:00:00:00:00:0b"),
            "used by two members",
        ),
        (
            RAW.replace("02:00:00:00:00:0c", "ff:ff:ff:ff:ff:ff"),
            "multicast",
        ),
        (
            RAW.replace(", mac: \"02:00:00:00:00:0d\"", ""),
            "members[3].mac",
        ),
        (RAW.replace("interface: eth0\n", ""), "interface"),
        (
            RAW.replace("transport: afpacket", "transport: udp"),
            "members[0].udp",
        ),
        (
            RAW.replace("transport: afpacket", "transport: dpdk"),
            "dpdk",
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
            format!("{GOOD}pipeline: {{polling: busy, cores: [0, 4096]}}\n"),
            "pipeline.cores[1]",
        ),
        (
            format!("{GOOD}pipeline: {{polling: sometimes}}\n"),
            "sometimes",
        ),
        (
            format!("{GOOD}pipeline: {{stages: staged, ring_size: 3}}\n"),
            "pipeline.ring_size",
        ),
        (
            format!("{GOOD}metrics_address: \"localhost-ish\"\n"),
            "metrics_address",
        ),
        (
            format!("{GOOD}auth_key_file: /nonexistent/frame.key\n"),
            "auth_key_file",
        ),
        (
            format!(
                "{GOOD}auth_key_file: {}\n",
                env!("CARGO_MANIFEST_DIR").to_owned() + "/Cargo.toml"
            ),
            "64 hex digits",
        ),
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

const DPDK: &str = r#"
node_id: 11
transport: dpdk
dpdk:
  vdevs: ["net_af_packet0,iface=eth0,framecnt=16384"]
  lcores: "1"
members:
  - {id: 1, roles: [proposer], mac: "02:00:00:00:00:01"}
  - {id: 11, roles: [acceptor], mac: "02:00:00:00:00:0b"}
  - {id: 12, roles: [acceptor], mac: "02:00:00:00:00:0c"}
  - {id: 13, roles: [acceptor], mac: "02:00:00:00:00:0d"}
  - {id: 21, roles: [learner], mac: "02:00:00:00:00:15"}
storage: {fsync_policy: sync, path: "DATA"}
"#;

#[test]
fn a_dpdk_file_passes_with_its_eal_arguments_and_bad_fields_are_named() {
    let (ok, text) = check(DPDK);
    assert!(ok, "{text}");
    assert!(
        text.contains(
            "-l 1 -m 256 --no-huge --no-shconf --no-telemetry --log-level=error --no-pci \
             --vdev=net_af_packet0,iface=eth0,framecnt=16384"
        ),
        "{text}"
    );
    let real_nic = DPDK.replace(
        "vdevs: [\"net_af_packet0,iface=eth0,framecnt=16384\"]",
        "pci: [\"0000:03:00.0\"]\n  hugepages: true",
    );
    let (ok, text) = check(&real_nic);
    assert!(
        ok && text.contains("--in-memory") && text.contains("-a 0000:03:00.0"),
        "{text}"
    );
    for (bad, expect) in [
        (
            DPDK.replace(
                "  vdevs: [\"net_af_packet0,iface=eth0,framecnt=16384\"]\n",
                "",
            ),
            "dpdk.vdevs",
        ),
        (DPDK.replace("  lcores: \"1\"", "  port: 1"), "dpdk.port"),
        (DPDK.replace("  lcores: \"1\"", "  burst: 65"), "dpdk.burst"),
        (
            DPDK.replace("  lcores: \"1\"", "  memory_mb: 64"),
            "dpdk.memory_mb",
        ),
        (
            DPDK.replace("  lcores: \"1\"", "  rx_descriptors: 0"),
            "dpdk.rx_descriptors",
        ),
        (
            DPDK.replace("  lcores: \"1\"", "  eal_args: [--no-huge]"),
            "dpdk.eal_args",
        ),
        (DPDK.replace("  lcores: \"1\"", "  colour: blue"), "colour"),
        (
            DPDK.replace(
                "dpdk:\n  vdevs: [\"net_af_packet0,iface=eth0,framecnt=16384\"]\n  lcores: \"1\"\n",
                "",
            ),
            "dpdk",
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

/// A client node (learner + client) of the GOOD cluster, for the load section.
const CLIENT: &str = r#"
node_id: 21
members:
  - {id: 1, roles: [proposer], udp: "127.0.0.1:7101"}
  - {id: 11, roles: [acceptor], udp: "127.0.0.1:7111"}
  - {id: 12, roles: [acceptor], udp: "127.0.0.1:7112"}
  - {id: 13, roles: [acceptor], udp: "127.0.0.1:7113"}
  - {id: 21, roles: [learner, client], udp: "127.0.0.1:7121"}
"#;

#[test]
fn every_numeric_field_has_a_range_and_the_error_names_it() {
    let max = u64::MAX;
    for field in [
        "window",
        "batch_max_delay_us",
        "max_pending_values",
        "heartbeat_interval_ms",
        "leader_timeout_ms",
        "takeover_backoff_ms",
        "retransmit_timeout_ms",
        "catchup_delay_ms",
        "catchup_interval_ms",
        "catchup_max_instances",
        "answer_max_frames",
        "learner_timeout_ms",
        "learner_max_ahead",
        "progress_interval_ms",
        "trim_interval_ms",
        "trim_keep",
        "client_timeout_ms",
        "tick_us",
    ] {
        let bad = format!("{GOOD}protocol: {{{field}: {max}}}\n");
        let (ok, text) = check(&bad);
        assert!(!ok, "accepted {field}: 2^64-1");
        assert!(
            text.contains(&format!("protocol.{field}")),
            "the error does not name {field}:\n{text}"
        );
    }
    for (load, expect) in [
        ("{clients: 70000}", "load.clients"),
        ("{clients: 0}", "load.clients"),
        (
            &format!("{{outstanding: {max}}}") as &str,
            "load.outstanding",
        ),
        ("{clients: 1000, outstanding: 60000}", "load.outstanding"),
        ("{warmup_ms: 100000000000}", "load.warmup_ms"),
    ] {
        let (ok, text) = check(&format!("{CLIENT}load: {load}\n"));
        assert!(!ok, "accepted load {load}");
        assert!(text.contains(expect), "{load}: {text}");
    }
    let (ok, text) = check(&format!(
        "{CLIENT}load: {{clients: 65535, outstanding: 16}}\n"
    ));
    assert!(ok, "{text}");
    // The standby timeout sum cannot wrap: each term is bounded.
    let (ok, text) = check(&format!(
        "{GOOD}protocol: {{leader_timeout_ms: 3600000, takeover_backoff_ms: 3600000}}\n"
    ));
    assert!(ok, "{text}");
}

#[test]
fn a_storage_path_that_cannot_be_written_is_named_at_start() {
    // A file where the storage directory should be created: the node must refuse with the
    // path, not abort inside RocksDB.
    let dir = std::env::temp_dir().join(format!("ethpaxos-ro-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let blocker = dir.join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let data = blocker.join("data");
    let err = ethpaxos::storage::check_writable(&data).unwrap_err();
    assert!(
        err.to_string().contains(&data.display().to_string()),
        "{err}"
    );
    ethpaxos::storage::check_writable(&dir.join("ok")).unwrap();
    assert_eq!(std::fs::read_dir(dir.join("ok")).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_errors_carry_no_backtrace_even_when_asked_for() {
    let dir = std::env::temp_dir().join(format!("ethpaxos-bt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("node.yaml");
    std::fs::write(&file, GOOD.replace("node_id: 11", "node_id: 99")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
        .arg("check-config")
        .arg(&file)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.starts_with("error: ") && err.contains("node_id"),
        "{err}"
    );
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
}

#[test]
#[ignore = "needs root: mounts a 1 MiB tmpfs (CI runs it as root)"]
fn a_full_filesystem_is_named_at_start_not_an_abort() {
    let dir = std::env::temp_dir().join(format!("ethpaxos-full-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs on {}", dir.display());
    let data = dir.join("data");
    let result = ethpaxos::storage::check_writable(&data);
    let leftover = std::fs::read_dir(&data).map(|d| d.count()).unwrap_or(0);
    let unmounted = Command::new("umount").arg(&dir).status().unwrap();
    let _ = std::fs::remove_dir(&dir);
    assert!(unmounted.success());
    let err = result.expect_err("4 MiB fit a 1 MiB filesystem");
    let text = err.to_string();
    assert!(
        text.contains(&data.display().to_string()) && text.contains("No space left"),
        "{text}"
    );
    assert_eq!(leftover, 0, "the probe file was left behind");
}

/// A learner of the GOOD cluster with `learner:` settings.
fn learner_with(section: &str) -> String {
    GOOD.replace("node_id: 11", "node_id: 21").replace(
        "storage: {fsync_policy: sync, path: \"DATA\"}",
        "storage: {path: \"DATA\"}",
    ) + section
}

#[test]
fn a_learners_journal_is_named_and_its_bad_settings_name_the_field() {
    let (ok, text) = check(&learner_with(""));
    assert!(ok, "{text}");
    assert!(
        text.contains("learner journal: ") && text.contains("learner-21 (fsync policy sync)"),
        "{text}"
    );
    let (ok, text) = check(&learner_with(
        "learner: {fsync_policy: async, retention_mb: 0}\n",
    ));
    assert!(ok && text.contains("(fsync policy async)"), "{text}");
    let (ok, text) = check(&learner_with("learner: {journal: false}\n"));
    assert!(ok && text.contains("learner journal: none"), "{text}");
    assert!(
        text.contains("its own state every 50000 instances"),
        "{text}"
    );
    let (ok, text) = check(&learner_with("learner: {snapshot_every: 0}\n"));
    assert!(ok && text.contains("its application's only"), "{text}");
    for (yaml, field) in [
        ("learner: {segment_mb: 0}\n", "learner.segment_mb"),
        ("learner: {segment_mb: 5000}\n", "learner.segment_mb"),
        (
            "learner: {fsync_interval_ms: 0}\n",
            "learner.fsync_interval_ms",
        ),
        (
            "learner: {segment_mb: 64, retention_mb: 100}\n",
            "learner.retention_mb",
        ),
        ("learner: {fsync_policy: sometimes}\n", "fsync_policy"),
        ("learner: {retention: 5}\n", "retention"),
        ("learner: {path: \"/etc/hostname\"}\n", "learner.path"),
    ] {
        let (ok, text) = check(&learner_with(yaml));
        assert!(!ok, "{yaml} passed: {text}");
        assert!(text.contains(field), "{yaml}: {text}");
    }
}

/// `ethpaxos vm` (the VM testbed) refuses, before it starts QEMU, what it cannot run: a node
/// not on DPDK, a stream socket (unreachable in a VM), a missing guest image or switch port;
/// each error names what is at fault.
#[test]
fn a_vm_refuses_what_it_cannot_run_and_names_it() {
    /// Removes the test's directory, pass or fail.
    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let guard = Dir(std::env::temp_dir().join(format!("ethpaxos-vmcfg-{}", std::process::id())));
    let dir = guard.0.clone();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("image")).unwrap();
    let data = dir.join("data").display().to_string();
    let vm = |yaml: &str, image: &str| {
        let file = dir.join("node.yaml");
        std::fs::write(&file, yaml.replace("DATA", &data)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
            .arg("vm")
            .arg("--config")
            .arg(&file)
            .arg("--image")
            .arg(dir.join(image))
            .arg("--socket")
            .arg(dir.join("switch.sock"))
            .arg("--dir")
            .arg(dir.join("vm"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{yaml}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = vm(GOOD, "image");
    assert!(
        e.contains("node 11: transport is Udp; a node in a VM runs on DPDK"),
        "{e}"
    );
    let e = vm(
        &DPDK.replace("storage:", "output: {socket: \"/tmp/s.sock\"}\nstorage:"),
        "image",
    );
    assert!(e.contains("node 11: output.socket"), "{e}");
    let e = vm(DPDK, "no-image");
    assert!(
        e.contains("no guest image at") && e.contains("vm/build-image.sh"),
        "{e}"
    );
    for f in ["vmlinuz", "initrd.img"] {
        std::fs::write(dir.join("image").join(f), b"").unwrap();
    }
    let e = vm(DPDK, "image");
    assert!(e.contains("no vhost-user socket at"), "{e}");
    // Nothing was made for a VM that never started.
    assert!(!dir.join("vm").exists());
}
