//! The `observer.Observer` gRPC service over the ring of recent flows.
//!
//! Each GetFlows call gets its own task: it sends the matching recent flows,
//! then (with `follow`) the live feed. The task writes into a short channel
//! that tonic drains as fast as the client reads; a client that reads too
//! slowly leaves its feed behind, skips ahead and is sent `lost_events`
//! (source HUBBLE_RING_BUFFER) with the number it missed. Capture only ever
//! pushes into the ring and never waits for a client.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use prost_types::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use prometheus::IntGauge;

use super::{
    api_metrics::ApiMetrics,
    ring::{Event, Feed, FlowRing, pick},
};
use crate::{
    clock::WallClock,
    filter::FlowSelector,
    hubble::{TimeWindow, field_mask::FieldMask, nanos},
    proto::{
        flow::{Flow, LostEvent, LostEventSource},
        observer::{
            GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest, GetDebugEventsResponse,
            GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse, GetNodesRequest,
            GetNodesResponse, Namespace, Node, ServerStatusRequest, ServerStatusResponse, Tls,
            get_flows_response::ResponseTypes, observer_server::Observer,
        },
        relay::NodeState,
    },
    record::{FlowRecord, RecordBuilder, RecordSource},
};

/// The version reported in ServerStatus and GetNodes (semver, like Hubble's).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+hubcap");

/// Responses queued per stream before the feed's own backlog takes over.
const STREAM_QUEUE: usize = 64;
/// GetNamespaces reports namespaces with flows in the last hour.
const NAMESPACE_WINDOW_SECONDS: i64 = 3600;

/// What the service reads, shared with the capture task that fills the ring.
pub struct ObserverState {
    ring: Mutex<FlowRing>,
    /// Builds the ring's flows into records (and has the node's name).
    builder: Arc<RecordBuilder>,
    started: Instant,
    metrics: ApiMetrics,
    /// Set once when hubcap stops: every stream then ends.
    stopping: watch::Receiver<bool>,
    /// For GetNodes: where the API listens and whether with TLS.
    pub address: String,
    pub tls: bool,
}

impl ObserverState {
    pub fn new(
        capacity: usize,
        builder: Arc<RecordBuilder>,
        metrics: ApiMetrics,
        stopping: watch::Receiver<bool>,
    ) -> ObserverState {
        ObserverState {
            ring: Mutex::new(FlowRing::new(capacity)),
            builder,
            started: Instant::now(),
            metrics,
            stopping,
            address: String::new(),
            tls: false,
        }
    }

    /// The ring, for the capture task to push into. Held only for pushes and
    /// snapshots, never across an await.
    pub fn ring(&self) -> MutexGuard<'_, FlowRing> {
        // A panic while holding the lock cannot leave the ring inconsistent
        // in a way that matters to readers; keep serving.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn node_name(&self) -> &str {
        &self.builder.node_name
    }

    fn uptime_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }
}

#[derive(Clone)]
pub struct ObserverService {
    state: Arc<ObserverState>,
}

impl ObserverService {
    pub fn new(state: Arc<ObserverState>) -> Self {
        ObserverService { state }
    }
}

/// What one GetFlows call asked for, checked and compiled.
struct FlowQuery {
    selector: FlowSelector,
    mask: Option<FieldMask>,
    window: TimeWindow,
    /// Following ends here.
    until: Option<Timestamp>,
}

impl FlowQuery {
    /// Flows through the filters (built for that); loss reports always.
    fn selects(&self, event: &Event, builder: &RecordBuilder) -> bool {
        match event {
            Event::Flow(source) => self.selector.selects(&builder.build(source).flow),
            Event::L7(flow) => self.selector.selects(flow),
            Event::Lost { .. } => true,
        }
    }

    fn response(&self, event: &Event, builder: &RecordBuilder) -> GetFlowsResponse {
        match event {
            Event::Flow(source) => self.flow_response(source, builder.build(source), builder),
            Event::L7(flow) => self.l7_response(flow, builder),
            Event::Lost { event, time } => lost_response(*event, *time, &builder.node_name),
        }
    }

