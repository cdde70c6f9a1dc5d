//! The real-nodes testbed: one network namespace per node, veths to a bridge, every node an
//! `ethpaxos run` process on raw Ethernet (AF_PACKET). Under client load each test injects
//! one fault, then checks that every acknowledged value was delivered exactly once and in one
//! order at every learner. Needs root; every test is bounded in time and removes its
//! namespaces, veths, processes and files, pass or fail.
//!
//! Every test here is `#[ignore]`d with that reason: `cargo test --release -- --ignored`, as
//! root, runs them (.ci/run does), and anywhere else they fail with the reason instead of
//! passing without running.

mod common;

use common::cluster::{counter, Placement, ProcCluster};
use common::{pairs, read_lines};
use ethpaxos::config::{Role, TransportKind};
use ethpaxos::protocol::ProtocolConfig;
use ethpaxos::testbed::impair::Impairment;
use ethpaxos::testbed::{self, Layout, LayoutSpec, Nodes, Spec, Testbed};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

/// One testbed at a time: clusters of 4-8 processes each on 2 cores are enough.
static SERIAL: Mutex<()> = Mutex::new(());

/// The lock every test holds while its testbed exists. A run that cannot build a testbed
/// (not root, no iproute2) fails here with the reason: these tests are `#[ignore]`d, so they
/// run only when asked for (`cargo test --release -- --ignored`, as root).
fn testbed_slot() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let ip = Command::new("ip").arg("-V").output().is_ok();
    assert!(
        root && ip,
        "the testbed needs root and iproute2 (root: {root}, ip: {ip}); run as root"
    );
    guard
}

/// Runs `ethpaxos inject` with `args` in the hub namespace, aimed at MAC `dst`.
fn inject(bed: &Bed, dst: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &bed.tb().hub])
        .arg(env!("CARGO_BIN_EXE_ethpaxos"))
        .args(["inject", "--interface", "br0", "--dst", dst])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "inject {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespace testbed as a placement of the common process-cluster harness.
struct Netns {
    tb: Testbed,
    /// The software switch of virtio_user nodes (stopped with the hub by `testbed::down`).
    vswitch: Option<Child>,
}

impl Placement for Netns {
    fn dir(&self) -> &Path {
        &self.tb.dir
    }

    fn ids(&self) -> Vec<u16> {
        self.tb.nodes.iter().map(|n| n.id).collect()
    }

    fn plays(&self, id: u16, role: &str) -> bool {
        let role = match role {
            "proposer" => Role::Proposer,
            "acceptor" => Role::Acceptor,
            "learner" => Role::Learner,
            _ => Role::Client,
        };
        self.tb.node(id).is_some_and(|n| n.plays(role))
    }

    fn spawn(&self, id: u16) -> Child {
        self.tb
            .start(id, env!("CARGO_BIN_EXE_ethpaxos").as_ref())
            .expect("node starts")
    }

    fn link(&self, id: u16, up: bool) {
        self.tb.link(id, up).expect("link set");
    }

    fn teardown(&mut self) {
        let _ = testbed::down(&self.tb.name);
        // down() stopped it with the hub; reap it.
        if let Some(v) = &mut self.vswitch {
            let _ = v.wait();
        }
    }
}

/// A testbed cluster: the common harness (tests/common/cluster.rs) over namespaces.
struct Bed(ProcCluster<Netns>);

