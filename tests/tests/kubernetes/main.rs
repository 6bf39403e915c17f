//! Kubernetes identities on flows, judged against a real API server and
//! controller manager (every case over one captured run, `fixture`).

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
    run.run(trials)
}
