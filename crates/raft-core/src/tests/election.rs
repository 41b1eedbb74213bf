use super::Cluster;
use crate::rand::SplitMix64;
use crate::{MessageBody, NodeId, Role, Term};

#[test]
fn candidate_with_quorum_becomes_leader() {
    let mut cluster = Cluster::new(3);
    cluster.campaign(1);
    assert_eq!(cluster.node(1).status().role, Role::Leader);
    assert_eq!(cluster.node(1).status().term, Term(1));
    assert_eq!(cluster.node(2).status().leader, Some(NodeId(1)));
    assert_eq!(cluster.node(3).status().leader, Some(NodeId(1)));
}

#[test]
fn election_timeout_starts_campaign() {
    let mut cluster = Cluster::new(3);
    for _ in 0..2 * cluster.config.election_tick {
        cluster.node_mut(1).tick();
    }
    assert_eq!(cluster.node(1).status().role, Role::Candidate);
    cluster.deliver();
    assert_eq!(cluster.node(1).status().role, Role::Leader);
}

#[test]
fn election_timeouts_are_randomized() {
    let mut cluster = Cluster::new(5);
    let timeouts: Vec<u32> = (1..=5)
        .map(|id| cluster.node(id).election_timeout)
        .collect();
    let min = cluster.config.election_tick;
    for timeout in &timeouts {
        assert!((min..2 * min).contains(timeout), "timeout {timeout}");
    }
    cluster.node_mut(1).reset_election_timer();
    let distinct: std::collections::BTreeSet<u32> = timeouts.iter().copied().collect();
    assert!(distinct.len() > 1, "all nodes drew {timeouts:?}");
}

#[test]
fn node_grants_one_vote_per_term() {
    let mut cluster = Cluster::new(3);
    cluster.isolate(1);
    cluster.node_mut(2).campaign(false);
    cluster.node_mut(3).campaign(false);
    cluster.deliver();
    // Both campaigned in term 1 and voted for themselves, so neither can
    // collect a second vote.
    assert_ne!(cluster.node(2).status().role, Role::Leader);
    assert_ne!(cluster.node(3).status().role, Role::Leader);
    cluster.check_election_safety();
}

#[test]
fn stale_log_never_elected() {
    let mut cluster = Cluster::new(3);
    cluster.campaign(1);
    cluster.cut.insert((NodeId(1), NodeId(3)));
    cluster.propose(1, b"only on 1 and 2");
    cluster.deliver();
    assert_eq!(cluster.log_terms(2), vec![1, 1]);
    assert_eq!(cluster.log_terms(3), vec![1]);

    cluster.crash(NodeId(1));
    cluster.heal();
    cluster.campaign(3);
    assert_ne!(cluster.node(3).status().role, Role::Leader);

    cluster.campaign(2);
    assert_eq!(cluster.node(2).status().role, Role::Leader);
    cluster.check_election_safety();
}

#[test]
fn vote_request_with_stale_log_rejected() {
    let mut cluster = Cluster::new(3);
    cluster.campaign(1);
    cluster.propose(1, b"x");
    cluster.deliver();

    let node = cluster.node_mut(2);
    node.step(crate::Message {
        from: NodeId(3),
        to: NodeId(2),
        term: Term(5),
        body: MessageBody::RequestVote {
            last_log_index: crate::LogIndex(1),
            last_log_term: Term(1),
            transfer: false,
        },
    })
    .unwrap();
    let ready = node.ready();
    assert_eq!(ready.messages.len(), 1);
    assert_eq!(
        ready.messages[0].body,
        MessageBody::RequestVoteResponse { granted: false }
    );
    // The newer term is adopted even though the vote is refused.
    assert_eq!(ready.hard_state.unwrap().term, Term(5));
    assert_eq!(ready.hard_state.unwrap().vote, None);
}

#[test]
fn leader_steps_down_on_higher_term() {
    let mut cluster = Cluster::new(3);
    cluster.campaign(1);
    cluster.isolate(1);
    cluster.campaign(2);
    assert_eq!(cluster.node(2).status().role, Role::Leader);
    cluster.heal();
    cluster.node_mut(2).tick();
    cluster.deliver();
    assert_eq!(cluster.node(1).status().role, Role::Follower);
    assert_eq!(cluster.node(1).status().term, Term(2));
    assert_eq!(cluster.node(1).status().leader, Some(NodeId(2)));
}

/// Runs clusters with random ticks, message loss and crashes, and checks
/// after every step that no term ever had two leaders.
#[test]
fn single_leader_per_term_under_random_faults() {
    for seed in 0..200 {
        let mut rng = SplitMix64::new(seed);
        let mut cluster = Cluster::new(5);
        for _ in 0..300 {
            let id = 1 + rng.next_u64() % 5;
            match rng.next_u64() % 20 {
                0 => cluster.crash(NodeId(id)),
                1 if !cluster.nodes.contains_key(&NodeId(id)) => cluster.start(NodeId(id)),
                2 => {
                    if let Some(node) = cluster.nodes.get_mut(&NodeId(id)) {
                        let _ = node.propose(vec![seed as u8]);
                    }
                }
                _ => {
                    if let Some(node) = cluster.nodes.get_mut(&NodeId(id)) {
                        node.tick();
                    }
                }
            }
            cluster.process_readies();
            let drop_every = 1 + rng.next_u64() % 4;
            let mut count = 0;
            cluster.deliver_filtered(|_| {
                count += 1;
                count % drop_every != 0
            });
            cluster.check_election_safety();
        }
    }
}
