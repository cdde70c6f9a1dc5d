//! The delivered stream on a Unix-domain socket (`output.socket`).
//!
//! A reader connects and sends one line:
//! - `live`: the values delivered from now on;
//! - `from POSITION` (`INSTANCE.INDEX`): every value at that position or later;
//! - `from oldest`: from the oldest position the learner's journal still holds;
//! - `from snapshot`: the learner's newest snapshot's application state, then every value
//!   after it (what an application restores from when it has nothing, or when the learner
//!   installed a peer's snapshot);
//! - `put snapshot POSITION LENGTH`, then LENGTH bytes: the application hands the learner a
//!   snapshot of its state taken after applying every value before POSITION. The learner
//!   stores it with its exactly-once table there and answers `ok stored POSITION`.
//!
//! The learner answers `ok POSITION` (where the stream starts; `ok live` from a learner that
//! keeps no journal; `ok snapshot POSITION LENGTH` and LENGTH bytes of state) and then one
//! line per value, `POSITION CLIENT SEQ HEX-PAYLOAD`, or
//! `error WHY` and closes: a position older than the journal's retention (naming the oldest it
//! holds), one past the end of the stream, a malformed line, no line within 10 s.
//!
//! A reader never makes the node wait. A learner with a journal serves every reader from the
//! journal's files, reading ahead only while the reader's backlog is under 1 MiB, and tells and
//! closes a reader whose unread part retention deleted. Without a journal, readers get this
//! turn's lines, and one that falls 16 MiB behind is disconnected and counted.

use super::DeliveredValue;
use crate::journal::{JournalTail, SnapshotStore, TailError, TailReader};
use crate::protocol::{image, Position};
use bytes::Bytes;
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
    if !hex.len().is_multiple_of(2) {
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
    /// The learner's newest snapshot's application state, then the stream after it.
    Snapshot,
}

impl std::str::FromStr for StreamStart {
    type Err = String;
    /// `live`, `oldest` or a position (`INSTANCE.INDEX`).
    fn from_str(s: &str) -> Result<StreamStart, String> {
        match s {
            "live" => Ok(StreamStart::Live),
            "oldest" => Ok(StreamStart::Oldest),
            "snapshot" => Ok(StreamStart::Snapshot),
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
            StreamStart::Snapshot => "from snapshot\n".into(),
        }
    }

    /// Reads a reader's handshake line.
    fn parse_handshake(line: &str) -> Result<StreamStart, String> {
        let line = line.trim_end_matches(['\r', '\n']);
        match line.split_once(' ') {
            None if line == "live" => Ok(StreamStart::Live),
            Some(("from", "oldest")) => Ok(StreamStart::Oldest),
            Some(("from", "snapshot")) => Ok(StreamStart::Snapshot),
            Some(("from", p)) => p.parse().map(StreamStart::From),
            _ => Err(format!(
                "{:?} is not a handshake: send `live`, `from INSTANCE.INDEX`, `from oldest`, \
                 `from snapshot` or `put snapshot INSTANCE.INDEX LENGTH`",
                line.chars().take(60).collect::<String>()
            )),
        }
    }
}

/// A stream a learner answered: its lines, where they start (None: a learner without a
/// journal serving `live`), and for `from snapshot` the application state the stream
/// continues from.
pub struct Connected {
    pub lines: BufReader<UnixStream>,
    pub from: Option<Position>,
    pub snapshot: Option<Bytes>,
}

/// Connects to a learner's stream socket and asks for the stream from `start`; an error
/// carries the learner's reason.
pub fn connect_stream(socket: &Path, start: StreamStart) -> std::io::Result<Connected> {
    let mut stream = UnixStream::connect(socket)?;
    stream.write_all(start.handshake().as_bytes())?;
    let mut lines = BufReader::new(stream);
    let answer = read_answer(&mut lines)?;
    let bad =
        |why: String| std::io::Error::other(format!("the learner answered {answer:?}: {why}"));
    if answer == "live" {
        return Ok(Connected {
            lines,
            from: None,
            snapshot: None,
        });
    }
    if let Some(rest) = answer.strip_prefix("snapshot ") {
        let (below, len) = rest
            .split_once(' ')
            .ok_or_else(|| bad("no length".into()))?;
        let below: Position = below.parse().map_err(bad)?;
        let len: usize = len.parse().map_err(|_| bad("not a length".into()))?;
        let mut app = vec![0u8; len];
        lines.read_exact(&mut app)?;
        return Ok(Connected {
            lines,
            from: Some(below),
            snapshot: Some(app.into()),
        });
    }
    let from = answer.parse().map_err(bad)?;
    Ok(Connected {
        lines,
        from: Some(from),
        snapshot: None,
    })
}

