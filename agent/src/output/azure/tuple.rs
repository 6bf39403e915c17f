//! Flow tuples as Azure writes them: VNet flow logs (version 4) and NSG
//! flow logs (version 2). A tuple is oriented as its connection: the side
//! that began it is the source, and the counts of the reply direction are
//! the "received" (destination to source) columns. The records of both
//! directions of a connection written together (same state) become one
//! tuple; each counts what its direction had since its previous record, so
//! the tuples of a connection add up to its totals.

use std::fmt::Write as _;

use agent_common::{hook, ip_proto};

use crate::{
    flow_table::FlowState,
    proto::flow::TrafficDirection,
    record::{FlowRecord, RecordSource},
};

/// The fields both formats take from a record.
#[derive(Clone, Debug)]
pub struct Tuple {
    pub time_ms: u64,
    pub src: String,
    pub dst: String,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    /// Of the connection, seen from the endpoint: inbound or outbound.
    pub inbound: bool,
    pub denied: bool,
    pub state: FlowState,
    /// (packets, bytes) source to destination, and back.
    pub sent: (u64, u64),
    pub received: (u64, u64),
}

impl Tuple {
    pub fn of(source: &RecordSource, record: &FlowRecord) -> Tuple {
        let update = &source.update;
        let key = &update.key;
        let reply = update.is_reply == Some(true);
        let (mut src, mut dst) = (key.src_ip().to_string(), key.dst_ip().to_string());
        let (mut sport, mut dport) = key.ports().unwrap_or((0, 0));
        let counts = (update.packets, update.bytes);
        let (mut sent, mut received) = (counts, (0, 0));
        // The record's own direction, from the endpoint's side; the
        // connection's is the other one for a reply.
        let mut inbound = record.flow.traffic_direction() == TrafficDirection::Ingress;
        if reply {
            std::mem::swap(&mut src, &mut dst);
            std::mem::swap(&mut sport, &mut dport);
            std::mem::swap(&mut sent, &mut received);
            inbound = !inbound;
        }
        let t = &source.time;
        Tuple {
            time_ms: t.seconds.max(0) as u64 * 1000 + t.nanos.max(0) as u64 / 1_000_000,
            src,
            dst,
            sport,
            dport,
            protocol: key.protocol,
            inbound,
            denied: key.hook == hook::DROP,
            state: update.state,
            sent,
            received,
        }
    }

    /// Whether `other` is the same connection, state and verdict (then
    /// the two become one tuple).
    fn same_as(&self, other: &Tuple) -> bool {
        (
            &self.src,
            &self.dst,
            self.sport,
            self.dport,
            self.protocol,
            self.inbound,
            self.denied,
        ) == (
            &other.src,
            &other.dst,
            other.sport,
            other.dport,
            other.protocol,
            other.inbound,
            other.denied,
        ) && self.state == other.state
    }

    fn absorb(&mut self, other: &Tuple) {
        self.time_ms = self.time_ms.max(other.time_ms);
        self.sent = (self.sent.0 + other.sent.0, self.sent.1 + other.sent.1);
        self.received = (self.received.0 + other.received.0, self.received.1 + other.received.1);
    }

    fn state_letter(&self) -> &'static str {
        match self.state {
            FlowState::Begin => "B",
            FlowState::Continuing => "C",
            FlowState::End => "E",
        }
    }

    /// VNet flow log v4: `ms,src,dst,sport,dport,protocol,I|O,B|C|E|D,NX,
    /// packets sent,bytes sent,packets received,bytes received`.
    pub fn vnet(&self) -> String {
        let state = if self.denied { "D" } else { self.state_letter() };
        let mut s = String::with_capacity(96);
        let _ = write!(
            s,
            "{},{},{},{},{},{},{},{},NX,{},{},{},{}",
            self.time_ms,
            self.src,
            self.dst,
            self.sport,
            self.dport,
            self.protocol,
            if self.inbound { "I" } else { "O" },
            state,
            self.sent.0,
            self.sent.1,
            self.received.0,
            self.received.1
        );
        s
    }

    /// NSG flow log v2: `seconds,src,dst,sport,dport,T|U,I|O,A|D,B|C|E,
    /// packets and bytes source to destination, and back`. `None` for
    /// protocols other than TCP and UDP, which the format has no letter for.
    pub fn nsg(&self) -> Option<String> {
        let protocol = nsg_letter(self.protocol)?;
        Some(format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{}",
            self.time_ms / 1000,
            self.src,
            self.dst,
            self.sport,
            self.dport,
            protocol,
            if self.inbound { "I" } else { "O" },
            if self.denied { "D" } else { "A" },
            self.state_letter(),
            self.sent.0,
            self.sent.1,
            self.received.0,
            self.received.1
        ))
    }
}

/// NSG's protocol letter: TCP and UDP only.
pub fn nsg_letter(protocol: u8) -> Option<&'static str> {
    match protocol {
        ip_proto::TCP => Some("T"),
        ip_proto::UDP => Some("U"),
        _ => None,
    }
}

/// Tuples of one interface and batch, with those of the same connection
/// and state made one (both directions in one tuple, as Azure writes them).
pub fn merge(tuples: Vec<Tuple>) -> Vec<Tuple> {
    let mut merged: Vec<Tuple> = Vec::with_capacity(tuples.len());
    for t in tuples {
        match merged.iter_mut().rev().find(|m| m.same_as(&t)) {
            Some(m) => m.absorb(&t),
            None => merged.push(t),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(state: FlowState, sent: u64, received: u64) -> Tuple {
        Tuple {
            time_ms: 1000 + sent,
            src: "10.0.0.1".into(),
            dst: "10.0.0.2".into(),
            sport: 40000,
            dport: 80,
            protocol: ip_proto::TCP,
            inbound: false,
            denied: false,
            state,
            sent: (sent, sent * 100),
            received: (received, received * 100),
        }
    }

    #[test]
    fn both_directions_of_a_connection_become_one_tuple() {
        let merged = merge(vec![
            tuple(FlowState::Begin, 1, 0),
            tuple(FlowState::Begin, 0, 1),
            tuple(FlowState::Continuing, 5, 0),
        ]);
        assert_eq!(merged.len(), 2, "B and C stay apart");
        assert_eq!(merged[0].vnet(), "1001,10.0.0.1,10.0.0.2,40000,80,6,O,B,NX,1,100,1,100");
        assert_eq!(
            merged[0].nsg().unwrap(),
            "1,10.0.0.1,10.0.0.2,40000,80,T,O,A,B,1,100,1,100"
        );
    }
}
