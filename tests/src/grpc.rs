//! A gRPC client for the agent's Observer API, as Hubble's tools are: the
//! generated `observer.Observer` and `grpc.health.v1.Health` clients over
//! the agent's unix socket.

use std::{path::Path, time::Duration};

use hubcap::{
    observe::{ObserveArgs, args::OutputFormat, print::Printer, source},
    proto::observer::{GetFlowsRequest, GetFlowsResponse, observer_client::ObserverClient},
};
use tonic::transport::Channel;

use crate::output;

/// A runtime for the test's async calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub async fn channel(socket: &Path) -> Channel {
    let args = ObserveArgs {
        server: format!("unix://{}", socket.display()),
        ..Default::default()
    };
    source::channel(&args).await.expect("connect to the Observer API")
}

pub async fn connect(socket: &Path) -> ObserverClient<Channel> {
    ObserverClient::new(channel(socket).await)
}

/// Every response of a GetFlows call that ends by itself.
pub async fn get_flows(client: &mut ObserverClient<Channel>, request: GetFlowsRequest) -> Vec<GetFlowsResponse> {
    let mut stream = client.get_flows(request).await.expect("GetFlows").into_inner();
    let mut out = Vec::new();
    let read = async {
        while let Some(r) = stream.message().await.expect("GetFlows stream") {
            out.push(r);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("GetFlows ended within 30 s");
    out
}

/// Responses as Hubble JSON lines (hubcap observe's `-o json`).
pub fn json_lines(responses: &[GetFlowsResponse]) -> String {
    let mut out = Vec::new();
    let mut printer = Printer::new(&mut out, OutputFormat::Json, false, false);
    for r in responses {
        printer.print(r).expect("print");
    }
    printer.finish().expect("flush");
    String::from_utf8(out).expect("UTF-8")
}

/// Responses decoded strictly, as the exporter's lines are.
pub fn parse(responses: &[GetFlowsResponse]) -> output::Output {
    output::parse(&json_lines(responses))
}
