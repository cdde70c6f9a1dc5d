//! The delivered stream on a Unix-domain socket (`output.socket`).
//!
//! A reader connects and sends one line:
//! - `live`: the values delivered from now on;
//! - `from POSITION` (`INSTANCE.INDEX`): every value at that position or later;
//! - `from oldest`: from the oldest position the learner's journal still holds.
//!
//! The learner answers `ok POSITION` (where the stream starts; `ok live` from a learner that
//! keeps no journal) and then one line per value, `POSITION CLIENT SEQ HEX-PAYLOAD`, or
//! `error WHY` and closes: a position older than the journal's retention (naming the oldest it
//! holds), one past the end of the stream, a malformed line, no line within 10 s.
//!
//! A reader never makes the node wait. A learner with a journal serves every reader from the
//! journal's files, reading ahead only while the reader's backlog is under 1 MiB, and tells and
//! closes a reader whose unread part retention deleted. Without a journal, readers get this
//! turn's lines, and one that falls 16 MiB behind is disconnected and counted.

use super::DeliveredValue;
use crate::journal::{JournalTail, TailReader};
use crate::protocol::Position;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The line a stream reader gets for one value: `POSITION CLIENT SEQ HEX-PAYLOAD`.
pub fn stream_line(position: Position, client: u64, seq: u64, payload: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut line = String::with_capacity(48 + 2 * payload.len());
    let _ = write!(line, "{position} {client} {seq} ");
    for b in payload {
        let _ = write!(line, "{b:02x}");
    }
    line.push('\n');
    line
}

/// Parses a stream line back; None if it is not one.
pub fn parse_stream_line(line: &str) -> Option<DeliveredValue> {
    let mut it = line.trim_end().splitn(4, ' ');
    let position = it.next()?.parse().ok()?;
    let client = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    let hex = it.next().unwrap_or("");
    if hex.len() % 2 != 0 {
        return None;
    }
    let payload = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(DeliveredValue {
        position,
        client,
        seq,
        payload: payload.into(),
    })
}

/// Where a reader asks its stream to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamStart {
    Live,
    Oldest,
    From(Position),
}

impl std::str::FromStr for StreamStart {
    type Err = String;
    /// `live`, `oldest` or a position (`INSTANCE.INDEX`).
    fn from_str(s: &str) -> Result<StreamStart, String> {
        match s {
            "live" => Ok(StreamStart::Live),
            "oldest" => Ok(StreamStart::Oldest),
            p => p.parse().map(StreamStart::From),
        }
    }
}

impl StreamStart {
    fn handshake(self) -> String {
        match self {
            StreamStart::Live => "live\n".into(),
            StreamStart::Oldest => "from oldest\n".into(),
            StreamStart::From(p) => format!("from {p}\n"),
        }
    }

    /// Reads a reader's handshake line.
    fn parse_handshake(line: &str) -> Result<StreamStart, String> {
        let line = line.trim_end_matches(['\r', '\n']);
        match line.split_once(' ') {
            None if line == "live" => Ok(StreamStart::Live),
            Some(("from", "oldest")) => Ok(StreamStart::Oldest),
            Some(("from", p)) => p.parse().map(StreamStart::From),
            _ => Err(format!(
                "{:?} is not a handshake: send `live`, `from INSTANCE.INDEX` or `from oldest`",
                line.chars().take(60).collect::<String>()
            )),
        }
    }
}

