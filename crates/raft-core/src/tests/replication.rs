use super::Cluster;
use crate::{EntryKind, LogIndex, Message, MessageBody, NodeId, Role, Term};

#[test]
fn hundred_proposals_applied_in_order_everywhere() {
    let mut cluster = Cluster::new(3);
    cluster.campaign(1);
    let expected: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_be_bytes().to_vec()).collect();
    for data in &expected {
        cluster.propose(1, data);
        if data[3] % 7 == 0 {
            cluster.deliver();
        }
    }
    cluster.deliver();
    // Followers learn the final commit index from the next heartbeat.
    cluster.node_mut(1).tick();
    cluster.deliver();
    for id in 1..=3 {
        assert_eq!(cluster.applied_data(id), expected, "node {id}");
    }
}

#[test]
fn leader_commits_only_after_own_persist() {
    let mut cluster = Cluster::new(3);
    cluster.campaign(1);
    let (index, _) = cluster.propose(1, b"x");

    // Both followers acknowledge before the leader's own Ready is advanced.
    let leader = cluster.node_mut(1);
    let ready = leader.ready();
    assert_eq!(ready.entries.len(), 1);
    assert!(ready.must_sync);
    let appends = ready.messages.clone();
    for message in appends {
        let follower = cluster.node_mut(message.to.0);
        follower.step(message).unwrap();
        let follower_ready = follower.ready();
        follower.advance(&follower_ready);
        for response in follower_ready.messages {
            cluster.node_mut(1).step(response).unwrap();
        }
    }
    // Two followers make a quorum, but a node never commits past its own
    // durable log, so the leader waits for its fsync.
    assert!(cluster.node(1).status().commit_index < index);
    cluster.node_mut(1).advance(&ready);
    assert_eq!(cluster.node(1).status().commit_index, index);

    let mut cluster = Cluster::new(3);
    cluster.campaign(1);
    cluster.crash(NodeId(3));
    let (index, _) = cluster.propose(1, b"y");
    let leader = cluster.node_mut(1);
    let ready = leader.ready();
    let response = {
        let follower = cluster.node_mut(2);
        follower.step(ready.messages[0].clone()).unwrap();
        let follower_ready = follower.ready();
        follower.advance(&follower_ready);
        follower_ready.messages[0].clone()
    };
    let leader = cluster.node_mut(1);
    leader.step(response).unwrap();
    // One follower plus a leader whose entry is not yet durable is no quorum.
    assert!(leader.status().commit_index < index);
    leader.advance(&ready);
    assert_eq!(leader.status().commit_index, index);
}

#[test]
fn follower_acknowledges_in_same_ready_as_entries() {
    let mut cluster = Cluster::new(3);
    cluster.campaign(1);
    cluster.propose(1, b"x");
    let ready = cluster.node_mut(1).ready();
    let append = ready
        .messages
        .iter()
        .find(|message| message.to == NodeId(2))
        .unwrap()
        .clone();
    let follower = cluster.node_mut(2);
    follower.step(append).unwrap();
    let follower_ready = follower.ready();
    assert_eq!(follower_ready.entries.len(), 1);
    assert!(follower_ready.must_sync);
    let MessageBody::AppendEntriesResponse {
        success,
        match_index,
        ..
    } = follower_ready.messages[0].body
    else {
        panic!("expected an append response");
    };
    assert!(success);
    assert_eq!(match_index, LogIndex(2));
    // Until the follower reports the entry durable it does not count it as
    // committed either.
    assert!(follower.status().stable_index < LogIndex(2));
}

#[test]
fn conflicting_suffix_replaced() {
    let mut cluster = Cluster::new(3);
    cluster.campaign(1);
    // Node 1 appends three entries in term 1 that reach no one.
    cluster.isolate(1);
    for data in [b"a", b"b", b"c"] {
        cluster.propose(1, data);
    }
    cluster.deliver();
    assert_eq!(cluster.log_terms(1), vec![1, 1, 1, 1]);

    // Node 2 leads term 2 and commits two entries of its own.
    cluster.campaign(2);
    cluster.propose(2, b"d");
    cluster.propose(2, b"e");
    cluster.deliver();
    assert_eq!(cluster.log_terms(2), vec![1, 2, 2, 2]);

    cluster.heal();
    cluster.node_mut(2).tick();
    cluster.deliver();
    assert_eq!(cluster.log_terms(1), vec![1, 2, 2, 2]);
    assert_eq!(cluster.node(1).status().role, Role::Follower);
    assert_eq!(cluster.applied_data(1), vec![b"d".to_vec(), b"e".to_vec()]);
}

