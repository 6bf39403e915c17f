//! The Observer API and the loss reports at their limits: a crowd of
//! clients, a client that does not read, TLS with client certificates, a
//! full kernel flow map. One binary, because the gRPC client's code they
//! share is most of what building a test binary costs. Each case starts
//! its own hubcap; they run one at a time (memory and loss figures).

mod losses;
mod observer_crowd;
mod observer_slow_client;
mod observer_tls;
