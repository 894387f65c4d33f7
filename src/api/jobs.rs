//! JobService: the Job mapping and thin handlers over the generic methods.

use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::{
    context::scope,
    convert::*,
    resource::{self, ApiResource, BatchItem, ListArgs},
};
use crate::{
    domain::{
        application::APPLICATION,
        job::{self, EXPERIENCE_LEVEL, JOB, JOB_STATUS, JOB_TYPE},
        record::Fields,
        schema::{FieldKind, Resource},
        value::Value,
    },
    error::{Error, FieldViolation},
    pb::{self, job_service_server::JobService},
    store::{
        Store, import, page,
        records::Record,
        search::{self, Mode, SearchQuery},
    },
};

/// Rows and bytes per import batch (one COPY + merge transaction each).
pub const IMPORT_BATCH_ROWS: usize = 2000;
pub const IMPORT_BATCH_BYTES: usize = 8 << 20;
/// Search page sizes.
const SEARCH_DEFAULT_PAGE: usize = 20;
const SEARCH_MAX_PAGE: usize = 100;
const SEARCH_MAX_QUERY: usize = 1000;

fn list_args<'a>(
    page_size: i32,
    page_token: &'a str,
    filter: &'a str,
    order_by: &'a str,
    show_deleted: bool,
    count: bool,
) -> ListArgs<'a> {
    ListArgs { page_size, page_token, filter, order_by, show_deleted, count }
}

impl ApiResource for pb::Job {
    const RES: &'static Resource = &JOB;
    const FIELD: &'static str = "job";
    /// Deleting a job soft-deletes its live applications (audited); undeleting
    /// it restores them. Applications are never orphaned silently.
    const CASCADES: &'static [(&'static Resource, &'static str)] = &[(&APPLICATION, "job_id")];

    fn to_values(&self) -> Result<(Vec<Value>, Vec<bool>), Vec<FieldViolation>> {
        let mut e = Vec::new();
        let values = vec![
            Value::Null, // id: assigned by the server
            text(&self.title),
            text(&self.company_name),
            uuid_field("company_id", &self.company_id, &mut e),
            text(&self.location),
            opt_int(self.salary_min),
            opt_int(self.salary_max),
            text(&self.salary_currency),
            text(&self.description),
            text(&self.requirements),
            text(&self.benefits),
            text(&self.job_url),
            text(&self.source_site),
            time("posting_time", &self.posting_time, &mut e),
            time("application_deadline", &self.application_deadline, &mut e),
            time("discovered_time", &self.discovered_time, &mut e),
            Value::Bool(self.remote),
            enum_field("job_type", &JOB_TYPE, self.job_type, &mut e),
            enum_field("experience_level", &EXPERIENCE_LEVEL, self.experience_level, &mut e),
            text(&self.industry),
            strings(&self.keywords),
            enum_field("status", &JOB_STATUS, self.status, &mut e),
            structure(&self.attributes),
            Value::Null,
            Value::Null,
            Value::Null,
        ];
        values_or_errors(values, e)
    }

    fn from_record(r: &Record) -> Self {
        let v = &r.values;
        pb::Job {
            id: text_out(&v[0]),
            title: text_out(&v[1]),
            company_name: text_out(&v[2]),
            company_id: text_out(&v[3]),
            location: text_out(&v[4]),
            salary_min: opt_int_out(&v[5]),
            salary_max: opt_int_out(&v[6]),
            salary_currency: text_out(&v[7]),
            description: text_out(&v[8]),
            requirements: text_out(&v[9]),
            benefits: text_out(&v[10]),
            job_url: text_out(&v[11]),
            source_site: text_out(&v[12]),
            posting_time: time_out(&v[13]),
            application_deadline: time_out(&v[14]),
            discovered_time: time_out(&v[15]),
            remote: bool_out(&v[16]),
            job_type: enum_out(&JOB_TYPE, &v[17]),
            experience_level: enum_out(&EXPERIENCE_LEVEL, &v[18]),
            industry: text_out(&v[19]),
            keywords: strings_out(&v[20]),
            status: enum_out(&JOB_STATUS, &v[21]),
            attributes: structure_out(&v[22]),
            create_time: time_out(&v[23]),
            update_time: time_out(&v[24]),
            delete_time: time_out(&v[25]),
            etag: r.etag(),
        }
    }

