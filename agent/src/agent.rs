//! `hubcap run`: wires the stages together and runs the capture loop.
//!
//! One task owns the data path, so there are no queues that could drop
//! data: it wakes when the ring buffer has records, on a 500 ms tick
//! (interface changes, closed connections, kernel counters) and on
//! SIGINT/SIGTERM. Backpressure lands on the kernel ring buffer, where every
//! event that does not fit is counted (its flow's counts are not lost: they
//! stay in the flow map). The only thing it shares is the Observer API's ring
//! of recent flows, which the output stage pushes into; the API's own thread
//! holds that lock only to copy pointers.
//!
//! The data path: ring buffer -> flow table -> enrich -> outputs (the
//! output stage, `output`, owns record building and every destination).

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::{
    cli::RunArgs,
    clock::WallClock,
    datapath::{Attachments, CounterValues, Datapath, DatapathConfig, HOOKS, ProgramPair, hook_name},
    drop_reasons,
    drop_scope::DropScope,
    enrich::Enrichers,
    flow_table::{FlowTable, FlowUpdate, TableConfig},
    hubble_api::server::GrpcServer,
    interfaces::{self, InterfaceSelector},
    kubernetes::{
        self, Kubernetes,
        flow_log_resources::{self, StoredLogOptions},
    },
    metrics::{Contexts, Metrics},
    metrics_server,
    output::{
        ObserverFeed, Outputs,
        flow_logs::{FlowLogs, SharedFlowLogs},
    },
    privileges,
    record::RecordBuilder,
    ringbuf::EventReader,
};

const TICK: Duration = Duration::from_millis(500);
/// The kernel wakes the reader only once 64 KiB of records are pending (a
/// wakeup per record would cost more than the record); this timer picks up
/// what trickles in below that.
const DRAIN: Duration = Duration::from_millis(100);
/// The updates buffer is shrunk back to this after a burst.
const UPDATES_KEEP: usize = (1 << 20) / size_of::<FlowUpdate>();
/// How long the first records wait for the cluster's first full list.
const INITIAL_SYNC: Duration = Duration::from_secs(30);
/// Closed TCP connections wait this long for their last ACKs.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

