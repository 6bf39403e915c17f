//! The served socket: a second agent on it is refused while the first goes
//! on; at exit a client still following is not waited for, and the socket
//! goes.

use std::time::{Duration, Instant};

use hubcap::proto::observer::{GetFlowsRequest, ServerStatusRequest};
use hubcap_tests::agent::hubcap_bin;

use crate::fixture::Fixture;

pub fn second_agent_on_the_socket_is_refused(f: &Fixture) {
    let second = f
        .node
        .ns
        .command(hubcap_bin().to_str().unwrap())
        .args(["run", "-i", "lo", "--grpc-socket", f.socket.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("another process is serving on this socket"), "{said}");
    let mut client = f.client.clone();
    f.rt.block_on(client.server_status(ServerStatusRequest {}))
        .expect("the first agent still serves");
}

/// Stops the agent: the last case.
pub fn exit_ends_open_follow_streams(f: &Fixture) {
    let mut client = f.client.clone();
    let mut open_follow = f.rt.block_on(async {
        let request = GetFlowsRequest {
            follow: true,
            ..Default::default()
        };
        client.get_flows(request).await.unwrap().into_inner()
    });
    let agent = f.agent.lock().unwrap().take().expect("the agent runs");
    let stopping = Instant::now();
    let finished = agent.stop();
    assert!(finished.status.success());
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        stopping.elapsed()
    );
    // It may still get the records written at exit, then it ends.
    let end = f.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match open_follow.message().await {
                    Ok(Some(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
    });
    assert!(matches!(end, Ok(Ok(None)) | Ok(Err(_))), "follow stream ended: {end:?}");
    assert!(!f.socket.exists(), "socket removed at exit");
}
