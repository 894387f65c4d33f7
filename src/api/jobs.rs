//! JobService: the Job mapping and thin handlers over the generic methods.

use tonic::{Request, Response, Status};

use super::{
    context::scope,
    convert::*,
    resource::{self, ApiResource, BatchItem, ListArgs},
};
use crate::{
    domain::{
        job::{self, EXPERIENCE_LEVEL, JOB, JOB_STATUS, JOB_TYPE},
        record::Fields,
        schema::Resource,
        value::Value,
    },
    error::FieldViolation,
    pb::{self, job_service_server::JobService},
    store::{Store, records::Record},
};

impl ApiResource for pb::Job {
    const RES: &'static Resource = &JOB;
    const FIELD: &'static str = "job";

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
        if !e.is_empty() {
            return Err(e);
        }
        // "Set" for an empty update mask: non-default values.
        let set = values
            .iter()
            .map(|v| match v {
                Value::Null | Value::Bool(false) => false,
                Value::TextArray(a) => !a.is_empty(),
                _ => true,
            })
            .collect();
        Ok((values, set))
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
        let page = resource::list::<pb::Job>(
            &self.store,
            &scope,
            ListArgs {
                page_size: r.page_size,
                page_token: &r.page_token,
                filter: &r.filter,
                order_by: &r.order_by,
                show_deleted: r.show_deleted,
                count: r.count,
            },
        )
        .await?;
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
}
