//! A replicated key-value store: applies a learner's ordered stream (its `output.socket`) to
//! a map. Every replica of this store that applies the same stream holds the same map.
//!
//!   cargo run --example kv -- /path/to/stream.sock [--state FILE] [--count N]
//!   ethpaxos submit --config client.yaml "SET colour blue" "SET size 9" "DEL size"
//!
//! Commands are values: `SET <key> <value>` and `DEL <key>`; anything else changes no key
//! (it is counted). With `--count N` it stops after applying N values, with `--through
//! POSITION` once it applied the value there; it prints the map as `key=value` lines, and
//! with `--digest` a last line `digest HEX applied N`: a digest of every value it applied
//! (position, client, sequence number, payload), in order, which equal streams make equal.
//!
//! With `--restore` (or `--state`) the store stands on its learner's snapshots: every
//! `--snapshot-every` values it hands the learner its state (`put snapshot`), and a store
//! with nothing, or one whose position the learner no longer holds, restores the learner's
//! newest snapshot and applies the stream after it. When its learner installs a peer's
//! snapshot (it was away past what its peers keep) the store restores that one.
//!
//! With `--state FILE` the store survives restarts: every `--snapshot-every` values (and when
//! it stops) it writes its map and the position of the last value it applied to FILE
//! (checksummed, replaced atomically), and at start it loads FILE and asks its learner for
//! the stream from the position after that one. A value is applied once: never twice, never
//! skipped, however often the store or its learner restart (the learner keeps its stream in
//! its journal). Without FILE it starts empty and reads the stream `live`.

use anyhow::{bail, Context};
use ethpaxos::app::{connect_stream, parse_stream_line, put_snapshot, StreamStart};
use ethpaxos::protocol::Position;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// What the store keeps in its state file.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct State {
    /// Every value before this position is applied.
    next: String,
    #[serde(flatten)]
    data: Data,
}

/// The store's state: what its snapshots hold.
#[derive(serde::Serialize, serde::Deserialize, Default, Clone)]
struct Data {
    map: BTreeMap<String, String>,
    /// Values applied, and the digest of all of them in order.
    #[serde(default)]
    applied: u64,
    #[serde(default)]
    digest: String,
}

fn checksum(body: &str) -> String {
    blake3::hash(body.as_bytes()).to_hex()[..32].to_string()
}

/// Where the stream continues (every value before it applied), and the state.
type Restored = (Position, Data);

/// Loads a state file: `<checksum> <json>`. A file that is cut or altered is refused.
fn load(path: &Path) -> anyhow::Result<Option<Restored>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let (sum, body) = text
        .split_once(' ')
        .with_context(|| format!("{}: not a kv state file", path.display()))?;
    if checksum(body) != sum {
        bail!(
            "{}: checksum mismatch: the state file is damaged",
            path.display()
        );
    }
    let state: State = serde_json::from_str(body)
        .with_context(|| format!("{}: not a kv state file", path.display()))?;
    let next = state
        .next
        .parse::<Position>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Some((next, state.data)))
}

/// Writes the state file atomically: a crash leaves the old one or the new one.
fn save(path: &Path, next: Position, data: &Data) -> anyhow::Result<()> {
    use std::io::Write;
    let body = serde_json::to_string(&State {
        next: next.to_string(),
        data: data.clone(),
    })?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    write!(f, "{} {body}", checksum(&body))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

struct Args {
    socket: PathBuf,
    state: Option<PathBuf>,
    count: Option<u64>,
    through: Option<Position>,
    snapshot_every: u64,
    restore: bool,
    digest: bool,
}

fn args() -> anyhow::Result<Args> {
    let usage = "usage: kv SOCKET [--state FILE] [--restore] [--count N] [--through POSITION] \
                 [--snapshot-every N] [--digest]";
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        socket: it.next().context(usage)?.into(),
        state: None,
        count: None,
        through: None,
        snapshot_every: 1000,
        restore: false,
        digest: false,
    };
    while let Some(flag) = it.next() {
        if flag == "--restore" || flag == "--digest" {
            a.restore |= flag == "--restore";
            a.digest |= flag == "--digest";
            continue;
        }
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value; {usage}"))?;
        match flag.as_str() {
            "--state" => a.state = Some(value.into()),
            "--count" => a.count = Some(value.parse().context("--count")?),
            "--through" => {
                a.through = Some(
                    value
                        .parse()
                        .map_err(|e: String| anyhow::anyhow!("--through: {e}"))?,
                )
            }
            "--snapshot-every" => a.snapshot_every = value.parse().context("--snapshot-every")?,
            _ => bail!("unknown argument {flag:?}; {usage}"),
        }
    }
    Ok(a)
}

/// The store: its state, and where the stream continues (every value before `next` applied).
#[derive(Default)]
struct Store {
    next: Position,
    data: Data,
    /// Whether anything was applied or restored (a fresh store asks for a snapshot).
    started: bool,
}

impl Store {
    fn apply(&mut self, v: &ethpaxos::app::DeliveredValue) -> anyhow::Result<()> {
        let position = v.position;
        if position < self.next {
            bail!("the stream went back: {position}, before {}", self.next);
        }
        let text = String::from_utf8_lossy(&v.payload);
        let mut words = text.splitn(3, ' ');
        let map = &mut self.data.map;
        match (words.next(), words.next(), words.next()) {
            (Some("SET"), Some(k), Some(v)) => {
                map.insert(k.to_string(), v.to_string());
            }
            (Some("DEL"), Some(k), None) => {
                map.remove(k);
            }
            _ => {}
        }
        let mut h = blake3::Hasher::new();
        h.update(self.data.digest.as_bytes());
        h.update(format!("{position} {} {} ", v.client, v.seq).as_bytes());
        h.update(&v.payload);
        self.data.digest = h.finalize().to_hex()[..32].to_string();
        self.data.applied += 1;
        self.next = Position {
            instance: position.instance,
            index: position.index + 1,
        };
        self.started = true;
        Ok(())
    }

