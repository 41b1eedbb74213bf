//! The key-value state machine and the commands that travel in log entries.

use std::collections::BTreeMap;

use raft_core::LogIndex;
use serde::{Deserialize, Serialize};

/// Maximum key length in bytes.
pub const MAX_KEY_LEN: usize = 64 * 1024;
/// Maximum value length in bytes. A value must also fit in one client frame.
pub const MAX_VALUE_LEN: usize = 1024 * 1024;

/// A command as stored in a log entry's data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    Put {
        #[serde(with = "raft_core::base64_bytes")]
        key: Vec<u8>,
        #[serde(with = "raft_core::base64_bytes")]
        value: Vec<u8>,
    },
    Delete {
        #[serde(with = "raft_core::base64_bytes")]
        key: Vec<u8>,
    },
    Cas {
        #[serde(with = "raft_core::base64_bytes")]
        key: Vec<u8>,
        #[serde(with = "raft_core::base64_bytes::option")]
        expected: Option<Vec<u8>>,
        #[serde(with = "raft_core::base64_bytes")]
        value: Vec<u8>,
    },
    /// A read that goes through the log, so that it is answered at a point
    /// where this node's leadership was confirmed by the commit.
    Get {
        #[serde(with = "raft_core::base64_bytes")]
        key: Vec<u8>,
    },
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("commands always serialize")
    }

    /// # Errors
    ///
    /// Returns the JSON error when `data` is not a command.
    pub fn decode(data: &[u8]) -> Result<Command, serde_json::Error> {
        serde_json::from_slice(data)
    }
}

/// The outcome of applying one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Written,
    Deleted {
        existed: bool,
    },
    Swapped {
        succeeded: bool,
        current: Option<Vec<u8>>,
    },
    Value(Option<Vec<u8>>),
}

/// An ordered map of byte-string keys to values, changed only by applying
/// committed commands in log order.
#[derive(Debug, Default)]
pub struct KvStore {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The index of the last entry applied.
    applied: LogIndex,
}

impl KvStore {
    pub fn new() -> KvStore {
        KvStore::default()
    }

    pub fn applied_index(&self) -> LogIndex {
        self.applied
    }

    /// Applies the command of the entry at `index`.
    ///
    /// # Panics
    ///
    /// Panics when `index` does not follow the last applied index: the log
    /// hands out committed entries exactly once, in order.
    pub fn apply(&mut self, index: LogIndex, command: Command) -> Applied {
        self.advance_to(index);
        match command {
            Command::Put { key, value } => {
                self.map.insert(key, value);
                Applied::Written
            }
            Command::Delete { key } => Applied::Deleted {
                existed: self.map.remove(&key).is_some(),
            },
            Command::Cas {
                key,
                expected,
                value,
            } => {
                let current = self.map.get(&key).cloned();
                let succeeded = current == expected;
                if succeeded {
                    self.map.insert(key, value);
                }
                Applied::Swapped { succeeded, current }
            }
            Command::Get { key } => Applied::Value(self.map.get(&key).cloned()),
        }
    }

    /// Records an entry at `index` that carries no command, such as a new
    /// leader's empty entry.
    pub fn skip(&mut self, index: LogIndex) {
        self.advance_to(index);
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    /// Every key and value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.map
            .iter()
            .map(|(key, value)| (key.as_slice(), value.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn advance_to(&mut self, index: LogIndex) {
        assert_eq!(
            index,
            self.applied.next(),
            "entries must be applied once each, in order"
        );
        self.applied = index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Command {
        Command::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn put_get_delete() {
        let mut kv = KvStore::new();
        assert_eq!(kv.apply(LogIndex(1), put("a", "1")), Applied::Written);
        assert_eq!(
            kv.apply(LogIndex(2), Command::Get { key: "a".into() }),
            Applied::Value(Some(b"1".to_vec()))
        );
        assert_eq!(
            kv.apply(LogIndex(3), Command::Delete { key: "a".into() }),
            Applied::Deleted { existed: true }
        );
        assert_eq!(
            kv.apply(LogIndex(4), Command::Delete { key: "a".into() }),
            Applied::Deleted { existed: false }
        );
        assert_eq!(kv.get(b"a"), None);
        assert_eq!(kv.applied_index(), LogIndex(4));
    }

    #[test]
    fn cas_swaps_only_on_match() {
        let mut kv = KvStore::new();
        let cas = |expected: Option<&str>, value: &str| Command::Cas {
            key: "k".into(),
            expected: expected.map(Into::into),
            value: value.into(),
        };
        assert_eq!(
            kv.apply(LogIndex(1), cas(Some("x"), "1")),
            Applied::Swapped {
                succeeded: false,
                current: None
            }
        );
        assert_eq!(
            kv.apply(LogIndex(2), cas(None, "1")),
            Applied::Swapped {
                succeeded: true,
                current: None
            }
        );
        assert_eq!(
            kv.apply(LogIndex(3), cas(Some("1"), "2")),
            Applied::Swapped {
                succeeded: true,
                current: Some(b"1".to_vec())
            }
        );
        assert_eq!(kv.get(b"k"), Some(b"2".as_slice()));
    }

    #[test]
    #[should_panic(expected = "applied once each")]
    fn applying_twice_panics() {
        let mut kv = KvStore::new();
        kv.apply(LogIndex(1), put("a", "1"));
        kv.apply(LogIndex(1), put("a", "1"));
    }

    #[test]
    fn command_round_trips_with_binary_key() {
        let command = Command::Put {
            key: vec![0, 255, 10],
            value: b"v".to_vec(),
        };
        let data = command.encode();
        assert!(std::str::from_utf8(&data).unwrap().contains("\"AP8K\""));
        assert_eq!(Command::decode(&data).unwrap(), command);
    }
}
