//! A `metrics` recorder that feeds OpenTelemetry instruments: every counter,
//! gauge and histogram RRQ records for `/metrics` becomes an instrument of
//! the same name, its labels the attributes, so both exports carry the same
//! series.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;

/// Job durations from a millisecond to ten minutes: the buckets of
/// `/metrics`, so both exports bucket alike.
pub(crate) const DURATION_BUCKETS: [f64; 15] =
    [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0];

/// The recorder; cheap to register with (one map look-up per call).
#[derive(Debug)]
pub struct OtelRecorder {
    meter: Meter,
    counters: Mutex<HashMap<Key, Counter>>,
    gauges: Mutex<HashMap<Key, Gauge>>,
    histograms: Mutex<HashMap<Key, Histogram>>,
}

impl OtelRecorder {
    pub(super) fn new(provider: &SdkMeterProvider) -> OtelRecorder {
        OtelRecorder {
            meter: provider.meter("rrq"),
            counters: Mutex::default(),
            gauges: Mutex::default(),
            histograms: Mutex::default(),
        }
    }
}

fn attributes(key: &Key) -> Vec<KeyValue> {
    key.labels().map(|l| KeyValue::new(l.key().to_owned(), l.value().to_owned())).collect()
}

/// Looks `key` up, building its handle the first time.
fn cached<H: Clone>(map: &Mutex<HashMap<Key, H>>, key: &Key, build: impl FnOnce() -> H) -> H {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    map.entry(key.clone()).or_insert_with(build).clone()
}

struct OtelCounter {
    counter: opentelemetry::metrics::Counter<u64>,
    attributes: Vec<KeyValue>,
}

impl metrics::CounterFn for OtelCounter {
    fn increment(&self, value: u64) {
        self.counter.add(value, &self.attributes);
    }

    fn absolute(&self, _value: u64) {
        // No RRQ metric sets a counter's total; an OpenTelemetry counter only adds.
    }
}

struct OtelGauge {
    gauge: opentelemetry::metrics::Gauge<f64>,
    attributes: Vec<KeyValue>,
    value: AtomicU64,
}

impl OtelGauge {
    fn update(&self, f: impl Fn(f64) -> f64) {
        let mut next = 0.0;
        let _ = self.value.fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
            next = f(f64::from_bits(bits));
            Some(next.to_bits())
        });
        self.gauge.record(next, &self.attributes);
    }
}

impl metrics::GaugeFn for OtelGauge {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }

    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }

    fn set(&self, value: f64) {
        self.update(|_| value);
    }
}

struct OtelHistogram {
    histogram: opentelemetry::metrics::Histogram<f64>,
    attributes: Vec<KeyValue>,
}

impl metrics::HistogramFn for OtelHistogram {
    fn record(&self, value: f64) {
        self.histogram.record(value, &self.attributes);
    }
}

impl metrics::Recorder for OtelRecorder {
    fn describe_counter(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}

    fn describe_gauge(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}

    fn describe_histogram(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        cached(&self.counters, key, || {
            let counter = self.meter.u64_counter(key.name().to_owned()).build();
            Counter::from_arc(Arc::new(OtelCounter { counter, attributes: attributes(key) }))
        })
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        cached(&self.gauges, key, || {
            let gauge = self.meter.f64_gauge(key.name().to_owned()).build();
            Gauge::from_arc(Arc::new(OtelGauge { gauge, attributes: attributes(key), value: AtomicU64::new(0) }))
        })
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        cached(&self.histograms, key, || {
            let histogram = self
                .meter
                .f64_histogram(key.name().to_owned())
                .with_unit(if key.name().ends_with("_seconds") { "s" } else { "" })
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build();
            Histogram::from_arc(Arc::new(OtelHistogram { histogram, attributes: attributes(key) }))
        })
    }
}

#[cfg(test)]
mod tests {
    use metrics::Recorder as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
    use opentelemetry_sdk::metrics::reader::MetricReader as _;

    use super::*;

    static META: Metadata<'static> = Metadata::new("test", metrics::Level::INFO, None);

    fn collect(reader: &super::super::SharedReader) -> Vec<(String, String)> {
        let mut rm = ResourceMetrics::default();
        reader.collect(&mut rm).unwrap();
        let mut out = Vec::new();
        for scope in rm.scope_metrics() {
            for m in scope.metrics() {
                let shown = match m.data() {
                    AggregatedMetrics::U64(MetricData::Sum(s)) => s
                        .data_points()
                        .map(|p| format!("{:?}={}", p.attributes().collect::<Vec<_>>(), p.value()))
                        .collect(),
                    AggregatedMetrics::F64(MetricData::Gauge(g)) => {
                        g.data_points().map(|p| p.value().to_string()).collect::<Vec<_>>().join(",")
                    }
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => h
                        .data_points()
                        .map(|p| format!("count={} sum={} buckets={}", p.count(), p.sum(), p.bounds().count()))
                        .collect(),
                    other => format!("{other:?}"),
                };
                out.push((m.name().to_owned(), shown));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn counters_gauges_and_histograms_become_instruments_with_their_labels() {
        let reader = super::super::SharedReader(Arc::new(opentelemetry_sdk::metrics::ManualReader::builder().build()));
        let provider = SdkMeterProvider::builder().with_reader(reader.clone()).build();
        let recorder = OtelRecorder::new(&provider);
        let labels = [("queue", "q"), ("function", "f")];
        let key = Key::from_parts("rrq_jobs_completed_total", &labels);
        recorder.register_counter(&key, &META).increment(1);
        recorder.register_counter(&key, &META).increment(2);
        let gauge = recorder.register_gauge(&Key::from_name("rrq_jobs_in_flight"), &META);
        gauge.set(5.0);
        gauge.decrement(2.0);
        let histogram = recorder.register_histogram(&Key::from_parts("rrq_job_duration_seconds", &labels), &META);
        histogram.record(0.02);
        histogram.record(3.0);
        let got = collect(&reader);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].0, "rrq_job_duration_seconds");
        assert_eq!(got[0].1, "count=2 sum=3.02 buckets=15");
        assert_eq!(got[1], ("rrq_jobs_completed_total".to_owned(), got[1].1.clone()));
        assert!(got[1].1.ends_with("=3") && got[1].1.contains("queue") && got[1].1.contains("\"f\""), "{got:?}");
        assert_eq!(got[2], ("rrq_jobs_in_flight".to_owned(), "3".to_owned()));
    }
}
