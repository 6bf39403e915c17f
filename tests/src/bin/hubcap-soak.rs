//! `cargo xtask soak --minutes N`: hubcap under steady traffic and churn for
//! N minutes on a test node, sampled every minute. Fails unless, once the
//! traffic stops, its records hold exactly the veths' packets and bytes,
//! nothing was lost, hubcap exits cleanly and (for runs of 10 minutes or
//! more) its RSS at the end is within 5% of its RSS at minute 5.

use std::time::Duration;

use hubcap_tests::soak::{SoakConfig, run};

fn main() {
    hubcap_tests::require_root();
    let mut minutes: f64 = 30.0;
    let mut report = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--minutes" => minutes = args.next().and_then(|m| m.parse().ok()).expect("--minutes N"),
            "--report" => report = Some(args.next().expect("--report PATH")),
            other => panic!("unknown argument {other} (use --minutes N [--report PATH])"),
        }
    }
    let result = run(SoakConfig {
        duration: Duration::from_secs_f64(minutes * 60.0),
        sample_every: Duration::from_secs(60).min(Duration::from_secs_f64(minutes * 15.0)),
    });
    let markdown = result.markdown();
    println!("\n{markdown}");
    let rss_growth = result.rss_growth_since(Duration::from_secs(5 * 60));
    let mut failures = Vec::new();
    if !result.exact() {
        failures.push("records do not hold exactly the veths' traffic".to_owned());
    }
    if result.total_losses() != 0 {
        failures.push(format!("losses: {:?}", result.losses));
    }
    if !result.exit_ok {
        failures.push("hubcap did not exit cleanly".to_owned());
    }
    match rss_growth {
        Some(growth) if minutes >= 10.0 => {
            println!("RSS at the end against minute 5: {:+.2}%", growth * 100.0);
            if growth.abs() > 0.05 {
                failures.push(format!("RSS moved {:+.2}% since minute 5", growth * 100.0));
            }
        }
        _ => println!("(RSS is judged against minute 5 in runs of 10 minutes or more)"),
    }
    if let Some(path) = report {
        let text = format!(
            "{markdown}\nRSS at the end against minute 5: {}\n",
            rss_growth.map_or("n/a".to_owned(), |g| format!("{:+.2}%", g * 100.0))
        );
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
    if !failures.is_empty() {
        eprintln!("soak failed: {}", failures.join("; "));
        std::process::exit(1);
    }
    println!("soak passed");
}
