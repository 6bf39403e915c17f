//! Loads the eBPF object embedded at build time.

use std::collections::HashSet;

use agent_common::{
    COUNTERS_MAP, DNS_CAPTURE_GLOBAL, DNS_EVENTS_MAP, DROP_FILTER_GLOBAL, DROP_PROGRAM, DROP_SCOPE_MAP, DropFilter,
    EGRESS_PROGRAM, EVENTS_MAP, FLOWS_MAP, FLOWS4_MAP, FlowStats, INGRESS_PROGRAM, NOOP_PROGRAM,
    REPORT_INTERVAL_GLOBAL, SKB_LAYOUT_GLOBAL, SkbLayout,
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, SchedClassifier},
};

use super::{
    counters::KernelCounters,
    kernel_flows::{FlowMapHalf, KernelFlowMap, dup_fd},
};

/// The object `agent/build.rs` built from `agent-ebpf`; empty when the eBPF
/// toolchain was missing at build time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hubcap-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "this hubcap binary was built without its eBPF programs (the eBPF toolchain was missing); \
         build it with `cargo xtask run`, which installs the toolchain"
    )]
    NoObject,
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the kernel rejected program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error("reading the kernel's BTF for the drop program: {0}")]
    Btf(#[from] aya::BtfError),
}

/// What the drop program needs at load time.
#[derive(Clone, Copy, Debug)]
pub struct DropCapture {
    pub layout: agent_common::SkbLayout,
    pub filter: agent_common::DropFilter,
}

#[derive(Clone, Debug)]
pub struct DatapathConfig {
    pub report_interval_ns: u64,
    /// Flow map capacity (flow directions).
    pub flow_map_entries: u32,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// `None`: no drop capture (kernel without drop reasons, or turned off).
    pub drops: Option<DropCapture>,
    /// The DNS ring buffer's size (a power of two, multiple of the page
    /// size); `None`: DNS is not handed over (`--dns off`).
    pub dns_ring_bytes: Option<u32>,
}

/// The smallest ring buffer the kernel takes (one page on x86-64 and arm64
/// with 4 KiB pages).
const PAGE_BYTES: u32 = 4096;

/// The loaded programs and the maps user space reads.
pub struct Datapath {
    pub(super) ebpf: Ebpf,
    pub flows: KernelFlowMap,
    pub counters: KernelCounters,
    events: Option<RingBuf<MapData>>,
    dns_events: Option<RingBuf<MapData>>,
    /// The drop program's scope, and the keys it holds now.
    drop_scope: HashMap<MapData, u64, u8>,
    drop_scope_keys: HashSet<u64>,
    pub config: DatapathConfig,
    drop_link: Option<aya::programs::tp_btf::BtfTracePointLinkId>,
}

