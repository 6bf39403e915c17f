//! hubcap on a real Kubernetes node, as a user installs it: the image
//! loaded into the node's containerd, the chart installed through the real
//! Helm engine with its defaults (image pull policy aside), run by a real
//! kubelet; pods on veths the CNI bridge plugin made, a Service through
//! kube-proxy; judged with kubectl, the stored flow log and bpftool. One
//! node for every case, in the order given (the last ones uninstall).

mod cases;
mod counts;
mod fixture;
mod two_nodes;

use fixture::NodeRun;
use hubcap_tests::harness::Shared;

fn main() {
    let run = Shared::new(NodeRun::start);
    let trials = cases::CASES
        .iter()
        .map(|&(name, check)| run.case(name, check))
        .collect();
    run.run(trials)
}
