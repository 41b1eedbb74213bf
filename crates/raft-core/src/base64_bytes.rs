//! Serde helpers that encode byte strings as standard base64 strings.
//!
//! JSON has no byte type, and an array of numbers costs about four times the
//! bytes of the base64 form. Use with `#[serde(with = "raft_core::base64_bytes")]`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&STANDARD.encode(bytes))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
    STANDARD
        .decode(text.as_bytes())
        .map_err(|error| serde::de::Error::custom(format_args!("invalid base64: {error}")))
}

/// The same encoding for an optional byte string; `None` is JSON `null`.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => super::serialize(bytes, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let text = <Option<std::borrow::Cow<'de, str>>>::deserialize(deserializer)?;
        text.map(|text| {
            STANDARD
                .decode(text.as_bytes())
                .map_err(|error| serde::de::Error::custom(format_args!("invalid base64: {error}")))
        })
        .transpose()
    }
}
