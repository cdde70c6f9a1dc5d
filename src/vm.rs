//! A node inside a QEMU virtual machine, as the VM testbed runs it: one VM per node, its
//! virtio-net NIC on a vhost-user port of a software switch (`ethpaxos vswitch`, or OVS-DPDK),
//! DPDK's virtio PMD inside the guest, the node's store on the VM's own disk.
//!
//! The guest is the image vm/build-image.sh makes (a kernel and an initramfs whose init,
//! vm/init, runs the node). The host side here ([`run`]) writes the guest's config, makes
//! the VM's disk on first use, starts QEMU and talks to the guest's init on the VM's second
//! serial port: the guest sends its node's running summary (`summary <json>`) and how it
//! ended (`exit <code>`); the host sends `stop` for a clean stop. A learner's delivered
//! stream and a client's acknowledgements stay on the VM's disk and are copied to the host's
//! paths through virtio-serial ports. The guest's console (its kernel and node log) is
//! QEMU's standard output.

#![forbid(unsafe_code)]

use crate::config::{NodeConfig, TransportKind};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where the guest's data NIC sits on its PCI bus (QEMU's slot 4): the guest config's
/// `dpdk.pci`.
pub const GUEST_NIC: &str = "0000:00:04.0";
/// Guest memory unless told otherwise.
pub const DEFAULT_MEMORY_MB: u32 = 512;
/// What the guest needs besides EAL's huge pages: its kernel, the initramfs the root file
/// system lives in, the node's own heap.
const GUEST_OWN_MB: u64 = 160;
/// Huge pages beyond `dpdk.memory_mb` for EAL's own structures.
const EAL_SLACK_PAGES: u64 = 16;
/// The guest's store (its disk, mounted by the guest's init).
const GUEST_DATA: &str = "/data";
/// Where the guest's node writes its summary (tmpfs), which init forwards.
const GUEST_SUMMARY: &str = "/run/summary.json";
/// The outputs the guest copies to the host: the files' names in the guest's store, and the
/// names of their virtio-serial ports.
const DELIVERED: &str = "delivered.txt";
const ACKNOWLEDGED: &str = "acknowledged.txt";
/// Where the guest's init puts the frame key it gets from the host.
const GUEST_KEY: &str = "/etc/ethpaxos/frame.key";

#[derive(Clone, Debug)]
pub struct VmSpec {
    /// The node's config as the host testbed wrote it (paths on the host).
    pub config: PathBuf,
    /// The directory holding the guest image: `vmlinuz` and `initrd.img`.
    pub image: PathBuf,
    /// The vhost-user socket the VM's NIC attaches to (the switch is the server).
    pub socket: PathBuf,
    /// The VM's own files: its disk `data.img`, the guest config, the control socket.
    pub dir: PathBuf,
    /// Guest memory, shared with the vhost-user backend.
    pub memory_mb: u32,
    /// Back guest memory with files in this directory (a hugetlbfs mount such as
    /// /dev/hugepages, for KVM guests at speed) instead of an anonymous memfd.
    pub memory_path: Option<PathBuf>,
    /// Size of the VM's disk when it is made (a sparse file: blocks cost only once written).
    pub disk_mb: u64,
    /// QEMU's accelerator: `tcg` (emulation; works anywhere) or `kvm`.
    pub accel: String,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// How long a clean stop may take before QEMU is killed.
    pub stop_timeout: Duration,
}