pub async fn run(args: RunArgs) -> Result<()> {
    // Everything that can be wrong with the invocation fails here, before
    // anything is loaded or attached.
    privileges::check()?;
    let selector = InterfaceSelector::new(&args.interfaces)?;
    let present = interfaces::list().context("listing network interfaces")?;
    selector.check_plain_names_exist(&present)?;
    let node_name = args.node_name();
    let metrics = Arc::new(Metrics::with_contexts(Contexts::new(
        args.metrics_source_context,
        args.metrics_destination_context,
        args.metrics_context_limit,
    )));
    let opened_outputs = args.output_settings().open(&metrics)?;
    let flow_logs = if args.flow_logs_config.is_some() || args.flow_log_crds {
        let path = args.flow_logs_config.as_deref();
        let logs = FlowLogs::open(path, &node_name, Arc::clone(&metrics))?;
        if let Some(path) = path {
            info!(logs = ?logs.names(), config = %path.display(), "flow logs configured");
        }
        Some(Arc::new(std::sync::Mutex::new(logs)))
    } else {
        None
    };
    let flow_log_resources = match &flow_logs {
        Some(logs) if args.flow_log_crds => {
            let (client, server) = kubernetes::connect(args.kubeconfig.clone())
                .await
                .context("--flow-log-crds needs the Kubernetes API")?;
            info!(%server, path = %args.flow_log_crds_path, "flow-log custom resources watched");
            let options = StoredLogOptions {
                file_path: args.flow_log_crds_path.clone(),
                max_size_mb: args.flow_log_crds_max_size_mb,
                max_backups: args.flow_log_crds_max_backups,
            };
            Some(tokio::spawn(flow_log_resources::run(
                client,
                Arc::clone(logs),
                options,
                Arc::clone(&metrics),
            )))
        }
        _ => None,
    };
    if let Some(addr) = &args.metrics_listen {
        let listener = crate::listen::bind(*addr)
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        info!(address = %addr, "serving metrics on /metrics");
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            if let Err(e) = metrics_server::serve(listener, metrics).await {
                warn!(error = %e, "metrics server stopped");
            }
        });
    }
    metrics.kernel_flow_capacity.set(i64::from(args.flow_map_size));
    // Before anything is loaded: with --kubernetes on, an unreachable API
    // server stops hubcap here.
    let kubernetes = Kubernetes::start(&args.kubernetes(), Arc::clone(&metrics)).context("Kubernetes")?;
    let (drops, drop_reasons) = drop_reasons::prepare_capture(&args.drop_reasons).context("drop capture")?;
    let builder = Arc::new(RecordBuilder {
        node_name: node_name.clone(),
        drop_reasons,
    });

    let mut datapath = Datapath::load(DatapathConfig {
        report_interval_ns: args.report_interval.as_nanos() as u64,
        flow_map_entries: args.flow_map_size,
        ring_buffer_bytes: args.ring_buffer_mb * 1024 * 1024,
        drops,
    })?;
    if drops.is_some() {
        info!(reasons = %args.drop_reasons, "drop capture on (kfree_skb)");
    }
    // Loading parsed the kernel's BTF (several MB); give that heap back
    // instead of carrying it for the agent's lifetime.
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
    let drop_scope = match &drops {
        Some(capture) => Some(DropScope::new(capture.layout.own_netns_inum).context("opening a netlink socket")?),
        None => None,
    };
    let events = datapath.take_events().expect("ring buffer taken once");
    let reader = EventReader::new(events).context("watching the ring buffer")?;
    // Last before capture, so that no failure above leaves a socket behind
    // (a busy socket still fails before anything is attached).
    let grpc = args.grpc();
    let mut enrichers = Enrichers::none();
    if let Some(k) = &kubernetes {
        enrichers.push(k.enricher());
    }
    let mut outputs = Outputs::new(Arc::clone(&builder), enrichers);
    for output in opened_outputs {
        outputs.add_boxed(output);
    }
    if let Some(logs) = &flow_logs {
        outputs.add(SharedFlowLogs(Arc::clone(logs)));
    }
    let server = if grpc.is_enabled() {
        let (server, state) = GrpcServer::start(
            &grpc,
            builder,
            Arc::clone(&metrics),
            kubernetes.as_ref().map(Kubernetes::cluster_nodes),
        )
        .context("starting the Observer API")?;
        outputs.add(ObserverFeed::new(state, Arc::clone(&metrics)));
        Some(server)
    } else {
        None
    };
    let mut agent = Agent {
        reader,
        attachments: Attachments::new(args.attach_mode, ProgramPair::CAPTURE),
        datapath,
        table: FlowTable::new(TableConfig {
            report_interval_ns: args.report_interval.as_nanos() as u64,
            idle_timeout_ns: args.idle_timeout.as_nanos() as u64,
            close_linger_ns: CLOSE_LINGER.as_nanos() as u64,
        }),
        selector,
        drop_scope,
        kubernetes,
        outputs,
        updates: Vec::new(),
        reported_counters: CounterValues::default(),
        report_interval: args.report_interval,
        flow_logs,
        flow_log_resources,
        metrics,
    };
    let result = agent.capture().await;
    // Whatever happened, take the programs off the interfaces and write out
    // every open flow.
    let shutdown = agent.shutdown();
    if let Some(k) = agent.kubernetes.take() {
        k.stop();
    }
    if let Some(server) = server {
        server.stop();
    }
    result.and(shutdown)
}

