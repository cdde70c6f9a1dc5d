//! Safety and liveness checks over what the learners did in one run.

use super::StreamDigest;
use crate::protocol::{Batch, ClientDedup, ClientId, ClientValue, InstanceId, Position};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub property: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.property, self.detail)
    }
}

/// A snapshot image's exactly-once table: the values before it.
pub type ImageTable = HashMap<ClientId, ClientDedup>;

/// What the run observed.
#[derive(Default)]
pub struct Observations {
    pub submitted: HashMap<(ClientId, u64), Bytes>,
    pub acked: HashSet<(ClientId, u64)>,
    /// Per learner: each decided instance in the order it was decided (None: delivered out of
    /// a peer learner's journal, which holds only the values delivered).
    pub decided: Vec<Vec<(InstanceId, Option<Batch>)>>,
    /// Per learner: the delivered client values in delivery order.
    pub delivered: Vec<Vec<ClientValue>>,
    /// Per learner: the position of each delivered value.
    pub positions: Vec<Vec<Position>>,
    /// Messages that could not be encoded into a frame, or frames that did not decode.
    pub codec_errors: Vec<String>,
    /// Per learner: it needed instances acceptors had trimmed and no peer's journal held. It
    /// owes no more deliveries (it needs a snapshot), but what it delivered must still be
    /// right.
    pub trimmed_out: Vec<bool>,
    /// No proposer led when the run ended after the heal.
    pub no_leader: bool,
    /// Values whose client session died with its node before they were acknowledged: nothing
    /// will resend them, so they may be delivered (once) or not at all.
    pub abandoned: HashSet<(ClientId, u64)>,
    /// Learners that resumed from their journals somewhere else than where they stood.
    pub journal_faults: Vec<String>,
    /// Per learner: peers' snapshots it installed: where its stream went on (an index into
    /// `delivered`), the image's position, and its exactly-once table (the values before
    /// it, which this learner never delivers).
    pub installs: Vec<Vec<(usize, Position, ImageTable)>>,
    /// Per learner: its application's digest each time its delivery point moved, by the
    /// instance it stood at.
    pub digests: Vec<BTreeMap<InstanceId, StreamDigest>>,
    /// Per learner: the values it delivered, and how many of them are owed (not abandoned).
    got: Vec<HashSet<(ClientId, u64)>>,
    owed_got: Vec<usize>,
}

impl Observations {
    /// Records a message that could not be sent as a frame, or a frame that did not decode.
    pub fn codec_error(&mut self, e: String) {
        self.codec_errors.push(e);
    }

    pub fn new(learners: usize) -> Self {
        Observations {
            decided: vec![Vec::new(); learners],
            delivered: vec![Vec::new(); learners],
            positions: vec![Vec::new(); learners],
            trimmed_out: vec![false; learners],
            installs: vec![Vec::new(); learners],
            digests: vec![BTreeMap::new(); learners],
            got: vec![HashSet::new(); learners],
            owed_got: vec![0; learners],
            ..Default::default()
        }
    }

    /// Learner `l` delivered `v` at `position`.
    pub fn deliver(&mut self, l: usize, position: Position, v: &ClientValue) {
        self.positions[l].push(position);
        let key = (v.client, v.seq);
        if self.got[l].insert(key) && !self.abandoned.contains(&key) {
            self.owed_got[l] += 1;
        }
        self.delivered[l].push(v.clone());
    }

    /// Learner `l` installed a peer's snapshot image at `below`, whose exactly-once table is
    /// `dedup`.
    pub fn installed(&mut self, l: usize, below: Position, dedup: ImageTable) {
        self.installs[l].push((self.delivered[l].len(), below, dedup));
        // It owes no value the image holds; nothing it stood short of matters any more.
        self.trimmed_out[l] = false;
    }

    /// Learner `l`'s application's digest once it stood at instance `next`.
    pub fn digest(&mut self, l: usize, next: InstanceId, d: StreamDigest) {
        self.digests[l].insert(next, d);
    }

