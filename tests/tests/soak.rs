//! A one-minute soak (`cargo xtask soak --minutes N` runs longer ones):
//! churn, transfers and a steady stream at once; afterwards hubcap's records
//! hold exactly the veths' packets and bytes, and nothing was lost.

use std::time::Duration;

use hubcap_tests::{
    require_root,
    soak::{SoakConfig, run},
};

#[test]
fn a_minute_of_churn_is_accounted_exactly_with_no_losses() {
    require_root();
    let report = run(SoakConfig {
        duration: Duration::from_secs(60),
        sample_every: Duration::from_secs(15),
    });
    println!("{}", report.markdown());
    assert!(report.exit_ok, "hubcap exits cleanly");
    assert_eq!(
        (report.recorded_packets, report.recorded_bytes),
        (report.kernel_packets, report.kernel_bytes),
        "records hold exactly the veths' traffic"
    );
    assert_eq!(report.total_losses(), 0, "{:?}", report.losses);
    assert!(report.flows_started > 1000, "churn ran: {} flows", report.flows_started);
    assert!(
        report.traffic_failures * 100 < report.flows_started,
        "the traffic generator mostly worked: {} failures",
        report.traffic_failures
    );
    assert_eq!(report.samples.len(), 4);
    assert!(report.samples.iter().all(|s| s.rss_kib > 0 && s.records_written > 0));
}
