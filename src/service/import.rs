//! Bulk import of any resource that declares an `ImportSpec`: the caller
//! pushes rows as they arrive; the importer validates and batches them
//! while a writer task applies earlier batches (binary COPY + one merge per
//! batch, `store::import`), [`IMPORT_WRITERS`] at once on their own
//! connections, with at most two more queued. One IMPORT audit event per
//! run.

use tokio::{sync::mpsc, task::JoinHandle};
use tracing::Instrument;

use super::{Changes, Draft, Service, validate_new};
use crate::{
    domain::{audit::AUDIT_EVENT, ingest::INGEST_RUN, record::Record, schema::Resource, value::Value},
    error::{Error, FieldViolation},
    store::{Scope, import},
};

/// Rows and bytes per import batch (one COPY + merge transaction each).
pub const IMPORT_BATCH_ROWS: usize = 2000;
pub const IMPORT_BATCH_BYTES: usize = 8 << 20;

/// Batches of one run applied at the same time, each on its own
/// connection: PostgreSQL's part of an import (parsing the search vector,
/// index maintenance) then runs on two cores. Batches sharing a natural key
/// are applied in stream order.
pub const IMPORT_WRITERS: usize = 2;

/// One row of the caller's stream.
pub struct ImportItem {
    pub draft: Draft,
    /// Violations found while converting the caller's message.
    pub conversion: Vec<FieldViolation>,
    /// Its encoded size (batches are bounded in bytes too).
    pub bytes: usize,
}

/// An import in progress.
pub struct Importer {
    svc: Service,
    scope: Scope,
    res: &'static Resource,
    header_source: Option<String>,
    first_source: Option<String>,
    batch: import::Batch,
    bytes: usize,
    index: i64,
    queue: Option<mpsc::Sender<import::Batch>>,
    /// Until it answered `finish`; aborted if the importer is dropped first.
    writer: Option<JoinHandle<Result<import::Run, Error>>>,
}

fn text_at(res: &Resource, values: &[Value], field: &str, max: usize) -> Option<String> {
    match res.index_of(field).map(|i| &values[i]) {
        Some(Value::Text(s)) if !s.is_empty() => Some(s.chars().take(max).collect()),
        _ => None,
    }
}

impl Service {
    /// Starts an import run of `res` (committed at once, so a cut-off run is
    /// still visible). `source_site` names the run; else the first row's.
    pub async fn import(
        &self,
        scope: &Scope,
        res: &'static Resource,
        source_site: Option<String>,
    ) -> Result<Importer, Error> {
        if res.import.is_none() {
            return Err(Error::Internal(format!("{} declares no import", res.name)));
        }
        let mut run = import::start(&self.store, scope, res, source_site.as_deref()).await?;
        self.ingested(scope, Changes { queries: vec![&INGEST_RUN], ..Changes::default() }).await;
        let (queue, mut batches) = mpsc::channel::<import::Batch>(2);
        let (svc, wscope) = (self.clone(), scope.clone());
        let writer = tokio::spawn(
            async move {
                let mut inflight = futures_util::stream::FuturesUnordered::new();
                let probe = std::sync::Arc::new(import::Probe::default());
                let mut open = true;
                // A committed batch: its counts join the run's, and the cache
                // hears that every row of the resource may have changed, and
                // the run's counters did.
                let committed = |run: &mut import::Run, delta: import::Run| {
                    run.absorb(delta);
                    Changes { rows: vec![(&INGEST_RUN, run.id)], ..Changes::bulk(res) }
                };
                while open || !inflight.is_empty() {
                    tokio::select! {
                        biased;
                        Some(done) = futures_util::StreamExt::next(&mut inflight), if !inflight.is_empty() => {
                            let changes = committed(&mut run, done?);
                            svc.ingested(&wscope, changes).await;
                        }
                        b = batches.recv(), if open && inflight.len() < IMPORT_WRITERS => match b {
                            None => open = false,
                            Some(b) => {
                                let keys = import::batch_keys(res, &b);
                                // A key of a batch in flight: that one first.
                                while inflight.iter().any(|f: &Apply| !f.keys.is_disjoint(&keys)) {
                                    let done = futures_util::StreamExt::next(&mut inflight)
                                        .await
                                        .expect("a batch is in flight");
                                    let changes = committed(&mut run, done?);
                                    svc.ingested(&wscope, changes).await;
                                }
                                let (svc, scope, base) = (svc.clone(), wscope.clone(), run.empty());
                                let probe = probe.clone();
                                inflight.push(Apply::new(keys, async move {
                                    import::apply(&svc.store, &scope, &base, b, &probe).await
                                }));
                            }
                        },
                    }
                }
                Ok::<_, Error>(run)
            }
            .in_current_span(), // statements stay children of the call's span
        );
        Ok(Importer {
            svc: self.clone(),
            scope: scope.clone(),
            res,
            header_source: source_site,
            first_source: None,
            batch: import::Batch::default(),
            bytes: 0,
            index: 0,
            queue: Some(queue),
            writer: Some(writer),
        })
    }
}

