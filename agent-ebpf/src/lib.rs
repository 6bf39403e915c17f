//! Kernel-side logic that does not touch kernel helpers, so it also builds
//! and is unit-tested on the host: the packet parser and the aggregation
//! rules, and which payloads go to user space as DNS.
#![cfg_attr(target_arch = "bpf", no_std)]
// The BPF target has no compare-and-swap, so core's Atomic*::fetch_add is
// missing; the intrinsic lowers to the BPF atomic add instruction.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

pub mod aggregate;
pub mod dns_payload;
pub mod parse;
pub mod ring_wakeup;
