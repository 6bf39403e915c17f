//! IPFIX over TCP: a thread per collector keeps the connection (and makes
//! it again, with the templates first, after it breaks) and writes the
//! messages the exporter queues. The queue is bounded and the exporter
//! never waits on it: what does not fit is counted as an error by the
//! exporter; what a broken connection loses is counted here.

use std::{
    io::Write,
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::Duration,
};

use tracing::{info, warn};

use super::message::templates_message;
use prometheus::IntCounter;

/// Messages waiting for a slow or absent collector (about 1.4 MB).
const QUEUE: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_secs(1);

pub struct TcpSender {
    queue: Option<SyncSender<Arc<Vec<u8>>>>,
    closing: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpSender {
    pub fn start(url: &str, target: SocketAddr, domain: u32, errors: IntCounter) -> TcpSender {
        let (queue, messages) = sync_channel(QUEUE);
        let closing = Arc::new(AtomicBool::new(false));
        let thread_closing = Arc::clone(&closing);
        let url = url.to_owned();
        let thread = std::thread::Builder::new()
            .name("hubcap-ipfix".into())
            .spawn(move || run(&url, target, domain, &messages, &thread_closing, &errors))
            .expect("spawning the IPFIX sender");
        TcpSender {
            queue: Some(queue),
            closing,
            thread: Some(thread),
        }
    }

    /// False when the queue is full (the message is dropped).
    pub fn try_send(&self, message: Arc<Vec<u8>>) -> bool {
        match self.queue.as_ref().map(|q| q.try_send(message)) {
            Some(Ok(())) => true,
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => false,
        }
    }

    /// Lets the thread write what is queued, then ends it.
    pub fn finish(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    url: &str,
    target: SocketAddr,
    domain: u32,
    messages: &Receiver<Arc<Vec<u8>>>,
    closing: &AtomicBool,
    errors: &IntCounter,
) {
    let error = || errors.inc();
    let mut reported = false;
    loop {
        let mut stream = match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
            Ok(stream) => stream,
            Err(e) => {
                if !reported {
                    warn!(collector = url, error = %e, "IPFIX collector unreachable; retrying");
                    reported = true;
                }
                error();
                if closing.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(RETRY);
                continue;
            }
        };
        info!(collector = url, "IPFIX collector connected");
        reported = false;
        // A new transport session learns the templates first.
        if stream.write_all(&templates_message(domain)).is_err() {
            error();
            continue;
        }
        loop {
            match messages.recv_timeout(RETRY) {
                Ok(message) => {
                    if let Err(e) = stream.write_all(&message) {
                        warn!(collector = url, error = %e, "IPFIX connection broke; reconnecting");
                        error();
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // The exporter closed and everything queued is written.
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = stream.flush();
                    return;
                }
            }
        }
    }
}
