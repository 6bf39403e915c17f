use clap::Parser as _;
use hubcap::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc's malloc: a DNS record is a few dozen small
/// allocations made and freed on one thread, where glibc's free and
/// consolidation took a third of the agent's time; mimalloc also gives
/// freed pages back to the system, so RSS follows the flow table down.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
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
