//! Ring-buffer records as the kernel could write them, any bytes at all:
//! decoded, run through the flow table (events, sweeps, the final flush)
//! and built into Hubble records and JSON lines. Nothing may panic (cargo
//! fuzz builds with overflow checks), whatever the counts, times, keys and
//! reasons say.

use std::collections::HashMap;

use agent_common::{FlowEvent, FlowKey, FlowStats};
use hubcap::{
    flow_table::{EntryVisitor, FlowTable, KernelFlows, TableConfig},
    json::{ExportPayload, write_export_event},
    record::{RecordBuilder, RecordSource},
    ringbuf::decode_record,
};

/// The kernel map as the events left it.
struct Map(HashMap<FlowKey, FlowStats>);

impl KernelFlows for Map {
    fn get(&self, key: &FlowKey) -> Option<FlowStats> {
        self.0.get(key).copied()
    }
    fn take(&mut self, key: &FlowKey) -> Option<FlowStats> {
        self.0.remove(key)
    }
    fn remove(&mut self, key: &FlowKey) {
        self.0.remove(key);
    }
    fn visit_entries(&mut self, visit: &mut EntryVisitor) -> bool {
        let all: Vec<_> = self.0.iter().map(|(k, v)| (*k, *v)).collect();
        visit(&all);
        true
    }
}

pub fn ringbuf_records(data: &[u8]) {
    let size = size_of::<FlowEvent>();
    let mut table = FlowTable::new(TableConfig {
        report_interval_ns: 1_000_000_000,
        idle_timeout_ns: 2_000_000_000,
        close_linger_ns: 500_000_000,
    });
    let mut map = Map(HashMap::new());
    let mut updates = Vec::new();
    // Whole records, and the odd-sized rest as the reader would see it.
    for record in data.chunks(size) {
        let Some(event) = decode_record(record) else {
            assert!(record.len() != size);
            continue;
        };
        map.0.insert(event.key, event.stats);
        let now = event.stats.last_seen_ns;
        table.on_event(&event, now, &mut updates);
        table.end_closed(&mut map, now, &mut updates);
        table.sweep(&mut map, now, &mut updates);
    }
    table.finish(&mut map, u64::MAX, &mut updates);
    let builder = RecordBuilder::default();
    let mut line = Vec::new();
    for update in updates {
        let source = RecordSource {
            update,
            uuid: 0,
            time: Default::default(),
            flow_start_time: Default::default(),
            interface: None,
            identities: Default::default(),
        };
        let record = builder.build(&source);
        line.clear();
        write_export_event(&mut line, ExportPayload::record(&record), "node", &Default::default());
        assert!(line.ends_with(b"\n") || !line.is_empty());
    }
}
