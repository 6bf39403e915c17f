//! What a record is built from, fixed once per flow update: its uuid, its
//! wall-clock times, its interface's name and its endpoints' identities.
//!
//! The Observer API's ring keeps these (about 250 bytes, where the built
//! record takes about 1.5 KB) and builds the records a client asks for,
//! identical to the ones written.

use std::{collections::HashMap, sync::Arc};

use prost_types::Timestamp;

use crate::{clock::WallClock, enrich::Identities, flow_table::FlowUpdate, interfaces::InterfaceKind};

/// What hubcap knows about an interface; kept after the interface goes so
/// that its last flows still name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: Arc<str>,
    pub kind: InterfaceKind,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RecordSource {
    pub update: FlowUpdate,
    /// The record's uuid (random bits; see [`uuid_string`]).
    pub uuid: u128,
    /// Wall-clock times of the last and the first packet.
    pub time: Timestamp,
    pub flow_start_time: Timestamp,
    /// The interface as it was named then.
    pub interface: Option<InterfaceInfo>,
    pub identities: Identities,
}

/// Fixes the parts of a record that must not change when it is rebuilt.
pub struct Stamper {
    /// Every interface of the node by index (drops can happen on any).
    interfaces: HashMap<u32, InterfaceInfo>,
    /// For each record's uuid (as Hubble gives every flow one): seeded from
    /// the OS once, fast from then on.
    ids: fastrand::Rng,
    clock: WallClock,
}

impl Default for Stamper {
    fn default() -> Self {
        Stamper {
            interfaces: HashMap::new(),
            ids: fastrand::Rng::new(),
            clock: WallClock::new(),
        }
    }
}

impl Stamper {
    pub fn stamp(&mut self, update: &FlowUpdate, identities: Identities) -> RecordSource {
        RecordSource {
            update: update.clone(),
            uuid: self.ids.u128(..),
            time: self.clock.timestamp(update.stats.last_seen_ns),
            flow_start_time: self.clock.timestamp(update.stats.first_seen_ns),
            interface: self.interfaces.get(&update.key.ifindex).cloned(),
            identities,
        }
    }

    /// Learns an interface's name and kind (again, when it was renamed).
    pub fn learn_interface(&mut self, index: u32, name: &str, kind: InterfaceKind) {
        if self.interfaces.get(&index).is_none_or(|i| *i.name != *name) {
            self.interfaces.insert(
                index,
                InterfaceInfo {
                    name: name.into(),
                    kind,
                },
            );
        }
    }

    /// Re-reads the wall clock's offset, so NTP steps show in later records.
    pub fn refresh_clock(&mut self) {
        self.clock.refresh();
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// 128 random bits as a version 4 UUID, hyphenated.
pub fn uuid_string(random: u128) -> String {
    let id = uuid::Builder::from_random_bytes(random.to_le_bytes()).into_uuid();
    id.hyphenated()
        .encode_lower(&mut uuid::Uuid::encode_buffer())
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4_and_distinct() {
        let mut rng = fastrand::Rng::with_seed(7);
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| uuid_string(rng.u128(..))).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(id.len(), 36);
        }
    }
}