/// Connects to a learner's stream socket and asks for the stream from `start`. Returns the
/// stream's lines and where they start (None: a learner without a journal serving `live`);
/// an error carries the learner's reason.
pub fn connect_stream(
    socket: &Path,
    start: StreamStart,
) -> std::io::Result<(BufReader<UnixStream>, Option<Position>)> {
    let mut stream = UnixStream::connect(socket)?;
    stream.write_all(start.handshake().as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    let answer = answer.trim_end();
    match answer.split_once(' ') {
        Some(("ok", "live")) => Ok((reader, None)),
        Some(("ok", p)) => match p.parse() {
            Ok(p) => Ok((reader, Some(p))),
            Err(e) => Err(std::io::Error::other(format!("the learner answered {e}"))),
        },
        Some(("error", why)) => Err(std::io::Error::other(why.to_string())),
        _ if answer.is_empty() => Err(std::io::Error::other(
            "the learner closed the stream without an answer",
        )),
        _ => Err(std::io::Error::other(format!(
            "the learner answered {answer:?}, not `ok` or `error`"
        ))),
    }
}

/// A reader without a journal may fall this far behind before it is disconnected.
pub const READER_BACKLOG: usize = 16 << 20;
/// A journal reader reads ahead while its backlog is under this.
const READ_AHEAD: usize = 1 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_MAX: usize = 256;
/// New readers and handshakes are looked at this often (not every turn: a turn is a few
/// microseconds and each look is a system call).
const POLL_EVERY: Duration = Duration::from_millis(2);

enum Phase {
    Handshake {
        line: Vec<u8>,
        since: Instant,
    },
    /// This turn's lines (a learner without a journal).
    Live,
    Journal(TailReader),
}

struct Reader {
    stream: UnixStream,
    backlog: Vec<u8>,
    phase: Phase,
}

enum Step {
    Keep,
    /// Closed for a reason the reader is told.
    Refuse(String),
    /// Gone, or dropped for falling behind.
    Close,
    Drop,
}

/// The Unix-domain socket a learner serves its stream on.
pub struct StreamServer {
    listener: UnixListener,
    path: PathBuf,
    readers: Vec<Reader>,
    journal: Option<JournalTail>,
    last_poll: Option<Instant>,
    /// Readers disconnected for falling behind (or behind retention).
    pub dropped_readers: u64,
}

impl StreamServer {
    /// Listens on `path`, replacing a stale socket file left by an earlier run. With a
    /// journal, readers may ask for the stream from a position.
    pub fn bind(path: &Path, journal: Option<JournalTail>) -> std::io::Result<StreamServer> {
        if std::fs::symlink_metadata(path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_socket()
        }) {
            std::fs::remove_file(path)?;
        }
        // Bound (and listening) under a temporary name, then renamed into place: a reader
        // that sees the path can connect (between bind and listen it would be refused).
        let mut staging = path.as_os_str().to_owned();
        staging.push(format!(".{}.tmp", std::process::id()));
        let staging = PathBuf::from(staging);
        let _ = std::fs::remove_file(&staging);
        let listener = UnixListener::bind(&staging)?;
        listener.set_nonblocking(true)?;
        if let Err(e) = std::fs::rename(&staging, path) {
            let _ = std::fs::remove_file(&staging);
            return Err(e);
        }
        Ok(StreamServer {
            listener,
            path: path.to_path_buf(),
            readers: Vec::new(),
            journal,
            last_poll: None,
            dropped_readers: 0,
        })
    }

    /// Whether a reader takes this turn's lines (one of a learner without a journal).
    pub fn wants_lines(&self) -> bool {
        self.readers.iter().any(|r| matches!(r.phase, Phase::Live))
    }

    /// Serves the readers: takes new ones and their handshakes, queues `lines` (this turn's)
    /// for live readers, reads the journal ahead for the others, and writes what each takes
    /// without blocking.
    pub fn serve(&mut self, lines: &[u8]) {
        let now = Instant::now();
        let poll = self
            .last_poll
            .map_or(true, |t| now.duration_since(t) >= POLL_EVERY);
        if poll {
            self.last_poll = Some(now);
            while let Ok((stream, _)) = self.listener.accept() {
                if stream.set_nonblocking(true).is_ok() {
                    self.readers.push(Reader {
                        stream,
                        backlog: Vec::new(),
                        phase: Phase::Handshake {
                            line: Vec::new(),
                            since: now,
                        },
                    });
                }
            }
        }
        let journal = self.journal.as_ref();
        let mut dropped = 0;
        self.readers.retain_mut(|r| {
            let step = r.step(journal, lines, poll, now);
            match step {
                Step::Keep => true,
                Step::Refuse(why) => {
                    // Best effort: a fresh socket's buffer takes one short line.
                    let _ = r.stream.write_all(format!("error {why}\n").as_bytes());
                    false
                }
                Step::Close => false,
                Step::Drop => {
                    dropped += 1;
                    false
                }
            }
        });
        self.dropped_readers += dropped;
    }
}

