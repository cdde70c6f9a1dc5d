//! Which faults a seed injects. Seeds cycle through the fault kinds so any run of consecutive
//! seeds covers all of them; each seed then draws its own rates, times and victims.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum FaultKind {
    None,
    Loss,
    DuplicationReordering,
    Partition,
    AcceptorCrash,
    LeaderCrash,
    LearnerCrash,
    Everything,
    /// Any proposer, leader or standby, crashes and restarts.
    ProposerCrash,
    /// A learner goes down for longer than the learner timeout while the leader crashes
    /// once or twice: trim must pass it and every failover must complete.
    LearnerAway,
    /// Every server (proposers, acceptors, learners) loses power at once and restarts.
    PowerCut,
    /// A standby's link goes down and up, longer than the leader timeout each time: it must
    /// not depose the healthy leader.
    StandbyFlap,
    /// A hostile station injects frames under members' ids: a Prepare at the top round, one
    /// just below it from a standby, and a 2a whose batch fits a 2a but no 1b; then the
    /// leader crashes, so the next election reads what acceptors kept.
    Forged,
}

impl FaultKind {
    pub const ALL: [FaultKind; 13] = [
        FaultKind::None,
        FaultKind::Loss,
        FaultKind::DuplicationReordering,
        FaultKind::Partition,
        FaultKind::AcceptorCrash,
        FaultKind::LeaderCrash,
        FaultKind::LearnerCrash,
        FaultKind::Everything,
        FaultKind::ProposerCrash,
        FaultKind::LearnerAway,
        FaultKind::PowerCut,
        FaultKind::StandbyFlap,
        FaultKind::Forged,
    ];

    /// The name the command line uses.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::None => "none",
            FaultKind::Loss => "loss",
            FaultKind::DuplicationReordering => "duplication-reordering",
            FaultKind::Partition => "partition",
            FaultKind::AcceptorCrash => "acceptor-crash",
            FaultKind::LeaderCrash => "leader-crash",
            FaultKind::LearnerCrash => "learner-crash",
            FaultKind::Everything => "everything",
            FaultKind::ProposerCrash => "proposer-crash",
            FaultKind::LearnerAway => "learner-away",
            FaultKind::PowerCut => "power-cut",
            FaultKind::StandbyFlap => "standby-flap",
            FaultKind::Forged => "forged",
        }
    }

    pub fn from_name(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn for_seed(seed: u64) -> FaultKind {
        FaultKind::ALL[(seed % FaultKind::ALL.len() as u64) as usize]
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The concrete faults of one run, all inside `[0, heal_at)`; after `heal_at` the network is
/// perfect and every node is up.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    pub kind: FaultKind,
    pub loss: f64,
    pub duplicate: f64,
    pub min_delay: Duration,
    pub jitter: Duration,
    pub heal_at: Duration,
    pub partitions: Vec<PartitionFault>,
    pub crashes: Vec<CrashFault>,
    pub forgeries: Vec<(Duration, Forgery)>,
}

/// A frame a hostile station on the segment sends under a member's id (no authentication).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forgery {
    /// A Prepare at round u32::MAX from a proposer's id: must be refused, never promised.
    TopRoundPrepare,
    /// A Prepare at round u32::MAX - 1 from a standby's id while the leader is alive: the
    /// leader lease must put it off.
    HighRoundPrepare,
    /// A 2a at the leader's ballot whose batch fills a 2a frame: too big for a 1b page.
    OversizedAccept,
}

#[derive(Clone, Debug)]
pub struct PartitionFault {
    pub at: Duration,
    pub until: Duration,
    /// What to cut off: the current leader (chosen at `at`) or a random minority of nodes.
    pub isolate_leader: bool,
    pub minority_pick: u64,
    /// Cut off a proposer that is not leading instead (a standby's link flaps).
    pub isolate_standby: bool,
}

