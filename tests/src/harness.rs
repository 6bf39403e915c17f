//! Named cases over one shared captured run (libtest-mimic): the run is
//! made once, on the first case that needs it, each case is reported on
//! its own, and the run is torn down after the last case.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{Arc, OnceLock},
};

use libtest_mimic::{Arguments, Failed, Trial};

/// The shared run, or why it could not be made.
pub struct Shared<F> {
    cell: Arc<OnceLock<Result<F, String>>>,
    make: fn() -> F,
}

impl<F: Send + Sync + 'static> Shared<F> {
    pub fn new(make: fn() -> F) -> Self {
        Shared {
            cell: Arc::default(),
            make,
        }
    }

    /// A case named `name` that checks the shared run.
    pub fn case(&self, name: &str, check: impl FnOnce(&F) + Send + 'static) -> Trial {
        let cell = Arc::clone(&self.cell);
        let make = self.make;
        Trial::test(name, move || {
            let run = cell.get_or_init(|| {
                crate::require_root();
                catch_unwind(AssertUnwindSafe(make)).map_err(|panic| {
                    let why = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    format!("the captured run failed: {why}")
                })
            });
            check(run.as_ref().map_err(|why| Failed::from(why.as_str()))?);
            Ok(())
        })
    }

    /// Runs the cases in the order given (later ones may change what
    /// earlier ones read), tears the run down, and exits with the result.
    pub fn run(self, trials: Vec<Trial>) -> ! {
        let mut args = Arguments::from_args();
        args.test_threads = Some(1);
        let conclusion = libtest_mimic::run(&args, trials);
        // Every case (and its handle on the run) is gone: the run's
        // namespaces, processes and files go now, before the exit.
        drop(self);
        conclusion.exit()
    }
}
