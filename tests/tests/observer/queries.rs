//! GetFlows (ring, follow, last/first, since/until, field mask, bad
//! requests), ServerStatus, GetNodes, GetNamespaces, agent/debug events
//! and the health check, each against the captured run.

use hubcap::proto::{
    flow::{FlowFilter, layer4::Protocol},
    observer::{
        GetAgentEventsRequest, GetDebugEventsRequest, GetFlowsRequest, GetNamespacesRequest, GetNodesRequest,
        ServerStatusRequest, get_flows_request::Experimental, get_flows_response::ResponseTypes,
    },
};
use hubcap_tests::{grpc, output::Record};
use prost_types::{FieldMask, Timestamp};
use tonic::Code;

use crate::fixture::{Fixture, request, time_ns, uuids};

pub type Case = (&'static str, fn(&Fixture));

pub const CASES: &[Case] = &[
    ("ring_holds_what_the_file_has", ring_holds_what_the_file_has),
    ("records_add_up_to_veth_counters", records_add_up_to_veth_counters),
    ("closed_port_drops_are_counted", closed_port_drops_are_counted),
    ("follower_got_every_later_flow_once", follower_got_every_later_flow_once),
    ("last_n", last_n),
    ("first_n", first_n),
    ("since_until_window", since_until_window),
    ("field_mask_keeps_only_its_paths", field_mask_keeps_only_its_paths),
    ("bad_request_first_with_follow", |f| {
        invalid(
            f,
            GetFlowsRequest {
                first: true,
                follow: true,
                ..Default::default()
            },
        )
    }),
    ("bad_request_cidr", |f| {
        invalid(
            f,
            request(
                vec![FlowFilter {
                    source_ip: vec!["10.0.0.0/99".into()],
                    ..Default::default()
                }],
                vec![],
            ),
        )
    }),
    ("bad_request_unsupported_field", |f| {
        invalid(
            f,
            request(
                vec![FlowFilter {
                    http_method: vec!["GET".into()],
                    ..Default::default()
                }],
                vec![],
            ),
        )
    }),
    ("bad_request_mask_path", |f| {
        invalid(
            f,
            GetFlowsRequest {
                experimental: Some(Experimental {
                    field_mask: Some(FieldMask {
                        paths: vec!["IP.nope".into()],
                    }),
                }),
                ..Default::default()
            },
        )
    }),
    ("server_status", server_status),
    ("get_nodes_names_this_node", get_nodes_names_this_node),
    ("get_namespaces_empty_without_pod_metadata", get_namespaces_empty),
    ("agent_and_debug_events_end_empty", agent_and_debug_events_end_empty),
    ("health_serving", health_serving),
];

fn ring_holds_what_the_file_has(f: &Fixture) {
    assert!(f.ring.lost_events.is_empty() && f.file.lost_events.is_empty());
    assert_eq!(uuids(&f.ring.records), uuids(&f.file.records));
}

/// Measured against the kernel: the API's records add up to the veths'
/// counters.
fn records_add_up_to_veth_counters(f: &Fixture) {
    let veth_counters: Vec<(&str, _)> = f
        .veths
        .iter()
        .map(String::as_str)
        .zip(f.counters.iter().copied())
        .collect();
    hubcap_tests::output::assert_records_match_counters(&f.records, &veth_counters);
}

fn closed_port_drops_are_counted(f: &Fixture) {
    let drops: Vec<&Record> = f
        .records
        .iter()
        .filter(|r| r.verdict == "DROPPED" && r.dst_port == 5999)
        .collect();
    assert_eq!(
        drops.iter().map(|r| r.packets).sum::<u64>(),
        3,
        "NO_SOCKET drops: {drops:#?}"
    );
}

fn follower_got_every_later_flow_once(f: &Fixture) {
    assert!(f.followed.lost_events.is_empty());
    let after_follow: Vec<&Record> = f
        .records
        .iter()
        .filter(|r| !f.before_follow.contains(&uuids([*r])[0]))
        .collect();
    assert_eq!(
        uuids(f.followed.records.iter().filter(|r| f.ours(r))),
        uuids(after_follow)
    );
}

fn last_n(f: &Fixture) {
    let ids = uuids(&f.records);
    let got = f.query(GetFlowsRequest {
        number: 7,
        whitelist: f.ours_only(),
        ..Default::default()
    });
    assert_eq!(got, ids[ids.len() - 7..]);
}

fn first_n(f: &Fixture) {
    let ids = uuids(&f.records);
    let got = f.query(GetFlowsRequest {
        number: 7,
        first: true,
        whitelist: f.ours_only(),
        ..Default::default()
    });
    assert_eq!(got, ids[..7]);
}

/// A window in the middle, by each flow's own time.
fn since_until_window(f: &Fixture) {
    let mut times: Vec<i128> = f.records.iter().map(time_ns).collect();
    times.sort();
    let (since, until) = (times[times.len() / 4], times[times.len() * 3 / 4]);
    let ts = |ns: i128| Timestamp {
        seconds: (ns / 1_000_000_000) as i64,
        nanos: (ns % 1_000_000_000) as i32,
    };
    let window: Vec<&Record> = f
        .records
        .iter()
        .filter(|r| (since..=until).contains(&time_ns(r)))
        .collect();
    assert!(!window.is_empty() && window.len() < f.records.len());
    let got = f.query(GetFlowsRequest {
        since: Some(ts(since)),
        until: Some(ts(until)),
        ..Default::default()
    });
    assert_eq!(got, uuids(window.iter().copied()));
}

fn field_mask_keeps_only_its_paths(f: &Fixture) {
    let mut client = f.client.clone();
    let masked = f.rt.block_on(grpc::get_flows(
        &mut client,
        GetFlowsRequest {
            number: 50,
            whitelist: vec![FlowFilter {
                protocol: vec!["tcp".into()],
                ..Default::default()
            }],
            experimental: Some(Experimental {
                field_mask: Some(FieldMask {
                    paths: vec!["IP.source".into(), "l4.TCP.destination_port".into(), "verdict".into()],
                }),
            }),
            ..Default::default()
        },
    ));
    assert!(!masked.is_empty());
    for r in &masked {
        let Some(ResponseTypes::Flow(f)) = &r.response_types else {
            panic!("flow")
        };
        let ip = f.ip.as_ref().expect("IP.source");
        assert!(!ip.source.is_empty() && ip.destination.is_empty() && ip.ip_version == 0);
        let Some(Protocol::Tcp(tcp)) = f.l4.as_ref().and_then(|l| l.protocol.as_ref()) else {
            panic!("TCP")
        };
        assert_eq!((tcp.source_port, tcp.flags.is_none()), (0, true));
        assert_ne!(tcp.destination_port, 0);
        assert_ne!(f.verdict, 0, "verdict kept");
        assert!(f.time.is_none() && f.uuid.is_empty() && f.interface.is_none() && f.extensions.is_none());
    }
}

/// Bad requests are InvalidArgument with a reason, as Hubble answers.
fn invalid(f: &Fixture, req: GetFlowsRequest) {
    let mut client = f.client.clone();
    let Err(status) = f.rt.block_on(client.get_flows(req)) else {
        panic!("the request was accepted")
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

fn server_status(f: &Fixture) {
    let mut client = f.client.clone();
    let status =
        f.rt.block_on(client.server_status(ServerStatusRequest {}))
            .unwrap()
            .into_inner();
    // The ring never filled: it holds every flow seen (this test's, and
    // any drop elsewhere on the machine).
    assert_eq!((status.num_flows, status.max_flows), (status.seen_flows, 4095));
    assert!(status.seen_flows >= f.records.len() as u64);
    assert!(
        status.uptime_ns > 1_000_000_000 && status.version.ends_with("+hubcap"),
        "{status:?}"
    );
    assert!(status.flows_rate > 0.0, "{status:?}");
}

fn get_nodes_names_this_node(f: &Fixture) {
    let mut client = f.client.clone();
    let nodes =
        f.rt.block_on(client.get_nodes(GetNodesRequest {}))
            .unwrap()
            .into_inner()
            .nodes;
    assert_eq!(nodes.len(), 1);
    assert_eq!((nodes[0].name.as_str(), nodes[0].state), (f.node_name.as_str(), 1));
    assert!(nodes[0].num_flows >= f.records.len() as u64 && nodes[0].max_flows == 4095);
    assert_eq!(nodes[0].address, f.server());
}

fn get_namespaces_empty(f: &Fixture) {
    let mut client = f.client.clone();
    let namespaces =
        f.rt.block_on(client.get_namespaces(GetNamespacesRequest {}))
            .unwrap()
            .into_inner();
    assert!(namespaces.namespaces.is_empty(), "no pod metadata yet");
}

fn agent_and_debug_events_end_empty(f: &Fixture) {
    let mut client = f.client.clone();
    f.rt.block_on(async {
        let mut agent_events = client
            .get_agent_events(GetAgentEventsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(agent_events.message().await.unwrap().is_none());
        let mut debug_events = client
            .get_debug_events(GetDebugEventsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(debug_events.message().await.unwrap().is_none());
    });
}

/// The health check `hubble status` makes.
fn health_serving(f: &Fixture) {
    f.rt.block_on(async {
        let mut health = tonic_health::pb::health_client::HealthClient::new(grpc::channel(&f.socket).await);
        for service in ["", "observer.Observer"] {
            let reply = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(reply.status, 1, "{service:?} SERVING");
        }
    });
}
