//! The IPFIX output (RFC 7011): every record as an IPFIX flow record with
//! the standard information elements, sent to each collector over UDP or
//! TCP (`--ipfix-collector udp://HOST:PORT`, `tcp://HOST:PORT`). Sending
//! never waits: a datagram the socket cannot take now or that the
//! collector refused, and a message a TCP collector's queue has no room
//! for (it is down, or slow), are counted in `hubcap_ipfix_errors_total`
//! and capture goes on. The templates go out with the first message and
//! again every [`TEMPLATE_REFRESH`] (and at the start of every TCP
//! connection), so a collector that starts later learns them.

mod message;
mod tcp;

use std::{
    net::{SocketAddr, ToSocketAddrs, UdpSocket},
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus::IntCounter;
use prost_types::Timestamp;
use tracing::info;

use self::message::MessageBuilder;
use super::{Output, OutputError};
use crate::{
    metrics::{Family, Metrics},
    proto::flow::LostEvent,
    record::{FlowRecord, RecordSource},
};

/// RFC 7011 leaves the interval to the exporter; collectors commonly
/// expire templates after several minutes.
pub const TEMPLATE_REFRESH: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("IPFIX collector {0:?}: give udp://HOST:PORT or tcp://HOST:PORT")]
    Syntax(String),
    #[error("IPFIX collector {url:?}: {error}")]
    Address { url: String, error: std::io::Error },
}

const MESSAGES: Family = Family {
    name: "hubcap_ipfix_messages_total",
    help: "IPFIX messages sent, by collector",
    labels: &["collector"],
};
const RECORDS: Family = Family {
    name: "hubcap_ipfix_records_total",
    help: "IPFIX flow records sent, by collector",
    labels: &["collector"],
};
const ERRORS: Family = Family {
    name: "hubcap_ipfix_errors_total",
    help: "IPFIX messages that could not be sent (socket full, collector unreachable), by collector",
    labels: &["collector"],
};

/// One collector's series, at 0 from the start.
struct CollectorMetrics {
    messages: IntCounter,
    records: IntCounter,
    /// Each a message lost for that collector.
    errors: IntCounter,
}

impl CollectorMetrics {
    fn register(metrics: &Metrics, url: &str) -> CollectorMetrics {
        let [messages, records, errors] =
            [MESSAGES, RECORDS, ERRORS].map(|f| metrics.counters(&f).with_label_values(&[url]));
        CollectorMetrics {
            messages,
            records,
            errors,
        }
    }
}

enum Transport {
    Udp(UdpSocket),
    Tcp(tcp::TcpSender),
}

struct Collector {
    url: String,
    transport: Transport,
    metrics: CollectorMetrics,
}

impl Collector {
    fn open(url: &str, domain: u32, metrics: &Metrics) -> Result<Collector, CollectorError> {
        let (tcp, address) = match url.split_once("://") {
            Some(("udp", address)) => (false, address),
            Some(("tcp", address)) => (true, address),
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
        let metrics = CollectorMetrics::register(metrics, url);
        if tcp {
            return Ok(Collector {
                url: url.to_owned(),
                transport: Transport::Tcp(tcp::TcpSender::start(url, target, domain, metrics.errors.clone())),
                metrics,
            });
        }
        let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
            .parse()
            .expect("valid address");
        let socket = UdpSocket::bind(bind).map_err(error)?;
        socket.connect(target).map_err(error)?;
        socket.set_nonblocking(true).map_err(error)?;
        Ok(Collector {
            url: url.to_owned(),
            transport: Transport::Udp(socket),
            metrics,
        })
    }

    /// Hands `message` on without waiting; false if it could not go.
    fn send(&self, message: &Arc<Vec<u8>>) -> bool {
        match &self.transport {
            // Full socket buffer, or the collector refused an earlier
            // datagram (ICMP port unreachable).
            Transport::Udp(socket) => socket.send(message).is_ok(),
            Transport::Tcp(sender) => sender.try_send(Arc::clone(message)),
        }
    }
}

pub struct IpfixExporter {
    collectors: Vec<Collector>,
    builder: MessageBuilder,
    templates_sent: Option<Instant>,
    sent: u64,
    /// L7 records: IPFIX's flow records have no place for them.
    skipped: IntCounter,
}

impl IpfixExporter {
    /// Resolves every collector now, so that a bad one stops hubcap before
    /// capture.
    pub fn open(urls: &[String], domain: u32, metrics: &Metrics) -> Result<Self, CollectorError> {
        let collectors = urls
            .iter()
            .map(|u| Collector::open(u, domain, metrics))
            .collect::<Result<Vec<_>, _>>()?;
        for c in &collectors {
            info!(collector = %c.url, observation_domain = domain, "exporting IPFIX");
        }
        let skipped = metrics.counters(&super::FORMAT_SKIPPED).with_label_values(&["ipfix"]);
        Ok(IpfixExporter {
            skipped,
            collectors,
            builder: MessageBuilder::new(domain),
            templates_sent: None,
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
            let message = Arc::new(message);
            for c in &self.collectors {
                if c.send(&message) {
                    c.metrics.messages.inc();
                    c.metrics.records.inc_by(records);
                } else {
                    c.metrics.errors.inc();
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

    /// The L7 record's packets are in its flow's IPFIX records already.
    fn l7(&mut self, _: &RecordSource, _: &Arc<crate::proto::flow::Flow>) {
        self.skipped.inc();
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
        // TCP collectors get what is queued (a down one, nothing more).
        for c in &mut self.collectors {
            if let Transport::Tcp(sender) = &mut c.transport {
                sender.finish();
            }
        }
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