impl Importer {
    /// Takes one row; false when the writer has stopped (stop reading: its
    /// error is reported by `finish`).
    pub async fn push(&mut self, item: ImportItem) -> bool {
        let res = self.res;
        self.bytes += item.bytes;
        if self.first_source.is_none() {
            self.first_source = text_at(res, &item.draft.values, "source_site", 255);
        }
        let key_field = res.import.map_or("", |i| i.key);
        let key = text_at(res, &item.draft.values, key_field, 500);
        let index = self.index;
        match validate_new(res, item.draft, item.conversion) {
            Ok(values) => self.batch.rows.push(import::Row { index, values }),
            Err(violations) => self.batch.rejected.push(import::Rejected {
                index,
                reason: violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; "),
                key,
            }),
        }
        self.index += 1;
        if self.batch.rows.len() + self.batch.rejected.len() >= IMPORT_BATCH_ROWS
            || self.bytes >= IMPORT_BATCH_BYTES
        {
            self.bytes = 0;
            let batch = std::mem::take(&mut self.batch);
            let queue = self.queue.as_ref().expect("queue is open until finish");
            return queue.send(batch).await.is_ok();
        }
        true
    }

    /// Applies what is left, closes the run (end time, counters, one IMPORT
    /// audit event) and returns its record.
    pub async fn finish(mut self) -> Result<Record, Error> {
        let queue = self.queue.take().expect("queue is open until finish");
        if !self.batch.rows.is_empty() || !self.batch.rejected.is_empty() {
            let _ = queue.send(std::mem::take(&mut self.batch)).await;
        }
        drop(queue);
        let writer = self.writer.as_mut().expect("the writer runs until finish");
        let run = writer.await.map_err(|e| Error::Internal(format!("import writer: {e}")))??;
        self.writer = None;
        let source = self.header_source.take().or(self.first_source.take());
        let rec = import::finish(&self.svc.store, &self.scope, &run, source.as_deref()).await?;
        // The run's row changed and an IMPORT event was written.
        let changes =
            Changes { rows: vec![(&INGEST_RUN, rec.id())], queries: vec![&AUDIT_EVENT], bulk: vec![] };
        self.svc.ingested(&self.scope, changes).await;
        Ok(rec)
    }
}

/// One batch being applied, with its natural keys.
struct Apply {
    keys: std::collections::HashSet<String>,
    fut: std::pin::Pin<Box<dyn std::future::Future<Output = Result<import::Run, Error>> + Send>>,
}

impl Apply {
    fn new(
        keys: std::collections::HashSet<String>,
        fut: impl std::future::Future<Output = Result<import::Run, Error>> + Send + 'static,
    ) -> Self {
        Apply { keys, fut: Box::pin(fut.in_current_span()) }
    }
}

impl std::future::Future for Apply {
    type Output = Result<import::Run, Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.fut.as_mut().poll(cx)
    }
}

/// The caller went away (the call's future was dropped) before the run
/// finished: the writer stops too, its batch in flight rolled back (its
/// statement cancelled, `store::Tx`), the batches it had queued dropped.
/// What committed stays, counted in the run, which is left cut off (no end
/// time).
impl Drop for Importer {
    fn drop(&mut self) {
        if let Some(writer) = &self.writer {
            writer.abort();
        }
    }
}

impl Service {
    /// Tells the cache what a committed step of an import changed.
    async fn ingested(&self, scope: &Scope, changes: Changes) {
        if let Some(c) = &self.cache {
            c.invalidate(scope, &changes).await;
        }
    }
}
