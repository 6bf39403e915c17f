//! End-to-end tests that drive a real API server (each starts its own, with
//! unique names): identities under churn, the flow-log custom resources,
//! the Hubble UI, the Helm chart, Relay across nodes. One binary, because
//! the Kubernetes client's code they share is most of what building a test
//! binary costs.

mod flow_log_resources;
mod helm;
mod hubble_ui;
mod kubernetes_churn;
mod relay_nodes;
