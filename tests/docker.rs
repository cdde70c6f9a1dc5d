//! The compose cluster of docker/ (docs/docker.md): the appliance image built on a base made
//! from Debian's packages, three replicas and a client node under load on raw Ethernet. Under
//! load a replica is killed and started again, another is paused and resumed, and the leader
//! is cut off its network and put back; every acknowledged value must then be delivered once,
//! in one order, at every learner.
//! Everything the test made is removed afterwards (containers, network, volumes, images), and
//! a dockerd it started is stopped with the firewall settings it changed put back.

mod common;

use common::wait_until;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WHY: &str = "needs root, docker.io, docker-compose and debootstrap (.ci/run installs them)";

/// Runs `cmd` with `args` (and `env`), waiting at most `within`; its stdout, or Err with its
/// output.
fn run(cmd: &str, args: &[&str], env: &[(&str, &str)], within: Duration) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("ethpaxos-docker-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new(cmd)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).map_err(|e| e.to_string())?)
        .stderr(std::fs::File::create(&err).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("{cmd}: {e}"))?;
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{cmd} {args:?} took over {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    if status.success() {
        Ok(stdout)
    } else {
        Err(format!("{cmd} {args:?}: {status}\n{stdout}{stderr}"))
    }
}

/// `docker args`, waiting at most `secs` seconds.
fn docker(args: &[&str], secs: u64) -> Result<String, String> {
    run("docker", args, &[], Duration::from_secs(secs))
}

/// What the test started or changed, undone when dropped, pass or fail.
struct Setup {
    dockerd: Option<Child>,
    /// The root namespace's iptables FORWARD policy and bridge netfilter setting before a
    /// dockerd the test started changed them.
    forward_policy: Option<String>,
    bridge_nf: Option<String>,
    project: String,
    images: [String; 2],
    /// The build stage's images (label `ethpaxos.stage=build`) there before the test built
    /// its own: the build leaves its stage untagged, and only the test's go afterwards.
    stage_images_before: Option<Vec<String>>,
    compose_up: bool,
}

/// Images of the appliance's build stage (docker/Dockerfile labels them).
fn stage_images() -> Vec<String> {
    docker(
        &[
            "images",
            "-a",
            "-q",
            "--no-trunc",
            "--filter",
            "label=ethpaxos.stage=build",
        ],
        30,
    )
    .map(|o| o.split_whitespace().map(str::to_string).collect())
    .unwrap_or_default()
}

impl Setup {
    fn env(&self) -> [(&str, &str); 2] {
        [
            ("ETHPAXOS_IMAGE", self.images[0].as_str()),
            ("ETHPAXOS_PROMETHEUS_IMAGE", self.images[1].as_str()),
        ]
    }

    fn compose(&self, args: &[&str], within: Duration) -> Result<String, String> {
        let mut all = vec!["-f", "docker/compose.yaml", "-p", &self.project];
        all.extend_from_slice(args);
        run("docker-compose", &all, &self.env(), within)
    }

    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }

    /// Replica `id`'s running summary (None until it has written one).
    fn summary(&self, id: u16) -> Option<serde_json::Value> {
        let dir = self.volume(&format!("replica-{id}")).ok()?;
        let text = std::fs::read_to_string(dir.join(format!("summary-{id}.json"))).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Where service `service`'s volume is on this machine.
    fn volume(&self, service: &str) -> Result<PathBuf, String> {
        let name = format!("{}_{service}", self.project);
        let out = docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", &name], 30)?;
        Ok(PathBuf::from(out.trim()))
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if self.compose_up {
            let _ = self.compose(
                &["down", "-v", "--rmi", "all", "--remove-orphans"],
                Duration::from_secs(120),
            );
        }
        for image in &self.images {
            let _ = docker(&["image", "rm", "-f", image], 60);
        }
        if let Some(before) = &self.stage_images_before {
            // Children before parents: each pass removes what has no child left.
            for _ in 0..32 {
                let ours: Vec<String> = stage_images()
                    .into_iter()
                    .filter(|i| !before.contains(i))
                    .collect();
                if ours.is_empty() {
                    break;
                }
                for image in ours {
                    let _ = docker(&["image", "rm", &image], 60);
                }
            }
        }
        if let Some(mut d) = self.dockerd.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &d.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while d.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        if let Some(p) = &self.forward_policy {
            let _ = run(
                "iptables",
                &["-P", "FORWARD", p],
                &[],
                Duration::from_secs(10),
            );
        }
        if let Some(v) = &self.bridge_nf {
            let _ = std::fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", v);
        }
    }
}

fn docker_up() -> bool {
    docker(&["info"], 10).is_ok()
}

fn forward_policy() -> Option<String> {
    let rules = run("iptables", &["-S", "FORWARD"], &[], Duration::from_secs(10)).ok()?;
    rules
        .lines()
        .find_map(|l| l.strip_prefix("-P FORWARD "))
        .map(|p| p.trim().to_string())
}

fn acknowledged(client: &Path) -> usize {
    common::read_lines(&client.join("acknowledged.txt")).len()
}

#[test]
#[ignore = "needs root, docker.io, docker-compose and debootstrap (.ci/run installs them)"]
fn a_compose_cluster_loses_nothing_when_replicas_are_killed_paused_and_cut_off() {
    assert!(
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")),
        "{WHY}"
    );
    let pid = std::process::id();
    let mut setup = Setup {
        dockerd: None,
        forward_policy: None,
        bridge_nf: None,
        project: format!("epxtest{pid}"),
        images: [
            format!("ethpaxos:test-{pid}"),
            format!("ethpaxos-prometheus:test-{pid}"),
        ],
        stage_images_before: None,
        compose_up: false,
    };
    if !docker_up() {
        setup.forward_policy = forward_policy();
        setup.bridge_nf =
            std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables").ok();
        let log = std::fs::File::create(std::env::temp_dir().join(format!("dockerd-{pid}.log")))
            .expect("a log file for dockerd");
        setup.dockerd = Some(
            Command::new("dockerd")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("the log"))
                .stderr(log)
                .spawn()
                .expect(WHY),
        );
        wait_until("dockerd answers", Duration::from_secs(60), docker_up).unwrap();
        if setup.bridge_nf.is_none() {
            // br_netfilter came with dockerd: off again afterwards, as it was.
            setup.bridge_nf = Some("0".into());
        }
    }
    run(
        "docker/bootstrap-base.sh",
        &[],
        &[],
        Duration::from_secs(600),
    )
    .unwrap();
    setup.stage_images_before = Some(stage_images());
    run(
        "docker/build.sh",
        &[],
        &[("TAG", setup.images[0].as_str())],
        Duration::from_secs(900),
    )
    .unwrap();
    setup.compose_up = true;
    setup
        .compose(&["up", "-d", "--build"], Duration::from_secs(600))
        .unwrap();

    let client = setup.volume("client").unwrap();
    wait_until(
        "the client's first acknowledgements",
        Duration::from_secs(60),
        || acknowledged(&client) > 100,
    )
    .unwrap();
    let progress = |why: &str| {
        let at = acknowledged(&client);
        wait_until(why, Duration::from_secs(60), || {
            acknowledged(&client) > at + 500
        })
    };

    // A replica killed (SIGKILL) and started again: the others go on, and it rejoins from its
    // storage and journal.
    let replica3 = setup.container("replica-3");
    docker(&["kill", &replica3], 30).unwrap();
    progress("with replica 3 killed").unwrap();
    docker(&["start", &replica3], 60).unwrap();
    progress("with replica 3 back").unwrap();

    // A replica frozen (every process stopped) and thawed.
    let replica2 = setup.container("replica-2");
    docker(&["pause", &replica2], 30).unwrap();
    progress("with replica 2 paused").unwrap();
    docker(&["unpause", &replica2], 30).unwrap();
    progress("with replica 2 thawed").unwrap();

    // The leader cut off its network and put back. Docker gives the container a new
    // interface (eth1, with the same MAC): the node follows its MAC there. A standby leads
    // meanwhile; the final check holds the old leader's stream to every value too.
    let mut leader = None;
    wait_until("a replica says it leads", Duration::from_secs(30), || {
        leader = (1..=3u16).find(|id| {
            setup
                .summary(*id)
                .is_some_and(|s| s["leading_round"].is_u64())
        });
        leader.is_some()
    })
    .unwrap();
    let leader_id = leader.expect("found");
    let leader = setup.container(&format!("replica-{leader_id}"));
    let network = format!("{}_paxos", setup.project);
    docker(&["network", "disconnect", &network, &leader], 30).unwrap();
    progress("with the leader cut off").unwrap();
    docker(&["network", "connect", &network, &leader], 30).unwrap();
    progress("with the old leader back").unwrap();
    wait_until(
        "the old leader rebinds to its new interface",
        Duration::from_secs(30),
        || {
            setup
                .summary(leader_id)
                .is_some_and(|s| s["transport"]["rebinds"].as_u64() >= Some(1))
        },
    )
    .unwrap();

    // The load stops (SIGTERM: the client node writes what it saw acknowledged); every learner
    // must then hold every acknowledged value once, in one order.
    docker(&["stop", "-t", "20", &setup.container("client")], 60).unwrap();
    let mut learners = Vec::new();
    for id in 1..=3u16 {
        let dir = setup.volume(&format!("replica-{id}")).unwrap();
        learners.push((id, dir.join(format!("delivered-{id}.txt"))));
    }
    let checked = common::check_delivery(
        &client.join("acknowledged.txt"),
        &learners,
        1500,
        Duration::from_secs(60),
        &|_| None,
    )
    .unwrap();
    assert!(checked > 1500, "{checked} values checked");
    // The client node's learner stopped with values in flight: what it delivered is where the
    // replicas' streams start, value for value and position for position.
    let mine = common::positioned(&client.join("delivered-9.txt"));
    let full = common::positioned(&learners[0].1);
    assert!(
        mine.len() >= common::read_lines(&client.join("acknowledged.txt")).len()
            && full.starts_with(&mine),
        "the client node's learner delivered {} values, not a prefix of replica 1's {}",
        mine.len(),
        full.len()
    );
}

