//! The services beside the capture loop (the Observer API, the Kubernetes
//! watchers, the metrics endpoint): [`start`] puts one on a thread of its
//! own with a current-thread runtime, so that what it costs never runs on
//! the capture task, and hands back its start-up result before capture
//! begins, so a bad address or an unreachable API server fails early.
//! [`SideServices`] stops them all when the agent stops, or fails to start.

use std::{future::Future, sync::mpsc, thread::JoinHandle};

/// Something that runs beside the capture loop until it is stopped.
pub trait Service {
    /// Stops it and waits until it has.
    fn stop(self: Box<Self>);
}

/// A task on the agent's own runtime (the metrics endpoint).
impl Service for tokio::task::JoinHandle<()> {
    fn stop(self: Box<Self>) {
        self.abort();
    }
}

/// The running side services, stopped last-started first.
#[derive(Default)]
pub struct SideServices(Vec<Box<dyn Service>>);

impl SideServices {
    pub fn add(&mut self, service: impl Service + 'static) {
        self.0.push(Box::new(service));
    }

    pub fn stop_all(&mut self) {
        while let Some(service) = self.0.pop() {
            service.stop();
        }
    }
}

/// An early error return stops what had started.
impl Drop for SideServices {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// How a service's start failed.
#[derive(Debug)]
pub enum StartError<E> {
    /// The thread or its runtime could not be made.
    Thread(std::io::Error),
    /// The service ended without saying whether it started.
    Ended,
    /// The service's own start-up error.
    Failed(E),
}

/// Handed to the service: it says once whether it started.
pub struct Ready<T, E>(mpsc::Sender<Result<T, StartError<E>>>);

impl<T, E> Ready<T, E> {
    pub fn started(self, value: T) {
        let _ = self.0.send(Ok(value));
    }

    pub fn failed(self, error: E) {
        let _ = self.0.send(Err(StartError::Failed(error)));
    }
}

/// Runs `service` on a new thread named `name` and waits until it reports
/// through its [`Ready`]. A service that failed to start has its thread
/// joined before the error is returned.
pub fn start<T, E, F, Fut>(name: &str, service: F) -> Result<(JoinHandle<()>, T), StartError<E>>
where
    T: Send + 'static,
    E: Send + 'static,
    F: FnOnce(Ready<T, E>) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(
            move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(service(Ready(ready_tx))),
                Err(e) => {
                    let _ = ready_tx.send(Err(StartError::Thread(e)));
                }
            },
        )
        .map_err(StartError::Thread)?;
    match ready_rx.recv() {
        Ok(Ok(value)) => Ok((thread, value)),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(StartError::Ended)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_service_hands_back_its_value_and_runs_on() {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (thread, value) = start::<_, (), _, _>("test-service", |ready| async move {
            ready.started(7);
            let _ = stop_rx.await;
        })
        .unwrap();
        assert_eq!(value, 7);
        assert!(!thread.is_finished());
        stop_tx.send(()).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn a_failed_start_is_its_own_error_and_one_that_says_nothing_is_ended() {
        let failed = start::<(), _, _, _>("test-service", |ready| async move { ready.failed("no") });
        assert!(matches!(failed, Err(StartError::Failed("no"))));
        let silent = start::<(), (), _, _>("test-service", |ready| async move { drop(ready) });
        assert!(matches!(silent, Err(StartError::Ended)));
    }
}
