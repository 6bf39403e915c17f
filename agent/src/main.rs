use clap::Parser as _;
use hubcap::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    // Large buffers (the flow table's hash arrays, sweep snapshots) are
    // mmap'd and go back to the system when freed. glibc's default raises
    // this threshold after the first such free, after which they stay in the
    // heap for good and RSS only grows. (mimalloc made a DNS record 35%
    // cheaper but kept 56 MB more at idle: RSS is what a node budgets.)
    // SAFETY: mallopt before any other thread exists.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024) };
    let cli = Cli::parse();
    // Logs go to stderr; stdout may be the flow output.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hubcap: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(args) => runtime.block_on(hubcap::agent::run(*args)),
        Command::AttachNoop(args) => runtime.block_on(hubcap::noop::run(args)),
        Command::Observe(args) => runtime.block_on(hubcap::observe::run(*args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubcap: error: {}", hubcap::cli::error_text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