#[derive(Clone, Debug)]
pub struct CrashFault {
    pub at: Duration,
    pub restart_at: Duration,
    pub target: CrashTarget,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashTarget {
    /// The acceptor with this index.
    Acceptor(usize),
    /// Whoever leads at the time.
    Leader,
    /// The learner with this index.
    Learner(usize),
    /// The proposer with this index (modulo the number of proposers), leading or not.
    Proposer(usize),
    /// Every proposer, acceptor and learner at once (a power cut).
    All,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl FaultPlan {
    pub fn draw(kind: FaultKind, rng: &mut ChaCha8Rng, acceptors: usize, learners: usize) -> Self {
        let heal_at = ms(rng.gen_range(800..2000));
        let mut plan = FaultPlan {
            kind,
            loss: 0.0,
            duplicate: 0.0,
            min_delay: Duration::from_micros(rng.gen_range(20..200)),
            jitter: Duration::from_micros(rng.gen_range(0..100)),
            heal_at,
            partitions: Vec::new(),
            crashes: Vec::new(),
            forgeries: Vec::new(),
        };
        let span = heal_at.as_millis() as u64;
        let window = |rng: &mut ChaCha8Rng| {
            let at = rng.gen_range(50..span / 2);
            let until = rng.gen_range(at + 50..span);
            (ms(at), ms(until))
        };
        let all = kind == FaultKind::Everything;
        if all || kind == FaultKind::Loss {
            plan.loss = rng.gen_range(0.01..0.25);
        }
        if all || kind == FaultKind::DuplicationReordering {
            plan.duplicate = rng.gen_range(0.01..0.2);
            plan.jitter = Duration::from_micros(rng.gen_range(200..5000));
        }
        if all || kind == FaultKind::Partition {
            for _ in 0..rng.gen_range(1..=2) {
                let (at, until) = window(rng);
                plan.partitions.push(PartitionFault {
                    at,
                    until,
                    isolate_leader: rng.gen_bool(0.6),
                    minority_pick: rng.gen(),
                    isolate_standby: false,
                });
            }
        }
        // `count` is drawn by the caller: its integer type decides how the RNG is sampled,
        // and changing it would change what every existing seed runs.
        let mut crashes =
            |rng: &mut ChaCha8Rng,
             count: usize,
             target: &dyn Fn(&mut ChaCha8Rng) -> CrashTarget| {
                for _ in 0..count {
                    let (at, restart_at) = window(rng);
                    let target = target(rng);
                    plan.crashes.push(CrashFault {
                        at,
                        restart_at,
                        target,
                    });
                }
            };
        if all || kind == FaultKind::AcceptorCrash {
            // Up to a minority down at once keeps progress possible; sometimes more, which
            // must stall safely and recover after the heal.
            let count = rng.gen_range(1..=acceptors);
            crashes(rng, count, &|rng| {
                CrashTarget::Acceptor(rng.gen_range(0..acceptors))
            });
        }
        if all || kind == FaultKind::LeaderCrash {
            let count = rng.gen_range(1..=2i32) as usize;
            crashes(rng, count, &|_| CrashTarget::Leader);
        }
        if all || kind == FaultKind::LearnerCrash {
            let count = rng.gen_range(1..=2i32) as usize;
            crashes(rng, count, &|rng| {
                CrashTarget::Learner(rng.gen_range(0..learners))
            });
        }
        if kind == FaultKind::ProposerCrash {
            let count = rng.gen_range(1..=3i32) as usize;
            // The proposer count is drawn after the plan: the index is reduced modulo it.
            crashes(rng, count, &|rng| {
                CrashTarget::Proposer(rng.gen_range(0..3))
            });
        }
        match kind {
            FaultKind::LearnerAway => {
                // Long enough for the learner timeout (drawn with the protocol) to pass, trim
                // to move on, and the leader to change while the learner is away.
                plan.heal_at = ms(rng.gen_range(2500..4000));
                let away = ms(rng.gen_range(50..300));
                plan.crashes.push(CrashFault {
                    at: away,
                    restart_at: ms(rng.gen_range(1800..2400)),
                    target: CrashTarget::Learner(rng.gen_range(0..learners)),
                });
                for _ in 0..rng.gen_range(1..=2i32) {
                    let at = ms(rng.gen_range(900..1700));
                    plan.crashes.push(CrashFault {
                        at,
                        restart_at: at + ms(rng.gen_range(100..600)),
                        target: CrashTarget::Leader,
                    });
                }
            }
            FaultKind::PowerCut => {
                let at = ms(rng.gen_range(1500..2500));
                plan.crashes.push(CrashFault {
                    at,
                    restart_at: at + ms(rng.gen_range(1..400)),
                    target: CrashTarget::All,
                });
                plan.heal_at = at + ms(500);
            }
            FaultKind::StandbyFlap => {
                plan.heal_at = ms(rng.gen_range(2000..3000));
                let mut at = rng.gen_range(400..700);
                for _ in 0..rng.gen_range(2..=4i32) {
                    let until = at + rng.gen_range(200..500);
                    plan.partitions.push(PartitionFault {
                        at: ms(at),
                        until: ms(until),
                        isolate_leader: false,
                        minority_pick: 0,
                        isolate_standby: true,
                    });
                    at = until + rng.gen_range(50..300);
                }
                plan.heal_at = plan.heal_at.max(ms(at));
            }
            FaultKind::Forged => {
                plan.heal_at = ms(rng.gen_range(1500..2500));
                let mut at = rng.gen_range(400..600);
                for f in [
                    Forgery::TopRoundPrepare,
                    Forgery::HighRoundPrepare,
                    Forgery::OversizedAccept,
                ] {
                    plan.forgeries.push((ms(at), f));
                    at += rng.gen_range(20..100);
                }
                plan.crashes.push(CrashFault {
                    at: ms(at + 50),
                    restart_at: ms(at + rng.gen_range(200..600)),
                    target: CrashTarget::Leader,
                });
            }
            _ => {}
        }
        plan
    }
}
