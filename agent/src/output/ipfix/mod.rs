//! The IPFIX output (RFC 7011): every record as an IPFIX flow record with
//! the standard information elements, sent over UDP to each collector
//! (`--ipfix-collector udp://HOST:PORT`). Sending never waits: a datagram
//! the socket cannot take now, or that the collector refused, is counted
//! in `hubcap_ipfix_errors_total` and capture goes on. The templates go
//! out with the first message and again every [`TEMPLATE_REFRESH`], so a
//! collector that starts later learns them.

mod message;

use std::{
    net::{SocketAddr, ToSocketAddrs, UdpSocket},
    sync::Arc,
    time::{Duration, Instant},
};

use prost_types::Timestamp;
use tracing::info;

use self::message::MessageBuilder;
use super::{Output, OutputError};
use crate::{
    metrics::Metrics,
    proto::flow::LostEvent,
    record::{FlowRecord, RecordSource},
};

/// RFC 7011 leaves the interval to the exporter; collectors commonly
/// expire templates after several minutes.
pub const TEMPLATE_REFRESH: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("IPFIX collector {0:?}: give udp://HOST:PORT")]
    Syntax(String),
    #[error("IPFIX collector {0:?}: over TCP is not supported yet; use udp://")]
    Tcp(String),
    #[error("IPFIX collector {url:?}: {error}")]
    Address { url: String, error: std::io::Error },
}

struct Collector {
    url: String,
    socket: UdpSocket,
}

impl Collector {
    fn open(url: &str) -> Result<Collector, CollectorError> {
        let address = match url.split_once("://") {
            Some(("udp", address)) => address,
            Some(("tcp", _)) => return Err(CollectorError::Tcp(url.to_owned())),
            _ => return Err(CollectorError::Syntax(url.to_owned())),
        };
        let error = |error| CollectorError::Address {
            url: url.to_owned(),
            error,
        };
        let target: SocketAddr = address
            .to_socket_addrs()
            .map_err(error)?
            .next()
            .ok_or_else(|| error(std::io::Error::other("no address")))?;
        let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
            .parse()
            .expect("valid address");
        let socket = UdpSocket::bind(bind).map_err(error)?;
        socket.connect(target).map_err(error)?;
        socket.set_nonblocking(true).map_err(error)?;
        Ok(Collector {
            url: url.to_owned(),
            socket,
        })
    }
}

pub struct IpfixExporter {
    collectors: Vec<Collector>,
    builder: MessageBuilder,
    templates_sent: Option<Instant>,
    metrics: Arc<Metrics>,
    sent: u64,
}

impl IpfixExporter {
    /// Resolves every collector now, so that a bad one stops hubcap before
    /// capture.
    pub fn open(urls: &[String], domain: u32, metrics: Arc<Metrics>) -> Result<Self, CollectorError> {
        let collectors = urls.iter().map(|u| Collector::open(u)).collect::<Result<Vec<_>, _>>()?;
        for c in &collectors {
            for counter in [&metrics.ipfix_messages, &metrics.ipfix_records, &metrics.ipfix_errors] {
                counter.with_label_values(&[&c.url]);
            }
            info!(collector = %c.url, observation_domain = domain, "exporting IPFIX");
        }
        Ok(IpfixExporter {
            collectors,
            builder: MessageBuilder::new(domain),
            templates_sent: None,
            metrics,
            sent: 0,
        })
    }

    /// Sends what is ready to every collector.
    fn send(&mut self) {
        if self.templates_sent.is_none_or(|t| t.elapsed() >= TEMPLATE_REFRESH) {
            self.builder.refresh_templates();
            self.templates_sent = Some(Instant::now());
        }
        for message in self.builder.take() {
            let records = message::records_in(&message);
            for c in &self.collectors {
                match c.socket.send(&message) {
                    Ok(_) => {
                        self.metrics.ipfix_messages.with_label_values(&[&c.url]).inc();
                        self.metrics.ipfix_records.with_label_values(&[&c.url]).inc_by(records);
                    }
                    // Full socket buffer, or the collector refused an
                    // earlier datagram (ICMP port unreachable): counted,
                    // never waited for.
                    Err(_) => self.metrics.ipfix_errors.with_label_values(&[&c.url]).inc(),
                }
            }
            self.sent += records;
        }
    }
}

impl Output for IpfixExporter {
    fn flow(&mut self, source: &RecordSource, _: &FlowRecord) {
        self.builder.add(source);
    }

    /// IPFIX has no loss record of its own; losses are in the metrics and
    /// the other outputs.
    fn lost(&mut self, _: &LostEvent, _: &Timestamp) {}

    fn end_batch(&mut self) -> Result<(), OutputError> {
        self.send();
        Ok(())
    }

    fn close(&mut self) {
        self.send();
        info!(records = self.sent, "IPFIX export closed");
    }
}

/// The observation domain of a node: a hash of its name (FNV-1a), so that
/// each node exports as its own domain without configuration.
pub fn observation_domain(node_name: &str) -> u32 {
    node_name
        .bytes()
        .fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}