/// The stages, in data-path order, and what the timers need.
struct Agent {
    datapath: Datapath,
    reader: EventReader,
    attachments: Attachments,
    /// Which interfaces to attach to.
    selector: InterfaceSelector,
    /// Whose drops are reported (with drop capture on).
    drop_scope: Option<DropScope>,
    /// The enrich stage's source of identities, when on.
    kubernetes: Option<Kubernetes>,
    table: FlowTable,
    outputs: Outputs,
    /// The flow table's output, reused across batches.
    updates: Vec<FlowUpdate>,
    /// Kernel counters as last reported.
    reported_counters: CounterValues,
    report_interval: Duration,
    /// The logs of `--flow-logs-config`, re-read on every tick.
    flow_logs: Option<Arc<std::sync::Mutex<FlowLogs>>>,
    /// The watch of the flow-log custom resources (`--flow-log-crds`).
    flow_log_resources: Option<tokio::task::JoinHandle<()>>,
    metrics: Arc<Metrics>,
}

impl Agent {
    async fn capture(&mut self) -> Result<()> {
        let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        self.sync_interfaces()?;
        let present = interfaces::list().context("listing network interfaces")?;
        for pattern in self.selector.unmatched(&present) {
            warn!(
                pattern,
                "--interface matches no interface yet: capture starts on it when one appears"
            );
        }
        info!(interfaces = self.attachments.len(), mode = ?self.attachments.mode(), "capturing");
        if let Some(k) = &self.kubernetes {
            // Records written before the first full list would be
            // anonymous; the kernel keeps counting meanwhile.
            if k.wait_synced(INITIAL_SYNC).await {
                info!("Kubernetes metadata listed");
            } else {
                warn!(timeout = ?INITIAL_SYNC, "Kubernetes metadata not listed in time: early records may lack identities");
            }
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_sweep = tokio::time::Instant::now() + self.report_interval;
        let mut drain = tokio::time::interval(DRAIN);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sigint.recv() => { info!("SIGINT: stopping"); break }
                _ = sigterm.recv() => { info!("SIGTERM: stopping"); break }
                read = self.reader.read_batch(|e| {
                    let now = e.stats.last_seen_ns;
                    self.table.on_event(e, now, &mut self.updates);
                }) => {
                    let n = read.context("reading the ring buffer")?;
                    self.metrics.ring_records_read.inc_by(n as u64);
                    self.write_updates()?;
                }
                _ = drain.tick() => {
                    self.drain_ring();
                    self.write_updates()?;
                    self.flush()?;
                }
                _ = tick.tick() => {
                    self.outputs.refresh_clock();
                    self.reload_flow_logs();
                    self.sync_interfaces()?;
                    let now = WallClock::monotonic_ns();
                    self.table.end_closed(&mut self.datapath.flows, now, &mut self.updates);
                    if tokio::time::Instant::now() >= next_sweep {
                        // Empty the ring first: the sweep keeps this task
                        // busy for a while, and the ring must absorb what
                        // comes in meanwhile.
                        self.drain_ring();
                        self.table.sweep(&mut self.datapath.flows, now, &mut self.updates);
                        next_sweep += self.report_interval;
                        // Give back what ended flows freed.
                        // SAFETY: malloc_trim only releases free memory.
                        unsafe { libc::malloc_trim(0) };
                    }
                    self.write_updates()?;
                    self.report_kernel_losses()?;
                    self.flush()?;
                    self.update_gauges();
                }
            }
        }
        Ok(())
    }

    /// Applies a changed `--flow-logs-config`; a bad one leaves the
    /// previous logs in force and is logged and counted.
    fn reload_flow_logs(&mut self) {
        let Some(logs) = &self.flow_logs else { return };
        let mut logs = logs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match logs.reload() {
            Ok(true) => info!(logs = ?logs.names(), "flow logs reloaded"),
            Ok(false) => {}
            Err(e) => {
                self.metrics.flow_log_config_errors.inc();
                warn!(error = %e, "flow logs config not applied: the previous one stays in force");
            }
        }
        if let Err(e) = logs.tick() {
            warn!(error = %e, "writing aggregated flow-log lines");
        }
    }

    /// Reads every record waiting in the ring buffer into the flow table.
    fn drain_ring(&mut self) {
        let table = &mut self.table;
        let updates = &mut self.updates;
        let n = self
            .reader
            .read_all_now(|e| table.on_event(e, e.stats.last_seen_ns, updates));
        self.metrics.ring_records_read.inc_by(n as u64);
    }

    /// Attaches to matching interfaces that appeared, forgets vanished ones.
    fn sync_interfaces(&mut self) -> Result<()> {
        let present = interfaces::list().context("listing network interfaces")?;
        let attached_before = self.attachments.len();
        for iface in &present {
            // Every interface is named, not only captured ones: drops can
            // happen on any of them.
            self.outputs.learn_interface(iface.index, &iface.name, iface.kind);
            if self.selector.matches(iface) && !self.attachments.contains(iface.index) {
                if let Err(e) = self.attachments.attach(&mut self.datapath, iface.index, &iface.name) {
                    // An interface can vanish between listing and attaching;
                    // anything else is worth a warning, not a dead agent.
                    warn!(error = %e, "not capturing on {}", iface.name);
                }
            }
        }
        let mut detached = false;
        for ifindex in self.attachments.ifindexes() {
            if !present.iter().any(|i| i.index == ifindex) {
                self.attachments.detach(ifindex);
                detached = true;
            }
        }
        if detached || self.attachments.len() != attached_before {
            self.publish_attachments();
        }
        if let Some(scope) = &mut self.drop_scope {
            let captured: Vec<_> = present
                .iter()
                .filter(|i| self.attachments.contains(i.index))
                .map(|i| (i.index, i.kind))
                .collect();
            let keys = scope.keys(&captured).context("finding the pods' network namespaces")?;
            self.datapath.set_drop_scope(keys)?;
        }
        Ok(())
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

    /// `hubcap_attachments`: exactly the hooks attached now.
    fn publish_attachments(&self) {
        let gauge = &self.metrics.attachments;
        gauge.reset();
        let mode = self.attachments.mode().name();
        for name in self.attachments.names() {
            for hook in HOOKS {
                gauge.with_label_values(&[name, hook_name(hook), mode]).set(1);
            }
        }
    }

    fn update_gauges(&self) {
        let m = &self.metrics;
        m.flow_table_directions.set(self.table.len() as i64);
        m.attached_interfaces.set(self.attachments.len() as i64);
        m.kernel_flow_entries.set(self.table.stats.kernel_entries as i64);
    }

    /// Counts what the kernel counted since the last report, and reports
    /// its losses through the outputs, so a reader of any output sees every
    /// loss.
    fn report_kernel_losses(&mut self) -> Result<()> {
        let counters = self.datapath.counters.read().context("reading kernel counters")?;
        let delta = counters.since(&self.reported_counters);
        self.metrics.count_kernel(&delta);
        for (source, lost) in delta.losses() {
            if lost > 0 {
                warn!(?source, lost, "kernel could not keep up");
            }
            self.outputs.lost(source, lost);
        }
        self.reported_counters = counters;
        Ok(self.outputs.end_batch()?)
    }

    fn flush(&mut self) -> Result<()> {
        Ok(self.outputs.flush()?)
    }

    /// Detach first so the counts stop moving, then read what is left in the
    /// ring buffer and the map: every open flow gets its final `E` record.
    fn shutdown(&mut self) -> Result<()> {
        self.attachments.detach_all();
        self.publish_attachments();
        self.datapath.detach_drops();
        self.drain_ring();
        self.table
            .finish(&mut self.datapath.flows, WallClock::monotonic_ns(), &mut self.updates);
        self.write_updates()?;
        self.report_kernel_losses()?;
        self.flush()?;
        // No change to the logs while they are closed.
        if let Some(task) = self.flow_log_resources.take() {
            task.abort();
        }
        self.outputs.close();
        let counters = self.datapath.counters.read().context("reading kernel counters")?;
        // Every kernel counter, then the user-space ones.
        info!(
            "stopped {} adopted_from_map={} malformed_ring_records={}",
            counters.summary(),
            self.table.stats.adopted_from_map,
            self.reader.malformed
        );
        Ok(())
    }
}
