//! The data path in user space as one value: kernel records from the ring
//! buffer into the flow table, the table's updates to the output stage in
//! batches, and the kernel's losses reported through the same outputs, so
//! a reader of any output sees every loss. The agent's loop decides when
//! each step runs; this decides what it does.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use tracing::{info, warn};

use crate::{
    clock::WallClock,
    datapath::{CounterValues, KernelCounters, KernelFlowMap},
    dns::{DnsObservation, DnsStage},
    flow_table::{FlowTable, FlowUpdate},
    interfaces::InterfaceKind,
    metrics::Metrics,
    output::Outputs,
    ringbuf::EventReader,
};

/// The updates buffer is shrunk back to this after a burst.
const UPDATES_KEEP: usize = (1 << 20) / size_of::<FlowUpdate>();

pub struct Pipeline {
    reader: EventReader,
    table: FlowTable,
    outputs: Outputs,
    /// The flow table's output, reused across batches.
    updates: Vec<FlowUpdate>,
    /// Kernel counters as last reported.
    reported_counters: CounterValues,
    metrics: Arc<Metrics>,
    /// The DNS path, with DNS on; its output, reused across batches.
    dns: Option<DnsStage>,
    observations: Vec<DnsObservation>,
}

impl Pipeline {
    pub fn new(reader: EventReader, table: FlowTable, outputs: Outputs, metrics: Arc<Metrics>) -> Self {
        Pipeline {
            reader,
            table,
            outputs,
            updates: Vec::new(),
            reported_counters: CounterValues::default(),
            metrics,
            dns: None,
            observations: Vec::new(),
        }
    }

    /// Adds the DNS path.
    pub fn with_dns(mut self, dns: DnsStage) -> Self {
        self.dns = Some(dns);
        self
    }

    fn drain_dns(&mut self) -> Result<()> {
        if let Some(dns) = &mut self.dns {
            dns.drain(&mut self.observations);
        }
        self.write_dns()
    }

    fn write_dns(&mut self) -> Result<()> {
        Ok(self.outputs.write_dns(&mut self.observations)?)
    }