    /// The response for a live event, if the client wants it: the record
    /// is built once, for the filters and the response both.
    fn live_response(&self, event: &Event, builder: &RecordBuilder) -> Option<GetFlowsResponse> {
        if !self.window.contains(event.time()) {
            return None;
        }
        match event {
            Event::Flow(source) => {
                let record = builder.build(source);
                self.selector
                    .selects(&record.flow)
                    .then(|| self.flow_response(source, record, builder))
            }
            Event::L7(flow) => self.selector.selects(flow).then(|| self.l7_response(flow, builder)),
            Event::Lost { event, time } => Some(lost_response(*event, *time, &builder.node_name)),
        }
    }

    fn l7_response(&self, flow: &Flow, builder: &RecordBuilder) -> GetFlowsResponse {
        let flow = match &self.mask {
            Some(mask) => mask.apply(flow),
            None => flow.clone(),
        };
        GetFlowsResponse {
            time: flow.time,
            node_name: builder.node_name.clone(),
            response_types: Some(ResponseTypes::Flow(flow)),
        }
    }

    fn flow_response(&self, source: &RecordSource, record: FlowRecord, builder: &RecordBuilder) -> GetFlowsResponse {
        let flow = record.into_proto();
        let flow = match &self.mask {
            Some(mask) => mask.apply(&flow),
            None => flow,
        };
        GetFlowsResponse {
            time: Some(source.time),
            node_name: builder.node_name.clone(),
            response_types: Some(ResponseTypes::Flow(flow)),
        }
    }
}

fn lost_response(event: LostEvent, time: Timestamp, node_name: &str) -> GetFlowsResponse {
    GetFlowsResponse {
        time: Some(time),
        node_name: node_name.to_owned(),
        response_types: Some(ResponseTypes::LostEvents(event)),
    }
}

type ResponseSender = mpsc::Sender<Result<GetFlowsResponse, Status>>;

/// Sends one response; false when the client is gone or hubcap is stopping.
async fn send(tx: &ResponseSender, response: GetFlowsResponse, stopping: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        sent = tx.send(Ok(response)) => sent.is_ok(),
        _ = stopping.wait_for(|s| *s) => false,
    }
}

/// Counts an open stream for as long as it lives.
struct StreamGauge(IntGauge);

