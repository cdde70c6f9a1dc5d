//! Which faults a seed injects. Seeds cycle through the fault kinds so any run of consecutive
//! seeds covers all of them; each seed then draws its own rates, times and victims.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::None,
        FaultKind::Loss,
        FaultKind::DuplicationReordering,
        FaultKind::Partition,
        FaultKind::AcceptorCrash,
        FaultKind::LeaderCrash,
        FaultKind::LearnerCrash,
        FaultKind::Everything,
        FaultKind::ProposerCrash,
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
}

#[derive(Clone, Debug)]
pub struct PartitionFault {
    pub at: Duration,
    pub until: Duration,
    /// What to cut off: the current leader (chosen at `at`) or a random minority of nodes.
    pub isolate_leader: bool,
    pub minority_pick: u64,
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
        plan
    }
}