    /// Waits until a ring buffer has records (flow events, or DNS
    /// messages with DNS on), then carries a batch of them through to the
    /// outputs.
    pub async fn next_batch(&mut self) -> Result<()> {
        let (table, updates) = (&mut self.table, &mut self.updates);
        let flows = self
            .reader
            .read_batch(|e| table.on_event(e, e.stats.last_seen_ns, updates));
        let dns = async {
            match &mut self.dns {
                Some(dns) => dns.next_batch(&mut self.observations).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            n = flows => {
                let n = n.context("reading the ring buffer")?;
                self.metrics.ring_records_read.inc_by(n as u64);
                // Answers the kernel saw before these flows' packets name
                // them: take them in first.
                self.drain_dns()?;
                self.write_updates()
            }
            read = dns => {
                read.context("reading the DNS ring buffer")?;
                self.write_dns()
            }
        }
    }

    /// Carries what the ring buffer holds now through to the outputs, and
    /// flushes them: the kernel wakes the reader only once 64 KiB of
    /// records are pending, so what trickles in below that comes this way.
    pub fn drain(&mut self) -> Result<()> {
        self.drain_ring();
        self.drain_dns()?;
        self.write_updates()?;
        Ok(self.outputs.flush()?)
    }

    /// The timer's work on the data path: outputs' due work, connections
    /// closed long enough, the sweep of the kernel map when `sweep`, and
    /// the kernel's losses since the last report.
    pub fn maintain(&mut self, flows: &mut KernelFlowMap, counters: &KernelCounters, sweep: bool) -> Result<()> {
        self.outputs.tick();
        let now = WallClock::monotonic_ns();
        if let Some(dns) = &mut self.dns {
            dns.decoder.expire(now);
        }
        self.table.end_closed(flows, now, &mut self.updates);
        if sweep {
            // Empty the ring first, and again between the sweep's batches:
            // a sweep of hundreds of thousands of flows outlasts what the
            // ring holds at 100,000 new flows a second.
            self.drain_ring();
            let (reader, metrics) = (&mut self.reader, &self.metrics);
            self.table.sweep_with(flows, now, &mut self.updates, &mut |events| {
                let n = reader.read_all_now(|e| events.push(*e));
                metrics.ring_records_read.inc_by(n as u64);
            });
            // Give back what ended flows freed.
            // SAFETY: malloc_trim only releases free memory.
            unsafe { libc::malloc_trim(0) };
        }
        self.write_updates()?;
        self.report_kernel_losses(counters)?;
        Ok(self.outputs.flush()?)
    }

    /// After the programs are detached: what is left in the ring buffer and
    /// the map, so every open flow gets its final `E` record, and the last
    /// losses. Then the outputs close.
    pub fn finish(&mut self, flows: &mut KernelFlowMap, counters: &KernelCounters) -> Result<()> {
        self.drain_ring();
        self.drain_dns()?;
        self.table.finish(flows, WallClock::monotonic_ns(), &mut self.updates);
        self.write_updates()?;
        if let Some(dns) = &mut self.dns {
            dns.decoder.finish();
            info!("DNS: {}", dns.counts().summary());
        }
        self.report_kernel_losses(counters)?;
        self.outputs.flush()?;
        self.outputs.close();
        let counters = counters.read().context("reading kernel counters")?;
        // Every kernel counter, then the user-space ones.
        info!(
            "stopped {} adopted_from_map={} events_left_to_sweep={} malformed_ring_records={}",
            counters.summary(),
            self.table.stats.adopted_from_map,
            self.table.stats.events_left_to_sweep,
            self.reader.malformed
        );
        Ok(())
    }

    /// Names an interface in later records.
    pub fn learn_interface(&mut self, index: u32, name: &str, kind: InterfaceKind) {
        self.outputs.learn_interface(index, name, kind);
    }

    /// Open flow directions in the table, kernel map entries at the last
    /// sweep, and the table's own counts.
    pub fn publish_gauges(&self) {
        let m = &self.metrics;
        let stats = &self.table.stats;
        m.flow_table_directions.set(self.table.len() as i64);
        m.kernel_flow_entries.set(stats.kernel_entries as i64);
        // The table counts; the metrics catch up to it (only this adds).
        let catch_up =
            |counter: &prometheus::IntCounter, total: u64| counter.inc_by(total.saturating_sub(counter.get()));
        catch_up(&m.flows_adopted_from_map, stats.adopted_from_map);
        catch_up(&m.flow_events_left_to_sweep, stats.events_left_to_sweep);
    }

    /// Reads every record waiting in the ring buffer into the flow table.
    fn drain_ring(&mut self) {
        let (table, updates) = (&mut self.table, &mut self.updates);
        let n = self
            .reader
            .read_all_now(|e| table.on_event(e, e.stats.last_seen_ns, updates));
        self.metrics.ring_records_read.inc_by(n as u64);
    }

    /// Hands the flow table's updates to the output stage.
    fn write_updates(&mut self) -> Result<()> {
        let written = self.outputs.write(&self.updates);
        self.updates.clear();
        // A burst may have grown the buffer; do not keep that memory.
        if self.updates.capacity() > UPDATES_KEEP {
            self.updates.shrink_to(UPDATES_KEEP);
        }
        Ok(written?)
    }

    /// Counts what the kernel counted since the last report, and reports
    /// its losses through the outputs.
    fn report_kernel_losses(&mut self, counters: &KernelCounters) -> Result<()> {
        let counters = counters.read().context("reading kernel counters")?;
        let delta = counters.since(&self.reported_counters);
        self.metrics.count_kernel(&delta);
        if let Some(dns) = &mut self.dns {
            dns.publish(&delta);
        }
        for (source, lost) in delta.losses() {
            if lost > 0 {
                warn!(?source, lost, "kernel could not keep up");
            }
            self.outputs.lost(source, lost);
        }
        self.reported_counters = counters;
        Ok(self.outputs.end_batch()?)
    }
}
