//! `hubcap attach-noop` (hidden): the benchmark's trivial classifier,
//! attached exactly as capture would be, doing nothing.

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use crate::{
    cli::NoopArgs,
    datapath::{Attachments, Datapath, DatapathConfig, ProgramPair},
    interfaces::{self, InterfaceSelector},
    privileges,
};

pub async fn run(args: NoopArgs) -> Result<()> {
    privileges::check()?;
    let selector = InterfaceSelector::new(&args.interfaces)?;
    let present = interfaces::list().context("listing network interfaces")?;
    selector.check_plain_names_exist(&present)?;
    let mut datapath = Datapath::load(DatapathConfig {
        report_interval_ns: u64::MAX,
        flow_map_entries: 1024,
        ring_buffer_bytes: 1 << 20,
        drops: None,
        dns_ring_bytes: None,
    })?;
    let mut attachments = Attachments::new(args.attach_mode, ProgramPair::NOOP);
    for iface in present.iter().filter(|i| selector.matches(i)) {
        attachments.attach(&mut datapath, iface.index, &iface.name)?;
    }
    info!(interfaces = attachments.len(), "capturing (no-op classifier)");
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    attachments.detach_all();
    Ok(())
}
