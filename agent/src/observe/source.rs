//! Where `hubcap observe` gets flows: a server's Observer API (unix socket,
//! TCP, TLS), or Hubble JSON lines from a file or stdin, selected locally
//! with the same semantics the server applies.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use hyper_util::rt::TokioIo;
use prost_reflect::DynamicMessage;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};
use tracing::warn;

use super::args::ObserveArgs;
use crate::{
    filter::FlowSelector,
    hubble::TimeWindow,
    proto::descriptor_pool,
    proto::observer::{
        ExportEvent, GetFlowsRequest, GetFlowsResponse, export_event, get_flows_response::ResponseTypes,
        observer_client::ObserverClient,
    },
};

/// Connects to `unix://PATH` or `HOST:PORT` (with `--tls`, TLS).
pub async fn connect(args: &ObserveArgs) -> Result<ObserverClient<Channel>> {
    Ok(ObserverClient::new(channel(args).await?))
}

/// The connection [`connect`] makes, for other clients (health checks).
pub async fn channel(args: &ObserveArgs) -> Result<Channel> {
    let channel = if let Some(path) = args.server.strip_prefix("unix://") {
        let path = PathBuf::from(path);
        // The URI is required by tonic and unused: the connector dials the socket.
        Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await
            .with_context(|| format!("cannot connect to {}", args.server))?
    } else {
        let host = args.server.trim_start_matches("http://").trim_start_matches("https://");
        let scheme = if args.tls { "https" } else { "http" };
        let mut endpoint =
            Endpoint::from_shared(format!("{scheme}://{host}")).with_context(|| format!("bad --server {host:?}"))?;
        if args.tls {
            endpoint = endpoint.tls_config(client_tls(args)?)?;
        }
        endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {}", args.server))?
    };
    Ok(channel)
}

fn client_tls(args: &ObserveArgs) -> Result<ClientTlsConfig> {
    let read = |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let mut tls = ClientTlsConfig::new();
    for ca in &args.tls_ca_cert_files {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&args.tls_client_cert_file, &args.tls_client_key_file) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(name) = &args.tls_server_name {
        tls = tls.domain_name(name.clone());
    }
    Ok(tls)
}

/// Decodes one Hubble JSON line (an exporter line or a GetFlows response)
/// as protojson. Agent and debug events are not flows: `None`.
pub fn decode_line(line: &str) -> Result<Option<GetFlowsResponse>> {
    let descriptor = descriptor_pool()
        .get_message_by_name("observer.ExportEvent")
        .expect("observer.ExportEvent is in the descriptors");
    let mut de = serde_json::Deserializer::from_str(line);
    let message = DynamicMessage::deserialize(descriptor, &mut de)?;
    de.end()?;
    let event: ExportEvent = message.transcode_to()?;
    let response_types = match event.response_types {
        Some(export_event::ResponseTypes::Flow(flow)) => ResponseTypes::Flow(flow),
        Some(export_event::ResponseTypes::LostEvents(lost)) => ResponseTypes::LostEvents(lost),
        Some(export_event::ResponseTypes::NodeStatus(status)) => ResponseTypes::NodeStatus(status),
        Some(export_event::ResponseTypes::AgentEvent(_) | export_event::ResponseTypes::DebugEvent(_)) | None => {
            return Ok(None);
        }
    };
    Ok(Some(GetFlowsResponse {
        response_types: Some(response_types),
        node_name: event.node_name,
        time: event.time,
    }))
}

/// Applies a GetFlows request to lines read from a file or stdin, handing
/// each selected response to `emit` as soon as it is known: at once without
/// a count or with `first`, at the end of input for `last`. Lines that are
/// not Hubble JSON are skipped with a warning, as `hubble observe` does;
/// returns how many.
pub async fn read_file(
    path: &Path,
    request: &GetFlowsRequest,
    mut emit: impl FnMut(&GetFlowsResponse) -> Result<()>,
) -> Result<u64> {
    if request.follow {
        bail!("--follow needs a server; to follow a file, pipe `tail -f FILE` into --input-file -");
    }
    let selector = FlowSelector::new(&request.whitelist, &request.blacklist)?;
    let window = TimeWindow::new(request.since.as_ref(), request.until.as_ref());
    let reader: Box<dyn tokio::io::AsyncRead + Unpin> = if path == Path::new("-") {
        Box::new(tokio::io::stdin())
    } else {
        Box::new(
            tokio::fs::File::open(path)
                .await
                .with_context(|| format!("cannot read {}", path.display()))?,
        )
    };
    let mut lines = BufReader::new(reader).lines();
    let number = usize::try_from(request.number).unwrap_or(usize::MAX);
    let mut last: VecDeque<GetFlowsResponse> = VecDeque::new();
    let mut emitted = 0usize;
    let mut skipped = 0u64;
    let mut line_number = 0u64;
    while let Some(line) = lines.next_line().await.context("reading input")? {
        line_number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let response = match decode_line(&line) {
            Ok(Some(response)) => response,
            Ok(None) => continue,
            Err(e) => {
                skipped += 1;
                warn!(line = line_number, error = %e, "skipping a line that is not Hubble JSON");
                continue;
            }
        };
        if !selected(&response, &window, &selector) {
            continue;
        }
        if request.number == 0 || request.first {
            emit(&response)?;
            emitted += 1;
            if request.first && request.number > 0 && emitted == number {
                break;
            }
        } else {
            if last.len() == number {
                last.pop_front();
            }
            last.push_back(response);
        }
    }
    for response in &last {
        emit(response)?;
    }
    Ok(skipped)
}

/// The server's rule: within the window, and flows through the filters
/// (loss reports always).
fn selected(response: &GetFlowsResponse, window: &TimeWindow, selector: &FlowSelector) -> bool {
    window.contains(&response.time.unwrap_or_default())
        && match &response.response_types {
            Some(ResponseTypes::Flow(flow)) => selector.selects(flow),
            _ => true,
        }
}