impl std::ops::Deref for Bed {
    type Target = ProcCluster<Netns>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Bed {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Bed {
    fn up(name: &str, layout: Layout) -> Bed {
        Bed::up_with(
            name,
            Nodes::Layout(LayoutSpec {
                layout,
                ..LayoutSpec::default()
            }),
        )
    }

    fn up_with(name: &str, nodes: Nodes) -> Bed {
        let dir =
            std::env::temp_dir().join(format!("ethpaxos-testbed-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spec = Spec {
            name: name.to_string(),
            dir,
            nodes,
        };
        let tb = testbed::up(&spec).expect("testbed up");
        let vswitch = tb
            .start_vswitch(env!("CARGO_BIN_EXE_ethpaxos").as_ref())
            .expect("the software switch starts");
        Bed(ProcCluster::start_all(Netns { tb, vswitch }))
    }

    /// A cluster whose acceptors never trim: after a restart the proposers' phase 1 reads the
    /// whole history, and learners catch up from the acceptors alone.
    fn up_untrimmed(name: &str, layout: Layout, transport: TransportKind) -> Bed {
        Bed::up_with(
            name,
            Nodes::Layout(LayoutSpec {
                layout,
                transport,
                protocol: ProtocolConfig {
                    trim_interval_ms: 0,
                    ..ProtocolConfig::default()
                },
                ..LayoutSpec::default()
            }),
        )
    }

    fn tb(&self) -> &Testbed {
        &self.0.place.tb
    }

    /// The software switch is still up (its log in the failure otherwise).
    #[cfg(feature = "dpdk")]
    fn switch_still_runs(&mut self) {
        let log = std::fs::read_to_string(self.tb().dir.join("vswitch.log")).unwrap_or_default();
        let vswitch = self.place.vswitch.as_mut().expect("a switch started");
        assert!(
            vswitch.try_wait().unwrap().is_none(),
            "the switch stopped: {log}"
        );
    }

    fn finish_and_check(self) -> HashMap<u16, serde_json::Value> {
        self.0.finish_and_check()
    }
}

/// A count from the impairing relay's last log line, e.g. `dropped: 12`.
fn relay_count(line: &str, name: &str) -> u64 {
    line.split(&format!("{name}: "))
        .nth(1)
        .and_then(|r| r.split([',', ' ']).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn steady_state_on_raw_ethernet() {
    let _slot = testbed_slot();
    let bed = Bed::up("tbst", Layout::Replicas);
    bed.progress(3000, "at start");
    let stats = bed.finish_and_check();
    assert!(counter(&stats[&1], "sent") > 0 && counter(&stats[&1], "received") > 0);
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn kill_an_acceptor_and_restart_it() {
    let _slot = testbed_slot();
    let mut bed = Bed::up("tbacc", Layout::Roles);
    bed.progress(2000, "at start");
    bed.bounce(12, 2000, 2000);
    bed.finish_and_check();
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn kill_the_leader_and_the_standby_takes_over() {
    let _slot = testbed_slot();
    let mut bed = Bed::up("tblead", Layout::Roles);
    bed.progress(2000, "at start");
    let leader = bed.leader();
    bed.kill9(leader);
    // The client only makes progress again once the other proposer leads.
    bed.progress(2000, &format!("with leader {leader} killed"));
    assert_ne!(bed.leader(), leader, "the standby did not take over");
    bed.start(leader);
    bed.progress(2000, &format!("after {leader} restarted"));
    bed.finish_and_check();
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn partition_the_leader_then_heal() {
    let _slot = testbed_slot();
    let bed = Bed::up("tbpart", Layout::Replicas);
    bed.progress(2000, "at start");
    bed.partition_leader_then_heal();
    bed.finish_and_check();
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn a_lossy_duplicating_reordering_link_then_heal() {
    let _slot = testbed_slot();
    let bed = Bed::up("tbnet", Layout::Replicas);
    bed.progress(2000, "at start");
    let leader = bed.leader();
    let relay = bed
        .tb()
        .impair(
            leader,
            Impairment {
                loss: 0.2,
                duplicate: 0.1,
                reorder: 0.25,
                seed: 7,
            },
            env!("CARGO_BIN_EXE_ethpaxos").as_ref(),
        )
        .unwrap();
    bed.progress(1000, "through the lossy link");
    bed.tb().heal(leader, relay).unwrap();
    let log = read_lines(&bed.tb().dir.join(format!("impair-{leader}.log")));
    let stats = log.last().cloned().unwrap_or_default();
    for what in ["dropped", "duplicated", "reordered"] {
        assert!(
            relay_count(&stats, what) > 0,
            "the relay never {what}: {stats}"
        );
    }
    bed.progress(2000, "after the heal");
    bed.finish_and_check();
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn malformed_and_foreign_frames_are_dropped_and_counted() {
    let _slot = testbed_slot();
    let bed = Bed::up("tbinj", Layout::Replicas);
    bed.progress(1000, "at start");
    let target = bed.tb().node(2).unwrap().mac.clone();
    for kind in ["garbage", "truncated", "foreign-cluster", "non-member"] {
        inject(&bed, &target, &["--kind", kind, "--count", "300"]);
    }
    bed.progress(1000, "after the injection");
    let acked_before = pairs(&bed.acked()).len();
    let stats = bed.finish_and_check();
    assert!(acked_before >= 2000);
    let s = &stats[&2];
    // Garbage and truncated frames do not decode; the others decode and are refused.
    assert_eq!(counter(s, "dropped_bad_frame"), 600, "{s}");
    assert_eq!(counter(s, "dropped_foreign_cluster"), 300, "{s}");
    assert_eq!(counter(s, "dropped_non_member"), 300, "{s}");
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn the_six_node_example_configs_run_in_the_testbed() {
    let _slot = testbed_slot();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/afpacket");
    let configs = testbed::load_configs(&dir).expect("the example configs load");
    assert_eq!(configs.len(), 6, "1 proposer, 3 acceptors, 2 learners");
    let bed = Bed::up_with("tbex", Nodes::Configs(configs));
    bed.progress(3000, "at start");
    bed.finish_and_check();
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn with_frame_authentication_forgeries_are_dropped_and_replays_are_harmless() {
    let _slot = testbed_slot();
    let bed = Bed::up_with(
        "tbauth",
        Nodes::Layout(LayoutSpec {
            auth: true,
            ..LayoutSpec::default()
        }),
    );
    bed.progress(1000, "at start");
    let target = bed.tb().node(2).unwrap().mac.clone();
    let inject =
        |kind: &str, count: &str| inject(&bed, &target, &["--kind", kind, "--count", count]);
    // Without the key: a forged tag, no tag at all, a frame of another cluster.
    inject("forged", "300");
    inject("non-member", "300");
    inject("garbage", "300");
    // Genuine frames captured off the bridge and sent again, three times each, later.
    let replayed = inject("replay", "2000");
    assert!(replayed.contains("captured 2000"), "{replayed}");
    bed.progress(2000, "after the forgeries and replays");
    let stats = bed.finish_and_check();
    let s = &stats[&2];
    assert_eq!(counter(s, "dropped_unauthenticated"), 900, "{s}");
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn the_same_cluster_on_udp_in_the_testbed() {
    let _slot = testbed_slot();
    let bed = Bed::up_with(
        "tbudp",
        Nodes::Layout(LayoutSpec {
            transport: ethpaxos::config::TransportKind::Udp,
            polling: ethpaxos::config::Polling::Busy,
            ..LayoutSpec::default()
        }),
    );
    bed.progress(2000, "at start");
    bed.finish_and_check();
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn the_staged_pipeline_under_load_and_an_acceptor_kill() {
    let _slot = testbed_slot();
    let mut bed = Bed::up_with(
        "tbstg",
        Nodes::Layout(LayoutSpec {
            layout: Layout::Roles,
            stages: ethpaxos::config::Stages::Staged,
            clients: 16,
            ..LayoutSpec::default()
        }),
    );
    bed.progress(3000, "at start");
    bed.bounce(11, 2000, 2000);
    let stats = bed.finish_and_check();
    assert!(counter(&stats[&12], "commits") > 0, "{}", stats[&12]);
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn staged_replicas_through_a_leader_partition() {
    let _slot = testbed_slot();
    // Every role of a replica in its own stage: proposer, acceptor and learner talk to each
    // other through the commit stage, after their changes are durable.
    let bed = Bed::up_with(
        "tbstr",
        Nodes::Layout(LayoutSpec {
            stages: ethpaxos::config::Stages::Staged,
            ..LayoutSpec::default()
        }),
    );
    bed.progress(2000, "at start");
    bed.partition_leader_then_heal();
    bed.finish_and_check();
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn a_staged_leader_that_sheds_says_so_in_its_summary() {
    let _slot = testbed_slot();
    // A leader queue of 64 values under 16 x 16 outstanding: it must shed, the clients
    // resend, and the staged proposer's summary counts what it shed (it used to count it
    // only in metrics).
    let bed = Bed::up_with(
        "tbshed",
        Nodes::Layout(LayoutSpec {
            layout: Layout::Roles,
            stages: ethpaxos::config::Stages::Staged,
            clients: 16,
            outstanding: 16,
            protocol: ProtocolConfig {
                max_pending_values: 64,
                window: 4,
                ..ProtocolConfig::default()
            },
            ..LayoutSpec::default()
        }),
    );
    bed.progress(3000, "with a small leader queue");
    let leader = bed.leader();
    let stats = bed.finish_and_check();
    assert!(counter(&stats[&leader], "shed") > 0, "{}", stats[&leader]);
}

/// A DPDK acceptor (net_af_packet virtual device on its veth) in a cluster of AF_PACKET
/// nodes: the same frames on both data planes. Every node runs the staged pipeline, so the
/// DPDK acceptor's RX and TX stages use the port's two queues from their own threads. Needs a
/// build with `--features dpdk`.
#[cfg(feature = "dpdk")]
#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn a_dpdk_acceptor_among_af_packet_nodes() {
    let _slot = testbed_slot();
    let mut bed = Bed::up_with(
        "tbdpdk",
        Nodes::Layout(LayoutSpec {
            layout: Layout::Roles,
            dpdk_nodes: vec![12],
            stages: ethpaxos::config::Stages::Staged,
            ..LayoutSpec::default()
        }),
    );
    bed.progress(2000, "at start");
    // With acceptor 11 down, every quorum needs the DPDK acceptor.
    bed.bounce(11, 2000, 1000);
    let stats = bed.finish_and_check();
    let s = &stats[&12];
    assert!(
        counter(s, "commits") > 0 && counter(s, "received") > 0,
        "{s}"
    );
}

/// Huge pages reserved for a test, given back (to the count before) when dropped.
#[cfg(feature = "dpdk")]
struct Hugepages {
    before: String,
}

#[cfg(feature = "dpdk")]
const NR_HUGEPAGES: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

#[cfg(feature = "dpdk")]
impl Hugepages {
    fn reserve(more: u64) -> Hugepages {
        let before = std::fs::read_to_string(NR_HUGEPAGES).unwrap();
        let want = before.trim().parse::<u64>().unwrap() + more;
        std::fs::write(NR_HUGEPAGES, want.to_string()).unwrap();
        assert!(Self::free() >= more, "could not reserve {more} huge pages");
        Hugepages { before }
    }

    fn free() -> u64 {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let line = meminfo
            .lines()
            .find(|l| l.starts_with("HugePages_Free:"))
            .unwrap()
            .to_string();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

#[cfg(feature = "dpdk")]
impl Drop for Hugepages {
    fn drop(&mut self) {
        let _ = std::fs::write(NR_HUGEPAGES, self.before.trim());
    }
}

/// Every node on DPDK (net_af_packet virtual devices on their veths), EAL's memory in huge
/// pages, through a leader partition; once the nodes are gone every huge page is free again
/// (--in-memory leaves no page files behind).
/// Needs a build with `--features dpdk`.
#[cfg(feature = "dpdk")]
#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn a_full_dpdk_cluster_on_huge_pages_through_a_leader_partition() {
    let _slot = testbed_slot();
    // 4 nodes x 128 MiB in 2 MiB pages, and some room.
    let pages = Hugepages::reserve(300);
    let free = Hugepages::free();
    let bed = Bed::up_with(
        "tbdpa",
        Nodes::Layout(LayoutSpec {
            dpdk_nodes: vec![1, 2, 3, testbed::CLIENT],
            dpdk_hugepages: true,
            ..LayoutSpec::default()
        }),
    );
    bed.progress(2000, "at start");
    assert!(Hugepages::free() < free, "the nodes took no huge pages");
    bed.partition_leader_then_heal();
    bed.finish_and_check();
    assert_eq!(
        Hugepages::free(),
        free,
        "huge pages stayed taken after the nodes stopped"
    );
    drop(pages);
}

/// The six example configs of config/dpdk (every node on DPDK, net_af_packet on eth0) run in
/// the testbed as an operator wrote them. Needs a build with `--features dpdk`.
#[cfg(feature = "dpdk")]
#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn the_dpdk_example_configs_run_in_the_testbed() {
    let _slot = testbed_slot();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dpdk");
    let configs = testbed::load_configs(&dir).expect("the example configs load");
    assert_eq!(configs.len(), 6, "1 proposer, 3 acceptors, 2 learners");
    assert!(configs
        .iter()
        .all(|c| c.transport == ethpaxos::config::TransportKind::Dpdk));
    let bed = Bed::up_with("tbdex", Nodes::Configs(configs));
    bed.progress(3000, "at start");
    bed.finish_and_check();
}

/// The virtio path a VM testbed uses: the acceptors and a learner on DPDK attach through
/// virtio_user devices to vhost-user ports of `ethpaxos vswitch`, whose uplink joins the bridge
/// the proposers and the client node (AF_PACKET) are on. Acceptor 12 is killed and restarted
/// (its virtio_user device attaches again) while acceptor 11 is down, so every quorum needs
/// it. Needs a build with `--features dpdk`.
#[cfg(feature = "dpdk")]
#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn acceptors_on_virtio_user_through_a_vhost_user_switch() {
    let _slot = testbed_slot();
    let mut bed = Bed::up_with(
        "tbvio",
        Nodes::Layout(LayoutSpec {
            layout: Layout::Roles,
            dpdk_nodes: vec![11, 12, 13, 21],
            virtio: true,
            ..LayoutSpec::default()
        }),
    );
    bed.progress(2000, "at start");
    bed.bounce(12, 1000, 1000);
    bed.kill9(11);
    bed.progress(1000, "with acceptor 11 down");
    bed.start(11);
    bed.switch_still_runs();
    // The acceptors are reachable only through the switch: every value learner 21 and the
    // client node deliver went through it.
    bed.finish_and_check();
}

/// `ethpaxos bench` on the testbed transports: one point each over AF_PACKET and UDP, in the
/// thesis' layout, measured from the client node's acknowledgements, its JSON summary and
/// each process's CPU.
#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn the_bench_runs_its_points_as_node_processes() {
    let _slot = testbed_slot();
    let out = std::env::temp_dir().join(format!("ethpaxos-tbbench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_ethpaxos"))
        .args([
            "bench",
            "--transport",
            "afpacket,udp",
            "--clients",
            "4",
            "--policies",
            "sync",
            "--warmup",
            "1s",
            "--duration",
            "2s",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let points = json.as_array().unwrap();
    assert_eq!(points.len(), 2, "{json}");
    for (p, transport) in points.iter().zip(["afpacket", "udp"]) {
        assert_eq!(p["transport"], transport);
        assert!(p["values"].as_u64().unwrap() > 0, "{p}");
        assert!(p["latency_p50_us"].as_f64().unwrap() > 0.0, "{p}");
        for role in ["proposer", "acceptor", "learner", "client"] {
            assert!(
                p["cpu_percent"][role].as_f64().unwrap() > 0.0,
                "{role}: {p}"
            );
        }
    }
    // The testbed is gone and its run directories with it.
    assert!(!std::fs::read_dir(&out).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("run-")));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn a_learner_down_then_a_leader_kill_elects_a_leader_and_trim_moves_on() {
    let _slot = testbed_slot();
    let protocol = ProtocolConfig {
        learner_timeout_ms: 300,
        trim_keep: 50,
        ..ProtocolConfig::default()
    };
    let mut bed = Bed::up_with(
        "tblrn",
        Nodes::Layout(LayoutSpec {
            layout: Layout::Roles,
            protocol: protocol.clone(),
            // Acceptors trim by the learners' snapshots.
            snapshot_every: 100,
            ..LayoutSpec::default()
        }),
    );
    bed.progress(2000, "at start");
    let learner = bed
        .tb()
        .nodes
        .iter()
        .find(|n| n.plays(Role::Learner) && !n.plays(Role::Client))
        .expect("a learner of its own")
        .id;
    // Down for good: it holds nothing back once learner_timeout_ms passes.
    bed.kill9(learner);
    bed.progress(20_000, &format!("with learner {learner} down"));
    let leader = bed.leader();
    bed.kill9(leader);
    bed.progress(
        3000,
        &format!("after leader {leader} was killed with learner {learner} down"),
    );
    let stats = bed.finish_and_check();
    for n in bed_acceptors(&stats) {
        let a = &stats[&n]["acceptor"];
        let (trim, held) = (
            a["trim"].as_u64().unwrap(),
            a["votes_held"].as_u64().unwrap(),
        );
        // Trim passed the dead learner, so the acceptors hold a bounded log: trim_keep
        // plus what was decided since the last trim, not everything since it died.
        assert!(trim > 0, "acceptor {n} never trimmed: {a}");
        assert!(
            held <= protocol.trim_keep + 250,
            "acceptor {n} holds {held} votes with a learner dead: {a}"
        );
    }
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn every_node_killed_after_a_long_history_comes_back() {
    power_cut_and_restart("tbpwr", TransportKind::Afpacket);
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn every_node_killed_after_a_long_history_comes_back_on_udp() {
    power_cut_and_restart("tbpwru", TransportKind::Udp);
}

/// Kills every node of a 3-replica cluster after 20k values of history, restarts them all,
/// and checks progress and every acknowledged value.
fn power_cut_and_restart(name: &str, transport: TransportKind) {
    let _slot = testbed_slot();
    // The restarted proposers must read the whole history in phase 1, and the restarted
    // learners catch it all up, through answers that fit their receive buffers.
    let mut bed = Bed::up_untrimmed(name, Layout::Replicas, transport);
    bed.progress(20_000, "before the power cut");
    let ids: Vec<u16> = bed.tb().nodes.iter().map(|n| n.id).collect();
    for id in &ids {
        bed.kill9(*id);
    }
    // Each learner resumes at its journal's durable point: its stream (delivered file) across
    // the cut must hold every value acknowledged before and after it, once each and in one
    // order.
    for id in &ids {
        bed.start(*id);
    }
    bed.progress(2000, "after every node restarted");
    bed.finish_and_check();
}

/// The acceptors among the nodes that left a summary.
fn bed_acceptors(stats: &HashMap<u16, serde_json::Value>) -> Vec<u16> {
    let mut ids: Vec<u16> = stats
        .iter()
        .filter(|(_, s)| s["commits"].as_u64().unwrap_or(0) > 0)
        .map(|(id, _)| *id)
        .collect();
    ids.sort_unstable();
    assert!(ids.len() >= 2, "no acceptor summaries: {stats:?}");
    ids
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn a_paused_leader_is_replaced_and_a_standby_whose_link_flaps_deposes_nobody() {
    let _slot = testbed_slot();
    let bed = Bed::up("tbpaus", Layout::Roles);
    bed.progress(2000, "at start");
    let first = bed.leader();
    bed.signal(first, "STOP");
    bed.progress(2000, &format!("with leader {first} paused"));
    bed.signal(first, "CONT");
    bed.progress(2000, &format!("after {first} resumed"));
    let second = bed.leader();
    assert_ne!(second, first, "nobody took over from the paused leader");
    // Now the old leader is a standby. Its link goes down for longer than its takeover
    // timeout (frames lost, not queued as in a pause), so it prepares a higher ballot; when
    // the link returns, the acceptors' lease and its own stickiness must keep it from
    // deposing the live leader. The 600 ms is the fault's length, not a wait for an event.
    bed.tb().link(first, false).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    bed.tb().link(first, true).unwrap();
    bed.progress(3000, &format!("after standby {first}'s link came back"));
    assert_eq!(
        bed.leader(),
        second,
        "the standby whose link flapped deposed a live leader"
    );
    let stats = bed.finish_and_check();
    let deferred: u64 = bed_acceptors(&stats)
        .iter()
        .map(|a| stats[a]["acceptor"]["deferred_prepares"].as_u64().unwrap())
        .sum();
    eprintln!("acceptors put off {deferred} prepares");
}

/// One seeded schedule of faults on a live cluster: kill -9 and restart an acceptor or the
/// leader, pause the leader (SIGSTOP) or a node, flap a node's link, restart a learner. After
/// every fault is healed the cluster must have a leader and make progress, and every
/// acknowledged value must be delivered once, in one order, at every learner.
fn random_faults(name: &str, seed: u64, layout: Layout, transport: TransportKind) {
    use rand::{Rng, SeedableRng};
    let _slot = testbed_slot();
    let mut bed = Bed::up_untrimmed(name, layout, transport);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let ids = |f: &dyn Fn(&testbed::TestbedNode) -> bool| -> Vec<u16> {
        bed.tb()
            .nodes
            .iter()
            .filter(|n| f(n))
            .map(|n| n.id)
            .collect()
    };
    let acceptors = ids(&|n| n.plays(Role::Acceptor));
    let learners = ids(&|n| n.plays(Role::Learner) && !n.plays(Role::Client));
    let all = ids(&|n| !n.plays(Role::Client));
    bed.progress(1000, "at start");
    let mut log = Vec::new();
    for _ in 0..8 {
        let fault = rng.gen_range(0..5);
        let pick = |rng: &mut rand_chacha::ChaCha8Rng, v: &[u16]| v[rng.gen_range(0..v.len())];
        let hold = Duration::from_millis(rng.gen_range(100..600));
        match fault {
            0 => {
                let a = pick(&mut rng, &acceptors);
                log.push(format!("kill -9 acceptor {a}"));
                bounce_fresh(&mut bed, a);
            }
            1 => {
                let l = bed.leader();
                log.push(format!("kill -9 leader {l}"));
                bounce_fresh(&mut bed, l);
            }
            2 => {
                let n = if rng.gen_bool(0.5) {
                    bed.leader()
                } else {
                    pick(&mut rng, &all)
                };
                log.push(format!("pause {n} for {hold:?}"));
                bed.signal(n, "STOP");
                std::thread::sleep(hold);
                bed.signal(n, "CONT");
            }
            3 => {
                let n = pick(&mut rng, &all);
                log.push(format!("link of {n} down for {hold:?}"));
                bed.tb().link(n, false).unwrap();
                std::thread::sleep(hold);
                bed.tb().link(n, true).unwrap();
            }
            _ if !learners.is_empty() => {
                let l = pick(&mut rng, &learners);
                log.push(format!("kill -9 learner {l}"));
                bounce_fresh(&mut bed, l);
            }
            _ => log.push("nothing".into()),
        }
    }
    eprintln!("seed {seed}: {}", log.join("; "));
    bed.progress(
        2000,
        &format!("after every fault healed (seed {seed}: {log:?})"),
    );
    bed.finish_and_check();
}

/// `kill -9` node `id`, wait for progress without it, restart it (a learner resumes its
/// stream where its journal stood), wait for more.
fn bounce_fresh(bed: &mut Bed, id: u16) {
    bed.kill9(id);
    bed.progress(300, &format!("with node {id} killed"));
    bed.start(id);
    bed.progress(300, &format!("after node {id} restarted"));
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn random_faults_on_roles_over_raw_ethernet() {
    random_faults("tbrnd1", 1, Layout::Roles, TransportKind::Afpacket);
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn random_faults_on_replicas_over_udp() {
    random_faults("tbrnd2", 2, Layout::Replicas, TransportKind::Udp);
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn a_replica_away_past_the_trim_point_catches_up_from_its_peers_journals() {
    let _slot = testbed_slot();
    // Trim soon and close behind, so the acceptors trim past the replica while it is down.
    let mut bed = Bed::up_with(
        "tbpeer",
        Nodes::Layout(LayoutSpec {
            layout: Layout::Replicas,
            protocol: trim_soon(),
            snapshot_every: 100,
            ..LayoutSpec::default()
        }),
    );
    bed.progress(1000, "at start");
    let leader = bed.leader();
    let victim = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    bed.kill9(victim);
    bed.progress(5000, &format!("with replica {victim} down"));
    bed.start(victim);
    bed.progress(3000, &format!("after replica {victim} restarted"));
    // Its stream (delivered file) holds every acknowledged value once, in the others' order.
    let stats = bed.finish_and_check();
    let l = &stats[&victim]["learner"];
    assert!(l["peer_values"].as_u64().unwrap() > 0, "{l}");
    assert!(
        stats[&victim]["trimmed_out"].is_null(),
        "{}",
        stats[&victim]
    );
    let resumed = l["resumed_at"].as_u64().unwrap();
    let trim = stats[&leader]["acceptor"]["trim"].as_u64().unwrap();
    assert!(
        trim > resumed,
        "acceptors trimmed to {trim}, it resumed at {resumed}"
    );
}

/// Trim soon and close behind, so the acceptors trim past a node while it is down.
fn trim_soon() -> ProtocolConfig {
    ProtocolConfig {
        learner_timeout_ms: 300,
        trim_interval_ms: 50,
        trim_keep: 50,
        ..ProtocolConfig::default()
    }
}

/// The kv example binary cargo built beside the tests.
fn kv_example() -> std::path::PathBuf {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_ethpaxos"));
    exe.parent().unwrap().join("examples").join("kv")
}

/// Key-value stores (examples/kv.rs) on replicas' stream sockets, killed when dropped.
struct Stores(HashMap<u16, Child>);

impl Stores {
    fn start(&mut self, bed: &Bed, id: u16) {
        let log = std::fs::File::create(bed.dir().join(format!("kv-{id}.log"))).unwrap();
        let child = Command::new(kv_example())
            .arg(bed.dir().join(format!("stream-{id}.sock")))
            .args(["--restore", "--snapshot-every", "300"])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.0.insert(id, child);
    }

    fn kill(&mut self, id: u16) {
        if let Some(mut c) = self.0.remove(&id) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Stores {
    fn drop(&mut self) {
        let ids: Vec<u16> = self.0.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }
}

/// A summary field as a number.
fn field(s: &Option<serde_json::Value>, path: &[&str]) -> Option<u64> {
    let mut v = s.as_ref()?;
    for p in path {
        v = v.get(p)?;
    }
    v.as_u64()
}

#[test]
#[ignore = "needs root and iproute2: network namespaces (.ci/run runs it as root)"]
fn a_replica_and_its_kv_store_away_past_every_peer_journal_come_back_through_a_snapshot() {
    let _slot = testbed_slot();
    let spec = LayoutSpec {
        layout: Layout::Replicas,
        protocol: trim_soon(),
        ..LayoutSpec::default()
    };
    let mut configs = testbed::layout_configs(&spec, None, Path::new("."));
    for c in &mut configs {
        let me = c.me().clone();
        if me.plays(Role::Learner) {
            // Journals of two 1 MiB segments, which 1 KiB values fill in a second or two.
            c.learner.segment_mb = 1;
            c.learner.retention_mb = 2;
        }
        if me.plays(Role::Client) {
            c.load.value_size = 1024;
        } else if me.plays(Role::Learner) {
            // A replica's learner keeps its store's snapshots and serves its stream.
            c.learner.snapshot_every = 0;
            c.output.socket = Some("stream.sock".into());
        } else {
            unreachable!("replicas and a client node");
        }
    }
    let mut bed = Bed::up_with("tbkv", Nodes::Configs(configs));
    let replicas = [1u16, 2, 3];
    bed.wait_until("every replica serves its stream", &|b: &ProcCluster<
        Netns,
    >| {
        replicas
            .iter()
            .all(|id| b.dir().join(format!("stream-{id}.sock")).exists())
    });
    let mut stores = Stores(HashMap::new());
    for id in replicas {
        stores.start(&bed, id);
    }
    bed.progress(2000, "at start");
    let leader = bed.leader();
    let victim = replicas.into_iter().find(|id| *id != leader).unwrap();
    let other = replicas
        .into_iter()
        .find(|id| *id != leader && *id != victim)
        .unwrap();
    // The replica and its store go down together, until the others' journals dropped what
    // it had not delivered.
    let stopped_at = field(&bed.summary(victim), &["learner", "delivered_below"]).unwrap();
    bed.kill9(victim);
    stores.kill(victim);
    bed.wait_until(
        "the other replicas' journals moved past the one down",
        &|b: &ProcCluster<Netns>| {
            [leader, other].iter().all(|id| {
                field(&b.summary(*id), &["learner", "journal", "oldest"])
                    .is_some_and(|o| o > stopped_at)
            })
        },
    );
    // Its store starts once it serves its stream again (its new summary says it runs).
    std::fs::remove_file(bed.dir().join(format!("summary-{victim}.json"))).unwrap();
    bed.start(victim);
    bed.wait_until("the replica restarted", &|b: &ProcCluster<Netns>| {
        b.summary(victim).is_some()
    });
    stores.start(&bed, victim);
    // It installed a peer's snapshot, and its store (restored from it) handed its learner a
    // newer one since.
    bed.wait_until(
        "the replica installed a peer's snapshot and its store handed it a newer one",
        &|b: &ProcCluster<Netns>| {
            let s = b.summary(victim);
            let at = s.as_ref().and_then(|s| {
                s["learner"]["snapshots"]["installed_at"]
                    .as_str()?
                    .parse::<ethpaxos::protocol::Position>()
                    .ok()
            });
            at.is_some_and(|p| {
                field(&s, &["learner", "snapshots", "newest_below"]).is_some_and(|n| n > p.instance)
            })
        },
    );
    bed.progress(2000, &format!("after replica {victim} came back"));
    // The stores stop (no snapshot is handed after this). Fresh stores on every replica
    // restore its newest snapshot and apply the stream up to one position past every
    // snapshot: the same map, the same digest of every value applied, the same count.
    drop(stores);
    let last = replicas
        .iter()
        .filter_map(|id| {
            common::positioned(&bed.delivered(*id))
                .last()
                .map(|(_, p)| *p)
        })
        .max()
        .unwrap();
    let mut outputs = Vec::new();
    for id in replicas {
        let out = Command::new(kv_example())
            .arg(bed.dir().join(format!("stream-{id}.sock")))
            .args([
                "--restore",
                "--snapshot-every",
                "0",
                "--digest",
                "--through",
            ])
            .arg(last.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "replica {id}'s store: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push((id, String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    for (id, out) in &outputs[1..] {
        assert_eq!(
            out, &outputs[0].1,
            "replica {id}'s store differs from replica {}'s",
            outputs[0].0
        );
    }
    let digest = outputs[0].1.lines().last().unwrap();
    assert!(digest.starts_with("digest "), "{digest}");
    let stats = bed.finish_and_check();
    let snaps = &stats[&victim]["learner"]["snapshots"];
    assert!(snaps["installed"].as_u64().unwrap() >= 1, "{snaps}");
    assert!(
        stats[&victim]["trimmed_out"].is_null(),
        "{}",
        stats[&victim]
    );
}

/// The guest image of the VM testbed, built (vm/build-image.sh) from the binary under test, so
/// the guest runs the code this test checks. Kept in the target directory: the kernel package
/// is downloaded once.
#[cfg(feature = "dpdk")]
fn vm_image() -> std::path::PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm-image");
    let status = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/build-image.sh"))
        .arg(env!("CARGO_BIN_EXE_ethpaxos"))
        .arg(&out)
        .status()
        .expect("bash runs vm/build-image.sh");
    assert!(status.success(), "vm/build-image.sh failed: {status}");
    out
}

/// The VM testbed: acceptor 13 and learner 21 run in a QEMU virtual machine each (TCG), DPDK's
/// virtio PMD in the guest on a virtio-net NIC attached to a vhost-user port of the switch,
/// their stores on their VMs' disks (the learner's stream copied out to the host); the other
/// nodes run on AF_PACKET in namespaces, joined to them through the switch's uplink. With acceptor 11 killed every quorum needs the VM; then the VM itself is
/// cut off at the power (kill -9 of its runner) and booted again on the same disk, and with
/// acceptor 12 killed every quorum needs the VM once more. Correctness, not speed: TCG is slow.
#[cfg(feature = "dpdk")]
#[test]
#[ignore = "needs root, iproute2, QEMU and a build with --features dpdk (.ci/run runs it as root)"]
fn an_acceptor_in_a_qemu_vm_on_virtio_through_acceptor_kills_and_its_own_power_cut() {
    let _slot = testbed_slot();
    let mut bed = Bed::up_with(
        "tbvm",
        Nodes::Layout(LayoutSpec {
            layout: Layout::Roles,
            vms: testbed::Vms {
                nodes: vec![13, 21],
                image: vm_image(),
                ..testbed::Vms::default()
            },
            clients: 2,
            outstanding: 4,
            ..LayoutSpec::default()
        }),
    );
    // A guest boots and starts EAL in seconds under TCG on a loaded 2-core machine.
    bed.patience = Duration::from_secs(90);
    // Group commits of votes in this boot, from the summary the guest relays.
    let commits = |c: &ProcCluster<Netns>| {
        c.summary(13)
            .filter(|s| s["running"].as_bool() == Some(true))
            .map_or(0, |s| counter(&s, "commits"))
    };
    bed.wait_until("acceptor 13 votes from its VM", &|c| commits(c) > 0);
    bed.kill9(11);
    bed.progress(
        500,
        "with acceptor 11 down: every quorum has the VM's acceptor",
    );
    bed.start(11);
    bed.progress(200, "after acceptor 11 restarted");

    bed.kill9(13);
    let _ = std::fs::remove_file(bed.dir().join("summary-13.json"));
    bed.progress(200, "with the VM powered off");
    bed.start(13);
    bed.wait_until("acceptor 13 votes again from its rebooted VM", &|c| {
        commits(c) > 0
    });
    bed.kill9(12);
    bed.progress(
        500,
        "with acceptor 12 down: every quorum has the rebooted VM",
    );
    bed.start(12);
    bed.switch_still_runs();
    // Learner 21's stream is checked from its copy on the host like every other learner's.
    let stats = bed.finish_and_check();
    // Their final summaries came out of the VMs after a clean stop (finish_and_check asks
    // each node for `running: false`).
    assert!(counter(&stats[&13], "votes_held") > 0, "{}", stats[&13]);
    assert!(counter(&stats[&21], "delivered") > 0, "{}", stats[&21]);
}
