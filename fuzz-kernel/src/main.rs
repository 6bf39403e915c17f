//! Differential fuzzing of hubcap's tc programs: generated and mutated
//! packets go through the loaded programs with `BPF_PROG_TEST_RUN`, and the
//! kernel's flow map, ring-buffer events and counters must equal what the
//! host build of the same parser and aggregation rules computes, and so
//! must every DNS payload the programs hand over, byte for byte. Every
//! packet must come back unchanged with "continue".
//!
//! Run by `cargo xtask fuzz` (root: it loads BPF programs).

mod compare;
mod kernel;
mod model;
mod packets;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use agent_common::{EGRESS_PROGRAM, INGRESS_PROGRAM, hook};
use anyhow::{Context, Result, bail};
use clap::Parser;

use kernel::Kernel;
use model::{Model, Outcome};
use packets::{Generator, Kind};

#[derive(Parser, Debug)]
#[command(about = "Differential fuzzing of hubcap's tc programs through BPF_PROG_TEST_RUN")]
struct Args {
    /// Packets to run through the programs (inputs the test harness
    /// refuses do not count).
    #[arg(long, default_value_t = 10_000_000)]
    packets: u64,
    /// Seed of the packet generator (default: from the clock; printed, so a
    /// failing run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Packets between comparisons of the whole kernel state.
    #[arg(long, default_value_t = 4096)]
    batch: usize,
    /// Size of each flow map (IPv4, IPv6): smaller than a batch's flows of
    /// one family so some batches fill it and the map-full accounting is
    /// compared too.
    #[arg(long, default_value_t = 1024)]
    flow_map_entries: u32,
    /// Where a failing input is written (its bytes, and a hex dump).
    #[arg(long, default_value = "target/fuzz-kernel")]
    failures: PathBuf,
    /// Writes the run's figures here as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// One input and the program it went through.
struct Input {
    kind: Kind,
    hook: u8,
    bytes: Vec<u8>,
}

impl Input {
    fn program(&self) -> &'static str {
        if self.hook == hook::INGRESS {
            INGRESS_PROGRAM
        } else {
            EGRESS_PROGRAM
        }
    }
}

