//! `ethpaxos submit` and `ethpaxos tail`: an application's two ends of a cluster.

use anyhow::{bail, Context, Result};
use clap::Args;
use ethpaxos::config::NodeConfig;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args)]
pub(crate) struct SubmitArgs {
    #[arg(long)]
    pub(crate) config: PathBuf,
    /// How long to wait for each acknowledgement.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    /// How values are written: text (one per argument or per line of standard input,
    /// any bytes but newline), hex (each value in hex digits), or length-prefixed
    /// (standard input only: each value is a 4-byte big-endian length, then its bytes).
    #[arg(long, default_value = "text", value_parser = ["text", "hex", "length-prefixed"])]
    pub(crate) format: String,
    pub(crate) values: Vec<String>,
}

#[derive(Args)]
pub(crate) struct TailArgs {
    #[arg(long)]
    pub(crate) socket: PathBuf,
    /// Stop after this many values (at least 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,
    /// Where the stream starts: `live` (values delivered from now on), `oldest` (the oldest
    /// position the learner's journal holds) or a position `INSTANCE.INDEX`.
    #[arg(long, default_value = "live")]
    pub(crate) from: ethpaxos::app::StreamStart,
}

pub(crate) fn submit_command(args: SubmitArgs) -> Result<()> {
    submit(&args.config, args.timeout, &args.format, args.values)
}

pub(crate) fn tail_command(args: TailArgs) -> Result<()> {
    tail(&args.socket, args.from, args.count)
}

/// At most the first 40 characters of a value, and its size: an error never echoes a whole
/// (possibly huge, possibly binary) value.
fn shown(v: &[u8]) -> String {
    let text = String::from_utf8_lossy(&v[..v.len().min(40)]).replace(char::is_control, ".");
    if v.len() > 40 {
        format!("{text:?}... ({} bytes)", v.len())
    } else {
        format!("{text:?}")
    }
}

/// The values `submit` sends, from its arguments or standard input, in `format`.
fn submit_values(format: &str, args: Vec<String>) -> Result<Vec<Vec<u8>>> {
    use std::io::Read;
    let hex = |k: usize, t: &str| -> Result<Vec<u8>> {
        let t = t.trim();
        if !t.len().is_multiple_of(2) || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!(
                "value {k}: not an even number of hex digits: {}",
                shown(t.as_bytes())
            );
        }
        Ok((0..t.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap_or_default())
            .collect())
    };
    if !args.is_empty() {
        return match format {
            "hex" => args.iter().enumerate().map(|(k, a)| hex(k, a)).collect(),
            "length-prefixed" => bail!("--format length-prefixed reads standard input only"),
            _ => Ok(args.into_iter().map(String::into_bytes).collect()),
        };
    }
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut input)
        .context("cannot read values from standard input")?;
    match format {
        "length-prefixed" => {
            let mut values = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                    bail!(
                        "value {}: a length needs 4 bytes, {} left",
                        values.len(),
                        rest.len()
                    );
                };
                let len = u32::from_be_bytes(*len) as usize;
                if tail.len() < len {
                    bail!(
                        "value {}: its length says {len} bytes but {} are left",
                        values.len(),
                        tail.len()
                    );
                }
                values.push(tail[..len].to_vec());
                rest = &tail[len..];
            }
            Ok(values)
        }
        // Lines of bytes: a value need not be UTF-8.
        _ => input
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .map(|(k, l)| match format {
                "hex" => hex(k, &String::from_utf8_lossy(l)),
                _ => Ok(l.to_vec()),
            })
            .collect(),
    }
}

fn submit(config: &Path, timeout: Duration, format: &str, args: Vec<String>) -> Result<()> {
    let cfg = NodeConfig::load(config)?;
    let values = submit_values(format, args)?;
    let node = ethpaxos::app::Embedded::start(cfg)?;
    // All in flight at once; each acknowledged when its own learner delivers it.
    let mut pending = Vec::with_capacity(values.len());
    for (k, v) in values.iter().enumerate() {
        let rx = node
            .submit_async(bytes::Bytes::from(v.clone()))
            .with_context(|| format!("value {k} {}", shown(v)))?;
        pending.push(rx);
    }
    let mut failed = 0;
    for (v, rx) in values.iter().zip(pending) {
        match rx.recv_timeout(timeout) {
            Ok(Ok(seq)) => println!("acknowledged seq {seq}: {}", shown(v)),
            Ok(Err(why)) => {
                failed += 1;
                println!("refused: {}: {why}", shown(v));
            }
            Err(_) => {
                failed += 1;
                println!("no acknowledgement within {timeout:?}: {}", shown(v));
            }
        }
    }
    let stats = node.stop()?;
    eprintln!(
        "{} submitted, {} acknowledged, {failed} not",
        values.len(),
        stats.acknowledged
    );
    if failed > 0 {
        bail!("{failed} of {} values were not acknowledged", values.len());
    }
    Ok(())
}

fn tail(socket: &Path, from: ethpaxos::app::StreamStart, count: Option<u64>) -> Result<()> {
    use std::io::{BufRead, Write};
    let c = ethpaxos::app::connect_stream(socket, from)
        .with_context(|| format!("the stream of {}", socket.display()))?;
    let stream = c.lines;
    if let Some(state) = &c.snapshot {
        eprintln!(
            "tail: the newest snapshot ({} bytes of application state) stands at {}",
            state.len(),
            c.from.unwrap_or_default()
        );
    }
    // The readiness signal: from here on this reader gets every value delivered.
    match c.from {
        Some(p) => eprintln!("tail: reading the stream of {} from {p}", socket.display()),
        None => eprintln!("tail: reading the stream of {}", socket.display()),
    }
    let mut out = std::io::stdout().lock();
    for (seen, line) in (1u64..).zip(stream.lines()) {
        let line = line.context("stream read failed")?;
        if let Some(why) = line.strip_prefix("error ") {
            bail!("the learner ended the stream: {why}");
        }
        let Some(v) = ethpaxos::app::parse_stream_line(&line) else {
            bail!("not a stream line: {line:?}");
        };
        let text = match std::str::from_utf8(&v.payload) {
            Ok(t) if !t.chars().any(char::is_control) => t.to_string(),
            _ => format!("0x{}", line.rsplit(' ').next().unwrap_or("")),
        };
        writeln!(out, "{} {} {} {}", v.position, v.client, v.seq, text)?;
        if count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    out.flush()?;
    Ok(())
}
