//! JobService: the Job, Application, EmployerResponse and IngestRun
//! mappings and thin handlers over the service's use cases.

use futures_util::stream::BoxStream;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::{
    context::scope,
    resource::{self as edge, ProtoField, ProtoResource, list_args},
};
use crate::{
    api::middleware::conventions::inbound,
    domain::{
        application::{APPLICATION, EMPLOYER_RESPONSE},
        ingest::INGEST_RUN,
        job::JOB,
        schema::Field,
        value::Value,
    },
    error::FieldViolation,
    pb::{self, job_service_server::JobService},
    proto_resource,
    service::{ImportItem, SearchArgs, Service},
};

proto_resource!(
    pb::Job,
    JOB,
    [
        id,
        title,
        company_name,
        company_id,
        location,
        salary_min,
        salary_max,
        salary_currency,
        description,
        requirements,
        benefits,
        job_url,
        source_site,
        posting_time,
        application_deadline,
        discovered_time,
        remote,
        job_type,
        experience_level,
        industry,
        keywords,
        status,
        attributes,
        create_time,
        update_time,
        delete_time,
    ],
    etag
);

proto_resource!(
    pb::Application,
    APPLICATION,
    [
        id,
        job_id,
        status,
        application_time,
        cover_letter_version,
        resume_version,
        interview_time,
        response_time,
        notes,
        credibility_rating,
        exaggeration_level,
        integrity_score,
        create_time,
        update_time,
        delete_time,
    ],
    etag
);

proto_resource!(
    pb::EmployerResponse,
    EMPLOYER_RESPONSE,
    [
        id,
        application_id,
        response_type,
        response_time,
        subject_line,
        email_content,
        sender_email,
        sentiment_score,
        requires_action,
        action_taken,
        follow_up_time,
        create_time,
        update_time,
    ],
    etag
);

proto_resource!(
    pb::IngestRun,
    INGEST_RUN,
    [
        id,
        source_site,
        start_time,
        end_time,
        received,
        inserted,
        updated,
        unchanged,
        failed,
        errors,
        create_time,
        update_time
    ],
    etag
);

/// An ingest run's rejected rows, stored as a JSON list.
impl ProtoField for Vec<pb::ImportError> {
    fn to_value(&self, _: &Field, _: &mut Vec<FieldViolation>) -> Value {
        Value::Json(serde_json::Value::Array(
            self.iter()
                .map(|e| serde_json::json!({"index": e.index, "reason": e.reason, "job_url": e.job_url}))
                .collect(),
        ))
    }
    fn from_value(v: &Value, _: &Field) -> Self {
        match v {
            Value::Json(serde_json::Value::Array(a)) => a
                .iter()
                .map(|e| pb::ImportError {
                    index: e["index"].as_i64().unwrap_or(-1),
                    reason: e["reason"].as_str().unwrap_or_default().to_owned(),
                    job_url: e["job_url"].as_str().unwrap_or_default().to_owned(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

pub struct JobApi {
    svc: Service,
}

impl JobApi {
    pub fn new(svc: Service) -> Self {
        JobApi { svc }
    }
}

#[tonic::async_trait]
impl JobService for JobApi {
    async fn create_job(&self, req: Request<pb::CreateJobRequest>) -> Result<Response<pb::Job>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        Ok(Response::new(edge::create(&self.svc, &scope, r.job, &r.request_id).await?))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        Ok(Response::new(edge::get(&self.svc, &scope, &req.get_ref().id).await?))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let args = list_args(r.page_size, &r.page_token, &r.filter, &r.order_by, r.show_deleted, r.count);
        let page = edge::list::<pb::Job>(&self.svc, &scope, args).await?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: page.items,
            next_page_token: page.next_page_token,
            total_size: page.total_size,
        }))
    }

    async fn update_job(&self, req: Request<pb::UpdateJobRequest>) -> Result<Response<pb::Job>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        let job =
            edge::update(&self.svc, &scope, r.job, r.update_mask, |j| &j.id, |j| &j.etag, &r.request_id);
        Ok(Response::new(job.await?))
    }

    async fn delete_job(&self, req: Request<pb::DeleteJobRequest>) -> Result<Response<pb::Job>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.get_ref();
        Ok(Response::new(edge::delete(&self.svc, &scope, &r.id, &r.etag, false, &r.request_id).await?))
    }