impl StreamGauge {
    fn open(metrics: &ApiMetrics) -> Self {
        metrics.streams.inc();
        StreamGauge(metrics.streams.clone())
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn stream_flows(
    state: Arc<ObserverState>,
    query: FlowQuery,
    recent: Vec<Arc<Event>>,
    mut follower: Option<super::ring::Follower>,
    tx: ResponseSender,
) {
    let _gauge = StreamGauge::open(&state.metrics);
    let mut stopping = state.stopping.clone();
    for event in recent {
        if !send(&tx, query.response(&event, &state.builder), &mut stopping).await {
            return;
        }
    }
    let Some(follower) = follower.as_mut() else { return };
    // Following stops at `until`, if given.
    let deadline = query.until.as_ref().map(|until| {
        let wait_ns = (nanos(until) - nanos(&WallClock::now_timestamp())).max(0);
        tokio::time::Instant::now() + std::time::Duration::from_nanos(wait_ns.min(u64::MAX as i128) as u64)
    });
    loop {
        let feed = tokio::select! {
            feed = follower.next() => feed,
            _ = tx.closed() => return,
            _ = stopping.wait_for(|s| *s) => return,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => return,
        };
        let response = match feed {
            None => return,
            Some(Feed::Missed(missed)) => {
                state.metrics.events_missed.inc_by(missed);
                lost_response(
                    LostEvent {
                        source: LostEventSource::HubbleRingBuffer as i32,
                        num_events_lost: missed,
                        ..Default::default()
                    },
                    WallClock::now_timestamp(),
                    state.node_name(),
                )
            }
            Some(Feed::Event(event)) => match query.live_response(&event, &state.builder) {
                Some(response) => response,
                None => continue,
            },
        };
        if !send(&tx, response, &mut stopping).await {
            return;
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// hubcap has no agent or debug events: an empty stream, which with
/// `follow` stays open until the client leaves (as Hubble's would, with
/// nothing to say).
fn no_events<T: Send + 'static>(follow: bool, mut stopping: watch::Receiver<bool>) -> BoxStream<T> {
    let (tx, rx) = mpsc::channel::<Result<T, Status>>(1);
    if follow {
        tokio::spawn(async move {
            tokio::select! {
                _ = tx.closed() => {}
                _ = stopping.wait_for(|s| *s) => {}
            }
        });
    }
    Box::pin(ReceiverStream::new(rx))
}

/// The field mask a client asked for: the top-level `field_mask` of Hubble
/// 1.15+ clients, else the `experimental` one older clients send.
fn requested_field_mask(req: &GetFlowsRequest) -> Vec<String> {
    let top = req.field_mask.as_ref().filter(|m| !m.paths.is_empty());
    let experimental = req.experimental.as_ref().and_then(|e| e.field_mask.as_ref());
    top.or(experimental).map(|m| m.paths.clone()).unwrap_or_default()
}

#[tonic::async_trait]
impl Observer for ObserverService {
    type GetFlowsStream = ReceiverStream<Result<GetFlowsResponse, Status>>;
    type GetAgentEventsStream = BoxStream<GetAgentEventsResponse>;
    type GetDebugEventsStream = BoxStream<GetDebugEventsResponse>;

    async fn get_flows(&self, request: Request<GetFlowsRequest>) -> Result<Response<Self::GetFlowsStream>, Status> {
        let req = request.into_inner();
        if req.first && req.follow {
            return Err(Status::invalid_argument("first cannot be combined with follow"));
        }
        let selector =
            FlowSelector::new(&req.whitelist, &req.blacklist).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let paths = requested_field_mask(&req);
        let mask = FieldMask::new(&paths).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let query = FlowQuery {
            selector,
            mask,
            window: TimeWindow::new(req.since.as_ref(), req.until.as_ref()),
            until: req.until,
        };
        // Following with neither `number` nor `since` starts from now.
        let wants_recent = !req.follow || req.number > 0 || req.since.is_some();
        let (snapshot, follower) = {
            // One lock: the recent flows and the live feed join without a
            // gap. Only pointers are copied while capture waits.
            let ring = self.state.ring();
            let snapshot = if wants_recent { ring.snapshot() } else { Vec::new() };
            (snapshot, req.follow.then(|| ring.follow()))
        };
        let number = usize::try_from(req.number).unwrap_or(usize::MAX);
        let recent = pick(&snapshot, number, req.first, query.window, |e| {
            query.selects(e, &self.state.builder)
        });
        drop(snapshot);
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(stream_flows(Arc::clone(&self.state), query, recent, follower, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_agent_events(
        &self,
        request: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Ok(Response::new(no_events(
            request.get_ref().follow,
            self.state.stopping.clone(),
        )))
    }

    async fn get_debug_events(
        &self,
        request: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Ok(Response::new(no_events(
            request.get_ref().follow,
            self.state.stopping.clone(),
        )))
    }

    async fn get_nodes(&self, _: Request<GetNodesRequest>) -> Result<Response<GetNodesResponse>, Status> {
        let ring = self.state.ring();
        let node = Node {
            name: self.state.node_name().to_owned(),
            version: VERSION.to_owned(),
            address: self.state.address.clone(),
            state: NodeState::NodeConnected as i32,
            tls: Some(Tls {
                enabled: self.state.tls,
                server_name: String::new(),
            }),
            uptime_ns: self.state.uptime_ns(),
            num_flows: ring.len() as u64,
            max_flows: ring.capacity() as u64,
            seen_flows: ring.seen(),
        };
        Ok(Response::new(GetNodesResponse { nodes: vec![node] }))
    }

    async fn get_namespaces(
        &self,
        _: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        let since = WallClock::now_timestamp().seconds - NAMESPACE_WINDOW_SECONDS;
        let namespaces = self
            .state
            .ring()
            .namespaces(since)
            .into_iter()
            .map(|namespace| Namespace {
                cluster: String::new(),
                namespace,
            })
            .collect();
        Ok(Response::new(GetNamespacesResponse { namespaces }))
    }

    async fn server_status(&self, _: Request<ServerStatusRequest>) -> Result<Response<ServerStatusResponse>, Status> {
        let ring = self.state.ring();
        Ok(Response::new(ServerStatusResponse {
            num_flows: ring.len() as u64,
            max_flows: ring.capacity() as u64,
            seen_flows: ring.seen(),
            uptime_ns: self.state.uptime_ns(),
            version: VERSION.to_owned(),
            flows_rate: ring.flows_rate(&WallClock::now_timestamp()),
            // Relay's fields; a single agent leaves them unset, as Hubble's.
            num_connected_nodes: None,
            num_unavailable_nodes: None,
            unavailable_nodes: Vec::new(),
        }))
    }
}