    fn normalize(fields: &mut Fields<'_>) -> Result<(), Vec<FieldViolation>> {
        job::normalize(fields)
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn etag(&self) -> &str {
        &self.etag
    }
}

pub struct JobApi {
    store: Store,
}

impl JobApi {
    pub fn new(store: Store) -> Self {
        JobApi { store }
    }
}

#[tonic::async_trait]
impl JobService for JobApi {
    async fn create_job(&self, req: Request<pb::CreateJobRequest>) -> Result<Response<pb::Job>, Status> {
        let (scope, _) = scope(&self.store, &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        Ok(Response::new(resource::create(&self.store, &scope, r.job, &r.request_id).await?))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let (scope, _) = scope(&self.store, &req, "")?;
        Ok(Response::new(resource::get(&self.store, &scope, &req.get_ref().id).await?))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let (scope, _) = scope(&self.store, &req, "")?;
        let r = req.get_ref();
        let args = list_args(r.page_size, &r.page_token, &r.filter, &r.order_by, r.show_deleted, r.count);
        let page = resource::list::<pb::Job>(&self.store, &scope, args).await?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: page.items,
            next_page_token: page.next_page_token,
            total_size: page.total_size,
        }))
    }

    async fn update_job(&self, req: Request<pb::UpdateJobRequest>) -> Result<Response<pb::Job>, Status> {
        let (scope, _) = scope(&self.store, &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        Ok(Response::new(resource::update(&self.store, &scope, r.job, r.update_mask, &r.request_id).await?))
    }

    async fn delete_job(&self, req: Request<pb::DeleteJobRequest>) -> Result<Response<pb::Job>, Status> {
        let (scope, _) = scope(&self.store, &req, &req.get_ref().request_id)?;
        let r = req.get_ref();
        Ok(Response::new(
            resource::set_deleted(&self.store, &scope, &r.id, &r.etag, true, &r.request_id).await?,
        ))
    }

    async fn undelete_job(&self, req: Request<pb::UndeleteJobRequest>) -> Result<Response<pb::Job>, Status> {
        let (scope, _) = scope(&self.store, &req, &req.get_ref().request_id)?;
        let r = req.get_ref();
        Ok(Response::new(resource::set_deleted(&self.store, &scope, &r.id, "", false, &r.request_id).await?))
    }

    async fn batch_get_jobs(
        &self,
        req: Request<pb::BatchGetJobsRequest>,
    ) -> Result<Response<pb::BatchGetJobsResponse>, Status> {
        let (scope, _) = scope(&self.store, &req, "")?;
        let jobs = resource::batch_get(&self.store, &scope, &req.get_ref().ids).await?;
        Ok(Response::new(pb::BatchGetJobsResponse { jobs }))
    }

    async fn batch_create_jobs(
        &self,
        req: Request<pb::BatchCreateJobsRequest>,
    ) -> Result<Response<pb::BatchCreateJobsResponse>, Status> {
        let (scope, _) = scope(&self.store, &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        let items =
            r.requests.into_iter().map(|c| BatchItem { resource: c.job, request_id: c.request_id }).collect();
        let jobs = resource::batch_create(&self.store, &scope, items, &r.request_id).await?;
        Ok(Response::new(pb::BatchCreateJobsResponse { jobs }))
    }

    async fn import_jobs(
        &self,
        req: Request<Streaming<pb::Job>>,
    ) -> Result<Response<pb::ImportJobsResponse>, Status> {
        let (scope, _) = scope(&self.store, &req, "")?;
        let header_source = req
            .metadata()
            .get("x-source-site")
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .map(str::to_owned);
        let mut stream = req.into_inner();
        let mut run = import::start(&self.store, &scope, header_source.as_deref()).await?;
        // The reader validates and batches while the writer applies the
        // previous batch; at most two batches wait in between.
        let (batches, mut queue) = tokio::sync::mpsc::channel::<import::Batch>(2);
        let (store, wscope) = (self.store.clone(), scope.clone());
        let writer = tokio::spawn(
            async move {
                while let Some(b) = queue.recv().await {
                    import::apply_jobs(&store, &wscope, &mut run, b).await?;
                }
                Ok::<_, Error>(run)
            }
            .in_current_span(), // statements stay children of the call's span
        );
        let mut batch = import::Batch::default();
        let (mut bytes, mut index, mut first_source) = (0usize, 0i64, None::<String>);
        let read = loop {
            match stream.message().await {
                Ok(Some(job)) => {
                    bytes += job.encoded_len();
                    if first_source.is_none() && !job.source_site.is_empty() {
                        first_source = Some(job.source_site.chars().take(255).collect());
                    }
                    match resource::validate_new(&job) {
                        Ok(values) => batch.rows.push(import::Row { index, values }),
                        Err(violations) => batch.rejected.push(import::Rejected {
                            index,
                            reason: violations
                                .iter()
                                .map(|v| format!("{}: {}", v.field, v.description))
                                .collect::<Vec<_>>()
                                .join("; "),
                            key: (!job.job_url.is_empty()).then(|| job.job_url.chars().take(500).collect()),
                        }),
                    }
                    index += 1;
                    if batch.rows.len() + batch.rejected.len() >= IMPORT_BATCH_ROWS
                        || bytes >= IMPORT_BATCH_BYTES
                    {
                        bytes = 0;
                        if batches.send(std::mem::take(&mut batch)).await.is_err() {
                            break Ok(()); // the writer stopped; its error is reported below
                        }
                    }
                }
                Ok(None) => break Ok(()),
                Err(status) => break Err(status),
            }
        };
        if !batch.rows.is_empty() || !batch.rejected.is_empty() {
            let _ = batches.send(batch).await;
        }
        drop(batches);
        let run = writer.await.map_err(|e| Status::internal(format!("import writer: {e}")))??;
        let source = header_source.or(first_source);
        let rec = import::finish(&self.store, &scope, &run, source.as_deref()).await?;
        read?;
        Ok(Response::new(pb::ImportJobsResponse { ingest_run: Some(pb::IngestRun::from_record(&rec)) }))
    }

    async fn get_ingest_run(
        &self,
        req: Request<pb::GetIngestRunRequest>,
    ) -> Result<Response<pb::IngestRun>, Status> {
        let (scope, _) = scope(&self.store, &req, "")?;
        Ok(Response::new(resource::get(&self.store, &scope, &req.get_ref().id).await?))
    }

    async fn list_ingest_runs(
        &self,
        req: Request<pb::ListIngestRunsRequest>,
    ) -> Result<Response<pb::ListIngestRunsResponse>, Status> {
        let (scope, _) = scope(&self.store, &req, "")?;
        let r = req.get_ref();
        let args = list_args(r.page_size, &r.page_token, &r.filter, &r.order_by, false, r.count);
        let page = resource::list::<pb::IngestRun>(&self.store, &scope, args).await?;
        Ok(Response::new(pb::ListIngestRunsResponse {
            ingest_runs: page.items,
            next_page_token: page.next_page_token,
            total_size: page.total_size,
        }))
    }

    async fn search_jobs(
        &self,
        req: Request<pb::SearchJobsRequest>,
    ) -> Result<Response<pb::SearchJobsResponse>, Status> {
        let (scope, _) = scope(&self.store, &req, "")?;
        let r = req.get_ref();
        let text = r.query.trim();
        if text.is_empty() {
            return Err(Error::invalid("query", "query is required").into());
        }
        if text.chars().count() > SEARCH_MAX_QUERY {
            return Err(Error::invalid(
                "query",
                format!("query is longer than {SEARCH_MAX_QUERY} characters"),
            )
            .into());
        }
        let limit = match r.page_size {
            n if n < 0 => return Err(Error::invalid("page_size", "page_size must not be negative").into()),
            0 => SEARCH_DEFAULT_PAGE,
            n => (n as usize).min(SEARCH_MAX_PAGE),
        };
        let filter = resource::parse_filter(&JOB, &r.filter)?;
        let filter_text = filter.as_ref().map(|f| f.to_string()).unwrap_or_default();
        let tenant = scope.tenant.to_string();
        let binding =
            |mode: Mode| page::binding(&["job-search", &tenant, text, &filter_text, &format!("{mode:?}")]);
        let kinds = [FieldKind::Float, FieldKind::Uuid];
        let (mut mode, mut after) = (Mode::FullText, None);
        if !r.page_token.is_empty() {
            let decoded = page::decode(&r.page_token, &binding(Mode::FullText), &kinds)
                .map(|k| (Mode::FullText, k))
                .or_else(|_| {
                    page::decode(&r.page_token, &binding(Mode::Fuzzy), &kinds).map(|k| (Mode::Fuzzy, k))
                })?;
            mode = decoded.0;
            if let [Value::Float(s), Value::Uuid(id)] = decoded.1.as_slice() {
                after = Some((*s, *id));
            }
        }
        let db = self.store.begin_read(&scope).await?;
        let mut q = SearchQuery { text, filter: filter.as_ref(), after, limit, mode };
        let mut hits = search::search(&db, scope.tenant, &q).await?;
        if hits.is_empty() && after.is_none() && mode == Mode::FullText {
            q.mode = Mode::Fuzzy;
            hits = search::search(&db, scope.tenant, &q).await?;
        }
        db.commit().await?;
        let next_page_token = if hits.len() > limit {
            hits.truncate(limit);
            let (rec, score) = hits.last().expect("limit >= 1");
            page::encode(&binding(q.mode), &[Value::Float(*score), Value::Uuid(rec.id())])
        } else {
            String::new()
        };
        Ok(Response::new(pb::SearchJobsResponse {
            scores: hits.iter().map(|(_, s)| *s).collect(),
            jobs: hits.iter().map(|(rec, _)| pb::Job::from_record(rec)).collect(),
            next_page_token,
            fuzzy: q.mode == Mode::Fuzzy,
        }))
    }

    type ExportJobsStream = ReceiverStream<Result<pb::Job, Status>>;

    async fn export_jobs(
        &self,
        req: Request<pb::ExportJobsRequest>,
    ) -> Result<Response<Self::ExportJobsStream>, Status> {
        let (scope, _) = scope(&self.store, &req, "")?;
        let r = req.into_inner();
        let rx =
            resource::export::<pb::Job>(self.store.clone(), scope, &r.filter, &r.order_by, r.show_deleted)?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn create_application(
        &self,
        req: Request<pb::CreateApplicationRequest>,
    ) -> Result<Response<pb::Application>, Status> {
        let (scope, _) = scope(&self.store, &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        Ok(Response::new(resource::create(&self.store, &scope, r.application, &r.request_id).await?))
    }

    async fn get_application(
        &self,
        req: Request<pb::GetApplicationRequest>,
    ) -> Result<Response<pb::Application>, Status> {
        let (scope, _) = scope(&self.store, &req, "")?;
        Ok(Response::new(resource::get(&self.store, &scope, &req.get_ref().id).await?))
    }

    async fn list_applications(
        &self,
        req: Request<pb::ListApplicationsRequest>,
    ) -> Result<Response<pb::ListApplicationsResponse>, Status> {
        let (scope, _) = scope(&self.store, &req, "")?;
        let r = req.get_ref();
        let args = list_args(r.page_size, &r.page_token, &r.filter, &r.order_by, r.show_deleted, r.count);
        let page = resource::list::<pb::Application>(&self.store, &scope, args).await?;
        Ok(Response::new(pb::ListApplicationsResponse {
            applications: page.items,
            next_page_token: page.next_page_token,
            total_size: page.total_size,
        }))
    }

    async fn update_application(
        &self,
        req: Request<pb::UpdateApplicationRequest>,
    ) -> Result<Response<pb::Application>, Status> {
        let (scope, _) = scope(&self.store, &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        Ok(Response::new(
            resource::update(&self.store, &scope, r.application, r.update_mask, &r.request_id).await?,
        ))
    }

    async fn create_employer_response(
        &self,
        req: Request<pb::CreateEmployerResponseRequest>,
    ) -> Result<Response<pb::EmployerResponse>, Status> {
        let (scope, _) = scope(&self.store, &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        Ok(Response::new(resource::create(&self.store, &scope, r.employer_response, &r.request_id).await?))
    }

    async fn list_employer_responses(
        &self,
        req: Request<pb::ListEmployerResponsesRequest>,
    ) -> Result<Response<pb::ListEmployerResponsesResponse>, Status> {
        let (scope, _) = scope(&self.store, &req, "")?;
        let r = req.get_ref();
        let args = list_args(r.page_size, &r.page_token, &r.filter, &r.order_by, false, r.count);
        let page = resource::list::<pb::EmployerResponse>(&self.store, &scope, args).await?;
        Ok(Response::new(pb::ListEmployerResponsesResponse {
            employer_responses: page.items,
            next_page_token: page.next_page_token,
            total_size: page.total_size,
        }))
    }
}
