//! Where the Observer API listens: a unix socket by default (Hubble's is
//! `/var/run/cilium/hubble.sock`; hubcap's `/var/run/hubcap/hubble.sock`),
//! and TCP only when asked, with TLS (and client certificates) for anything
//! but loopback. Both serve `observer.Observer` and `grpc.health.v1.Health`,
//! which `hubble status` checks.

use std::{
    net::{IpAddr, SocketAddr},
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
    task::JoinHandle,
};
use tokio_stream::{
    Stream,
    wrappers::{TcpListenerStream, UnixListenerStream},
};
use tonic::transport::{
    Certificate, Identity, Server, ServerTlsConfig,
    server::{Connected, Router},
};
use tracing::{info, warn};

use super::{
    ObserverFeed,
    api_metrics::ApiMetrics,
    peer::{ClusterNodes, OtherNodes, PeerService, this_node},
    service::{ObserverService, ObserverState},
};
use crate::{
    metrics::Metrics,
    proto::{observer::observer_server::ObserverServer, peer::peer_server::PeerServer},
    record::RecordBuilder,
    side_services::{self, Service, StartError},
};

/// The health-check service name Hubble's server registers and `hubble
/// status` asks for.
const HUBBLE_SERVER_HEALTH: &str = "hubble.server.Observer";

#[derive(Debug, Clone, Default)]
pub struct GrpcConfig {
    /// Unix socket path; `None` turns it off.
    pub socket: Option<PathBuf>,
    /// TCP address (`127.0.0.1:4244`, `[::]:4244`, `:4244`).
    pub listen: Option<String>,
    pub tls: Option<TlsFiles>,
    /// Serve a non-loopback address without TLS.
    pub insecure: bool,
    /// Capacity of the ring of recent flows.
    pub ring_capacity: usize,
    /// Announced to Relay instead of an unspecified listen address.
    pub node_ip: Option<IpAddr>,
    /// Announced to Relay for TLS (default: Cilium's form of the name).
    pub tls_server_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When given, clients must present a certificate signed by it.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}: another process is serving on this socket")]
    SocketInUse(PathBuf),
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    #[error("{path}: {source}")]
    Socket { path: PathBuf, source: std::io::Error },
    #[error("--grpc-listen: {0}")]
    Address(#[from] crate::listen::BadAddress),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(
        "refusing to serve flows on {0} without TLS: give --grpc-tls-cert and --grpc-tls-key \
         (and --grpc-tls-client-ca), or --grpc-insecure"
    )]
    NeedsTls(SocketAddr),
    #[error("reading {path}: {source}")]
    TlsFile { path: PathBuf, source: std::io::Error },
    #[error("cannot start the Observer API's thread: {0}")]
    Thread(std::io::Error),
    #[error("the Observer API's thread ended before it was ready")]
    ThreadEnded,
    #[error("TLS setup: {0}")]
    Tls(#[from] tonic::transport::Error),
}

impl GrpcConfig {
    pub fn is_enabled(&self) -> bool {
        self.socket.is_some() || self.listen.is_some()
    }
}

/// Where peers reach a listener: its own address, or the node's IP when it
/// binds every address.
fn announced_address(bound: SocketAddr, node_ip: Option<IpAddr>) -> SocketAddr {
    match node_ip {
        Some(ip) if bound.ip().is_unspecified() => SocketAddr::new(ip, bound.port()),
        _ => bound,
    }
}

/// The Observer API, served from a thread of its own: what clients cost
/// (building records, encoding, TLS) never runs on the capture thread, which
/// only pushes into the ring.
pub struct GrpcServer {
    thread: Option<std::thread::JoinHandle<()>>,
    socket: Option<PathBuf>,
    stop: watch::Sender<bool>,
}

