fn main() {
    // Lets `#[cfg(bpf_target_arch = ...)]` in aya-ebpf resolve on the host too.
    aya_build::emit_bpf_target_arch_cfg().expect("emit bpf_target_arch cfg");
}
