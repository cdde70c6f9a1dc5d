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
use ethpaxos::app::{connect_stream, parse_stream_line, StreamStart};
use ethpaxos::protocol::Position;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// What the store keeps in its state file.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct State {
    /// The last value applied (None: none yet).
    applied: Option<String>,
    map: BTreeMap<String, String>,
}

fn checksum(body: &str) -> String {
    blake3::hash(body.as_bytes()).to_hex()[..32].to_string()
}

/// The last position applied, and the map.
type Restored = (Option<Position>, BTreeMap<String, String>);

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
    let applied = state
        .applied
        .map(|p| p.parse::<Position>())
        .transpose()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Some((applied, state.map)))
}

/// Writes the state file atomically: a crash leaves the old one or the new one.
fn save(
    path: &Path,
    applied: Option<Position>,
    map: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let body = serde_json::to_string(&State {
        applied: applied.map(|p| p.to_string()),
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
    snapshot_every: u64,
}

fn args() -> anyhow::Result<Args> {
    let usage = "usage: kv SOCKET [--state FILE] [--count N] [--snapshot-every N]";
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        socket: it.next().context(usage)?.into(),
        state: None,
        count: None,
        snapshot_every: 1000,
    };
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value; {usage}"))?;
        match flag.as_str() {
            "--state" => a.state = Some(value.into()),
            "--count" => a.count = Some(value.parse().context("--count")?),
            "--snapshot-every" => a.snapshot_every = value.parse().context("--snapshot-every")?,
            _ => bail!("unknown argument {flag:?}; {usage}"),
        }
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let (mut applied, mut map) = match &a.state {
        Some(path) => load(path)?.unwrap_or_default(),
        None => (None, BTreeMap::new()),
    };
    let start = match (&a.state, applied) {
        (None, _) => StreamStart::Live,
        // From the beginning of what the learner holds.
        (Some(_), None) => StreamStart::From(Position::default()),
        (Some(_), Some(p)) => StreamStart::From(Position {
            instance: p.instance,
            index: p.index + 1,
        }),
    };
    let (stream, from) = connect_stream(&a.socket, start)
        .with_context(|| format!("the stream of {}", a.socket.display()))?;
    eprintln!(
        "kv: applying the stream of {} from {}, {} keys restored",
        a.socket.display(),
        from.map_or("now".to_string(), |p| p.to_string()),
        map.len()
    );
    let mut count = 0u64;
    for line in stream.lines() {
        let line = line?;
        if let Some(why) = line.strip_prefix("error ") {
            bail!("the learner ended the stream: {why}");
        }
        let value = parse_stream_line(&line)
            .ok_or_else(|| anyhow::anyhow!("not a stream line: {line:?}"))?;
        if applied.is_some_and(|p| value.position <= p) {
            bail!(
                "the stream went back: {} after {}",
                value.position,
                applied.unwrap_or_default()
            );
        }
        let text = String::from_utf8_lossy(&value.payload);
        let mut words = text.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("SET"), Some(k), Some(v)) => {
                map.insert(k.to_string(), v.to_string());
            }
            (Some("DEL"), Some(k), None) => {
                map.remove(k);
            }
            _ => eprintln!(
                "kv: skipped {text:?} (client {} seq {})",
                value.client, value.seq
            ),
        }
        applied = Some(value.position);
        count += 1;
        if let Some(path) = &a.state {
            if a.snapshot_every > 0 && count % a.snapshot_every == 0 {
                save(path, applied, &map)?;
            }
        }
        if a.count.is_some_and(|c| count >= c) {
            break;
        }
    }
    if let Some(path) = &a.state {
        save(path, applied, &map)?;
    }
    for (k, v) in &map {
        println!("{k}={v}");
    }
    eprintln!(
        "kv: {count} values applied, {} keys, last position {}",
        map.len(),
        applied.map_or("none".to_string(), |p| p.to_string())
    );
    Ok(())
}