#[derive(Default)]
struct Tally {
    /// Inputs made, and those the test harness refused (see
    /// [`kernel::refused`]); `packets` ran.
    generated: u64,
    refused: u64,
    packets: u64,
    bytes: u64,
    kinds: BTreeMap<String, u64>,
    outcomes: BTreeMap<String, u64>,
    /// Packets counted in kernel flows, and packets that found the map full.
    in_flows: u64,
    map_full: u64,
    events: u64,
    /// DNS packets handed over, compared byte for byte.
    dns: u64,
    batches_with_full_map: u64,
    kernel_time: Duration,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.batch == 0 || args.packets == 0 {
        bail!("--batch and --packets must be at least 1");
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    // Room for every event of a batch (at most two per packet), so none is
    // lost to a full ring and events can be compared one by one.
    let ring_bytes = ((args.batch * 2 * 160).next_power_of_two() as u32).max(1 << 16);
    // And for every DNS packet of a batch (a header and at most 1232 bytes).
    let dns_ring_bytes = (args.batch * (8 + size_of::<agent_common::DnsEvent>())).next_power_of_two() as u32;
    let mut kernel = Kernel::load(args.flow_map_entries, ring_bytes, dns_ring_bytes)?;
    let ifindex = nix::net::if_::if_nametoindex("lo").context("the loopback's ifindex")?;
    let mut model = Model::new(args.flow_map_entries, ifindex);
    let mut generator = Generator::new(seed);
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let mut tally = Tally::default();
    println!(
        "fuzzing hubcap's tc programs: {} packets, seed {seed}, {} per comparison, flow map of {}",
        args.packets, args.batch, args.flow_map_entries
    );

    let started = Instant::now();
    let mut last_progress = Instant::now();
    while tally.packets < args.packets {
        let count = args.batch.min((args.packets - tally.packets) as usize);
        let batch: Vec<Input> = (0..count)
            .map(|_| {
                let (kind, bytes) = generator.next();
                let hook = if rng.bool() { hook::INGRESS } else { hook::EGRESS };
                Input { kind, hook, bytes }
            })
            .collect();
        if let Err(e) = run_batch(&mut kernel, &mut model, &batch, &mut tally) {
            let culprit = find_culprit(&mut kernel, &mut model, &batch)?;
            save_failure(&args.failures, seed, culprit)?;
            bail!("{e}\nfirst failing input: {}", culprit.describe());
        }
        if last_progress.elapsed() > Duration::from_secs(10) {
            last_progress = Instant::now();
            println!(
                "  {} packets, {:.0} per second",
                tally.packets,
                tally.packets as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    report(&args, seed, &tally, started.elapsed())
}

/// Runs a batch through kernel and model and compares everything.
fn run_batch(kernel: &mut Kernel, model: &mut Model, batch: &[Input], tally: &mut Tally) -> Result<()> {
    tally.generated += batch.len() as u64;
    let before = kernel.counters()?;
    let started = Instant::now();
    let mut ran = Vec::with_capacity(batch.len());
    for input in batch {
        if kernel
            .run(input.program(), &input.bytes)
            .map_err(|f| anyhow::anyhow!("{f}: {}", input.describe()))?
        {
            ran.push(input);
        } else {
            tally.refused += 1;
        }
    }
    tally.kernel_time += started.elapsed();
    let batch = ran;
    for input in &batch {
        model.account(input.hook, &input.bytes);
        *tally.kinds.entry(format!("{:?}", input.kind)).or_default() += 1;
        *tally
            .outcomes
            .entry(format!("{:?}", model::outcome(&input.bytes)))
            .or_default() += 1;
        tally.packets += 1;
        tally.bytes += input.bytes.len() as u64;
    }
    let grew = kernel.counters()?.since(&before);
    let flows = kernel.take_flows()?;
    let events = kernel.take_events();
    let dns = kernel.take_dns();
    let mismatch = compare::flows(&flows, &model.maps)
        .or_else(|| compare::events(&events, &model.maps.events))
        .or_else(|| compare::dns(&dns, &model.dns))
        .or_else(|| compare::counters(&grew, &model.maps));
    if let Some(what) = mismatch {
        bail!("kernel and model disagree: {what}");
    }
    if kernel.malformed_events != 0 || kernel.malformed_dns != 0 {
        bail!(
            "{} flow and {} DNS ring-buffer records of the wrong size",
            kernel.malformed_events,
            kernel.malformed_dns
        );
    }
    tally.dns += dns.len() as u64;
    // Every packet is somewhere: in a flow, or in the counter that says why not.
    let in_flows: u64 = flows.values().map(|s| s.packets).sum();
    let map_full = grew.get(agent_common::Counter::MapFullPackets);
    let outside = grew.get(agent_common::Counter::NonIpPackets)
        + grew.get(agent_common::Counter::MalformedPackets)
        + batch
            .iter()
            .filter(|i| model::outcome(&i.bytes) == Outcome::Truncated)
            .count() as u64;
    if in_flows + map_full + outside != batch.len() as u64 {
        bail!(
            "accounting: {in_flows} in flows + {map_full} map full + {outside} outside flows != {} packets",
            batch.len()
        );
    }
    tally.in_flows += in_flows;
    tally.map_full += map_full;
    tally.batches_with_full_map += u64::from(map_full > 0);
    tally.events += events.len() as u64;
    model.reset();
    Ok(())
}

/// Replays a failing batch one packet at a time, comparing after each, and
/// returns the first input after which kernel and model differ.
fn find_culprit<'a>(kernel: &mut Kernel, model: &mut Model, batch: &'a [Input]) -> Result<&'a Input> {
    kernel.take_flows()?;
    kernel.take_events();
    kernel.take_dns();
    model.reset();
    let mut events = Vec::new();
    let mut dns = Vec::new();
    let before = kernel.counters()?;
    for input in batch {
        let ran = kernel.run(input.program(), &input.bytes);
        if matches!(ran, Ok(false)) {
            continue;
        }
        model.account(input.hook, &input.bytes);
        events.extend(kernel.take_events());
        dns.extend(kernel.take_dns());
        let grew = kernel.counters()?.since(&before);
        let flows = kernel.flows()?;
        if ran.is_err()
            || compare::flows(&flows, &model.maps)
                .or_else(|| compare::events(&events, &model.maps.events))
                .or_else(|| compare::dns(&dns, &model.dns))
                .or_else(|| compare::counters(&grew, &model.maps))
                .is_some()
        {
            return Ok(input);
        }
    }
    bail!("the batch failed as a whole but no single input differs on replay (state carried between batches?)")
}

impl Input {
    fn describe(&self) -> String {
        let hex: String = self.bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{:?} packet of {} bytes on {}: {hex}",
            self.kind,
            self.bytes.len(),
            self.program()
        )
    }
}

fn save_failure(dir: &PathBuf, seed: u64, input: &Input) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("failure-seed-{seed}.bin"));
    std::fs::write(&path, &input.bytes).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("failing input written to {}", path.display());
    Ok(())
}

fn report(args: &Args, seed: u64, tally: &Tally, took: Duration) -> Result<()> {
    let per_run_ns = tally.kernel_time.as_nanos() as f64 / tally.packets as f64;
    println!(
        "{} packets ({} bytes) in {:.1} s: kernel and model agreed on every flow, event and counter; \
         every packet came back unchanged with TC_ACT_UNSPEC",
        tally.packets,
        tally.bytes,
        took.as_secs_f64()
    );
    println!(
        "  {} of {} inputs ran; {} refused by BPF_PROG_TEST_RUN (IPv4/IPv6 frames shorter than that header)",
        tally.packets, tally.generated, tally.refused
    );
    println!(
        "  {} in flows, {} found the map full ({} batches), {} events, {} DNS packets handed over; {:.0} ns per test run",
        tally.in_flows, tally.map_full, tally.batches_with_full_map, tally.events, tally.dns, per_run_ns
    );
    println!("  inputs: {:?}", tally.kinds);
    println!("  parse outcomes: {:?}", tally.outcomes);
    if let Some(path) = &args.report {
        let json = serde_json::json!({
            "seed": seed,
            "generated": tally.generated,
            "refused_by_test_run": tally.refused,
            "packets": tally.packets,
            "bytes": tally.bytes,
            "seconds": took.as_secs_f64(),
            "in_flows": tally.in_flows,
            "map_full": tally.map_full,
            "batches_with_full_map": tally.batches_with_full_map,
            "events": tally.events,
            "dns_packets": tally.dns,
            "ns_per_test_run": per_run_ns,
            "inputs": tally.kinds,
            "outcomes": tally.outcomes,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
