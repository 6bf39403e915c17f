//! `--flow-log-crds`: Azure Container Network Logs' custom resources
//! (`RetinaNetworkFlowLog` and `ContainerNetworkLog`, `acn.azure.com/v1alpha1`,
//! cluster-scoped) decide what goes to the stored log. Both kinds are
//! watched; on every change the accepted resources' filters become the one
//! stored log (none: no log), and each resource's status says whether it
//! was accepted and, if not, why.
//!
//! The watch does not touch the logs: it sends the stored log it wants to
//! their owner ([`super::FlowLogs`], on the capture task) and writes the
//! statuses from the answer.

use std::{collections::BTreeMap, sync::Arc};

use futures::{StreamExt as _, stream};
use kube::{
    Api, Client, ResourceExt as _,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    runtime::{WatchStreamExt as _, watcher, watcher::Event},
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use prometheus::IntGaugeVec;

use super::{
    FlowLogConfig, log_metrics,
    resources::{resource_filters, stored_log},
};
use crate::metrics::Metrics;

const GROUP: &str = "acn.azure.com";
const VERSION: &str = "v1alpha1";
/// The kinds, by their index in the watch.
const KINDS: [(&str, &str); 2] = [
    ("RetinaNetworkFlowLog", "retinanetworkflowlogs"),
    ("ContainerNetworkLog", "containernetworklogs"),
];

/// Where the stored log goes and how it rotates.
#[derive(Clone, Debug)]
pub struct StoredLogOptions {
    pub file_path: String,
    pub max_size_mb: u64,
    pub max_backups: u32,
}

/// The stored log the resources ask for (none, or one), and where its
/// owner answers whether it could be opened.
pub struct ResourceLogs {
    pub configs: Vec<FlowLogConfig>,
    pub applied: oneshot::Sender<Result<(), String>>,
}

fn api_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// What hubcap knows of one resource.
struct Known {
    generation: i64,
    spec: Value,
    status: Value,
}

/// A resource's verdict, as its status says it.
struct Verdict {
    accepted: bool,
    message: String,
}

/// Watches both kinds until the task is aborted or the logs' owner is
/// gone. A kind whose CRD is not installed is retried with backoff (and
/// said once).
pub async fn run(client: Client, logs: mpsc::Sender<ResourceLogs>, options: StoredLogOptions, metrics: Arc<Metrics>) {
    let apis: Vec<Api<DynamicObject>> = KINDS
        .iter()
        .map(|(kind, plural)| Api::all_with(client.clone(), &api_resource(kind, plural)))
        .collect();
    let streams = apis.iter().enumerate().map(|(i, api)| {
        watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .map(move |event| (i, event))
            .boxed()
    });
    let mut events = stream::select_all(streams);
    let watch_errors = crate::kubernetes::watch_errors(&metrics);
    let by_state = log_metrics::resources(&metrics);
    let mut known: BTreeMap<(usize, String), Known> = BTreeMap::new();
    // Per kind: the names of a (re)list in progress, and the last error.
    let mut listing: [Option<Vec<String>>; 2] = [None, None];
    let mut last_error: [Option<String>; 2] = [None, None];
    while let Some((kind, event)) = events.next().await {
        let changed = match event {
            Ok(Event::Init) => {
                listing[kind] = Some(Vec::new());
                false
            }
            Ok(Event::InitApply(object)) => {
                if let Some(names) = &mut listing[kind] {
                    names.push(object.name_any());
                }
                known.insert((kind, object.name_any()), known_of(&object));
                false
            }
            Ok(Event::InitDone) => {
                let names = listing[kind].take().unwrap_or_default();
                known.retain(|(k, name), _| *k != kind || names.contains(name));
                last_error[kind] = None;
                true
            }
            Ok(Event::Apply(object)) => {
                known.insert((kind, object.name_any()), known_of(&object));
                true
            }
            Ok(Event::Delete(object)) => {
                known.remove(&(kind, object.name_any()));
                true
            }
            Err(e) => {
                let text = e.to_string();
                if last_error[kind].as_ref() != Some(&text) {
                    warn!(kind = KINDS[kind].0, error = %text, "watching flow-log resources failed; retrying");
                    watch_errors.with_label_values(&[KINDS[kind].1]).inc();
                    last_error[kind] = Some(text);
                }
                false
            }
        };
        if changed && reconcile(&apis, &mut known, &logs, &options, &by_state).await.is_err() {
            return;
        }
    }
}

fn known_of(object: &DynamicObject) -> Known {
    Known {
        generation: object.metadata.generation.unwrap_or_default(),
        spec: object.data.get("spec").cloned().unwrap_or(Value::Null),
        status: object.data.get("status").cloned().unwrap_or(Value::Null),
    }
}

/// The logs' owner stopped (hubcap is stopping).
struct OwnerGone;

/// Has what the resources ask for applied and writes their statuses.
async fn reconcile(
    apis: &[Api<DynamicObject>],
    known: &mut BTreeMap<(usize, String), Known>,
    logs: &mpsc::Sender<ResourceLogs>,
    options: &StoredLogOptions,
    by_state: &IntGaugeVec,
) -> Result<(), OwnerGone> {
    let mut filters = Vec::new();
    let mut verdicts: Vec<Result<(), String>> = known
        .values()
        .map(|k| resource_filters(&k.spec).map(|f| filters.extend(f)))
        .collect();
    let config = stored_log(filters, &options.file_path, options.max_size_mb, options.max_backups);
    let (answer, answered) = oneshot::channel();
    let change = ResourceLogs {
        configs: config.into_iter().collect(),
        applied: answer,
    };
    logs.send(change).await.map_err(|_| OwnerGone)?;
    let applied = answered.await.map_err(|_| OwnerGone)?;
    if let Err(e) = &applied {
        warn!(error = %e, "the stored flow log of the resources could not be applied; the previous one stays");
        for verdict in verdicts.iter_mut().filter(|v| v.is_ok()) {
            *verdict = Err(format!("accepted, but the stored log could not be opened: {e}"));
        }
    }
    let configured = verdicts.iter().filter(|v| v.is_ok()).count();
    by_state.with_label_values(&["configured"]).set(configured as i64);
    by_state
        .with_label_values(&["failed"])
        .set((verdicts.len() - configured) as i64);
    if applied.is_ok() {
        info!(configured, failed = verdicts.len() - configured, path = %options.file_path, "flow-log resources applied");
    }
    for (((kind, name), k), verdict) in known.iter_mut().zip(verdicts) {
        let verdict = Verdict {
            accepted: verdict.is_ok(),
            message: verdict.err().unwrap_or_default(),
        };
        if says(&k.status, &verdict, k.generation) {
            continue;
        }
        let status = status(&verdict, k.generation);
        let patch = json!({ "status": status });
        match apis[*kind]
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => k.status = status,
            Err(e) => warn!(kind = KINDS[*kind].0, %name, error = %e, "cannot write the resource's status"),
        }
    }
    Ok(())
}

/// Whether `status` already says `verdict` of this generation (then it is
/// not written again: its timestamp says when the verdict was reached).
fn says(status: &Value, verdict: &Verdict, generation: i64) -> bool {
    status["state"] == state(verdict)
        && status["observedGeneration"] == generation
        && status["message"].as_str().unwrap_or_default() == verdict.message
}

fn state(verdict: &Verdict) -> &'static str {
    if verdict.accepted { "CONFIGURED" } else { "FAILED" }
}

/// ACNS' status (`state`, `timestamp`), with why a resource was refused
/// (`message`, removed once it is accepted) and the generation it speaks of.
fn status(verdict: &Verdict, generation: i64) -> Value {
    let mut now = crate::clock::WallClock::now_timestamp();
    now.nanos = 0;
    json!({
        "state": state(verdict),
        "timestamp": crate::hubble::rfc3339(&now),
        "observedGeneration": generation,
        "message": if verdict.accepted { Value::Null } else { json!(verdict.message) },
    })
}