impl GrpcServer {
    /// Starts the server thread and returns once every listener is bound, so
    /// a bad address or a busy socket fails before capture starts. The feed
    /// is the output stage's way into the API's ring.
    /// `cluster_nodes`: the other nodes the Peer service announces (with
    /// Kubernetes), when the API is served on TCP.
    pub fn start(
        config: &GrpcConfig,
        builder: Arc<RecordBuilder>,
        metrics: &Metrics,
        cluster_nodes: Option<ClusterNodes>,
    ) -> Result<(GrpcServer, ObserverFeed), ServerError> {
        let (stop, stopping) = watch::channel(false);
        let thread_config = config.clone();
        let metrics = ApiMetrics::register(metrics);
        let feed_metrics = metrics.clone();
        let started = side_services::start("hubcap-grpc", move |ready| async move {
            match Listeners::serve(&thread_config, builder, metrics, cluster_nodes, stopping.clone()).await {
                Ok((listeners, state)) => {
                    ready.started(state);
                    let mut stopping = stopping;
                    let _ = stopping.wait_for(|s| *s).await;
                    listeners.finish().await;
                }
                Err(e) => ready.failed(e),
            }
        });
        let (thread, state) = started.map_err(|e| match e {
            StartError::Thread(e) => ServerError::Thread(e),
            StartError::Ended => ServerError::ThreadEnded,
            StartError::Failed(e) => e,
        })?;
        let server = GrpcServer {
            thread: Some(thread),
            socket: config.socket.clone(),
            stop,
        };
        Ok((server, ObserverFeed::new(state, feed_metrics)))
    }
}

impl Service for GrpcServer {
    /// Ends every stream and listener, and removes the socket.
    fn stop(mut self: Box<Self>) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The listeners' tasks, on the server thread.
struct Listeners {
    tasks: Vec<JoinHandle<()>>,
    health: tonic_health::server::HealthReporter,
}

impl Listeners {
    async fn serve(
        config: &GrpcConfig,
        builder: Arc<RecordBuilder>,
        metrics: ApiMetrics,
        cluster_nodes: Option<ClusterNodes>,
        stopping: watch::Receiver<bool>,
    ) -> Result<(Listeners, Arc<ObserverState>), ServerError> {
        let tcp = match &config.listen {
            Some(addr) => Some(bind_tcp(crate::listen::parse_listen(addr)?, config).await?),
            None => None,
        };
        let tls = match (&config.tls, &tcp) {
            (Some(files), Some(_)) => Some(tls_config(files)?),
            _ => None,
        };
        let mut state = ObserverState::new(config.ring_capacity, builder, metrics, stopping.clone());
        state.tls = tls.is_some();
        state.address = match (&tcp, &config.socket) {
            (Some((addr, _)), _) => announced_address(*addr, config.node_ip).to_string(),
            (None, Some(path)) => format!("unix://{}", path.display()),
            (None, None) => String::new(),
        };
        let state = Arc::new(state);

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<ObserverServer<ObserverService>>().await;
        // The name `hubble status` checks.
        health
            .set_service_status(HUBBLE_SERVER_HEALTH, tonic_health::ServingStatus::Serving)
            .await;
        let observer = ObserverServer::new(ObserverService::new(Arc::clone(&state)));
        // Other nodes serve where this one does: on TCP, at the same port.
        let others = match (&tcp, cluster_nodes) {
            (Some((addr, _)), Some(nodes)) => Some(OtherNodes {
                nodes,
                port: addr.port(),
                tls: state.tls,
            }),
            _ => None,
        };
        let peer = PeerServer::new(PeerService::new(
            this_node(&state, config.tls_server_name.as_deref()),
            others,
            stopping.clone(),
        ));
        let tcp = match tcp {
            Some((addr, listener)) => {
                let mut builder = Server::builder();
                if let Some(tls) = tls {
                    builder = builder.tls_config(tls)?;
                }
                let router = builder
                    .add_service(health_service.clone())
                    .add_service(observer.clone())
                    .add_service(peer.clone());
                Some((addr, listener, router))
            }
            None => None,
        };
        // The socket last: nothing after it can fail and leave it behind.
        let mut tasks = Vec::new();
        if let Some(path) = &config.socket {
            let listener = bind_socket(path)?;
            info!(socket = %path.display(), "serving Hubble's Observer API");
            let router = Server::builder()
                .add_service(health_service)
                .add_service(observer)
                .add_service(peer);
            let incoming = UnixListenerStream::new(listener);
            tasks.push(spawn_serving(
                router,
                incoming,
                stopping.clone(),
                path.display().to_string(),
            ));
        }
        if let Some((addr, listener, router)) = tcp {
            info!(address = %addr, tls = state.tls, "serving Hubble's Observer API");
            let incoming = TcpListenerStream::new(listener);
            tasks.push(spawn_serving(router, incoming, stopping.clone(), addr.to_string()));
        }
        Ok((Listeners { tasks, health }, state))
    }

