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

use fixture::Fixture;
use hubcap_tests::harness::Shared;

fn main() {
    let run = Shared::new(Fixture::capture);
    let mut trials = Vec::new();
    for &(name, check) in queries::CASES {
        trials.push(run.case(name, check));
    }
    for &(name, selection) in filters::CASES {
        trials.push(run.case(&format!("filter::{name}"), move |f| filters::check(f, name, selection)));
    }
    for &(name, flags) in observe_cli::LIVE_VS_FILE {
        trials.push(run.case(&format!("observe::{name}"), move |f| {
            observe_cli::live_vs_file(f, flags)
        }));
    }
    trials.extend([
        run.case(
            "observe::file_read_back_byte_for_byte",
            observe_cli::file_read_back_byte_for_byte,
        ),
        run.case(
            "observe::stdin_read_back_byte_for_byte",
            observe_cli::stdin_read_back_byte_for_byte,
        ),
        run.case("observe::compact_line_has_counts", observe_cli::compact_line_has_counts),
        run.case("observe::follow_prints_new_flows", observe_cli::follow_prints_new_flows),
        run.case(
            "socket::second_agent_is_refused",
            lifecycle::second_agent_on_the_socket_is_refused,
        ),
        // Stops the agent: last.
        run.case(
            "socket::exit_ends_open_follow_streams",
            lifecycle::exit_ends_open_follow_streams,
        ),
    ]);
    run.run(trials)
}
