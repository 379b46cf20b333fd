//! Reading a dead letter queue: plain pages of the list, and the filtered
//! walk (bounded by [`DLQ_SCAN_LIMIT`]) that filtered pages and the "all
//! matching" actions share.

use std::collections::BTreeMap;

use rrq_protocol::{DlqName, JobId, QueueName};
use rrq_store::{Job, Store, StoreError};
use serde::Serialize;

use super::{JobRow, Known, parse, row};

/// Most DLQ entries one filtered DLQ read looks at (newest first). A DLQ
/// longer than this is filtered over its newest entries only, and the answer
/// says so (`scanned` < `total`). Each entry costs about 30 µs (its hash
/// read, and parsed when its raw fields can match), so this bound keeps a
/// filtered page within 200 ms (`cargo xtask bench dashboard`,
/// docs/dashboard.md); 10,000 took 300–400 ms.
pub const DLQ_SCAN_LIMIT: usize = 4_000;

/// How many job hashes are read per round trip when filtering a DLQ.
const DLQ_CHUNK: usize = 500;

/// What a DLQ filter keeps (every part optional; text matches are
/// case-insensitive substrings, the queue an exact queue).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct DlqFilter {
    /// The job's queue (bare or full name).
    pub queue: Option<String>,
    /// Part of the function name.
    pub function: Option<String>,
    /// Part of the last error.
    pub error: Option<String>,
}

impl DlqFilter {
    fn normalised(&self) -> (Option<QueueName>, Option<String>, Option<String>) {
        let text = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_lowercase);
        (self.queue.as_deref().and_then(QueueName::parse), text(&self.function), text(&self.error))
    }

    fn is_empty(&self) -> bool {
        let (q, f, e) = self.normalised();
        q.is_none() && f.is_none() && e.is_none()
    }

    /// A cheap test on the raw hash, before parsing it: false only where
    /// [`DlqFilter::keeps`] would be false too (its text criteria read these
    /// same fields, and a hash without them does not parse), so entries that
    /// cannot match are never parsed.
    fn may_keep(&self, fields: Option<&BTreeMap<String, String>>) -> bool {
        let (_, function, error) = self.normalised();
        let Some(fields) = fields else { return function.is_none() && error.is_none() };
        let has = |name: &str, part: &Option<String>| {
            part.as_ref().is_none_or(|p| fields.get(name).is_some_and(|v| v.to_lowercase().contains(p.as_str())))
        };
        has("function_name", &function) && has("last_error", &error)
    }

    fn keeps(&self, job: &Option<Result<Job, String>>, default_queue: &QueueName) -> bool {
        let (queue, function, error) = self.normalised();
        if queue.is_none() && function.is_none() && error.is_none() {
            return true;
        }
        let Some(Ok(job)) = job else { return false };
        queue.is_none_or(|q| job.queue_name.as_ref().unwrap_or(default_queue) == &q)
            && function.is_none_or(|f| job.function_name.to_lowercase().contains(&f))
            && error.is_none_or(|e| job.last_error.as_deref().is_some_and(|l| l.to_lowercase().contains(&e)))
    }
}

/// A filtered page of a DLQ.
#[derive(Clone, Debug, Serialize)]
pub struct DlqPage {
    /// The DLQ (full key).
    pub dlq: String,
    /// Entries in the DLQ.
    pub total: u64,
    /// Entries looked at (newest first); less than `total` when the DLQ is
    /// longer than the scan limit of a filtered read.
    pub scanned: u64,
    /// Entries that match the filter among those scanned.
    pub matched: u64,
    /// Offset of the first row among the matches.
    pub offset: usize,
    /// Rows asked for.
    pub limit: usize,
    /// The matching jobs of this page.
    pub jobs: Vec<JobRow>,
}