#[test]
fn lost_append_retried_after_unreachable() {
    let mut cluster = Cluster::new(3);
    cluster.campaign(1);
    cluster.cut.insert((NodeId(1), NodeId(3)));
    cluster.propose(1, b"x");
    cluster.deliver();
    cluster.heal();
    cluster.node_mut(1).report_unreachable(NodeId(3));
    cluster.node_mut(1).tick();
    cluster.deliver();
    assert_eq!(cluster.log_terms(3), vec![1, 1]);
}

#[test]
fn each_request_gets_one_response() {
    let mut cluster = Cluster::new(3);
    cluster.campaign(1);
    cluster.campaign(2);
    // Node 1 is now a follower in term 2. Send it a stale vote request, a
    // stale append, a malformed append and a valid heartbeat.
    let requests = vec![
        Message {
            from: NodeId(3),
            to: NodeId(1),
            term: Term(1),
            body: MessageBody::RequestVote {
                last_log_index: LogIndex(9),
                last_log_term: Term(1),
                transfer: false,
            },
        },
        Message {
            from: NodeId(3),
            to: NodeId(1),
            term: Term(1),
            body: MessageBody::AppendEntries {
                prev_log_index: LogIndex(0),
                prev_log_term: Term(0),
                entries: Vec::new(),
                leader_commit: LogIndex(0),
                read_round: 0,
            },
        },
        Message {
            from: NodeId(2),
            to: NodeId(1),
            term: Term(2),
            body: MessageBody::AppendEntries {
                prev_log_index: LogIndex(0),
                prev_log_term: Term(0),
                entries: vec![crate::Entry {
                    term: Term(2),
                    index: LogIndex(7),
                    kind: EntryKind::Normal,
                    data: Vec::new(),
                }],
                leader_commit: LogIndex(0),
                read_round: 0,
            },
        },
        Message {
            from: NodeId(2),
            to: NodeId(1),
            term: Term(2),
            body: MessageBody::AppendEntries {
                prev_log_index: LogIndex(0),
                prev_log_term: Term(0),
                entries: Vec::new(),
                leader_commit: LogIndex(0),
                read_round: 0,
            },
        },
    ];
    let node = cluster.node_mut(1);
    for request in &requests {
        node.step(request.clone()).unwrap();
    }
    let ready = node.ready();
    let responses: Vec<(NodeId, bool)> = ready
        .messages
        .iter()
        .map(|message| match message.body {
            MessageBody::RequestVoteResponse { granted } => (message.to, granted),
            MessageBody::AppendEntriesResponse { success, .. } => (message.to, success),
            _ => panic!("unexpected {message:?}"),
        })
        .collect();
    assert_eq!(
        responses,
        vec![
            (NodeId(3), false),
            (NodeId(3), false),
            (NodeId(2), false),
            (NodeId(2), true)
        ]
    );
}

