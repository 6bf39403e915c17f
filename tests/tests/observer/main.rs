//! Hubble's Observer API over the agent's real unix socket, called with the
//! generated gRPC clients as Hubble's tools call it, and `hubcap observe`
//! against the agent and its file.
//!
//! Every case reads one captured run (`fixture`), made once on first use,
//! and is reported on its own, so one failure hides no other. The cases run
//! in the order listed: those that send new traffic or stop the agent come
//! last.

mod filters;
mod fixture;
mod lifecycle;
mod observe_cli;
mod queries;

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{Arc, OnceLock},
};

use fixture::Fixture;
use libtest_mimic::{Arguments, Failed, Trial};

/// The captured run, or why it could not be made.
type Shared = Arc<OnceLock<Result<Fixture, String>>>;

fn fixture(shared: &Shared) -> Result<&Fixture, Failed> {
    shared
        .get_or_init(|| {
            hubcap_tests::require_root();
            catch_unwind(AssertUnwindSafe(Fixture::capture)).map_err(|panic| {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                format!("the captured run failed: {why}")
            })
        })
        .as_ref()
        .map_err(|why| Failed::from(why.as_str()))
}

fn case(shared: &Shared, name: &str, check: impl FnOnce(&Fixture) + Send + 'static) -> Trial {
    let shared = Arc::clone(shared);
    Trial::test(name, move || {
        check(fixture(&shared)?);
        Ok(())
    })
}

fn main() {
    let mut args = Arguments::from_args();
    // In order: later cases change what earlier ones read.
    args.test_threads = Some(1);
    let shared: Shared = Arc::default();
    let mut trials = Vec::new();
    for &(name, check) in queries::CASES {
        trials.push(case(&shared, name, check));
    }
    for &(name, selection) in filters::CASES {
        trials.push(case(&shared, &format!("filter::{name}"), move |f| {
            filters::check(f, name, selection)
        }));
    }
    for &(name, flags) in observe_cli::LIVE_VS_FILE {
        trials.push(case(&shared, &format!("observe::{name}"), move |f| {
            observe_cli::live_vs_file(f, flags)
        }));
    }
    trials.extend([
        case(
            &shared,
            "observe::file_read_back_byte_for_byte",
            observe_cli::file_read_back_byte_for_byte,
        ),
        case(
            &shared,
            "observe::stdin_read_back_byte_for_byte",
            observe_cli::stdin_read_back_byte_for_byte,
        ),
        case(
            &shared,
            "observe::compact_line_has_counts",
            observe_cli::compact_line_has_counts,
        ),
        case(
            &shared,
            "observe::follow_prints_new_flows",
            observe_cli::follow_prints_new_flows,
        ),
        case(
            &shared,
            "socket::second_agent_is_refused",
            lifecycle::second_agent_on_the_socket_is_refused,
        ),
        case(
            &shared,
            "socket::exit_ends_open_follow_streams",
            lifecycle::exit_ends_open_follow_streams,
        ),
    ]);
    let conclusion = libtest_mimic::run(&args, trials);
    // Every trial (and its handle on the run) is gone: the run's namespaces,
    // agent and files go now, before the process exits.
    drop(shared);
    conclusion.exit();
}
