//! The checker bites: an acceptor that forgets its promise must be caught by the simulator.

use ethpaxos::protocol::{
    Acceptor, AcceptorState, Actions, Ballot, Membership, Message, NodeId, ProtocolConfig,
};
use ethpaxos::sim::{AcceptorFactory, AcceptorLogic, FaultKind, SimConfig, Simulation};
use std::time::Duration;

/// Votes for every 2a it sees, whatever it promised: the real acceptor, with its promise
/// forgotten before each accept (its votes stay, so that is the only defect).
struct ForgetsPromise {
    inner: Acceptor,
    id: NodeId,
    members: Membership,
    cfg: ProtocolConfig,
}

impl AcceptorLogic for ForgetsPromise {
    fn handle(&mut self, now: Duration, from: NodeId, msg: Message, out: &mut Actions) {
        if matches!(msg, Message::Accept { .. }) {
            let mut state = self.inner.state().clone();
            state.promised = Ballot::ZERO;
            self.inner = Acceptor::restore(self.id, &self.cfg, self.members.clone(), state);
        }
        self.inner.handle(now, from, msg, out);
    }
}

fn forgetful() -> AcceptorFactory {
    Box::new(|id, cfg, members, state: AcceptorState| {
        Box::new(ForgetsPromise {
            inner: Acceptor::restore(id, cfg, members.clone(), state),
            id,
            members,
            cfg: cfg.clone(),
        })
    })
}

#[test]
fn checker_catches_an_acceptor_that_forgets_its_promise() {
    let mut caught = None;
    for seed in 0..400 {
        let kind = if seed % 2 == 0 {
            FaultKind::Partition
        } else {
            FaultKind::LeaderCrash
        };
        let report = Simulation::new(SimConfig::with_kind(seed, kind), forgetful()).run();
        if let Some(v) = report
            .violations
            .iter()
            .find(|v| ["agreement", "same-order", "acknowledged-lost"].contains(&v.property))
        {
            caught = Some((seed, v.to_string()));
            break;
        }
    }
    let (seed, violation) =
        caught.expect("no safety violation found with a promise-forgetting acceptor");
    println!("seed {seed}: {violation}");
}

#[test]
fn the_same_seeds_pass_with_real_acceptors() {
    for seed in 0..60 {
        let kind = if seed % 2 == 0 {
            FaultKind::Partition
        } else {
            FaultKind::LeaderCrash
        };
        let report = ethpaxos::sim::run_seed_with(seed, kind);
        assert!(
            report.ok(),
            "seed {seed}: {:?}\n  replay: {}",
            report.violations,
            report.replay_command()
        );
    }
}
