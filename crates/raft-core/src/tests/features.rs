//! Pre-vote, check-quorum, fast backtracking, ReadIndex, leases, leadership
//! transfer and batching, each switched on in its scenarios.

use super::Cluster;
use crate::{
    Config, Entry, EntryKind, LeaderError, LogIndex, MessageBody, NodeId, ProposeError, ReadMode,
    ReadState, Role, Term,
};

fn with_extensions(config: &mut Config) {
    config.pre_vote = true;
    config.check_quorum = true;
}

fn cluster(size: u64) -> Cluster {
    Cluster::with_config(size, with_extensions)
}

/// Ticks until `id` leads, with everyone else idle.
fn elect(cluster: &mut Cluster, id: u64) {
    cluster.node_mut(id).campaign(false);
    cluster.deliver();
    assert_eq!(cluster.node(id).status().role, Role::Leader);
    // Let the first entry commit everywhere.
    cluster.tick_all(1);
}

#[test]
fn rejoining_node_with_pre_vote_keeps_leader_term() {
    let mut cluster = cluster(3);
    elect(&mut cluster, 1);
    let term = cluster.node(1).status().term;

    cluster.isolate(3);
    // Node 3 times out again and again but never wins a pre-vote, so its
    // term stays put.
    cluster.tick_all(100);
    assert_eq!(cluster.node(3).status().term, term);

    cluster.heal();
    cluster.tick_all(5);
    assert_eq!(cluster.node(1).status().role, Role::Leader);
    assert_eq!(cluster.node(1).status().term, term);
    assert_eq!(cluster.node(3).status().leader, Some(NodeId(1)));
}

#[test]
fn rejoining_node_without_pre_vote_deposes_leader() {
    // The same scenario with pre-vote off shows what pre-vote prevents.
    let mut cluster = Cluster::with_config(3, |config| config.pre_vote = false);
    elect(&mut cluster, 1);
    let term = cluster.node(1).status().term;
    cluster.isolate(3);
    cluster.tick_all(100);
    assert!(cluster.node(3).status().term > term);
    cluster.heal();
    cluster.tick_all(5);
    assert!(cluster.node(1).status().term > term);
}

#[test]
fn leader_without_quorum_steps_down() {
    let mut cluster = cluster(3);
    elect(&mut cluster, 1);
    cluster.isolate(1);
    let election_tick = cluster.config.election_tick;
    for _ in 0..2 * election_tick {
        cluster.node_mut(1).tick();
        cluster.deliver();
    }
    assert_eq!(cluster.node(1).status().role, Role::Follower);
    assert_eq!(cluster.node(1).status().leader, None);
}

#[test]
fn leader_with_quorum_stays() {
    let mut cluster = cluster(3);
    elect(&mut cluster, 1);
    cluster.isolate(3);
    cluster.tick_all(5 * cluster.config.election_tick);
    assert_eq!(cluster.node(1).status().role, Role::Leader);
}

#[test]
fn follower_with_recent_leader_rejects_vote() {
    let mut cluster = cluster(3);
    elect(&mut cluster, 1);
    let term = cluster.node(2).status().term;
    let node = cluster.node_mut(2);
    node.step(crate::Message {
        from: NodeId(3),
        to: NodeId(2),
        term: Term(term.0 + 1),
        body: MessageBody::RequestVote {
            last_log_index: LogIndex(100),
            last_log_term: Term(term.0 + 1),
            transfer: false,
        },
    })
    .unwrap();
    let ready = node.ready();
    assert_eq!(
        ready.messages[0].body,
        MessageBody::RequestVoteResponse { granted: false }
    );
    // The rejected candidate's term was not adopted.
    assert_eq!(node.status().term, term);
    assert_eq!(node.status().leader, Some(NodeId(1)));
}

#[test]
fn connected_majority_elects_after_leader_loss() {
    let mut cluster = cluster(3);
    elect(&mut cluster, 1);
    cluster.crash(NodeId(1));
    // Pre-vote and stickiness together still let the two survivors elect
    // one of them once they forget the old leader.
    cluster.tick_all(4 * cluster.config.election_tick);
    let leaders: Vec<u64> = [2, 3]
        .into_iter()
        .filter(|id| cluster.node(*id).status().role == Role::Leader)
        .collect();
    assert_eq!(leaders.len(), 1);
    cluster.check_election_safety();
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: Vec::new(),
    }
}