    /// Learner `l` restarted from its journal at instance `resume`, having delivered every
    /// instance below `at_crash` before the crash. What it delivered from `resume` on it will
    /// deliver again (its journal, like its application's state, lost it), so those
    /// deliveries are forgotten. Under `sync` its journal loses nothing; under any policy it
    /// never resumes past what it delivered. `policy` None: its journal was replaced by an
    /// empty one (it starts over, as a new learner).
    pub fn learner_restarted(
        &mut self,
        l: usize,
        resume: InstanceId,
        at_crash: InstanceId,
        policy: Option<crate::storage::FsyncPolicy>,
    ) {
        let sync = policy == Some(crate::storage::FsyncPolicy::Sync);
        if resume > at_crash || (sync && resume < at_crash) {
            self.journal_faults.push(format!(
                "learner {l} resumed at instance {resume} with policy {policy:?}, having \
                 delivered every instance below {at_crash}"
            ));
        }
        let keep: Vec<bool> = self.positions[l]
            .iter()
            .map(|p| p.instance < resume)
            .collect();
        let mut k = 0;
        self.delivered[l].retain(|_| {
            k += 1;
            keep[k - 1]
        });
        self.positions[l].retain(|p| p.instance < resume);
        self.decided[l].retain(|(i, _)| *i < resume);
        let kept = self.delivered[l].len();
        self.installs[l].retain(|(at, below, _)| *at <= kept && below.instance <= resume);
        self.digests[l].retain(|i, _| *i <= resume);
        self.got[l] = self.delivered[l]
            .iter()
            .map(|v| (v.client, v.seq))
            .collect();
        self.owed_got[l] = self.got[l]
            .iter()
            .filter(|k| !self.abandoned.contains(k))
            .count();
    }

    /// A session died unacknowledged with this value outstanding.
    pub fn abandon(&mut self, key: (ClientId, u64)) {
        if self.acked.contains(&key) || !self.abandoned.insert(key) {
            return;
        }
        for (l, got) in self.got.iter().enumerate() {
            if got.contains(&key) {
                self.owed_got[l] -= 1;
            }
        }
    }

    /// Every learner that can (one trimmed out needs state transfer) delivered every value
    /// it owes.
    pub fn all_delivered(&self) -> bool {
        let owed = self.submitted.len() - self.abandoned.len();
        (0..self.owed_got.len()).all(|l| {
            self.trimmed_out[l]
                || self.owed_got[l] >= owed
                || (!self.installs[l].is_empty() && self.missing_at(l).is_empty())
        })
    }

    /// What learner `l` owes and has not delivered: every value submitted and not
    /// abandoned, except those a snapshot it installed holds.
    fn missing_at(&self, l: usize) -> Vec<(ClientId, u64)> {
        let image = self.installs[l].last().map(|(_, _, d)| d);
        let got = &self.got[l];
        let mut out: Vec<_> = self
            .submitted
            .keys()
            .filter(|key| !got.contains(key) && !self.abandoned.contains(key))
            .filter(|(c, s)| !image.is_some_and(|d| d.get(c).is_some_and(|d| d.holds(*s))))
            .copied()
            .collect();
        out.sort_unstable();
        out
    }

    fn missing(&self) -> Vec<(usize, ClientId, u64)> {
        let mut out = Vec::new();
        for l in 0..self.delivered.len() {
            if !self.trimmed_out[l] {
                out.extend(self.missing_at(l).into_iter().map(|(c, s)| (l, c, s)));
            }
        }
        out
    }