    /// The state as a learner's snapshot holds it (JSON).
    fn image(&self) -> anyhow::Result<Vec<u8>> {
        Ok(serde_json::to_vec(&self.data)?)
    }

    /// Restores a learner's snapshot: every value before `below` applied.
    fn restore(&mut self, below: Position, image: &[u8]) -> anyhow::Result<()> {
        self.data = serde_json::from_slice(image)
            .context("the learner's snapshot does not hold a kv store's state")?;
        self.next = below;
        self.started = true;
        eprintln!(
            "kv: restored the learner's snapshot at {below}: {} keys, {} values applied",
            self.data.map.len(),
            self.data.applied
        );
        Ok(())
    }
}

/// Connects, waiting up to 30 s for a learner that is not listening yet (a store started
/// with its node).
fn connect_patiently(
    socket: &Path,
    start: StreamStart,
) -> std::io::Result<ethpaxos::app::Connected> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match connect_stream(socket, start) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            r => return r,
        }
    }
}

/// Connects where the store stands: where it stopped, or (a fresh store, or one whose point
/// the learner no longer holds) at the learner's newest snapshot, restoring it. A learner
/// with no snapshot yet serves a fresh store its whole stream.
fn connect(a: &Args, store: &mut Store) -> anyhow::Result<BufReader<UnixStream>> {
    let durable = a.restore || a.state.is_some();
    let start = match (store.started, durable) {
        (true, _) => StreamStart::From(store.next),
        (false, true) => StreamStart::Snapshot,
        (false, false) => StreamStart::Live,
    };
    let c = match connect_patiently(&a.socket, start) {
        Ok(c) => c,
        Err(e) if durable => {
            let why = e.to_string();
            let retry = if start == StreamStart::Snapshot
                && (why.contains("no snapshot yet") || why.contains("no application state"))
            {
                // No snapshot of an application's state yet: the whole stream.
                eprintln!("kv: {why}");
                StreamStart::From(Position::default())
            } else if start != StreamStart::Snapshot && why.contains("from snapshot") {
                eprintln!("kv: {why}");
                StreamStart::Snapshot
            } else {
                bail!("the stream of {}: {why}", a.socket.display());
            };
            connect_stream(&a.socket, retry)
                .with_context(|| format!("the stream of {}", a.socket.display()))?
        }
        Err(e) => return Err(e).with_context(|| format!("the stream of {}", a.socket.display())),
    };
    if let (Some(image), Some(below)) = (&c.snapshot, c.from) {
        store.restore(below, image)?;
    }
    eprintln!(
        "kv: applying the stream of {} from {}, {} keys",
        a.socket.display(),
        c.from.map_or("now".to_string(), |p| p.to_string()),
        store.data.map.len()
    );
    Ok(c.lines)
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let mut store = Store::default();
    if let Some(path) = &a.state {
        if let Some((next, data)) = load(path)? {
            store = Store {
                next,
                data,
                started: true,
            };
        }
    }
    let mut count = 0u64;
    let done = |store: &Store, count: u64| {
        a.count.is_some_and(|c| count >= c) || a.through.is_some_and(|t| store.next > t)
    };
    let mut stream = connect(&a, &mut store)?;
    while !done(&store, count) {
        let mut line = String::new();
        if stream.read_line(&mut line)? == 0 {
            bail!("the learner closed the stream");
        }
        let line = line.trim_end();
        if let Some(why) = line.strip_prefix("error ") {
            if !why.contains("from snapshot") {
                bail!("the learner ended the stream: {why}");
            }
            // The learner installed a peer's snapshot: restore it and go on from there.
            eprintln!("kv: {why}");
            let c = connect_stream(&a.socket, StreamStart::Snapshot)
                .with_context(|| format!("the snapshot of {}", a.socket.display()))?;
            match (&c.snapshot, c.from) {
                (Some(image), Some(below)) => store.restore(below, image)?,
                _ => bail!("the learner sent no snapshot"),
            }
            stream = c.lines;
            continue;
        }
        let value = parse_stream_line(line)
            .ok_or_else(|| anyhow::anyhow!("not a stream line: {line:?}"))?;
        store.apply(&value)?;
        count += 1;
        if a.snapshot_every > 0 && count.is_multiple_of(a.snapshot_every) {
            if let Some(path) = &a.state {
                save(path, store.next, &store.data)?;
            }
            if a.state.is_some() || a.restore {
                // Its learner keeps it for peers that need it, and for a store that
                // restarts with nothing.
                if let Err(e) = put_snapshot(&a.socket, store.next, &store.image()?) {
                    eprintln!("kv: the learner did not take the snapshot: {e}");
                }
            }
        }
    }
    if let Some(path) = &a.state {
        save(path, store.next, &store.data)?;
    }
    for (k, v) in &store.data.map {
        println!("{k}={v}");
    }
    if a.digest {
        println!(
            "digest {} applied {}",
            store.data.digest, store.data.applied
        );
    }
    eprintln!(
        "kv: {count} values applied in this run ({} in all), {} keys, the stream continues at {}",
        store.data.applied,
        store.data.map.len(),
        store.next
    );
    Ok(())
}
