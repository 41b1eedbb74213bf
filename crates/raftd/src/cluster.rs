//! The cluster's membership as given by `--initial-cluster`.

use raft_core::NodeId;

/// One member: its id, the address peers reach it on, and the address
/// clients reach it on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub peer_addr: String,
    pub client_addr: String,
}

/// Why an `--initial-cluster` value is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterSpecError {
    #[error("the member list is empty; expected ID=PEER/CLIENT,ID=PEER/CLIENT,...")]
    Empty,
    #[error("member {item:?} is not of the form ID=PEER_HOST:PORT/CLIENT_HOST:PORT")]
    Malformed { item: String },
    #[error("member id {id:?} is not a positive integer")]
    InvalidId { id: String },
    #[error("address {addr:?} of member {id} is not HOST:PORT with a port from 1 to 65535")]
    InvalidAddr { id: NodeId, addr: String },
    #[error("member id {0} appears more than once")]
    DuplicateId(NodeId),
    #[error("address {addr:?} is used by more than one member or port")]
    DuplicateAddr { addr: String },
}

/// Parses `1=PEER/CLIENT,2=PEER/CLIENT,...`, where PEER and CLIENT are
/// `HOST:PORT`.
///
/// # Errors
///
/// Returns the first malformed member, id or address, or a duplicate.
pub fn parse_initial_cluster(text: &str) -> Result<Vec<Member>, ClusterSpecError> {
    let mut members: Vec<Member> = Vec::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let malformed = || ClusterSpecError::Malformed {
            item: item.to_owned(),
        };
        let (id, addrs) = item.split_once('=').ok_or_else(malformed)?;
        let (peer_addr, client_addr) = addrs.split_once('/').ok_or_else(malformed)?;
        let id = match id.trim().parse::<u64>() {
            Ok(id) if id > 0 => NodeId(id),
            _ => {
                return Err(ClusterSpecError::InvalidId {
                    id: id.trim().to_owned(),
                });
            }
        };
        for addr in [peer_addr, client_addr] {
            if !is_host_port(addr) {
                return Err(ClusterSpecError::InvalidAddr {
                    id,
                    addr: addr.to_owned(),
                });
            }
        }
        if members.iter().any(|member| member.id == id) {
            return Err(ClusterSpecError::DuplicateId(id));
        }
        for addr in [peer_addr, client_addr] {
            let taken = members
                .iter()
                .any(|member| member.peer_addr == addr || member.client_addr == addr);
            if taken || peer_addr == client_addr {
                return Err(ClusterSpecError::DuplicateAddr {
                    addr: addr.to_owned(),
                });
            }
        }
        members.push(Member {
            id,
            peer_addr: peer_addr.to_owned(),
            client_addr: client_addr.to_owned(),
        });
    }
    if members.is_empty() {
        return Err(ClusterSpecError::Empty);
    }
    members.sort_by_key(|member| member.id);
    Ok(members)
}

/// Whether `addr` is `HOST:PORT` (an IPv6 host in brackets) with a nonzero
/// port.
pub fn is_host_port(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let valid_host = !host.is_empty() && (!host.contains(':') || host.starts_with('['));
    matches!(port.parse::<u16>(), Ok(port) if port > 0 && valid_host)
}

/// The id peers present in their handshake: the cluster token and a hash of
/// the membership, so that nodes started with different member lists refuse
/// each other.
pub fn cluster_id(token: &str, members: &[Member]) -> String {
    // FNV-1a, 64 bits: stable across builds and platforms, unlike the
    // standard library's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for member in members {
        let text = format!("{}={}/{};", member.id, member.peer_addr, member.client_addr);
        for byte in text.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{token}-{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_members_parsed() {
        let members = parse_initial_cluster(
            "2=127.0.0.1:4102/127.0.0.1:4002,1=127.0.0.1:4101/127.0.0.1:4001,\
             3=[::1]:4103/[::1]:4003",
        )
        .unwrap();
        assert_eq!(members.len(), 3);
        assert_eq!(members[0].id, NodeId(1));
        assert_eq!(members[0].peer_addr, "127.0.0.1:4101");
        assert_eq!(members[0].client_addr, "127.0.0.1:4001");
        assert_eq!(members[2].client_addr, "[::1]:4003");
    }

    #[test]
    fn malformed_members_rejected() {
        let cases = [
            ("", ClusterSpecError::Empty),
            (
                "1=127.0.0.1:1",
                ClusterSpecError::Malformed {
                    item: "1=127.0.0.1:1".into(),
                },
            ),
            ("x=a:1/a:2", ClusterSpecError::InvalidId { id: "x".into() }),
            ("0=a:1/a:2", ClusterSpecError::InvalidId { id: "0".into() }),
            (
                "1=a:0/a:2",
                ClusterSpecError::InvalidAddr {
                    id: NodeId(1),
                    addr: "a:0".into(),
                },
            ),
            (
                "1=a/a:2",
                ClusterSpecError::InvalidAddr {
                    id: NodeId(1),
                    addr: "a".into(),
                },
            ),
            (
                "1=a:1/a:2,1=b:1/b:2",
                ClusterSpecError::DuplicateId(NodeId(1)),
            ),
            (
                "1=a:1/a:2,2=a:2/b:2",
                ClusterSpecError::DuplicateAddr { addr: "a:2".into() },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_initial_cluster(text), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn cluster_id_depends_on_members() {
        let a = parse_initial_cluster("1=a:1/a:2,2=b:1/b:2").unwrap();
        let b = parse_initial_cluster("1=a:1/a:2,2=b:1/b:3").unwrap();
        assert_eq!(cluster_id("t", &a), cluster_id("t", &a));
        assert_ne!(cluster_id("t", &a), cluster_id("t", &b));
        assert_ne!(cluster_id("t", &a), cluster_id("u", &a));
    }
}
