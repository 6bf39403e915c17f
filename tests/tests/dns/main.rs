//! DNS records judged by real DNS tools: dnsmasq serving a test zone in one
//! pod, `dig` asking from another, the real `hubble` CLI reading hubcap's
//! Observer API; every case over one captured run (`fixture`).

mod cases;
mod dns_off;
mod fixture;

use fixture::DnsRun;
use hubcap_tests::harness::Shared;

fn main() {
    let run = Shared::new(DnsRun::capture);
    let mut trials: Vec<_> = cases::CASES
        .iter()
        .map(|&(name, check)| run.case(name, check))
        .collect();
    // Its own node and agent.
    trials.push(libtest_mimic::Trial::test(
        "dns_off_hands_nothing_over_and_counts_every_packet",
        || {
            dns_off::dns_off_hands_nothing_over_and_counts_every_packet();
            Ok(())
        },
    ));
    run.run(trials)
}
