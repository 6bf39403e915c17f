//! GetFlows requests as a client sends them (protobuf bytes): decoded, their
//! filters compiled, and the compiled selector run on a few flows. Bad
//! filters are errors, never panics.

use hubcap::{
    filter::FlowSelector,
    proto::{
        flow::{Endpoint, Flow, Ip, Layer4, Tcp, layer4::Protocol},
        observer::GetFlowsRequest,
    },
};
use prost::Message;

fn flows() -> Vec<Flow> {
    let tcp = Flow {
        ip: Some(Ip {
            source: "10.0.0.1".into(),
            destination: "fd00::2".into(),
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(Protocol::Tcp(Tcp {
                source_port: 40000,
                destination_port: 80,
                ..Default::default()
            })),
        }),
        source: Some(Endpoint {
            namespace: "default".into(),
            pod_name: "client".into(),
            labels: vec!["k8s:app=client".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![Flow::default(), tcp]
}

pub fn flow_filters(data: &[u8]) {
    let Ok(request) = GetFlowsRequest::decode(data) else {
        return;
    };
    if let Ok(selector) = FlowSelector::new(&request.whitelist, &request.blacklist) {
        for flow in flows() {
            let _ = selector.selects(&flow);
        }
    }
}
