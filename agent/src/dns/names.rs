//! Names on flows: the addresses a DNS answer gave a client, remembered
//! for the answer's TTL, name the client's later flows to them, as Hubble's
//! `destination_names` (and `source_names` on the way back). A name is
//! known per asking address: another client that never asked gets none.
//! A flow is named by what held when it began, so all its records, the
//! last written well after, say the same; an expired name is kept a while
//! for that ([`KEEP_EXPIRED_NS`]), never used for a flow begun after it.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use crate::{
    enrich::{Enricher, Identities},
    flow_table::FlowUpdate,
};

/// Pairs (asker, address) remembered at most; an answer that finds the
/// cache full names nothing (counted).
pub const MAX_PAIRS: usize = 65_536;
/// How long an expired name stays, for the records of flows begun before
/// it expired (an idle flow's end is written well after its last packet).
const KEEP_EXPIRED_NS: u64 = 600_000_000_000;

/// A name and until when (kernel monotonic ns) it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Named {
    name: String,
    until_ns: u64,
}

#[derive(Default)]
pub struct NameCache {
    pairs: HashMap<(IpAddr, IpAddr), Vec<Named>>,
    /// Answers' addresses not remembered because the cache was full.
    pub full: u64,
}

/// The cache, shared by the DNS stage (which learns) and the enricher
/// (which reads), both on the capture task.
pub type SharedNames = Arc<Mutex<NameCache>>;

impl NameCache {
    /// `client` was told that `name` (with its final dot, as asked) is at
    /// each of `addresses`, for `ttl` seconds from `now_ns`.
    pub fn learn(&mut self, client: IpAddr, name: &str, addresses: &[IpAddr], ttl: u32, now_ns: u64) {
        if ttl == 0 {
            return;
        }
        // Hubble's names carry no final dot (`api.example.com`).
        let name = name.strip_suffix('.').unwrap_or(name);
        let until_ns = now_ns.saturating_add(u64::from(ttl) * 1_000_000_000);
        for &address in addresses {
            let full = self.pairs.len() >= MAX_PAIRS;
            let names = match self.pairs.get_mut(&(client, address)) {
                Some(names) => names,
                None if full => {
                    self.full += 1;
                    continue;
                }
                None => self.pairs.entry((client, address)).or_default(),
            };
            match names.iter_mut().find(|n| n.name == name) {
                Some(known) => known.until_ns = known.until_ns.max(until_ns),
                None => names.push(Named {
                    name: name.to_owned(),
                    until_ns,
                }),
            }
        }
    }

