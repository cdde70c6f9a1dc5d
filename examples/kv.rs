//! A replicated key-value store: applies a learner's ordered stream (its `output.socket`) to
//! a map. Every replica of this store that applies the same stream holds the same map.
//!
//!   cargo run --example kv -- /path/to/stream.sock [COUNT]
//!   ethpaxos submit --config client.yaml "SET colour blue" "SET size 9" "DEL size"
//!
//! Commands are values: `SET <key> <value>` and `DEL <key>`; anything else is reported and
//! skipped. With COUNT it stops after that many values and prints the map as `key=value` lines.

use ethpaxos::app::parse_stream_line;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let socket = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: kv SOCKET [COUNT]"))?;
    let count: Option<u64> = args.next().map(|c| c.parse()).transpose()?;
    let stream = UnixStream::connect(&socket)?;
    eprintln!("kv: applying the stream of {socket}");
    let mut map = BTreeMap::new();
    let mut applied = 0u64;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        let value = parse_stream_line(&line)
            .ok_or_else(|| anyhow::anyhow!("not a stream line: {line:?}"))?;
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
        applied += 1;
        if count.is_some_and(|c| applied >= c) {
            break;
        }
    }
    for (k, v) in &map {
        println!("{k}={v}");
    }
    eprintln!("kv: {applied} values applied, {} keys", map.len());
    Ok(())
}