/// Counts the AppendEntries round trips needed to repair a follower whose
/// log diverges from the leader's over 1,000 entries.
#[test]
fn divergent_follower_repaired_in_few_round_trips() {
    let mut cluster = Cluster::with_config(3, |config| config.max_entries_per_append = 4096);
    // Node 1 holds 1,000 entries of term 1 after a common entry; node 2
    // holds 1,000 of term 2 in their place, and leads term 3.
    let common = entry(1, 1);
    let mut log_one = vec![common.clone()];
    let mut log_two = vec![common];
    for index in 2..=1001 {
        log_one.push(entry(index, 1));
        log_two.push(entry(index, 2));
    }
    for (id, log, term) in [(1, log_one, 1), (2, log_two.clone(), 2), (3, log_two, 2)] {
        let stored = cluster.stored.get_mut(&NodeId(id)).unwrap();
        stored.entries = log;
        stored.hard_state.term = Term(term);
        cluster.crash(NodeId(id));
        cluster.start(NodeId(id));
    }
    cluster.node_mut(2).campaign(false);
    cluster.deliver_filtered(|message| message.to != NodeId(1));
    assert_eq!(cluster.node(2).status().role, Role::Leader);

    // Count AppendEntries requests to node 1 until it matches.
    let before = cluster.delivered;
    let mut round_trips = 0;
    for _ in 0..50 {
        cluster.node_mut(2).tick();
        let mut sent_to_one = 0;
        cluster.deliver_filtered(|message| {
            if message.to == NodeId(1) && matches!(message.body, MessageBody::AppendEntries { .. })
            {
                sent_to_one += 1;
            }
            true
        });
        round_trips += sent_to_one;
        if cluster.log_terms(1) == cluster.log_terms(2) {
            break;
        }
    }
    assert_eq!(cluster.log_terms(1), cluster.log_terms(2));
    assert!(cluster.delivered > before);
    // The heartbeat probe finds the conflict, which names term 1 and its
    // first index; the next message lands on the common entry and carries
    // the 1,000 entries. Decrementing one index per round trip would take
    // 1,000 round trips.
    eprintln!("repaired a 1,000-entry divergent suffix in {round_trips} AppendEntries");
    assert!(round_trips <= 3, "took {round_trips} round trips");
}

#[test]
fn read_index_confirms_with_heartbeat_round() {
    let mut cluster = cluster(3);
    elect(&mut cluster, 1);
    cluster.propose(1, b"x");
    cluster.deliver();
    let commit = cluster.node(1).status().commit_index;

    cluster.node_mut(1).read_index(7).unwrap();
    cluster.process_readies();
    // No answer before a quorum acknowledged the round.
    assert!(cluster.reads.get(&NodeId(1)).is_none_or(Vec::is_empty));
    cluster.deliver();
    assert_eq!(
        cluster.reads[&NodeId(1)],
        vec![ReadState {
            context: 7,
            index: Some(commit)
        }]
    );
}

#[test]
fn read_index_waits_for_leader_first_commit() {
    let mut cluster = cluster(3);
    elect(&mut cluster, 1);
    // Node 2 wins term 2 but its empty entry has not reached anyone.
    cluster.isolate(2);
    // A transfer election, which followers grant despite their leader.
    cluster.node_mut(2).campaign(true);
    cluster.heal();
    cluster.deliver_filtered(|message| !matches!(message.body, MessageBody::AppendEntries { .. }));
    assert_eq!(cluster.node(2).status().role, Role::Leader);
    let term = cluster.node(2).status().term;
    assert_ne!(
        cluster
            .node(2)
            .term_at(cluster.node(2).status().commit_index),
        Some(term)
    );

    cluster.node_mut(2).read_index(1).unwrap();
    cluster.process_readies();
    cluster.queue.clear();
    assert!(cluster.reads.get(&NodeId(2)).is_none_or(Vec::is_empty));

    // Once its entry of term 2 commits, the read gets that commit index.
    cluster.tick_all(2);
    let commit = cluster.node(2).status().commit_index;
    assert_eq!(cluster.node(2).term_at(commit), Some(term));
    assert_eq!(
        cluster.reads[&NodeId(2)],
        vec![ReadState {
            context: 1,
            index: Some(commit)
        }]
    );
}

#[test]
fn deposed_leader_fails_pending_read() {
    let mut cluster = cluster(3);
    elect(&mut cluster, 1);
    cluster.isolate(1);
    cluster.node_mut(1).read_index(9).unwrap();
    cluster.deliver();
    assert!(cluster.reads.get(&NodeId(1)).is_none_or(Vec::is_empty));

    // Node 2 takes over; node 1 learns of the new term and must not serve
    // the read it could not confirm.
    cluster.node_mut(2).campaign(false);
    cluster.deliver();
    cluster.heal();
    cluster.tick_all(2);
    assert_eq!(cluster.node(1).status().role, Role::Follower);
    assert_eq!(
        cluster.reads[&NodeId(1)],
        vec![ReadState {
            context: 9,
            index: None
        }]
    );
}