    /// The names `client` was given for `address`, valid at `at_ns`, sorted.
    pub fn names(&self, client: IpAddr, address: IpAddr, at_ns: u64) -> Vec<String> {
        let mut names: Vec<String> = self
            .pairs
            .get(&(client, address))
            .into_iter()
            .flatten()
            .filter(|n| n.until_ns > at_ns)
            .map(|n| n.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Forgets what expired more than [`KEEP_EXPIRED_NS`] before `now_ns`.
    pub fn expire(&mut self, now_ns: u64) {
        self.pairs.retain(|_, names| {
            names.retain(|n| n.until_ns.saturating_add(KEEP_EXPIRED_NS) > now_ns);
            !names.is_empty()
        });
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// The enrich stage's source of names.
pub struct DnsNames(pub SharedNames);

impl Enricher for DnsNames {
    fn enrich(&mut self, update: &FlowUpdate, identities: &mut Identities) {
        let cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.is_empty() {
            return;
        }
        let (src, dst) = (update.key.src_ip(), update.key.dst_ip());
        // What held when the flow began names all its records.
        let at = update.stats.first_seen_ns;
        let to = cache.names(src, dst, at);
        let from = cache.names(dst, src, at);
        if !to.is_empty() {
            identities.destination_names = Some(Arc::new(to));
        }
        if !from.is_empty() {
            identities.source_names = Some(Arc::new(from));
        }
    }
}

#[cfg(test)]
mod tests {
    use agent_common::FlowKey;

    use super::*;

    const S: u64 = 1_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn update(src: &str, dst: &str, at: u64) -> FlowUpdate {
        let mut key = FlowKey::default();
        let (src, dst) = (ip(src), ip(dst));
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                key.ip_version = 4;
                key.src_addr[..4].copy_from_slice(&s.octets());
                key.dst_addr[..4].copy_from_slice(&d.octets());
            }
            _ => unreachable!("IPv4 in these cases"),
        }
        FlowUpdate {
            key,
            stats: agent_common::FlowStats {
                first_seen_ns: at,
                last_seen_ns: at,
                ..Default::default()
            },
            packets: 1,
            bytes: 1,
            tcp_flags: 0,
            state: crate::flow_table::FlowState::Begin,
            is_reply: Some(false),
        }
    }

    fn enrich(names: &SharedNames, update: &FlowUpdate) -> Identities {
        let mut identities = Identities::default();
        DnsNames(Arc::clone(names)).enrich(update, &mut identities);
        identities
    }

    #[test]
    fn the_asker_s_flows_to_an_answered_address_carry_the_name_both_ways() {
        let names = SharedNames::default();
        names
            .lock()
            .unwrap()
            .learn(ip("10.0.0.5"), "web.example.", &[ip("192.0.2.1")], 60, 0);
        let out = enrich(&names, &update("10.0.0.5", "192.0.2.1", 10 * S));
        assert_eq!(out.destination_names.as_deref(), Some(&vec!["web.example".to_owned()]));
        assert_eq!(out.source_names, None);
        let back = enrich(&names, &update("192.0.2.1", "10.0.0.5", 10 * S));
        assert_eq!(back.source_names.as_deref(), Some(&vec!["web.example".to_owned()]));
    }

    #[test]
    fn another_client_or_another_address_gets_no_name() {
        let names = SharedNames::default();
        names
            .lock()
            .unwrap()
            .learn(ip("10.0.0.5"), "web.example.", &[ip("192.0.2.1")], 60, 0);
        assert_eq!(
            enrich(&names, &update("10.0.0.6", "192.0.2.1", S)),
            Identities::default()
        );
        assert_eq!(
            enrich(&names, &update("10.0.0.5", "192.0.2.2", S)),
            Identities::default()
        );
    }

    #[test]
    fn a_name_holds_for_its_ttl_and_then_goes() {
        let names = SharedNames::default();
        names
            .lock()
            .unwrap()
            .learn(ip("10.0.0.5"), "short.example.", &[ip("192.0.2.1")], 2, 0);
        assert!(
            enrich(&names, &update("10.0.0.5", "192.0.2.1", 2 * S - 1))
                .destination_names
                .is_some()
        );
        assert_eq!(
            enrich(&names, &update("10.0.0.5", "192.0.2.1", 2 * S)),
            Identities::default()
        );
        // Kept a while for the records of flows begun in time.
        names.lock().unwrap().expire(2 * S);
        assert_eq!(names.lock().unwrap().len(), 1);
        names.lock().unwrap().expire(2 * S + KEEP_EXPIRED_NS);
        assert_eq!(names.lock().unwrap().len(), 0);
    }

    #[test]
    fn a_flow_begun_in_time_keeps_its_name_in_later_records() {
        let names = SharedNames::default();
        names
            .lock()
            .unwrap()
            .learn(ip("10.0.0.5"), "short.example.", &[ip("192.0.2.1")], 2, 0);
        let mut late_end = update("10.0.0.5", "192.0.2.1", S);
        late_end.stats.last_seen_ns = 30 * S;
        names.lock().unwrap().expire(30 * S);
        assert!(enrich(&names, &late_end).destination_names.is_some());
    }

    #[test]
    fn several_names_for_one_address_are_sorted_and_ttl_zero_teaches_nothing() {
        let mut cache = NameCache::default();
        let (client, address) = (ip("10.0.0.5"), ip("192.0.2.1"));
        cache.learn(client, "b.example.", &[address], 60, 0);
        cache.learn(client, "a.example.", &[address], 60, 0);
        cache.learn(client, "a.example.", &[address], 120, 0);
        cache.learn(client, "zero.example.", &[address], 0, 0);
        assert_eq!(cache.names(client, address, 90 * S), ["a.example"]);
        assert_eq!(cache.names(client, address, S), ["a.example", "b.example"]);
    }

    #[test]
    fn a_full_cache_learns_nothing_new_and_counts_it() {
        let mut cache = NameCache::default();
        let client = ip("10.0.0.5");
        for i in 0..MAX_PAIRS as u32 {
            cache.learn(client, "x.", &[IpAddr::from(i.to_be_bytes())], 60, 0);
        }
        cache.learn(client, "y.", &[ip("255.255.255.255")], 60, 0);
        assert_eq!(cache.full, 1);
        assert!(cache.names(client, ip("255.255.255.255"), 0).is_empty());
    }
}