    /// Once hubcap is stopping (every stream has been told).
    async fn finish(mut self) {
        self.health.set_not_serving::<ObserverServer<ObserverService>>().await;
        self.health
            .set_service_status(HUBBLE_SERVER_HEALTH, tonic_health::ServingStatus::NotServing)
            .await;
        // Streams end on the signal, and connections close once their
        // clients read that; a client that does not (stuck, or gone quiet)
        // is cut off rather than holding up the exit.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        for task in self.tasks.drain(..) {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                warn!("a client of the Observer API did not close within 2 s; closing its connection");
                abort.abort();
            }
        }
    }
}

/// Serves `router` on `incoming` until hubcap stops.
fn spawn_serving<I, IO, IE>(
    router: Router,
    incoming: I,
    mut stopping: watch::Receiver<bool>,
    listener: String,
) -> JoinHandle<()>
where
    I: Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stopping.wait_for(|s| *s).await;
        };
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, stopped).await {
            warn!(error = %e, "Observer API on {listener} stopped");
        }
    })
}

async fn bind_tcp(addr: SocketAddr, config: &GrpcConfig) -> Result<(SocketAddr, tokio::net::TcpListener), ServerError> {
    if !addr.ip().is_loopback() && config.tls.is_none() && !config.insecure {
        return Err(ServerError::NeedsTls(addr));
    }
    let listener = crate::listen::bind(addr)
        .await
        .map_err(|source| ServerError::Listen { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServerError::Listen { addr, source })?;
    Ok((local, listener))
}

fn tls_config(files: &TlsFiles) -> Result<ServerTlsConfig, ServerError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ServerError::TlsFile {
            path: path.to_owned(),
            source,
        })
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?));
    if let Some(ca) = &files.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(tls)
}

/// Binds the unix socket, replacing a stale one a previous run left behind,
/// but never one another process still serves on. Readable and writable by
/// its owner and group only: flows are sensitive.
fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, ServerError> {
    let io_err = |source| ServerError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServerError::SocketInUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(io_err)?;
        }
        Ok(_) => return Err(ServerError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_err)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn non_loopback_needs_tls_or_insecure() {
        let config = GrpcConfig {
            listen: Some("0.0.0.0:0".into()),
            ..Default::default()
        };
        let addr = crate::listen::parse_listen("0.0.0.0:0").unwrap();
        assert!(matches!(bind_tcp(addr, &config).await, Err(ServerError::NeedsTls(_))));
        let insecure = GrpcConfig {
            insecure: true,
            ..config
        };
        assert!(bind_tcp(addr, &insecure).await.is_ok());
    }

    #[test]
    fn stale_sockets_are_replaced_live_ones_refused() {
        let dir = std::env::temp_dir().join(format!("hubcap-sock-{}", std::process::id()));
        let path = dir.join("sub/hubble.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let live = bind_socket(&path).unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o660);
            assert!(matches!(bind_socket(&path), Err(ServerError::SocketInUse(_))));
            drop(live);
            // The file stays behind, nobody listens: replaced.
            assert!(bind_socket(&path).is_ok());
        });
        let file = dir.join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(bind_socket(&file), Err(ServerError::NotASocket(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