/// Hands the learner behind `socket` a snapshot of its application's state taken after
/// applying every value before `below`. The learner stores it (checksummed, with its
/// exactly-once table at `below`) and serves it to readers and to peer learners.
pub fn put_snapshot(socket: &Path, below: Position, app: &[u8]) -> std::io::Result<()> {
    let mut stream = UnixStream::connect(socket)?;
    stream.write_all(format!("put snapshot {below} {}\n", app.len()).as_bytes())?;
    stream.write_all(app)?;
    let mut reader = BufReader::new(stream);
    read_answer(&mut reader).map(|_| ())
}

/// The learner's answer line: the text after `ok `, or its reason as an error.
fn read_answer(reader: &mut BufReader<UnixStream>) -> std::io::Result<String> {
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    let answer = answer.trim_end();
    match answer.split_once(' ') {
        Some(("ok", rest)) => Ok(rest.to_string()),
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
/// An application's snapshot must arrive whole within this.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// New readers and handshakes are looked at this often (not every turn: a turn is a few
/// microseconds and each look is a system call).
const POLL_EVERY: Duration = Duration::from_millis(2);

/// What a connection asks for in its first line.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Stream(StreamStart),
    /// An application hands its snapshot: `len` bytes follow the line.
    Put {
        below: Position,
        len: u64,
    },
}

impl Request {
    fn parse(line: &str) -> Result<Request, String> {
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if let Some(rest) = trimmed.strip_prefix("put snapshot ") {
            let bad = || {
                format!(
                    "{:?}: send `put snapshot INSTANCE.INDEX LENGTH` then LENGTH bytes",
                    trimmed.chars().take(60).collect::<String>()
                )
            };
            let (below, len) = rest.split_once(' ').ok_or_else(bad)?;
            let below = below.parse().map_err(|_| bad())?;
            let len = len.parse().map_err(|_| bad())?;
            if len > image::MAX_IMAGE {
                return Err(format!(
                    "a snapshot of {len} bytes is larger than the largest a learner keeps \
                     ({} bytes)",
                    image::MAX_IMAGE
                ));
            }
            return Ok(Request::Put { below, len });
        }
        StreamStart::parse_handshake(trimmed).map(Request::Stream)
    }
}

enum Phase {
    Handshake {
        line: Vec<u8>,
        since: Instant,
    },
    /// This turn's lines (a learner without a journal).
    Live,
    Journal(TailReader),
    /// An application's snapshot arriving.
    Upload {
        below: Position,
        len: u64,
        body: Vec<u8>,
        since: Instant,
    },
    /// The answer is queued; the connection closes once it is written.
    Closing,
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

/// What the stream's readers are served from: the learner's journal and snapshot images.
struct Held {
    journal: JournalTail,
    snapshots: SnapshotStore,
    /// Its application hands the learner its snapshots (`learner.snapshot_every` 0).
    app_snapshots: bool,
}

/// The Unix-domain socket a learner serves its stream on.
pub struct StreamServer {
    listener: UnixListener,
    path: PathBuf,
    readers: Vec<Reader>,
    held: Option<Held>,
    last_poll: Option<Instant>,
    /// Readers disconnected for falling behind (or behind retention).
    pub dropped_readers: u64,
}

impl StreamServer {
    /// Listens on `path`, replacing a stale socket file left by an earlier run. With a
    /// journal, readers may ask for the stream from a position, and applications hand the
    /// learner their snapshots.
    pub fn bind(
        path: &Path,
        journal: Option<(JournalTail, SnapshotStore)>,
        app_snapshots: bool,
    ) -> std::io::Result<StreamServer> {
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
            held: journal.map(|(journal, snapshots)| Held {
                journal,
                snapshots,
                app_snapshots,
            }),
            last_poll: None,
            dropped_readers: 0,
        })
    }

    /// Whether a reader takes this turn's lines (one of a learner without a journal).
    pub fn wants_lines(&self) -> bool {
        self.readers.iter().any(|r| matches!(r.phase, Phase::Live))
    }

    /// The learner installed a peer's snapshot image: its stream jumps to `below`, so every
    /// reader is told (an application must restore the image's state, `from snapshot`).
    pub fn installed(&mut self, below: Position) {
        for r in self.readers.iter_mut() {
            if matches!(r.phase, Phase::Live | Phase::Journal(_)) {
                flush(&mut r.stream, &mut r.backlog);
                let _ = r.stream.write_all(
                    format!(
                        "error this learner installed a peer's snapshot and now stands at \
                         {below}; the values before it are not in its stream: restore it with \
                         `from snapshot`\n"
                    )
                    .as_bytes(),
                );
                r.phase = Phase::Closing;
                r.backlog.clear();
            }
        }
    }

    /// Serves the readers: takes new ones and their handshakes, queues `lines` (this turn's)
    /// for live readers, reads the journal ahead for the others, and writes what each takes
    /// without blocking.
    pub fn serve(&mut self, lines: &[u8]) {
        let now = Instant::now();
        let poll = self
            .last_poll
            .is_none_or(|t| now.duration_since(t) >= POLL_EVERY);
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
        let held = self.held.as_ref();
        let mut dropped = 0;
        self.readers.retain_mut(|r| {
            let step = r.step(held, lines, poll, now);
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
    fn step(&mut self, held: Option<&Held>, lines: &[u8], poll: bool, now: Instant) -> Step {
        match &mut self.phase {
            Phase::Handshake { .. } if !poll => return Step::Keep,
            Phase::Handshake { line, since } => match read_some(&mut self.stream, line) {
                Err(()) => return Step::Close,
                Ok(closed) => {
                    let Some(end) = line.iter().position(|b| *b == b'\n') else {
                        if closed {
                            return Step::Close;
                        }
                        if now.duration_since(*since) > HANDSHAKE_TIMEOUT {
                            return Step::Refuse(
                                "no handshake within 10 s: send `live`, `from INSTANCE.INDEX`, \
                                 `from oldest` or `from snapshot`"
                                    .into(),
                            );
                        }
                        if line.len() > HANDSHAKE_MAX {
                            return Step::Refuse(format!(
                                "a handshake line is at most {HANDSHAKE_MAX} bytes"
                            ));
                        }
                        return Step::Keep;
                    };
                    let text = String::from_utf8_lossy(&line[..end]).into_owned();
                    let rest = line.split_off(end + 1);
                    match Request::parse(&text) {
                        Ok(Request::Stream(asked)) => match start(held, asked) {
                            Ok((phase, answer)) => {
                                self.phase = phase;
                                self.backlog.extend_from_slice(&answer);
                            }
                            Err(why) => return Step::Refuse(why),
                        },
                        Ok(Request::Put { below, len }) => {
                            let Some(h) = held else {
                                return Step::Refuse(NO_JOURNAL.into());
                            };
                            if !h.app_snapshots {
                                return Step::Refuse(
                                    "this learner takes snapshots of its own (no application \
                                     state); set learner.snapshot_every to 0 for it to keep its \
                                     application's instead"
                                        .into(),
                                );
                            }
                            self.phase = Phase::Upload {
                                below,
                                len,
                                body: rest,
                                since: now,
                            };
                            return self.step(held, lines, poll, now);
                        }
                        Err(why) => return Step::Refuse(why),
                    }
                }
            },
            Phase::Upload {
                below,
                len,
                body,
                since,
            } => {
                let gone = read_some(&mut self.stream, body).map_or(true, |closed| closed);
                if gone && (body.len() as u64) < *len {
                    return Step::Close;
                }
                if (body.len() as u64) < *len {
                    if now.duration_since(*since) > UPLOAD_TIMEOUT {
                        return Step::Refuse(format!(
                            "the snapshot did not arrive within {} s ({} of {len} bytes)",
                            UPLOAD_TIMEOUT.as_secs(),
                            body.len()
                        ));
                    }
                    return Step::Keep;
                }
                if body.len() as u64 > *len {
                    return Step::Refuse(format!(
                        "{} bytes follow a snapshot of {len} bytes",
                        body.len() as u64 - *len
                    ));
                }
                let held = held.expect("an upload has a journal");
                let answer = match store_app_snapshot(held, *below, body) {
                    Ok(()) => format!("ok stored {below}\n"),
                    Err(why) => {
                        tracing::warn!("an application's snapshot at {below} refused: {why}");
                        format!("error {why}\n")
                    }
                };
                self.backlog.extend_from_slice(answer.as_bytes());
                self.phase = Phase::Closing;
            }
            Phase::Closing => {}
            Phase::Live => self.backlog.extend_from_slice(lines),
            Phase::Journal(t) => {
                let j = &held.expect("a journal reader has a journal").journal;
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
                        return Step::Refuse(explain(held, e));
                    }
                }
            }
        }
        if !flush(&mut self.stream, &mut self.backlog) {
            return Step::Close;
        }
        if matches!(self.phase, Phase::Closing) && self.backlog.is_empty() {
            return Step::Close;
        }
        if matches!(self.phase, Phase::Live) && self.backlog.len() > READER_BACKLOG {
            return Step::Drop;
        }
        Step::Keep
    }
}

const NO_JOURNAL: &str = "this learner keeps no journal (set storage.path or learner.path in \
                          its config), so it serves only `live` and keeps no snapshots";

/// Why a reader cannot have what it asked for, naming the newest snapshot when the journal
/// no longer holds it.
fn explain(held: Option<&Held>, e: TailError) -> String {
    match (e, held.and_then(|h| h.snapshots.newest())) {
        (e @ TailError::Retention { .. }, Some((below, _))) => {
            format!("{e}; the newest snapshot stands at {below}: ask `from snapshot` to restore it")
        }
        (e, _) => e.to_string(),
    }
}

/// Stores an application's snapshot taken after applying every value before `below`, with
/// the learner's exactly-once table there (replayed from its journal).
fn store_app_snapshot(held: &Held, below: Position, app: &[u8]) -> Result<(), String> {
    let state = held
        .journal
        .state_at(below)
        .map_err(|e| explain(Some(held), e))?;
    let bytes = image::encode(held.snapshots.cluster(), below, &state, Some(app));
    held.snapshots
        .save(std::sync::Arc::new(bytes))
        .map(|_| ())
        .map_err(|e| e.to_string())
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

/// Reads what the reader sent so far onto `into`: Ok(true) once it closed its side (what it
/// sent before counts), Err once the connection failed.
fn read_some(stream: &mut UnixStream, into: &mut Vec<u8>) -> Result<bool, ()> {
    let mut buf = [0u8; 64 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
            Err(_) => return Err(()),
        }
    }
}

/// Where a reader's stream starts, and the answer it gets.
fn start(held: Option<&Held>, asked: StreamStart) -> Result<(Phase, Vec<u8>), String> {
    let Some(h) = held else {
        return match asked {
            StreamStart::Live => Ok((Phase::Live, b"ok live\n".to_vec())),
            _ => Err(NO_JOURNAL.into()),
        };
    };
    let j = &h.journal;
    let (from, mut answer) = match asked {
        StreamStart::Live => (
            Position {
                instance: j.end(),
                index: 0,
            },
            Vec::new(),
        ),
        StreamStart::Oldest => (
            Position {
                instance: j.oldest(),
                index: 0,
            },
            Vec::new(),
        ),
        StreamStart::From(p) => (p, Vec::new()),
        StreamStart::Snapshot => {
            let Some((below, bytes)) = h.snapshots.newest() else {
                return Err(format!(
                    "this learner holds no snapshot yet (the oldest position its journal holds \
                     is {}.0: ask `from oldest`)",
                    j.oldest()
                ));
            };
            let img = image::decode(&bytes, h.snapshots.cluster()).map_err(|e| e.to_string())?;
            let Some(app) = img.app else {
                return Err(format!(
                    "this learner's newest snapshot, at {below}, holds no application state \
                     (it took it of itself: set learner.snapshot_every to 0 where an \
                     application hands the learner its snapshots)"
                ));
            };
            let mut answer = format!("ok snapshot {below} {}\n", app.len()).into_bytes();
            answer.extend_from_slice(&app);
            (below, answer)
        }
    };
    let reader = if asked == StreamStart::Snapshot {
        j.reader_after_image(from)
    } else {
        j.reader(from)
    }
    .map_err(|e| explain(held, e))?;
    if answer.is_empty() {
        answer = format!("ok {from}\n").into_bytes();
    }
    Ok((Phase::Journal(reader), answer))
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
