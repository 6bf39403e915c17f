//! DNS records judged by real DNS tools: dnsmasq serving a test zone in one
//! pod, `dig` asking from another, the real `hubble` CLI reading hubcap's
//! Observer API; every case over one captured run (`fixture`).

mod cases;
mod fixture;

use fixture::DnsRun;
use hubcap_tests::harness::Shared;

fn main() {
    let run = Shared::new(DnsRun::capture);
    let trials = cases::CASES
        .iter()
        .map(|&(name, check)| run.case(name, check))
        .collect();
    run.run(trials)
}