impl VmSpec {
    pub fn new(config: PathBuf, image: PathBuf, socket: PathBuf, dir: PathBuf) -> VmSpec {
        VmSpec {
            config,
            image,
            socket,
            dir,
            memory_mb: DEFAULT_MEMORY_MB,
            memory_path: None,
            disk_mb: 4096,
            accel: "tcg".into(),
            qemu: "qemu-system-x86_64".into(),
            stop_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("vm: {0}")]
    Config(String),
    #[error("vm: {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("vm: `{cmd}` failed: {why}")]
    Command { cmd: String, why: String },
    #[error("vm: the guest's node ended with code {code}{why}")]
    Guest { code: i32, why: String },
    #[error("vm: QEMU ended ({status}) before the guest said how its node ended")]
    Lost { status: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

/// The config the guest's node runs: the host's, with the store (and a learner's journal)
/// on the VM's disk, the summary where init forwards it from, a learner's delivered stream
/// and a client's acknowledgements on the VM's disk (init copies them to the host's paths),
/// the key where init puts it, and DPDK on the VM's NIC (EAL memory from the guest's huge
/// pages). The guest's only network is its data NIC: no metrics endpoint, no stream socket.
/// Also returns how many 2 MiB huge pages the guest reserves for EAL, which, with what the
/// guest needs of its own, must fit in `memory_mb` of guest memory.
pub fn guest_config(host: &NodeConfig, memory_mb: u32) -> Result<(NodeConfig, u32), VmError> {
    if host.output.socket.is_some() {
        return Err(VmError::Config(format!(
            "node {}: output.socket: a stream socket inside a VM cannot be reached from the \
             host (leave it out; the delivered stream comes out through output.delivered)",
            host.node_id
        )));
    }
    if host.transport != TransportKind::Dpdk {
        return Err(VmError::Config(format!(
            "node {}: transport is {:?}; a node in a VM runs on DPDK (transport: dpdk)",
            host.node_id, host.transport
        )));
    }
    let mut g = host.clone();
    g.storage.path = Some(GUEST_DATA.into());
    g.learner.path = None;
    let on_disk = |name: &str| PathBuf::from(GUEST_DATA).join(name);
    g.output = crate::config::OutputConfig {
        summary: Some(GUEST_SUMMARY.into()),
        delivered: host.output.delivered.as_ref().map(|_| on_disk(DELIVERED)),
        acknowledged: host
            .output
            .acknowledged
            .as_ref()
            .map(|_| on_disk(ACKNOWLEDGED)),
        socket: None,
    };
    g.metrics_address = None;
    g.auth_key_file = host.auth_key_file.as_ref().map(|_| GUEST_KEY.into());
    let mut dpdk = host.dpdk.clone().unwrap_or_default();
    dpdk.pci = vec![GUEST_NIC.into()];
    dpdk.vdevs.clear();
    dpdk.port = 0;
    dpdk.hugepages = true;
    dpdk.lcores.clear();
    let pages = u64::from(dpdk.memory_mb).div_ceil(2) + EAL_SLACK_PAGES;
    if pages * 2 + GUEST_OWN_MB > u64::from(memory_mb) {
        return Err(VmError::Config(format!(
            "node {}: dpdk.memory_mb {} needs {pages} huge pages ({} MiB) in the guest, which \
             with the guest's own {GUEST_OWN_MB} MiB is more than its {memory_mb} MiB of \
             memory (raise --memory-mb or lower dpdk.memory_mb)",
            host.node_id,
            dpdk.memory_mb,
            pages * 2
        )));
    }
    g.dpdk = Some(dpdk);
    Ok((g, pages as u32))
}

/// Makes the VM's disk (ext4) unless it exists: a VM started again keeps its store.
fn ensure_disk(path: &Path, mb: u64) -> Result<(), VmError> {
    if path.exists() {
        return Ok(());
    }
    let tmp = path.with_extension("img.tmp");
    let f = std::fs::File::create(&tmp).map_err(io(format!("cannot create {}", tmp.display())))?;
    f.set_len(mb << 20)
        .map_err(io(format!("cannot size {}", tmp.display())))?;
    drop(f);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "ethpaxos"])
        .arg(&tmp)
        .output()
        .map_err(|e| VmError::Command {
            cmd: "mkfs.ext4".into(),
            why: format!("{e} (apt-get install e2fsprogs)"),
        })?;
    if !out.status.success() {
        return Err(VmError::Command {
            cmd: format!("mkfs.ext4 {}", tmp.display()),
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    std::fs::rename(&tmp, path).map_err(io(format!("cannot rename {}", tmp.display())))
}

/// QEMU's arguments for `spec`, the guest config at `guest_cfg` and the node's `mac`.
fn qemu_args(
    spec: &VmSpec,
    host: &NodeConfig,
    guest_cfg: &Path,
    hugepages: u32,
    mac: &str,
) -> Vec<String> {
    let p = |p: &Path| p.display().to_string();
    let mem = spec.memory_mb;
    let mut a: Vec<String> = [
        "-accel",
        &spec.accel,
        "-machine",
        "pc,memory-backend=mem",
        "-cpu",
        "max",
        "-smp",
        "1",
        "-m",
        &format!("{mem}M"),
        // The vhost-user backend maps the guest's memory: it must be shared.
        "-object",
        &match &spec.memory_path {
            None => format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
            Some(dir) => format!(
                "memory-backend-file,id=mem,size={mem}M,mem-path={},share=on,prealloc=on",
                p(dir)
            ),
        },
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-kernel",
        &p(&spec.image.join("vmlinuz")),
        "-initrd",
        &p(&spec.image.join("initrd.img")),
        "-append",
        &format!("console=ttyS0 panic=-1 quiet ethpaxos.hugepages={hugepages}"),
        // ttyS0: the console, on QEMU's standard output.
        "-serial",
        "stdio",
        // ttyS1: the control channel to the guest's init.
        "-chardev",
        &format!(
            "socket,id=ctl,path={},server=on,wait=off",
            p(&spec.dir.join("ctl.sock"))
        ),
        "-serial",
        "chardev:ctl",
        "-chardev",
        &format!("socket,id=vhu,path={}", p(&spec.socket)),
        "-netdev",
        "vhost-user,id=net0,chardev=vhu",
        "-device",
        &format!("virtio-net-pci,netdev=net0,mac={mac},addr=0x4,disable-legacy=on,romfile="),
        "-drive",
        &format!(
            "file={},format=raw,if=none,id=disk0",
            p(&spec.dir.join("data.img"))
        ),
        "-device",
        "virtio-blk-pci,drive=disk0,addr=0x5,romfile=",
        "-fw_cfg",
        &format!("name=opt/ethpaxos/node.yaml,file={}", p(guest_cfg)),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(key) = &host.auth_key_file {
        a.push("-fw_cfg".into());
        a.push(format!("name=opt/ethpaxos/frame.key,file={}", p(key)));
    }
    // The host's copies of the guest's outputs: QEMU empties each at start, the guest's
    // init copies its file from the first byte.
    let outputs: Vec<(&str, &PathBuf)> = [
        ("delivered", host.output.delivered.as_ref()),
        ("acknowledged", host.output.acknowledged.as_ref()),
    ]
    .into_iter()
    .filter_map(|(name, path)| Some((name, path?)))
    .collect();
    if !outputs.is_empty() {
        a.extend([
            "-device".into(),
            "virtio-serial-pci,addr=0x6,romfile=".into(),
        ]);
    }
    for (name, path) in outputs {
        a.extend([
            "-chardev".into(),
            format!("file,id={name},path={}", p(path)),
            "-device".into(),
            format!("virtserialport,chardev={name},name={name}"),
        ]);
    }
    a
}

/// What the guest's init said on the control channel.
enum GuestLine {
    Summary(String),
    Exit { code: i32, why: String },
}

fn parse_line(line: &str) -> Option<GuestLine> {
    if let Some(json) = line.strip_prefix("summary ") {
        return Some(GuestLine::Summary(json.to_string()));
    }
    let rest = line.strip_prefix("exit ")?;
    let (code, why) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(GuestLine::Exit {
        code: code.trim().parse().ok()?,
        why: why.trim().to_string(),
    })
}

/// Passes what the guest says on `from` to `to`, line by line, until either end closes. Bytes,
/// not UTF-8 lines: whatever else the guest sends, the relay goes on.
fn read_guest(from: impl std::io::Read, to: &mpsc::Sender<GuestLine>) {
    let mut reader = BufReader::new(from);
    let mut buf = Vec::new();
    while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
        let line = String::from_utf8_lossy(&buf);
        if let Some(l) = parse_line(line.trim_end_matches(['\r', '\n'])) {
            if to.send(l).is_err() {
                return;
            }
        }
        buf.clear();
    }
}

/// Runs node `spec.config` in a VM until `stop` is set (then stops it cleanly: the guest's
/// node syncs and writes its final summary) or the guest's node ends. Each summary the guest
/// sends is written to the host config's `output.summary`.
pub fn run(spec: &VmSpec, stop: &AtomicBool) -> Result<(), VmError> {
    let host = NodeConfig::load(&spec.config).map_err(|e| VmError::Config(e.to_string()))?;
    let (guest, hugepages) = guest_config(&host, spec.memory_mb)?;
    let mac = host.me().mac.clone().ok_or_else(|| {
        VmError::Config(format!(
            "node {}: its member entry has no mac (the VM's NIC takes it)",
            host.node_id
        ))
    })?;
    for f in ["vmlinuz", "initrd.img"] {
        let path = spec.image.join(f);
        if !path.exists() {
            return Err(VmError::Config(format!(
                "no guest image at {} (build it with vm/build-image.sh)",
                path.display()
            )));
        }
    }
    if !spec.socket.exists() {
        return Err(VmError::Config(format!(
            "no vhost-user socket at {} (start the switch first)",
            spec.socket.display()
        )));
    }
    if !Command::new(&spec.qemu)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Err(VmError::Command {
            cmd: format!("{} --version", spec.qemu.display()),
            why: "QEMU is not installed (apt-get install qemu-system-x86)".into(),
        });
    }
    std::fs::create_dir_all(&spec.dir)
        .map_err(io(format!("cannot create {}", spec.dir.display())))?;
    let guest_cfg = spec.dir.join("node.yaml");
    let yaml = serde_yaml_ng::to_string(&guest)
        .map_err(|e| VmError::Config(format!("node {}: {e}", host.node_id)))?;
    std::fs::write(&guest_cfg, yaml)
        .map_err(io(format!("cannot write {}", guest_cfg.display())))?;
    ensure_disk(&spec.dir.join("data.img"), spec.disk_mb)?;
    let ctl_path = spec.dir.join("ctl.sock");
    let _ = std::fs::remove_file(&ctl_path);

    if host.metrics_address.is_some() {
        eprintln!(
            "vm: node {}: metrics_address is not served from a VM (its only network is the data NIC)",
            host.node_id
        );
    }
    let args = qemu_args(spec, &host, &guest_cfg, hugepages, &mac);
    // QEMU dies with this process: a runner killed with -9 is the VM's power cut, not a VM
    // left holding its switch port (setpriv sets the parent-death signal, then runs QEMU).
    let mut qemu = Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--"])
        .arg(&spec.qemu)
        .args(&args)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| VmError::Command {
            cmd: spec.qemu.display().to_string(),
            why: format!("cannot start it through setpriv: {e}"),
        })?;
    let result = supervise(spec, &host, &mut qemu, &ctl_path, stop);
    if result.is_err() {
        let _ = qemu.kill();
    }
    let _ = qemu.wait();
    result
}

fn supervise(
    spec: &VmSpec,
    host: &NodeConfig,
    qemu: &mut Child,
    ctl_path: &Path,
    stop: &AtomicBool,
) -> Result<(), VmError> {
    let exited = |qemu: &mut Child| -> Result<Option<String>, VmError> {
        Ok(qemu
            .try_wait()
            .map_err(io("cannot wait for QEMU"))?
            .map(|s| s.to_string()))
    };
    // QEMU makes the control socket as it starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ctl = loop {
        if let Some(status) = exited(qemu)? {
            return Err(VmError::Command {
                cmd: spec.qemu.display().to_string(),
                why: format!("ended at start ({status}); its messages are above"),
            });
        }
        if let Ok(s) = UnixStream::connect(ctl_path) {
            break s;
        }
        if Instant::now() > deadline {
            return Err(VmError::Command {
                cmd: spec.qemu.display().to_string(),
                why: format!("made no control socket {} in 30 s", ctl_path.display()),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut writer = ctl.try_clone().map_err(io("control socket"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || read_guest(ctl, &tx));
    let summary = host.output.summary.clone();
    let mut stop_sent: Option<Instant> = None;
    let mut last_said: Option<Instant> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(GuestLine::Summary(json)) => {
                // A line cut short (the guest powered off mid-line) is not a summary.
                if let (Some(path), true) = (
                    &summary,
                    serde_json::from_str::<serde_json::Value>(&json).is_ok(),
                ) {
                    let tmp = path.with_extension("json.tmp");
                    std::fs::write(&tmp, json + "\n")
                        .and_then(|_| std::fs::rename(&tmp, path))
                        .map_err(io(format!("cannot write {}", path.display())))?;
                }
            }
            Ok(GuestLine::Exit { code, why }) => {
                let deadline = Instant::now() + Duration::from_secs(10);
                while exited(qemu)?.is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if code == 0 {
                    return Ok(());
                }
                return Err(VmError::Guest {
                    code,
                    why: if why.is_empty() {
                        " (its log is above)".into()
                    } else {
                        format!(": {why}")
                    },
                });
            }
            Err(e) => {
                if let Some(status) = exited(qemu)? {
                    return Err(VmError::Lost { status });
                }
                if e == mpsc::RecvTimeoutError::Disconnected {
                    // The control channel closed: QEMU is on its way out.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            stop_sent.get_or_insert_with(Instant::now);
            // Said again every 2 s: a guest still booting drops what comes before its init
            // listens.
            if last_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
                let _ = writer.write_all(b"stop\n");
                last_said = Some(Instant::now());
            }
        }
        if stop_sent.is_some_and(|t| t.elapsed() > spec.stop_timeout) {
            return Err(VmError::Command {
                cmd: "stop".into(),
                why: format!(
                    "the guest did not stop within {} s",
                    spec.stop_timeout.as_secs()
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testbed::{layout_configs, Layout, LayoutSpec, Vms};

    fn roles_with_vm(nodes: Vec<u16>) -> Vec<NodeConfig> {
        let spec = LayoutSpec {
            layout: Layout::Roles,
            vms: Vms {
                nodes,
                ..Vms::default()
            },
            auth: true,
            ..LayoutSpec::default()
        };
        layout_configs(
            &spec,
            Some("/host/tb/frame.key".into()),
            Path::new("/host/tb"),
        )
    }

    #[test]
    fn the_guest_config_keeps_the_node_and_moves_its_store_outputs_and_nic_into_the_vm() {
        let configs = roles_with_vm(vec![13]);
        let mut host = configs.iter().find(|c| c.node_id == 13).unwrap().clone();
        host.storage.path = Some("/host/tb/data/13".into());
        host.output.summary = Some("/host/tb/summary-13.json".into());
        host.metrics_address = Some("127.0.0.1:9100".parse().unwrap());
        let (g, pages) = guest_config(&host, DEFAULT_MEMORY_MB).unwrap();
        // The testbed's 96 MiB of EAL memory, in 2 MiB pages, and EAL's own.
        assert_eq!(pages, 48 + 16);
        assert_eq!((g.node_id, &g.members), (13, &host.members));
        assert_eq!(g.protocol, host.protocol);
        assert_eq!(g.storage.path.as_deref(), Some(Path::new(GUEST_DATA)));
        assert_eq!(g.output.summary.as_deref(), Some(Path::new(GUEST_SUMMARY)));
        assert_eq!(g.auth_key_file.as_deref(), Some(Path::new(GUEST_KEY)));
        assert_eq!(g.metrics_address, None);
        let d = g.dpdk.unwrap();
        assert_eq!(
            (d.pci, d.vdevs.len(), d.hugepages),
            (vec![GUEST_NIC.to_string()], 0, true)
        );
        // What the guest runs is a valid config (the key file exists only in the guest).
        let (mut g, _) = guest_config(&host, DEFAULT_MEMORY_MB).unwrap();
        g.auth_key_file = None;
        g.validated().expect("the guest's config validates");
    }

    #[test]
    fn a_learner_and_a_client_keep_their_outputs_on_the_vm_disk() {
        let configs = roles_with_vm(vec![21, 9]);
        for id in [21, 9] {
            let mut host = configs.iter().find(|c| c.node_id == id).unwrap().clone();
            host.output.delivered = Some(format!("/host/tb/delivered-{id}.txt").into());
            host.output.acknowledged = (id == 9).then(|| "/host/tb/acknowledged.txt".into());
            host.learner.path = Some("/host/tb/journal".into());
            let (g, _) = guest_config(&host, DEFAULT_MEMORY_MB).unwrap();
            assert_eq!(
                g.output.delivered,
                Some(PathBuf::from("/data/delivered.txt"))
            );
            let acked = (id == 9).then(|| PathBuf::from("/data/acknowledged.txt"));
            assert_eq!(g.output.acknowledged, acked);
            assert_eq!(
                g.learner.path, None,
                "the journal goes under the store, /data"
            );
            // The host's copies: a virtio-serial port per output, QEMU writing the host path.
            let args = qemu_args(
                &VmSpec::new("c".into(), "i".into(), "s".into(), "d".into()),
                &host,
                Path::new("g.yaml"),
                64,
                "02:45:50:00:00:15",
            )
            .join(" ");
            assert!(args.contains(&format!(
                "file,id=delivered,path=/host/tb/delivered-{id}.txt"
            )));
            assert_eq!(args.contains("name=acknowledged"), id == 9, "{args}");
        }
    }

    #[test]
    fn a_stream_socket_other_transports_and_eal_beyond_the_guest_memory_are_refused() {
        let configs = roles_with_vm(vec![13, 21]);
        let mut learner = configs.iter().find(|c| c.node_id == 21).unwrap().clone();
        learner.output.socket = Some("/host/tb/stream-21.sock".into());
        let e = guest_config(&learner, DEFAULT_MEMORY_MB)
            .unwrap_err()
            .to_string();
        assert!(e.contains("node 21: output.socket"), "{e}");
        let afpacket = configs.iter().find(|c| c.node_id == 12).unwrap();
        let e = guest_config(afpacket, DEFAULT_MEMORY_MB)
            .unwrap_err()
            .to_string();
        assert!(e.contains("runs on DPDK"), "{e}");
        let vm = configs.iter().find(|c| c.node_id == 13).unwrap();
        // 64 pages (128 MiB) and the guest's own 160 MiB: 288 MiB of guest memory fit.
        assert_eq!(guest_config(vm, 288).unwrap().1, 64);
        let e = guest_config(vm, 287).unwrap_err().to_string();
        assert!(
            e.contains("node 13: dpdk.memory_mb 96 needs 64 huge pages (128 MiB)")
                && e.contains("287 MiB"),
            "{e}"
        );
    }

    #[test]
    fn the_relay_goes_on_past_garbage_and_cut_lines() {
        let (tx, rx) = mpsc::channel();
        let said: &[u8] =
            b"\xff\xfe garbage\nsummary {\"running\":true}\r\n[ 1.0] console\nexit 0\nsumm";
        read_guest(said, &tx);
        let got: Vec<GuestLine> = rx.try_iter().collect();
        assert_eq!(got.len(), 2);
        assert!(matches!(&got[0], GuestLine::Summary(j) if j == "{\"running\":true}"));
        assert!(matches!(&got[1], GuestLine::Exit { code: 0, .. }));
    }

    #[test]
    fn control_lines_parse_and_anything_else_is_ignored() {
        assert!(
            matches!(parse_line("summary {\"a\":1}"), Some(GuestLine::Summary(j)) if j == "{\"a\":1}")
        );
        assert!(
            matches!(parse_line("exit 0"), Some(GuestLine::Exit { code: 0, ref why }) if why.is_empty())
        );
        assert!(
            matches!(parse_line("exit 1 no virtio-net NIC"), Some(GuestLine::Exit { code: 1, ref why }) if why == "no virtio-net NIC")
        );
        assert!(parse_line("exit x").is_none());
        assert!(parse_line("[    0.1] kernel line").is_none());
    }
}