impl Datapath {
    pub fn load(config: DatapathConfig) -> Result<Self, DatapathError> {
        if OBJECT.is_empty() {
            return Err(DatapathError::NoObject);
        }
        let drops = config.drops.unwrap_or(DropCapture {
            layout: SkbLayout::ZERO,
            filter: DropFilter::NONE,
        });
        let dns_capture = u8::from(config.dns_ring_bytes.is_some());
        let mut ebpf = EbpfLoader::new()
            .override_global(REPORT_INTERVAL_GLOBAL, &config.report_interval_ns, true)
            .override_global(DNS_CAPTURE_GLOBAL, &dns_capture, true)
            .override_global(SKB_LAYOUT_GLOBAL, &drops.layout, true)
            .override_global(DROP_FILTER_GLOBAL, &drops.filter, true)
            .map_max_entries(FLOWS_MAP, config.flow_map_entries)
            .map_max_entries(FLOWS4_MAP, config.flow_map_entries)
            .map_max_entries(EVENTS_MAP, config.ring_buffer_bytes)
            // Off, the DNS ring takes one page.
            .map_max_entries(DNS_EVENTS_MAP, config.dns_ring_bytes.unwrap_or(PAGE_BYTES))
            .load(OBJECT)?;
        for name in [INGRESS_PROGRAM, EGRESS_PROGRAM, NOOP_PROGRAM] {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(DatapathError::Missing(name))?
                .try_into()
                .map_err(|source| DatapathError::Program { name, source })?;
            program
                .load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        let flows = KernelFlowMap {
            v4: take_map(&mut ebpf, FLOWS4_MAP, flow_map_half)?,
            v6: take_map(&mut ebpf, FLOWS_MAP, flow_map_half)?,
        };
        let events = take_map(&mut ebpf, EVENTS_MAP, RingBuf::try_from)?;
        let dns_events = take_map(&mut ebpf, DNS_EVENTS_MAP, RingBuf::try_from)?;
        let counters = KernelCounters::new(take_map(&mut ebpf, COUNTERS_MAP, PerCpuArray::try_from)?);
        let drop_scope = take_map(&mut ebpf, DROP_SCOPE_MAP, HashMap::try_from)?;
        let mut datapath = Datapath {
            ebpf,
            flows,
            counters,
            events: Some(events),
            dns_events: config.dns_ring_bytes.map(|_| dns_events),
            drop_scope,
            drop_scope_keys: HashSet::new(),
            config,
            drop_link: None,
        };
        if datapath.config.drops.is_some() {
            datapath.attach_drops()?;
        }
        Ok(datapath)
    }

    fn attach_drops(&mut self) -> Result<(), DatapathError> {
        let btf = aya::Btf::from_sys_fs()?;
        let name = DROP_PROGRAM;
        let program: &mut BtfTracePoint = self
            .ebpf
            .program_mut(name)
            .ok_or(DatapathError::Missing(name))?
            .try_into()
            .map_err(|source| DatapathError::Program { name, source })?;
        program
            .load("kfree_skb", &btf)
            .map_err(|source| DatapathError::Program { name, source })?;
        self.drop_link = Some(
            program
                .attach()
                .map_err(|source| DatapathError::Program { name, source })?,
        );
        Ok(())
    }

    /// Stops drop capture (at shutdown, before the final read of the map).
    pub fn detach_drops(&mut self) {
        if let Some(link) = self.drop_link.take()
            && let Some(program) = self.ebpf.program_mut(DROP_PROGRAM)
            && let Ok(program) = <&mut BtfTracePoint>::try_from(program)
        {
            let _ = program.detach(link);
        }
    }

    /// Sets which devices' drops are reported (keys from
    /// `agent_common::drop_scope_key`), changing only what changed.
    pub fn set_drop_scope(&mut self, keys: HashSet<u64>) -> Result<(), DatapathError> {
        let map_error = |source| DatapathError::Map {
            name: DROP_SCOPE_MAP,
            source,
        };
        for gone in self.drop_scope_keys.difference(&keys) {
            self.drop_scope.remove(gone).map_err(map_error)?;
        }
        for new in keys.difference(&self.drop_scope_keys) {
            self.drop_scope.insert(new, 1, 0).map_err(map_error)?;
        }
        self.drop_scope_keys = keys;
        Ok(())
    }

    /// The ring buffer, handed once to the reader stage.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// The DNS ring buffer (with DNS on), handed once to the DNS stage.
    pub fn take_dns_events(&mut self) -> Option<RingBuf<MapData>> {
        self.dns_events.take()
    }

    /// Runs tc program `name` once on `packet` through `BPF_PROG_TEST_RUN`,
    /// with no interface involved (the kernel hands the program a loopback
    /// skb holding the bytes). `out` receives the packet as the program left
    /// it. For the kernel fuzzer and tests: it counts into the real maps.
    pub fn test_run(
        &mut self,
        name: &'static str,
        packet: &[u8],
        out: &mut [u8],
    ) -> Result<aya::programs::TestRunResult, aya::programs::ProgramError> {
        use aya::programs::TestRun as _;
        self.program(name).test_run(aya::programs::TestRunOptions {
            data_in: Some(packet),
            data_out: Some(out),
            ..Default::default()
        })
    }

    pub(super) fn program(&mut self, name: &'static str) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .expect("programs were checked at load")
    }
}

/// One flow map, with its own fd for the batch syscalls.
fn flow_map_half<K: aya::Pod + Default>(map: aya::maps::Map) -> Result<FlowMapHalf<K>, aya::maps::MapError> {
    let fd = match &map {
        aya::maps::Map::HashMap(data) => dup_fd(data)
            .map_err(|io_error| aya::maps::MapError::SyscallError(aya::sys::SyscallError { call: "dup", io_error }))?,
        _ => return Err(aya::maps::MapError::InvalidMapType { map_type: 0 }),
    };
    HashMap::<MapData, K, FlowStats>::try_from(map).map(|m| FlowMapHalf::new(m, fd))
}

fn take_map<T>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, DatapathError> {
    let map = ebpf.take_map(name).ok_or(DatapathError::Missing(name))?;
    convert(map).map_err(|source| DatapathError::Map { name, source })
}
