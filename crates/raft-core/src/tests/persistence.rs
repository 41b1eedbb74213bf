use super::Cluster;
use crate::{LogIndex, Message, MessageBody, NodeId, Role, Term};

fn vote_request(from: u64, to: u64, term: u64) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body: MessageBody::RequestVote {
            last_log_index: LogIndex(10),
            last_log_term: Term(term),
            transfer: false,
        },
    }
}

#[test]
fn restarted_node_keeps_term_and_vote() {
    let mut cluster = Cluster::new(3);
    cluster.node_mut(1).step(vote_request(2, 1, 5)).unwrap();
    cluster.process_readies();
    cluster.queue.clear();
    assert_eq!(cluster.stored[&NodeId(1)].hard_state.term, Term(5));
    assert_eq!(cluster.stored[&NodeId(1)].hard_state.vote, Some(NodeId(2)));

    cluster.crash(NodeId(1));
    cluster.start(NodeId(1));
    assert_eq!(cluster.node(1).status().term, Term(5));
    assert_eq!(cluster.node(1).status().vote, Some(NodeId(2)));

    // A second candidate in the same term is refused after the restart.
    cluster.node_mut(1).step(vote_request(3, 1, 5)).unwrap();
    let ready = cluster.node_mut(1).ready();
    assert_eq!(
        ready.messages[0].body,
        MessageBody::RequestVoteResponse { granted: false }
    );
}

#[test]
fn vote_persisted_before_response_leaves() {
    let mut cluster = Cluster::new(3);
    cluster.node_mut(1).step(vote_request(2, 1, 3)).unwrap();
    let ready = cluster.node_mut(1).ready();
    assert_eq!(
        ready.messages[0].body,
        MessageBody::RequestVoteResponse { granted: true }
    );
    let hard_state = ready
        .hard_state
        .expect("the vote must be in the same Ready");
    assert_eq!(hard_state.vote, Some(NodeId(2)));
    assert!(ready.must_sync);
}

#[test]
fn candidacy_persisted_before_vote_requests() {
    let mut cluster = Cluster::new(3);
    cluster.node_mut(1).campaign(false);
    let ready = cluster.node_mut(1).ready();
    assert_eq!(ready.messages.len(), 2);
    let hard_state = ready.hard_state.unwrap();
    assert_eq!(hard_state.term, Term(1));
    assert_eq!(hard_state.vote, Some(NodeId(1)));
    assert!(ready.must_sync);
}

#[test]
fn restarted_cluster_keeps_committed_entries() {
    let mut cluster = Cluster::new(3);
    cluster.campaign(1);
    for i in 0..10u8 {
        cluster.propose(1, &[i]);
    }
    cluster.deliver();
    cluster.node_mut(1).tick();
    cluster.deliver();
    let before: Vec<Vec<u8>> = cluster.applied_data(2);
    assert_eq!(before.len(), 10);

    for id in 1..=3 {
        cluster.crash(NodeId(id));
    }
    for id in 1..=3 {
        cluster.start(NodeId(id));
        assert_eq!(cluster.node(id).status().last_index, LogIndex(11));
        assert_eq!(cluster.node(id).status().role, Role::Follower);
    }
    cluster.campaign(3);
    assert_eq!(cluster.node(3).status().role, Role::Leader);
    cluster.propose(3, b"after");
    cluster.deliver();
    cluster.node_mut(3).tick();
    cluster.deliver();
    let mut expected = before;
    expected.push(b"after".to_vec());
    for id in 1..=3 {
        assert_eq!(cluster.applied_data(id), expected, "node {id}");
    }
}
