//! Hubble compatibility judged by Hubble's own tools: the real `hubble`
//! CLI (1.19) and Hubble Relay against a running hubcap, every case over
//! one captured run (`fixture`).

mod cases;
mod fixture;

use fixture::Fixture;
use hubcap_tests::harness::Shared;

fn main() {
    let run = Shared::new(Fixture::capture);
    let mut trials = Vec::new();
    for &(name, check) in cases::CASES {
        trials.push(run.case(name, check));
    }
    for &(name, flags) in cases::OBSERVE {
        trials.push(run.case(&format!("observe::{name}"), move |f| {
            cases::observe_matches_file(f, flags, true)
        }));
    }
    for &(name, flags) in cases::OBSERVE_NONE {
        trials.push(run.case(&format!("observe::{name}"), move |f| {
            cases::observe_matches_file(f, flags, false)
        }));
    }
    trials.push(run.case("observe::follow_prints_new_flows", cases::follow_prints_new_flows));
    run.run(trials)
}
