//! The first frame on every connection, sent by the side that initiated it.
//!
//! It names the protocol, its version and the codec of the frames that
//! follow, so that a later binary codec or protocol revision can be
//! negotiated during a rolling upgrade. Peers add the cluster id and their
//! node id; the accepting side checks both and closes the connection when
//! either does not belong.

use raft_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::error::HandshakeError;

pub const PEER_PROTOCOL: &str = "raft-peer";
pub const CLIENT_PROTOCOL: &str = "raft-client";
pub const PROTOCOL_VERSION: u32 = 1;
pub const CODEC_JSON: &str = "json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: String,
    pub version: u32,
    pub codec: String,
    /// Set on peer connections only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Set on peer connections only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<NodeId>,
}

/// The accepting side's reply to a [`Hello`]. On rejection the connection is
/// closed right after this frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<NodeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Hello {
    pub fn peer(cluster_id: &str, node_id: NodeId) -> Hello {
        Hello {
            protocol: PEER_PROTOCOL.to_owned(),
            version: PROTOCOL_VERSION,
            codec: CODEC_JSON.to_owned(),
            cluster_id: Some(cluster_id.to_owned()),
            node_id: Some(node_id),
        }
    }

    pub fn client() -> Hello {
        Hello {
            protocol: CLIENT_PROTOCOL.to_owned(),
            version: PROTOCOL_VERSION,
            codec: CODEC_JSON.to_owned(),
            cluster_id: None,
            node_id: None,
        }
    }

    /// Checks a peer's hello against this node's cluster and returns the
    /// remote node id.
    ///
    /// # Errors
    ///
    /// Returns the first mismatch: protocol, version, codec, cluster id, or a
    /// node id that is missing from `members` or equal to `own_id`.
    pub fn check_peer(
        &self,
        cluster_id: &str,
        own_id: NodeId,
        members: &[NodeId],
    ) -> Result<NodeId, HandshakeError> {
        self.check_common(PEER_PROTOCOL)?;
        let found = self.cluster_id.as_deref().unwrap_or("");
        if found != cluster_id {
            return Err(HandshakeError::ClusterId {
                found: found.to_owned(),
                expected: cluster_id.to_owned(),
            });
        }
        let node_id = self.node_id.unwrap_or(NodeId(0));
        if node_id == own_id {
            return Err(HandshakeError::SelfConnection(node_id));
        }
        if !members.contains(&node_id) {
            return Err(HandshakeError::UnknownNode(node_id));
        }
        Ok(node_id)
    }

    /// Checks a client's hello.
    ///
    /// # Errors
    ///
    /// Returns the first mismatch of protocol, version or codec.
    pub fn check_client(&self) -> Result<(), HandshakeError> {
        self.check_common(CLIENT_PROTOCOL)
    }

    fn check_common(&self, protocol: &'static str) -> Result<(), HandshakeError> {
        if self.protocol != protocol {
            return Err(HandshakeError::Protocol {
                found: self.protocol.clone(),
                expected: protocol,
            });
        }
        if self.version != PROTOCOL_VERSION {
            return Err(HandshakeError::Version {
                found: self.version,
                supported: PROTOCOL_VERSION,
            });
        }
        if self.codec != CODEC_JSON {
            return Err(HandshakeError::Codec {
                found: self.codec.clone(),
                supported: CODEC_JSON,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMBERS: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

    #[test]
    fn peer_hello_accepted() {
        let hello = Hello::peer("c1", NodeId(2));
        assert_eq!(hello.check_peer("c1", NodeId(1), &MEMBERS), Ok(NodeId(2)));
    }

    #[test]
    fn peer_hello_wrong_cluster_rejected() {
        let hello = Hello::peer("other", NodeId(2));
        let error = hello.check_peer("c1", NodeId(1), &MEMBERS).unwrap_err();
        assert!(matches!(error, HandshakeError::ClusterId { .. }));
    }

    #[test]
    fn peer_hello_unknown_node_rejected() {
        let hello = Hello::peer("c1", NodeId(9));
        let error = hello.check_peer("c1", NodeId(1), &MEMBERS).unwrap_err();
        assert_eq!(error, HandshakeError::UnknownNode(NodeId(9)));
    }

    #[test]
    fn client_hello_on_peer_port_rejected() {
        let error = Hello::client()
            .check_peer("c1", NodeId(1), &MEMBERS)
            .unwrap_err();
        assert!(matches!(error, HandshakeError::Protocol { .. }));
    }

    #[test]
    fn newer_version_rejected() {
        let mut hello = Hello::client();
        hello.version = PROTOCOL_VERSION + 1;
        assert!(matches!(
            hello.check_client(),
            Err(HandshakeError::Version { .. })
        ));
    }
}