    /// Every property, at the end of a run.
    pub fn check(&self) -> Vec<Violation> {
        let mut v: Vec<Violation> = self
            .codec_errors
            .iter()
            .take(5)
            .map(|e| Violation {
                property: "codec",
                detail: e.clone(),
            })
            .collect();
        let mut bad = |property, detail: String| v.push(Violation { property, detail });
        for f in self.journal_faults.iter().take(5) {
            bad("learner-journal", f.clone());
        }
        if self.no_leader {
            bad(
                "liveness",
                "no proposer leads at the end, after the faults healed".into(),
            );
        }

        // Agreement: one value per instance across learners; instances in order, none skipped.
        let mut chosen: HashMap<InstanceId, (usize, &Batch)> = HashMap::new();
        for (l, log) in self.decided.iter().enumerate() {
            let jumps: HashSet<InstanceId> = self.installs[l]
                .iter()
                .map(|(_, b, _)| b.instance)
                .collect();
            for (k, (i, b)) in log.iter().enumerate() {
                if k > 0 && *i != log[k - 1].0 + 1 && !(jumps.contains(i) && *i > log[k - 1].0) {
                    bad(
                        "order",
                        format!("learner {l} decided instance {i} after {}", log[k - 1].0),
                    );
                }
                // From a peer's journal (None) only the delivered values are known: the
                // stream checks below cover them.
                let Some(b) = b else { continue };
                match chosen.get(i) {
                    Some((other, ob)) if *ob != b => bad(
                        "agreement",
                        format!("instance {i}: learner {other} decided {ob:?}, learner {l} decided {b:?}"),
                    ),
                    Some(_) => {}
                    None => {
                        chosen.insert(*i, (l, b));
                    }
                }
            }
        }

        // Validity and exactly-once at each learner.
        for (l, stream) in self.delivered.iter().enumerate() {
            let mut seen = HashSet::new();
            for val in stream {
                match self.submitted.get(&(val.client, val.seq)) {
                    None => bad(
                        "validity",
                        format!(
                            "learner {l} delivered {}:{} that no client submitted",
                            val.client, val.seq
                        ),
                    ),
                    Some(p) if *p != val.payload => bad(
                        "validity",
                        format!(
                            "learner {l} delivered {}:{} with a payload the client did not submit",
                            val.client, val.seq
                        ),
                    ),
                    _ => {}
                }
                if !seen.insert((val.client, val.seq)) {
                    bad(
                        "exactly-once",
                        format!("learner {l} delivered {}:{} twice", val.client, val.seq),
                    );
                }
            }
        }

        // Positions: growing along each stream, and one per value across learners.
        let mut placed: HashMap<(ClientId, u64), Position> = HashMap::new();
        for (l, (stream, positions)) in self.delivered.iter().zip(&self.positions).enumerate() {
            if let Some(k) = positions.windows(2).position(|w| w[1] <= w[0]) {
                bad(
                    "positions",
                    format!(
                        "learner {l} delivered position {} after {}",
                        positions[k + 1],
                        positions[k]
                    ),
                );
            }
            for (v, p) in stream.iter().zip(positions) {
                match placed.get(&(v.client, v.seq)) {
                    Some(q) if q != p => bad(
                        "positions",
                        format!(
                            "learner {l} delivered {}:{} at {p}, another learner at {q}",
                            v.client, v.seq
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        placed.insert((v.client, v.seq), *p);
                    }
                }
            }
        }

        // Same order everywhere, nothing skipped: one value per position across learners,
        // and each learner's stream, between the snapshots it installed, holds every value
        // any learner delivered in that span of positions.
        let mut at: BTreeMap<Position, (ClientId, u64)> = BTreeMap::new();
        for (stream, positions) in self.delivered.iter().zip(&self.positions) {
            for (v, p) in stream.iter().zip(positions) {
                if let Some(other) = at.insert(*p, (v.client, v.seq)) {
                    if other != (v.client, v.seq) {
                        bad(
                            "same-order",
                            format!(
                                "position {p} holds {}:{} at one learner, {}:{} at another",
                                other.0, other.1, v.client, v.seq
                            ),
                        );
                    }
                }
            }
        }
        for (l, positions) in self.positions.iter().enumerate() {
            let mut cuts: Vec<(usize, Position)> =
                self.installs[l].iter().map(|(k, b, _)| (*k, *b)).collect();
            cuts.insert(0, (0, Position::default()));
            for (c, (start, from)) in cuts.iter().enumerate() {
                let end = cuts.get(c + 1).map_or(positions.len(), |(k, _)| *k);
                let span = &positions[*start..end.max(*start)];
                if let Some(first) = span.first().filter(|p| *p < from) {
                    bad(
                        "snapshot",
                        format!(
                            "learner {l} delivered {first} after installing a snapshot at {from}"
                        ),
                    );
                }
                let Some(last) = span.last() else { continue };
                let everyone = at.range(*from..=*last).count();
                if everyone != span.len() {
                    bad(
                        "same-order",
                        format!(
                            "learner {l} delivered {} values in [{from}, {last}], the learners \
                             together {everyone}: it skipped some",
                            span.len()
                        ),
                    );
                }
            }
        }

        // Applications agree: equal digests wherever learners stood at the same instance,
        // across restarts and snapshot installs.
        let mut digest_at: HashMap<InstanceId, (usize, StreamDigest)> = HashMap::new();
        'digests: for (l, digests) in self.digests.iter().enumerate() {
            for (i, d) in digests {
                match digest_at.get(i) {
                    Some((other, od)) if od != d => {
                        bad(
                            "app-digest",
                            format!(
                                "at instance {i}, learner {other}'s application holds {od:?}, \
                                 learner {l}'s {d:?}"
                            ),
                        );
                        break 'digests;
                    }
                    Some(_) => {}
                    None => {
                        digest_at.insert(*i, (l, *d));
                    }
                }
            }
        }

        // An acknowledged value that is missing is lost; any other missing value is a
        // liveness failure (the run ends only at the liveness bound or when all arrived).
        for (l, c, s) in self.missing().iter().take(5) {
            if self.acked.contains(&(*c, *s)) {
                bad(
                    "acknowledged-lost",
                    format!("learner {l} never delivered acknowledged value {c}:{s}"),
                );
            } else {
                bad("liveness", format!("learner {l} did not deliver value {c}:{s} within the bound after the faults healed"));
            }
        }
        v
    }
}