impl Reader {
    fn step(
        &mut self,
        journal: Option<&JournalTail>,
        lines: &[u8],
        poll: bool,
        now: Instant,
    ) -> Step {
        match &mut self.phase {
            Phase::Handshake { .. } if !poll => return Step::Keep,
            Phase::Handshake { line, since } => match read_handshake(&mut self.stream, line) {
                Err(()) => return Step::Close,
                Ok(None) if now.duration_since(*since) > HANDSHAKE_TIMEOUT => {
                    return Step::Refuse(
                        "no handshake within 10 s: send `live`, `from INSTANCE.INDEX` or \
                         `from oldest`"
                            .into(),
                    )
                }
                Ok(None) if line.len() > HANDSHAKE_MAX => {
                    return Step::Refuse(format!(
                        "a handshake line is at most {HANDSHAKE_MAX} bytes"
                    ))
                }
                Ok(None) => return Step::Keep,
                Ok(Some(text)) => match start(journal, &text) {
                    Ok((phase, answer)) => {
                        self.phase = phase;
                        self.backlog.extend_from_slice(answer.as_bytes());
                    }
                    Err(why) => return Step::Refuse(why),
                },
            },
            Phase::Live => self.backlog.extend_from_slice(lines),
            Phase::Journal(t) => {
                let j = journal.expect("a journal reader has a journal");
                if self.backlog.len() < READ_AHEAD && !j.caught_up(t) {
                    let backlog = &mut self.backlog;
                    let room = READ_AHEAD - backlog.len();
                    let read = j.read(t, room, &mut |p, v| {
                        backlog.extend_from_slice(
                            stream_line(p, v.client, v.seq, &v.payload).as_bytes(),
                        )
                    });
                    if let Err(e) = read {
                        // What it read so far first, then why it ends.
                        flush(&mut self.stream, &mut self.backlog);
                        tracing::warn!("stream reader closed: {e}");
                        return Step::Refuse(e.to_string());
                    }
                }
            }
        }
        if !flush(&mut self.stream, &mut self.backlog) {
            return Step::Close;
        }
        if matches!(self.phase, Phase::Live) && self.backlog.len() > READER_BACKLOG {
            return Step::Drop;
        }
        Step::Keep
    }
}

/// Writes what the socket takes; false once the reader is gone.
fn flush(stream: &mut UnixStream, backlog: &mut Vec<u8>) -> bool {
    let mut sent = 0;
    while sent < backlog.len() {
        match stream.write(&backlog[sent..]) {
            Ok(0) => return false,
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => return false,
        }
    }
    backlog.drain(..sent);
    true
}

/// Reads what the reader sent of its handshake: the line once whole, Err once it is gone.
fn read_handshake(stream: &mut UnixStream, line: &mut Vec<u8>) -> Result<Option<String>, ()> {
    let mut buf = [0u8; HANDSHAKE_MAX];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Err(()),
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => return Err(()),
        }
        if line.len() > HANDSHAKE_MAX {
            break;
        }
    }
    match line.iter().position(|b| *b == b'\n') {
        Some(end) => Ok(Some(String::from_utf8_lossy(&line[..end]).into_owned())),
        None => Ok(None),
    }
}

/// Where a reader's stream starts, and the answer it gets.
fn start(journal: Option<&JournalTail>, handshake: &str) -> Result<(Phase, String), String> {
    let asked = StreamStart::parse_handshake(handshake)?;
    let Some(j) = journal else {
        return match asked {
            StreamStart::Live => Ok((Phase::Live, "ok live\n".into())),
            _ => Err(
                "this learner keeps no journal (set storage.path or learner.path in its \
                      config), so it serves only `live`"
                    .into(),
            ),
        };
    };
    let from = match asked {
        StreamStart::Live => Position {
            instance: j.end(),
            index: 0,
        },
        StreamStart::Oldest => Position {
            instance: j.oldest(),
            index: 0,
        },
        StreamStart::From(p) => p,
    };
    let reader = j.reader(from).map_err(|e| e.to_string())?;
    Ok((Phase::Journal(reader), format!("ok {from}\n")))
}

impl Drop for StreamServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_parse_and_bad_ones_say_what_to_send() {
        assert_eq!(
            StreamStart::parse_handshake("live\n"),
            Ok(StreamStart::Live)
        );
        assert_eq!(
            StreamStart::parse_handshake("from oldest"),
            Ok(StreamStart::Oldest)
        );
        assert_eq!(
            StreamStart::parse_handshake("from 12.3\r\n"),
            Ok(StreamStart::From(Position {
                instance: 12,
                index: 3
            }))
        );
        for bad in [
            "",
            "LIVE",
            "from",
            "from 12",
            "from -1.0",
            "from 1.2.3",
            "give me",
        ] {
            let e = StreamStart::parse_handshake(bad).expect_err(bad);
            assert!(
                e.contains("INSTANCE.INDEX") || e.contains("position"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_stream_line_reads_back() {
        let p = Position {
            instance: 9,
            index: 2,
        };
        let line = stream_line(p, 5, 6, b"\x00hi");
        let v = parse_stream_line(&line).unwrap();
        assert_eq!(
            (v.position, v.client, v.seq, &v.payload[..]),
            (p, 5, 6, &b"\x00hi"[..])
        );
        assert!(parse_stream_line("9.2 5 6 0g").is_none());
        assert!(parse_stream_line("9.2 5 6 é").is_none());
        assert!(parse_stream_line("9.2 5 6 é0").is_none());
    }
}