#[test]
fn follower_read_goes_through_leader() {
    let mut cluster = cluster(3);
    elect(&mut cluster, 1);
    cluster.propose(1, b"x");
    cluster.deliver();
    let commit = cluster.node(1).status().commit_index;
    cluster.node_mut(3).read_index(5).unwrap();
    cluster.deliver();
    assert_eq!(
        cluster.reads[&NodeId(3)],
        vec![ReadState {
            context: 5,
            index: Some(commit)
        }]
    );
}

#[test]
fn read_index_without_leader_rejected() {
    let mut cluster = cluster(3);
    assert_eq!(
        cluster.node_mut(2).read_index(1),
        Err(LeaderError::NoLeader)
    );
}

#[test]
fn lease_read_skips_round_while_lease_holds() {
    let mut cluster = Cluster::with_config(3, |config| {
        with_extensions(config);
        config.read_mode = ReadMode::Lease;
    });
    elect(&mut cluster, 1);
    cluster.tick_all(1);
    cluster.node_mut(1).read_index(3).unwrap();
    cluster.process_readies();
    // Answered without delivering any message.
    assert_eq!(cluster.reads[&NodeId(1)].len(), 1);

    // Cut off, the leader's lease runs out and reads need a round again.
    cluster.isolate(1);
    for _ in 0..cluster.config.election_tick - 1 {
        cluster.node_mut(1).tick();
        cluster.deliver();
    }
    cluster.node_mut(1).read_index(4).unwrap();
    cluster.deliver();
    assert_eq!(cluster.reads[&NodeId(1)].len(), 1);
}

#[test]
fn transfer_moves_leadership_to_target() {
    let mut cluster = cluster(3);
    elect(&mut cluster, 1);
    cluster.propose(1, b"x");
    cluster.deliver();
    cluster.node_mut(1).transfer_leader(NodeId(3)).unwrap();
    assert_eq!(
        cluster.node_mut(1).propose(b"y".to_vec()),
        Err(ProposeError::TransferInProgress { target: NodeId(3) })
    );
    cluster.deliver();
    assert_eq!(cluster.node(3).status().role, Role::Leader);
    assert_eq!(cluster.node(1).status().role, Role::Follower);
    cluster.propose(3, b"z");
    cluster.deliver();
    cluster.tick_all(1);
    assert_eq!(cluster.applied_data(1), vec![b"x".to_vec(), b"z".to_vec()]);
}

#[test]
fn transfer_to_lagging_target_catches_it_up_first() {
    let mut cluster = cluster(3);
    elect(&mut cluster, 1);
    cluster.cut.insert((NodeId(1), NodeId(3)));
    cluster.propose(1, b"x");
    cluster.deliver();
    cluster.heal();
    cluster.node_mut(1).transfer_leader(NodeId(3)).unwrap();
    cluster.tick_all(2);
    assert_eq!(cluster.node(3).status().role, Role::Leader);
    assert_eq!(cluster.log_terms(3)[..2], cluster.log_terms(1)[..2]);
}

#[test]
fn transfer_abandoned_after_election_timeout() {
    let mut cluster = cluster(3);
    elect(&mut cluster, 1);
    cluster.isolate(3);
    cluster.node_mut(1).transfer_leader(NodeId(3)).unwrap();
    cluster.tick_all(cluster.config.election_tick);
    assert_eq!(cluster.node(1).status().role, Role::Leader);
    assert_eq!(cluster.node(1).transfer_target(), None);
    assert!(cluster.node_mut(1).propose(b"y".to_vec()).is_ok());
}

#[test]
fn proposals_batched_into_one_append() {
    let mut cluster = cluster(3);
    elect(&mut cluster, 1);
    for i in 0..10u8 {
        cluster.propose(1, &[i]);
    }
    let ready = cluster.node_mut(1).ready();
    let appends: Vec<usize> = ready
        .messages
        .iter()
        .filter_map(|message| match &message.body {
            MessageBody::AppendEntries { entries, .. } => Some(entries.len()),
            _ => None,
        })
        .collect();
    assert_eq!(appends, vec![10, 10]);
}

#[test]
fn reads_in_one_turn_share_one_round() {
    let mut cluster = cluster(3);
    elect(&mut cluster, 1);
    for context in 0..10 {
        cluster.node_mut(1).read_index(context).unwrap();
    }
    let ready = cluster.node_mut(1).ready();
    let heartbeats = ready
        .messages
        .iter()
        .filter(|message| matches!(message.body, MessageBody::AppendEntries { .. }))
        .count();
    assert_eq!(heartbeats, 2, "one heartbeat per follower");
    cluster.node_mut(1).advance(&ready);
    cluster.queue.extend(ready.messages);
    cluster.deliver();
    assert_eq!(cluster.reads[&NodeId(1)].len(), 10);
}