/// Walks a DLQ newest first and calls `keep` on every entry the filter
/// keeps, reading job hashes in batches. Without a filter, only the
/// requested window is read (plain list pagination).
async fn dlq_walk(
    store: &dyn Store,
    known: &Known,
    dlq: &DlqName,
    filter: &DlqFilter,
    mut visit: impl FnMut(usize, &JobId, Option<Result<Job, String>>) -> bool,
) -> Result<(u64, u64, u64), StoreError> {
    let total = store.dlq_len(dlq).await?;
    let (mut scanned, mut matched) = (0u64, 0u64);
    let mut offset = 0usize;
    while offset < DLQ_SCAN_LIMIT {
        let ids = store.dlq_ids(dlq, offset, DLQ_CHUNK).await?;
        if ids.is_empty() {
            break;
        }
        offset += ids.len();
        let hashes = store.job_fields_batch(&ids).await?;
        for (id, fields) in ids.iter().zip(hashes) {
            scanned += 1;
            if !filter.may_keep(fields.as_ref()) {
                continue;
            }
            let job = parse(id, fields);
            if filter.keeps(&job, &known.default_queue) {
                let index = matched as usize;
                matched += 1;
                if !visit(index, id, job) {
                    return Ok((total, scanned, matched));
                }
            }
        }
    }
    Ok((total, scanned, matched))
}

/// One page of a DLQ, filtered.
pub async fn dlq_page(
    store: &dyn Store,
    known: &Known,
    dlq: &DlqName,
    filter: &DlqFilter,
    offset: usize,
    limit: usize,
) -> Result<DlqPage, StoreError> {
    if filter.is_empty() {
        // Plain pagination of the list: only the page is read.
        let total = store.dlq_len(dlq).await?;
        let ids = store.dlq_ids(dlq, offset, limit).await?;
        let hashes = store.job_fields_batch(&ids).await?;
        let jobs = ids.iter().zip(hashes).map(|(id, f)| row(id, parse(id, f), None)).collect();
        return Ok(DlqPage {
            dlq: dlq.as_str().to_owned(),
            total,
            scanned: total,
            matched: total,
            offset,
            limit,
            jobs,
        });
    }
    let mut jobs = Vec::new();
    let (total, scanned, matched) = dlq_walk(store, known, dlq, filter, |i, id, job| {
        if i >= offset && jobs.len() < limit {
            jobs.push(row(id, job, None));
        }
        true
    })
    .await?;
    Ok(DlqPage { dlq: dlq.as_str().to_owned(), total, scanned, matched, offset, limit, jobs })
}

/// The ids of a DLQ that match a filter (newest first, within the scan limit).
pub async fn dlq_matching(
    store: &dyn Store,
    known: &Known,
    dlq: &DlqName,
    filter: &DlqFilter,
) -> Result<Vec<(JobId, Option<QueueName>)>, StoreError> {
    let mut out = Vec::new();
    dlq_walk(store, known, dlq, filter, |_, id, job| {
        let queue = match job {
            Some(Ok(job)) => job.queue_name,
            _ => None,
        };
        out.push((id.clone(), queue));
        true
    })
    .await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn the_raw_precheck_never_drops_an_entry_the_filter_keeps() {
        let base = [("enqueue_time", "2026-01-01T00:00:00Z"), ("status", "FAILED"), ("job_params", "{}")];
        let hashes = [
            hash(&[base[0], base[1], base[2], ("function_name", "Charge_Card"), ("last_error", "Card DECLINED")]),
            hash(&[base[0], base[1], base[2], ("function_name", "send_email"), ("last_error", "timeout")]),
            hash(&[base[0], base[1], base[2], ("function_name", "charge_card")]),
            hash(&[base[0], base[1], ("function_name", "charge_card"), ("job_params", "not json")]),
            hash(&[("last_error", "declined")]),
        ];
        let filters = [
            DlqFilter::default(),
            DlqFilter { function: Some("charge".into()), ..DlqFilter::default() },
            DlqFilter { error: Some(" Declined ".into()), ..DlqFilter::default() },
            DlqFilter { function: Some("CHARGE".into()), error: Some("declined".into()), queue: None },
            DlqFilter { queue: Some("elsewhere".into()), ..DlqFilter::default() },
        ];
        let default_queue = QueueName::new("default");
        let id = JobId::new("j");
        let mut rejected = 0;
        for filter in &filters {
            for fields in hashes.iter().map(Some).chain([None]) {
                let kept = filter.keeps(&parse(&id, fields.cloned()), &default_queue);
                let may = filter.may_keep(fields);
                assert!(may || !kept, "{filter:?} on {fields:?}: the precheck dropped a kept entry");
                rejected += usize::from(!may);
            }
        }
        assert!(rejected >= 8, "the precheck rejects entries that cannot match ({rejected})");
        let charge = &filters[1];
        assert!(charge.may_keep(Some(&hashes[0])) && !charge.may_keep(Some(&hashes[1])));
    }
}