/// The `grafana` profile, without Grafana (its image cannot be pulled here): the service's
/// entrypoint script, run on the files its volumes mount, must write a dashboard whose every
/// data source is the provisioned Prometheus, where the provisioned dashboard provider reads.
#[test]
fn the_grafana_profile_provisions_the_dashboard_on_the_provisioned_prometheus() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docker_dir = repo.join("docker");
    let yaml = |p: &Path| -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let compose = yaml(&docker_dir.join("compose.yaml"));
    let grafana = &compose["services"]["grafana"];
    assert_eq!(grafana["profiles"][0].as_str(), Some("grafana"));
    // Each volume's source, from the compose file's directory, by its path in the container.
    let mounts: Vec<(PathBuf, String)> = grafana["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| {
            let mut parts = v.as_str()?.split(':');
            let (src, dst) = (parts.next()?, parts.next()?);
            src.starts_with('.')
                .then(|| (docker_dir.join(src), dst.to_string()))
        })
        .collect();
    let mounted = |dst: &str| {
        let (src, _) = mounts.iter().find(|(_, d)| d == dst).unwrap();
        assert!(src.exists(), "{} is not in the repository", src.display());
        src.clone()
    };
    let provisioning = mounted("/etc/grafana/provisioning");
    let dashboard_src = mounted("/etc/ethpaxos/grafana/ethpaxos.json");

    let out = std::env::temp_dir().join(format!("ethpaxos-grafana-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let script = grafana["entrypoint"][2]
        .as_str()
        .unwrap()
        .replace("$$", "$")
        .replace(
            "/etc/ethpaxos/grafana/ethpaxos.json",
            dashboard_src.to_str().unwrap(),
        )
        .replace("/var/lib/grafana", out.to_str().unwrap())
        .replace("exec /run.sh", "true");
    let status = Command::new("sh").args(["-c", &script]).status();
    let written = std::fs::read_to_string(out.join("dashboards/ethpaxos.json"));
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        status.is_ok_and(|s| s.success()),
        "the entrypoint script failed: {script}"
    );

    let datasources = yaml(&provisioning.join("datasources/prometheus.yaml"));
    let uid = datasources["datasources"][0]["uid"].as_str().unwrap();
    let providers = yaml(&provisioning.join("dashboards/ethpaxos.yaml"));
    let path = providers["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert_eq!(
        path, "/var/lib/grafana/dashboards",
        "the provider reads where the entrypoint writes"
    );
    let text = written.unwrap();
    assert!(!text.contains("${"), "an input is left unreplaced");
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut uids = Vec::new();
    fn walk(v: &serde_json::Value, uids: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(ds) = m.get("datasource") {
                    uids.push(ds["uid"].as_str().unwrap_or_default().to_string());
                }
                m.values().for_each(|x| walk(x, uids));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, uids)),
            _ => {}
        }
    }
    walk(&dashboard, &mut uids);
    assert!(
        uids.len() > 5,
        "the dashboard's panels name their data source"
    );
    assert!(uids.iter().all(|u| u == uid), "{uids:?} vs {uid}");
}
