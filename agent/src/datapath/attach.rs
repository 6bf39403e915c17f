//! Attaching the tc programs to interfaces, tcx where the kernel has it
//! and clsact otherwise. Our programs always return "continue", so
//! whatever else is attached keeps working.

use std::collections::HashMap;

use agent_common::{EGRESS_PROGRAM, INGRESS_PROGRAM, NOOP_PROGRAM};
use aya::{
    programs::{
        LinkOrder, ProgramError,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions, TcAttachType},
    },
    util::KernelVersion,
};
use tracing::{debug, info, warn};

use super::Datapath;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// tcx on Linux 6.6 and later, clsact before.
    Auto,
    /// tcx links (Linux 6.6+): multi-program, owned by hubcap's file descriptors.
    Tcx,
    /// A clsact qdisc with direct-action filters (any kernel with eBPF tc).
    Tc,
}

impl AttachMode {
    pub fn resolve(self) -> AttachMode {
        match self {
            AttachMode::Auto => match KernelVersion::current() {
                Ok(v) if v >= KernelVersion::new(6, 6, 0) => AttachMode::Tcx,
                _ => AttachMode::Tc,
            },
            mode => mode,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("attaching to {interface} ({hook}): {source}")]
pub struct AttachError {
    pub interface: String,
    pub hook: &'static str,
    #[source]
    pub source: ProgramError,
}

struct Attachment {
    name: String,
    ingress: SchedClassifierLinkId,
    egress: SchedClassifierLinkId,
}

/// The programs that go on the ingress and egress hooks.
#[derive(Clone, Copy, Debug)]
pub struct ProgramPair {
    pub ingress: &'static str,
    pub egress: &'static str,
}

impl ProgramPair {
    /// Flow capture.
    pub const CAPTURE: ProgramPair = ProgramPair {
        ingress: INGRESS_PROGRAM,
        egress: EGRESS_PROGRAM,
    };
    /// The benchmark's trivial classifier on both hooks.
    pub const NOOP: ProgramPair = ProgramPair {
        ingress: NOOP_PROGRAM,
        egress: NOOP_PROGRAM,
    };
}

/// Which interfaces (by ifindex) carry our programs.
pub struct Attachments {
    mode: AttachMode,
    programs: ProgramPair,
    by_ifindex: HashMap<u32, Attachment>,
}

impl Attachments {
    pub fn new(mode: AttachMode, programs: ProgramPair) -> Self {
        Attachments {
            mode: mode.resolve(),
            programs,
            by_ifindex: HashMap::new(),
        }
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    pub fn contains(&self, ifindex: u32) -> bool {
        self.by_ifindex.contains_key(&ifindex)
    }

    pub fn len(&self) -> usize {
        self.by_ifindex.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ifindex.is_empty()
    }

    pub fn ifindexes(&self) -> Vec<u32> {
        self.by_ifindex.keys().copied().collect()
    }

    pub fn attach(&mut self, datapath: &mut Datapath, ifindex: u32, name: &str) -> Result<(), AttachError> {
        if self.mode == AttachMode::Tc {
            // The qdisc may be there already (another tc user, or us before):
            // that is fine, and any real problem shows in the attach below.
            if let Err(e) = tc::qdisc_add_clsact(name) {
                debug!(interface = name, error = %e, "clsact qdisc not added");
            }
        }
        let ingress = self.attach_one(datapath, name, self.programs.ingress, TcAttachType::Ingress)?;
        let egress = match self.attach_one(datapath, name, self.programs.egress, TcAttachType::Egress) {
            Ok(link) => link,
            Err(e) => {
                let _ = datapath.program(self.programs.ingress).detach(ingress);
                return Err(e);
            }
        };
        info!(interface = name, ifindex, mode = ?self.mode, "attached");
        self.by_ifindex.insert(
            ifindex,
            Attachment {
                name: name.to_owned(),
                ingress,
                egress,
            },
        );
        Ok(())
    }

    fn attach_one(
        &self,
        datapath: &mut Datapath,
        name: &str,
        program: &'static str,
        hook: TcAttachType,
    ) -> Result<SchedClassifierLinkId, AttachError> {
        let options = match self.mode {
            AttachMode::Tcx | AttachMode::Auto => TcAttachOptions::TcxOrder(LinkOrder::default()),
            AttachMode::Tc => TcAttachOptions::Netlink(NlOptions::default()),
        };
        datapath
            .program(program)
            .attach_with_options(name, hook, options)
            .map_err(|source| AttachError {
                interface: name.to_owned(),
                hook: if hook == TcAttachType::Ingress {
                    "ingress"
                } else {
                    "egress"
                },
                source,
            })
    }

    /// Detaches from an interface. One that vanished took our programs with
    /// it, so failures there are expected and only logged.
    pub fn detach(&mut self, datapath: &mut Datapath, ifindex: u32) {
        let Some(a) = self.by_ifindex.remove(&ifindex) else {
            return;
        };
        for (program, link) in [(self.programs.ingress, a.ingress), (self.programs.egress, a.egress)] {
            if let Err(e) = datapath.program(program).detach(link) {
                debug!(interface = a.name, error = %e, "detach (interface probably gone)");
            }
        }
        info!(interface = a.name, ifindex, "detached");
    }

    pub fn detach_all(&mut self, datapath: &mut Datapath) {
        for ifindex in self.ifindexes() {
            self.detach(datapath, ifindex);
        }
        if !self.by_ifindex.is_empty() {
            warn!("some attachments could not be removed");
        }
    }
}
