//! `tracing` events as OpenTelemetry log records: a subscriber layer that
//! turns each event into a record (message as body, fields as attributes,
//! the level as severity) stamped with the trace and span of the `tracing`
//! span the event happened in; and the processor that queues records for
//! export.

use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogProcessor, SdkLogRecord, SdkLogger, SdkLoggerProvider};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use rrq_store::{Clock as _, SystemClock};

use super::Queue;

/// One queued record with the scope of the logger that made it.
pub(super) type Record = (SdkLogRecord, InstrumentationScope);

/// Hands each record to the export task without waiting.
#[derive(Debug)]
pub(super) struct RecordQueue(pub(super) Queue<Record>);

impl LogProcessor for RecordQueue {
    fn emit(&self, data: &mut SdkLogRecord, instrumentation: &InstrumentationScope) {
        self.0.offer((data.clone(), instrumentation.clone()));
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The subscriber layer that exports `tracing` events as log records.
#[derive(Debug)]
pub struct LogBridge {
    logger: SdkLogger,
}

impl LogBridge {
    pub(super) fn new(provider: &SdkLoggerProvider) -> LogBridge {
        LogBridge { logger: provider.logger("rrq") }
    }
}

fn severity(level: &tracing::Level) -> Severity {
    match *level {
        tracing::Level::TRACE => Severity::Trace,
        tracing::Level::DEBUG => Severity::Debug,
        tracing::Level::INFO => Severity::Info,
        tracing::Level::WARN => Severity::Warn,
        tracing::Level::ERROR => Severity::Error,
    }
}

/// Copies an event's fields into the record.
struct Fields<'a>(&'a mut SdkLogRecord);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: AnyValue) {
        if field.name() == "message" {
            self.0.set_body(value);
        } else {
            self.0.add_attribute(field.name(), value);
        }
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, AnyValue::String(format!("{value:?}").into()));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, AnyValue::String(value.to_owned().into()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, AnyValue::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(v) => self.put(field, AnyValue::Int(v)),
            Err(_) => self.put(field, AnyValue::String(value.to_string().into())),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, AnyValue::Double(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, AnyValue::Boolean(value));
    }
}

impl<S> tracing_subscriber::Layer<S> for LogBridge
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut record = self.logger.create_log_record();
        record.set_timestamp(SystemClock.now().into());
        record.set_severity_number(severity(meta.level()));
        record.set_severity_text(meta.level().as_str());
        record.set_target(meta.target().to_owned());
        event.record(&mut Fields(&mut record));
        // The trace and span of the `tracing` span the event happened in,
        // read from that span (the trace layer activates no OpenTelemetry
        // context on enter: that cost every job's every poll). Without one,
        // the logger falls back to the current OpenTelemetry context.
        if let Some(span) = ctx.event_span(event) {
            let id = span.id();
            drop(span);
            let cx = tracing::dispatcher::get_default(|d| tracing_opentelemetry::get_otel_context(&id, d));
            if let Some(cx) = cx {
                use opentelemetry::trace::TraceContextExt as _;
                let sc = cx.span().span_context().clone();
                if sc.is_valid() {
                    record.set_trace_context(sc.trace_id(), sc.span_id(), Some(sc.trace_flags()));
                }
            }
        }
        self.logger.emit(record);
    }
}