    async fn undelete_job(&self, req: Request<pb::UndeleteJobRequest>) -> Result<Response<pb::Job>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.get_ref();
        Ok(Response::new(edge::undelete(&self.svc, &scope, &r.id, &r.request_id).await?))
    }

    async fn batch_get_jobs(
        &self,
        req: Request<pb::BatchGetJobsRequest>,
    ) -> Result<Response<pb::BatchGetJobsResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let jobs = edge::batch_get(&self.svc, &scope, &req.get_ref().ids).await?;
        Ok(Response::new(pb::BatchGetJobsResponse { jobs }))
    }

    async fn batch_create_jobs(
        &self,
        req: Request<pb::BatchCreateJobsRequest>,
    ) -> Result<Response<pb::BatchCreateJobsResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        let items = r.requests.into_iter().map(|c| edge::batch_item(c.job, c.request_id)).collect();
        let jobs = edge::batch_create(&self.svc, &scope, items, &r.request_id).await?;
        Ok(Response::new(pb::BatchCreateJobsResponse { jobs }))
    }

    async fn import_jobs(
        &self,
        req: Request<Streaming<pb::Job>>,
    ) -> Result<Response<pb::ImportJobsResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let header_source = req
            .metadata()
            .get("x-source-site")
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .map(str::to_owned);
        let mut stream = req.into_inner();
        let mut importer = self.svc.import(&scope, &JOB, header_source).await?;
        let read = loop {
            match stream.message().await {
                Ok(Some(job)) => {
                    let bytes = job.encoded_len();
                    let (draft, conversion) = job.to_draft();
                    if !importer.push(ImportItem { draft, conversion, bytes }).await {
                        break Ok(()); // the writer stopped; its error is reported below
                    }
                }
                Ok(None) => break Ok(()),
                Err(status) => break Err(inbound(status)),
            }
        };
        let rec = importer.finish().await?;
        read?;
        Ok(Response::new(pb::ImportJobsResponse { ingest_run: Some(pb::IngestRun::from_record(&rec)) }))
    }

    async fn get_ingest_run(
        &self,
        req: Request<pb::GetIngestRunRequest>,
    ) -> Result<Response<pb::IngestRun>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        Ok(Response::new(edge::get(&self.svc, &scope, &req.get_ref().id).await?))
    }

    async fn list_ingest_runs(
        &self,
        req: Request<pb::ListIngestRunsRequest>,
    ) -> Result<Response<pb::ListIngestRunsResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let args = list_args(r.page_size, &r.page_token, &r.filter, &r.order_by, false, r.count);
        let page = edge::list::<pb::IngestRun>(&self.svc, &scope, args).await?;
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
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let args = SearchArgs {
            query: &r.query,
            filter: &r.filter,
            page_size: r.page_size,
            page_token: &r.page_token,
        };
        let page = self.svc.search(&scope, &JOB, args).await?;
        Ok(Response::new(pb::SearchJobsResponse {
            scores: page.hits.iter().map(|h| h.score).collect(),
            jobs: page.hits.iter().map(|h| pb::Job::from_record(&h.record)).collect(),
            next_page_token: page.next_page_token,
            fuzzy: page.fuzzy,
        }))
    }

    type ExportJobsStream = BoxStream<'static, Result<pb::Job, Status>>;

    async fn export_jobs(
        &self,
        req: Request<pb::ExportJobsRequest>,
    ) -> Result<Response<Self::ExportJobsStream>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.into_inner();
        Ok(Response::new(edge::export::<pb::Job>(&self.svc, scope, &r.filter, &r.order_by, r.show_deleted)?))
    }

    async fn create_application(
        &self,
        req: Request<pb::CreateApplicationRequest>,
    ) -> Result<Response<pb::Application>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        Ok(Response::new(edge::create(&self.svc, &scope, r.application, &r.request_id).await?))
    }

    async fn get_application(
        &self,
        req: Request<pb::GetApplicationRequest>,
    ) -> Result<Response<pb::Application>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        Ok(Response::new(edge::get(&self.svc, &scope, &req.get_ref().id).await?))
    }

    async fn list_applications(
        &self,
        req: Request<pb::ListApplicationsRequest>,
    ) -> Result<Response<pb::ListApplicationsResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let args = list_args(r.page_size, &r.page_token, &r.filter, &r.order_by, r.show_deleted, r.count);
        let page = edge::list::<pb::Application>(&self.svc, &scope, args).await?;
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
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        let app = edge::update(
            &self.svc,
            &scope,
            r.application,
            r.update_mask,
            |a| &a.id,
            |a| &a.etag,
            &r.request_id,
        );
        Ok(Response::new(app.await?))
    }

    async fn create_employer_response(
        &self,
        req: Request<pb::CreateEmployerResponseRequest>,
    ) -> Result<Response<pb::EmployerResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        Ok(Response::new(edge::create(&self.svc, &scope, r.employer_response, &r.request_id).await?))
    }

    async fn list_employer_responses(
        &self,
        req: Request<pb::ListEmployerResponsesRequest>,
    ) -> Result<Response<pb::ListEmployerResponsesResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let args = list_args(r.page_size, &r.page_token, &r.filter, &r.order_by, false, r.count);
        let page = edge::list::<pb::EmployerResponse>(&self.svc, &scope, args).await?;
        Ok(Response::new(pb::ListEmployerResponsesResponse {
            employer_responses: page.items,
            next_page_token: page.next_page_token,
            total_size: page.total_size,
        }))
    }
}