/// The sequence of figure 8 in Ongaro and Ousterhout's Raft paper (2014):
/// an entry of an earlier term stored on a majority can still be replaced,
/// so a leader must not commit it by counting replicas.
#[test]
fn earlier_term_entry_not_committed_by_counting() {
    // One entry per message, so the test decides which entries arrive.
    let mut cluster = Cluster::with_config(5, |config| config.max_entries_per_append = 1);

    // (a) Node 1 leads term 1 and stores entry 2 on itself and node 2 only.
    cluster.campaign(1);
    cluster.node_mut(1).tick();
    cluster.deliver();
    for id in [3, 4, 5] {
        cluster.cut.insert((NodeId(1), NodeId(id)));
    }
    let (index, term) = cluster.propose(1, b"term 1");
    assert_eq!((index, term), (LogIndex(2), Term(1)));
    cluster.deliver();
    assert_eq!(cluster.log_terms(2), vec![1, 1]);
    cluster.heal();

    // (b) Node 1 crashes. Node 5 leads term 2 with votes from 3 and 4, and
    // stores entry 2 of term 2 on itself only before it crashes too.
    cluster.crash(NodeId(1));
    cluster.isolate(2);
    cluster.node_mut(5).campaign(false);
    cluster.deliver_filtered(|message| !matches!(message.body, MessageBody::AppendEntries { .. }));
    assert_eq!(cluster.node(5).status().role, Role::Leader);
    assert_eq!(cluster.node(5).status().term, Term(2));
    assert_eq!(cluster.log_terms(5), vec![1, 2]);
    cluster.crash(NodeId(5));
    cluster.heal();

    // (c) Node 1 restarts and leads term 3. It copies entry 2 of term 1 to
    // node 3, so that entry is on a majority (1, 2, 3), and its own term-3
    // entry reaches only node 2.
    cluster.start(NodeId(1));
    // Node 3's first probe carries the term-3 entry after index 2, which node
    // 3 lacks, so node 3 rejects it; later term-3 entries to nodes 3 and 4
    // are dropped.
    let probed_node_3 = std::cell::Cell::new(false);
    let no_term_3_entries = |message: &Message| match &message.body {
        MessageBody::AppendEntries {
            entries,
            prev_log_index,
            ..
        } if entries.iter().any(|entry| entry.term == Term(3)) => {
            let first_probe =
                message.to == NodeId(3) && *prev_log_index == LogIndex(2) && !probed_node_3.get();
            probed_node_3.set(probed_node_3.get() || first_probe);
            first_probe || message.to == NodeId(2)
        }
        _ => true,
    };
    cluster.node_mut(1).campaign(false);
    cluster.deliver_filtered(no_term_3_entries);
    if cluster.node(1).status().role != Role::Leader {
        // Nodes 3 and 4 voted for node 5 in term 2; the next term wins.
        cluster.node_mut(1).campaign(false);
        cluster.deliver_filtered(no_term_3_entries);
    }
    assert_eq!(cluster.node(1).status().role, Role::Leader);
    assert_eq!(cluster.node(1).status().term, Term(3));
    for _ in 0..3 {
        cluster.node_mut(1).tick();
        cluster.deliver_filtered(no_term_3_entries);
    }
    assert_eq!(cluster.log_terms(1), vec![1, 1, 3]);
    assert_eq!(cluster.log_terms(2), vec![1, 1, 3]);
    assert_eq!(cluster.log_terms(3), vec![1, 1]);
    assert_eq!(cluster.log_terms(4), vec![1]);
    assert_eq!(
        cluster.node(1).status().commit_index,
        LogIndex(1),
        "entry 2 of term 1 is on a majority but must not commit by counting"
    );

    // (d) Node 1 crashes. Node 5 restarts and wins a later term with votes
    // from 3 and 4, whose last entries are of term 1, and replaces entry 2
    // everywhere. Had node 1 committed it, a committed entry would be lost.
    cluster.crash(NodeId(1));
    cluster.start(NodeId(5));
    for _ in 0..3 {
        if cluster.node(5).status().role == Role::Leader {
            break;
        }
        cluster.campaign(5);
    }
    assert_eq!(cluster.node(5).status().role, Role::Leader);
    cluster.node_mut(5).tick();
    cluster.deliver();
    for id in [2, 3, 4] {
        assert_eq!(cluster.log_terms(id)[1], 2, "node {id}");
    }
    assert!(cluster.applied_data(2).is_empty());
    cluster.check_election_safety();
}

#[test]
fn earlier_term_entry_commits_with_current_term_entry() {
    let mut cluster = Cluster::with_config(5, |config| config.max_entries_per_append = 1);
    cluster.campaign(1);
    for id in [3, 4, 5] {
        cluster.cut.insert((NodeId(1), NodeId(id)));
    }
    cluster.propose(1, b"term 1");
    cluster.deliver();
    cluster.heal();
    cluster.crash(NodeId(1));
    cluster.start(NodeId(1));

    // Node 1 leads term 2; once its term-2 entry reaches a majority, the
    // term-1 entry before it commits too.
    cluster.campaign(1);
    for _ in 0..3 {
        cluster.node_mut(1).tick();
        cluster.deliver();
    }
    assert_eq!(cluster.node(1).status().commit_index, LogIndex(3));
    assert_eq!(cluster.applied_data(1), vec![b"term 1".to_vec()]);
}
