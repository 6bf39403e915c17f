//! `hubcap run`: starts the stages and side services from the settings and
//! runs the capture loop.
//!
//! One task owns the data path ([`Pipeline`]), so there are no queues that
//! could drop data: it wakes when the ring buffer has records, on a 500 ms
//! tick (interface changes, closed connections, kernel counters, the
//! outputs' due work) and on SIGINT/SIGTERM. Backpressure lands on the
//! kernel ring buffer, where every event that does not fit is counted (its
//! flow's counts are not lost: they stay in the flow map). The side
//! services (Observer API, Kubernetes watchers, metrics endpoint) run
//! beside it and only share read-mostly state with it.
//!
//! The data path: ring buffer -> flow table -> enrich -> outputs.

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::{
    cli::RunArgs,
    datapath::{Attachments, Datapath, DatapathConfig, ProgramPair},
    dns::{DnsNames, DnsStage, SharedNames},
    drop_reasons::{self, DropReasons},
    drop_scope::DropScope,
    enrich::Enrichers,
    flow_table::FlowTable,
    health::Health,
    hubble_api::{peer::ClusterNodes, server::GrpcServer},
    interfaces::{self, InterfaceSelector},
    kubernetes::{FirstList, Kubernetes},
    metrics::Metrics,
    metrics_server,
    output::Outputs,
    pipeline::Pipeline,
    privileges,
    record::RecordBuilder,
    ringbuf::EventReader,
    settings::{CaptureSettings, Settings},
    side_services::SideServices,
};

const TICK: Duration = Duration::from_millis(500);
/// How often what trickles into the ring buffer is picked up (see
/// [`Pipeline::drain`]).
const DRAIN: Duration = Duration::from_millis(100);
/// How long the first records wait for the cluster's first full list.
const INITIAL_SYNC: Duration = Duration::from_secs(30);

pub async fn run(args: RunArgs) -> Result<()> {
    let settings = args.settings();
    // Everything that can be wrong with the invocation fails here, before
    // anything is loaded or attached.
    privileges::check()?;
    let selector = InterfaceSelector::new(&settings.capture.interfaces)?;
    selector.check_plain_names_exist(&interfaces::list().context("listing network interfaces")?)?;
    let metrics = Arc::new(Metrics::with_contexts(settings.metrics.contexts()));
    let mut services = SideServices::default();
    let opened_outputs = settings.outputs.open(&metrics).await?;
    let health = Arc::new(Health::default());
    if let Some(address) = settings.metrics.listen {
        services.add(metrics_server::start(address, Arc::clone(&metrics), Arc::clone(&health)).await?);
    }
    metrics
        .kernel_flow_capacity
        .set(i64::from(settings.capture.flow_map_entries));
    // Before anything is loaded: with --kubernetes on, an unreachable API
    // server stops hubcap here.
    let kubernetes = Kubernetes::start(&settings.kubernetes, &metrics).context("Kubernetes")?;
    let (mut datapath, drop_scope, drop_reasons) = load_datapath(&settings.capture)?;
    let reader = EventReader::new(datapath.take_events().expect("ring buffer taken once"))
        .context("watching the ring buffer")?;
    let builder = Arc::new(RecordBuilder {
        node_name: settings.node_name.clone(),
        drop_reasons,
    });
    let mut enrichers = Enrichers::none();
    let names = SharedNames::default();
    if settings.capture.dns {
        enrichers.push(DnsNames(Arc::clone(&names)));
    }
    let mut first_list = None;
    let mut cluster_nodes = None;
    if let Some(k) = kubernetes {
        enrichers.push(k.enricher());
        first_list = Some(k.first_list());
        cluster_nodes = Some(Arc::new(k.agent_nodes()) as ClusterNodes);
        services.add(k);
    }
    let mut outputs = Outputs::new(Arc::clone(&builder), enrichers);
    opened_outputs.into_iter().for_each(|o| outputs.add_boxed(o));
    // Last before capture, so that no failure above leaves a socket behind
    // (a busy socket still fails before anything is attached).
    if settings.grpc.is_enabled() {
        let (server, feed) =
            GrpcServer::start(&settings.grpc, builder, &metrics, cluster_nodes).context("starting the Observer API")?;
        outputs.add(feed);
        services.add(server);
    }
    let mut pipeline = Pipeline::new(reader, FlowTable::new(settings.table), outputs, Arc::clone(&metrics));
    if let Some(ring) = datapath.take_dns_events() {
        pipeline = pipeline.with_dns(DnsStage::new(ring, names, &metrics).context("watching the DNS ring buffer")?);
    }
    let mut agent = Agent {
        attachments: Attachments::new(settings.capture.attach_mode, ProgramPair::CAPTURE),
        pipeline,
        datapath,
        selector,
        drop_scope,
        metrics,
        health,
    };
    let result = agent.capture(&settings, first_list).await;
    // Whatever happened, take the programs off the interfaces and write out
    // every open flow.
    let shutdown = agent.shutdown();
    services.stop_all();
    result.and(shutdown)
}

