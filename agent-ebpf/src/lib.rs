//! Kernel-side logic that does not touch kernel helpers, so it also builds
//! and is unit-tested on the host.
#![cfg_attr(not(test), no_std)]

pub mod parse;
