//! `hubcap observe`: a client like `hubble observe`. It asks an agent's
//! Observer API for flows (or reads Hubble JSON from a file or stdin) and
//! prints them compact, as JSON lines, or as a table.

pub mod args;
pub mod print;
pub mod source;

use anyhow::{Context as _, Result};
use tracing::warn;

pub use args::ObserveArgs;
use print::Printer;

pub async fn run(args: ObserveArgs) -> Result<()> {
    let request = args.request().map_err(anyhow::Error::msg)?;
    // Print each flow as it comes when following or reading stdin (which
    // may be `tail -f`); otherwise hold a table until it can be aligned.
    let streaming = request.follow || args.input_file.as_deref() == Some(std::path::Path::new("-"));
    let stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printer = Printer::new(stdout, args.output, args.print_node_name, streaming);
    if let Some(path) = &args.input_file {
        let skipped = source::read_file(path, &request, |r| Ok(printer.print(r)?)).await?;
        if skipped > 0 {
            warn!(skipped, "lines that were not Hubble JSON were skipped");
        }
        return Ok(printer.finish()?);
    }
    let mut client = source::connect(&args).await?;
    let mut stream = client
        .get_flows(request)
        .await
        .with_context(|| format!("GetFlows on {}", args.server))?
        .into_inner();
    loop {
        tokio::select! {
            message = stream.message() => {
                match message.context("reading flows")? {
                    Some(response) => printer.print(&response)?,
                    None => break,
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(printer.finish()?)
}
