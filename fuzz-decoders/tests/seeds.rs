//! Every input in fuzz/seeds/<target>/ (the starting corpus, and each
//! crash libFuzzer found, kept so it stays fixed) through its target.

#[test]
fn every_seed_and_past_crash_runs_through_its_target_without_panicking() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    for (target, run) in hubcap_fuzz_decoders::TARGETS {
        let dir = seeds.join(target);
        let inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        assert!(!inputs.is_empty(), "no seeds for {target}");
        for input in inputs {
            println!("{target}: {}", input.display());
            run(&std::fs::read(&input).unwrap());
        }
    }
}