/// Loads the programs and maps, with drop capture where the kernel and
/// `--drop-reasons` allow it.
fn load_datapath(capture: &CaptureSettings) -> Result<(Datapath, Option<DropScope>, DropReasons)> {
    let (drops, drop_reasons) = drop_reasons::prepare_capture(&capture.drop_reasons).context("drop capture")?;
    let datapath = Datapath::load(DatapathConfig {
        report_interval_ns: capture.report_interval.as_nanos() as u64,
        flow_map_entries: capture.flow_map_entries,
        ring_buffer_bytes: capture.ring_buffer_bytes,
        drops,
        dns_ring_bytes: capture.dns.then_some(capture.dns_ring_bytes),
    })?;
    if drops.is_some() {
        info!(reasons = %capture.drop_reasons, "drop capture on (kfree_skb)");
    }
    // Loading parsed the kernel's BTF (several MB); give that heap back
    // instead of carrying it for the agent's lifetime.
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
    let drop_scope = match &drops {
        Some(capture) => Some(DropScope::new(capture.layout.own_netns_inum).context("opening a netlink socket")?),
        None => None,
    };
    Ok((datapath, drop_scope, drop_reasons))
}

/// The capture loop's state: the kernel side, where it is attached, and
/// the data path.
struct Agent {
    datapath: Datapath,
    attachments: Attachments,
    /// Which interfaces to attach to.
    selector: InterfaceSelector,
    /// Whose drops are reported (with drop capture on).
    drop_scope: Option<DropScope>,
    pipeline: Pipeline,
    metrics: Arc<Metrics>,
    /// What the probes see.
    health: Arc<Health>,
}

impl Agent {
    async fn capture(&mut self, settings: &Settings, first_list: Option<FirstList>) -> Result<()> {
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
        if let Some(first_list) = first_list {
            // Records written before the first full list would be
            // anonymous; the kernel keeps counting meanwhile.
            if first_list.wait(INITIAL_SYNC).await {
                info!("Kubernetes metadata listed");
            } else {
                warn!(timeout = ?INITIAL_SYNC, "Kubernetes metadata not listed in time: early records may lack identities");
            }
        }
        self.health.capturing();
        let report_interval = settings.capture.report_interval;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_sweep = tokio::time::Instant::now() + report_interval;
        let mut drain = tokio::time::interval(DRAIN);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sigint.recv() => { info!("SIGINT: stopping"); break }
                _ = sigterm.recv() => { info!("SIGTERM: stopping"); break }
                batch = self.pipeline.next_batch() => batch?,
                _ = drain.tick() => self.pipeline.drain()?,
                _ = tick.tick() => {
                    self.health.tick();
                    self.sync_interfaces()?;
                    let sweep = tokio::time::Instant::now() >= next_sweep;
                    if sweep {
                        next_sweep += report_interval;
                    }
                    let datapath = &mut self.datapath;
                    self.pipeline.maintain(&mut datapath.flows, &datapath.counters, sweep)?;
                    self.pipeline.publish_gauges();
                    self.metrics.attached_interfaces.set(self.attachments.len() as i64);
                }
            }
        }
        Ok(())
    }

    /// Attaches to matching interfaces that appeared, forgets vanished ones.
    fn sync_interfaces(&mut self) -> Result<()> {
        let present = interfaces::list().context("listing network interfaces")?;
        let attached_before = self.attachments.len();
        for iface in &present {
            // Every interface is named, not only captured ones: drops can
            // happen on any of them.
            self.pipeline.learn_interface(iface.index, &iface.name, iface.kind);
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
            self.attachments.publish(&self.metrics.attachments);
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

    /// Detach first so the counts stop moving, then the pipeline writes out
    /// what is left.
    fn shutdown(&mut self) -> Result<()> {
        self.attachments.detach_all();
        self.attachments.publish(&self.metrics.attachments);
        self.datapath.detach_drops();
        let datapath = &mut self.datapath;
        self.pipeline.finish(&mut datapath.flows, &datapath.counters)
    }
}
