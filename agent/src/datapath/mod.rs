//! The kernel side as user space sees it: the embedded eBPF object, its
//! maps, and the programs' attachments to interfaces.

mod attach;
pub mod btf;
mod counters;
mod kernel_flows;
mod load;
mod tc_owners;

pub use attach::{AttachMode, Attachments, ProgramPair};
pub use counters::{CounterValues, KernelCounters};
pub use kernel_flows::KernelFlowMap;
pub use load::{Datapath, DatapathConfig, DatapathError, DropCapture};
