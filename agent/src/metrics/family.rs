//! Metric families that the module counting them declares and registers,
//! so that a new output or source adds its metrics where its code is, not
//! to a central struct: `const WRITTEN: Family = Family { .. }` beside the
//! code, `metrics.counters(&WRITTEN)` where it starts. A family is
//! registered the first time it is asked for, and every later caller (a
//! second sink, another flow log) gets the same one and tells itself apart
//! by its labels. So a feature that is off has no series.

use std::{collections::HashMap, sync::Mutex};

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// A metric family's name, help text and label names.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

/// The families registered so far, by name.
#[derive(Default)]
pub(super) struct Families(Mutex<HashMap<&'static str, Registered>>);

enum Registered {
    Counters(IntCounterVec),
    Gauges(IntGaugeVec),
}

impl Families {
    pub(super) fn counters(&self, registry: &Registry, family: &Family) -> IntCounterVec {
        self.counters_with(registry, family, &[])
    }

    /// A counter family whose labels are its own followed by `extra`.
    pub(super) fn counters_with(&self, registry: &Registry, family: &Family, extra: &[&str]) -> IntCounterVec {
        self.get_or_register(
            registry,
            family,
            extra,
            IntCounterVec::new,
            Registered::Counters,
            |r| match r {
                Registered::Counters(vec) => Some(vec),
                Registered::Gauges(_) => None,
            },
        )
    }

    pub(super) fn gauges(&self, registry: &Registry, family: &Family) -> IntGaugeVec {
        self.get_or_register(
            registry,
            family,
            &[],
            IntGaugeVec::new,
            Registered::Gauges,
            |r| match r {
                Registered::Gauges(vec) => Some(vec),
                Registered::Counters(_) => None,
            },
        )
    }

    fn get_or_register<V: prometheus::core::Collector + Clone + 'static>(
        &self,
        registry: &Registry,
        family: &Family,
        extra: &[&str],
        make: fn(Opts, &[&str]) -> prometheus::Result<V>,
        wrap: fn(V) -> Registered,
        unwrap: fn(&Registered) -> Option<&V>,
    ) -> V {
        let mut families = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = families.entry(family.name).or_insert_with(|| {
            let labels: Vec<&str> = family.labels.iter().chain(extra).copied().collect();
            let vec = make(Opts::new(family.name, family.help), &labels).expect("valid metric");
            registry.register(Box::new(vec.clone())).expect("unique metric");
            wrap(vec)
        });
        unwrap(entry)
            .unwrap_or_else(|| panic!("{} is registered as another kind of metric", family.name))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::{super::Metrics, Family};

    const WRITTEN: Family = Family {
        name: "hubcap_test_written_total",
        help: "test",
        labels: &["sink"],
    };
    const OPEN: Family = Family {
        name: "hubcap_test_open",
        help: "test",
        labels: &[],
    };

    #[test]
    fn a_family_is_registered_once_and_shared_by_label() {
        let metrics = Metrics::new();
        assert!(
            !metrics.render().contains("hubcap_test_written_total"),
            "not before use"
        );
        metrics.counters(&WRITTEN).with_label_values(&["file"]).inc();
        metrics.counters(&WRITTEN).with_label_values(&["stdout"]).inc_by(2);
        let text = metrics.render();
        assert_eq!(text.matches("# TYPE hubcap_test_written_total counter").count(), 1);
        assert!(text.contains("hubcap_test_written_total{sink=\"file\"} 1"), "{text}");
        assert!(text.contains("hubcap_test_written_total{sink=\"stdout\"} 2"), "{text}");
    }

    #[test]
    fn an_unlabelled_family_is_one_series_at_zero_from_its_start() {
        let metrics = Metrics::new();
        let gauge = metrics.gauge(&OPEN);
        assert!(metrics.render().contains("hubcap_test_open 0"));
        gauge.set(3);
        metrics.gauge(&OPEN).inc();
        assert!(metrics.render().contains("hubcap_test_open 4"));
    }
}
