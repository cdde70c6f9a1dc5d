//! A replicated key-value store: applies a learner's ordered stream (its `output.socket`) to
//! a map. Every replica of this store that applies the same stream holds the same map.
//!
//!   cargo run --example kv -- /path/to/stream.sock [--state FILE] [--count N]
//!   ethpaxos submit --config client.yaml "SET colour blue" "SET size 9" "DEL size"
//!
//! Commands are values: `SET <key> <value>` and `DEL <key>`; anything else is reported and
//! skipped. With `--count N` it stops after applying N values and prints the map as
//! `key=value` lines.
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
    map: BTreeMap<String, String>,
}

fn checksum(body: &str) -> String {
    blake3::hash(body.as_bytes()).to_hex()[..32].to_string()
}

/// Where the stream continues (every value before it applied), and the map.
type Restored = (Position, BTreeMap<String, String>);

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
    Ok(Some((next, state.map)))
}

/// Writes the state file atomically: a crash leaves the old one or the new one.
fn save(path: &Path, next: Position, map: &BTreeMap<String, String>) -> anyhow::Result<()> {
    use std::io::Write;
    let body = serde_json::to_string(&State {
        next: next.to_string(),
        map: map.clone(),
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
}

fn args() -> anyhow::Result<Args> {
    let usage = "usage: kv SOCKET [--state FILE] [--restore] [--count N] [--through POSITION] \
                 [--snapshot-every N]";
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        socket: it.next().context(usage)?.into(),
        state: None,
        count: None,
        through: None,
        snapshot_every: 1000,
        restore: false,
    };
    while let Some(flag) = it.next() {
        if flag == "--restore" {
            a.restore = true;
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

/// The store: its map, and where the stream continues (every value before `next` applied).
#[derive(Default)]
struct Store {
    next: Position,
    map: BTreeMap<String, String>,
    /// Whether anything was applied or restored (a fresh store asks for a snapshot).
    started: bool,
}

impl Store {
    fn apply(&mut self, position: Position, payload: &[u8]) -> anyhow::Result<()> {
        if position < self.next {
            bail!("the stream went back: {position}, before {}", self.next);
        }
        let text = String::from_utf8_lossy(payload);
        let mut words = text.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("SET"), Some(k), Some(v)) => {
                self.map.insert(k.to_string(), v.to_string());
            }
            (Some("DEL"), Some(k), None) => {
                self.map.remove(k);
            }
            _ => eprintln!("kv: skipped {text:?} at {position}"),
        }
        self.next = Position {
            instance: position.instance,
            index: position.index + 1,
        };
        self.started = true;
        Ok(())
    }

    /// The map as a learner's snapshot holds it (JSON).
    fn image(&self) -> anyhow::Result<Vec<u8>> {
        Ok(serde_json::to_vec(&self.map)?)
    }

    /// Restores a learner's snapshot: every value before `below` applied.
    fn restore(&mut self, below: Position, image: &[u8]) -> anyhow::Result<()> {
        self.map = serde_json::from_slice(image)
            .context("the learner's snapshot does not hold a kv map")?;
        self.next = below;
        self.started = true;
        eprintln!(
            "kv: restored the learner's snapshot at {below}: {} keys",
            self.map.len()
        );
        Ok(())
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
    let c = match connect_stream(&a.socket, start) {
        Ok(c) => c,
        Err(e) if durable => {
            let why = e.to_string();
            let retry = if start == StreamStart::Snapshot {
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
        store.map.len()
    );
    Ok(c.lines)
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let mut store = Store::default();
    if let Some(path) = &a.state {
        if let Some((next, map)) = load(path)? {
            store = Store {
                next,
                map,
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
        store.apply(value.position, &value.payload)?;
        count += 1;
        if a.snapshot_every > 0 && count % a.snapshot_every == 0 {
            if let Some(path) = &a.state {
                save(path, store.next, &store.map)?;
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
        save(path, store.next, &store.map)?;
    }
    for (k, v) in &store.map {
        println!("{k}={v}");
    }
    eprintln!(
        "kv: {count} values applied, {} keys, the stream continues at {}",
        store.map.len(),
        store.next
    );
    Ok(())
}
