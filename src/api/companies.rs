//! CompanyService: the Company and Opportunity mappings and thin handlers.

use tonic::{Request, Response, Status};

use super::{
    context::scope,
    resource::{self as edge, ProtoField, ProtoResource, list_args},
};
use crate::{
    domain::{
        company::{COMPANY, OPPORTUNITY},
        schema::Field,
        value::Value,
    },
    error::FieldViolation,
    pb::{self, company_service_server::CompanyService},
    proto_resource,
    service::{SearchArgs, Service},
};

proto_resource!(
    pb::Company,
    COMPANY,
    [
        id,
        name,
        website,
        industry,
        size,
        location,
        description,
        technology_stack,
        pain_points,
        decision_makers,
        enrichment,
        confidence_score,
        research_time,
        master_company_id,
        create_time,
        update_time,
        delete_time,
    ],
    etag
);

proto_resource!(
    pb::Opportunity,
    OPPORTUNITY,
    [
        id,
        company_id,
        problem_description,
        solution_approach,
        estimated_value,
        implementation_complexity,
        confidence_score,
        proof_of_concept_created,
        status,
        create_time,
        update_time,
        delete_time,
    ],
    etag
);

/// A company's decision makers, stored as a JSON list of contacts (empty
/// strings left out).
impl ProtoField for Vec<pb::Contact> {
    fn to_value(&self, _: &Field, _: &mut Vec<FieldViolation>) -> Value {
        if self.is_empty() {
            return Value::Null;
        }
        Value::Json(serde_json::Value::Array(
            self.iter()
                .map(|c| {
                    let mut o = serde_json::Map::new();
                    for (k, v) in [
                        ("name", &c.name),
                        ("title", &c.title),
                        ("email", &c.email),
                        ("linkedin_url", &c.linkedin_url),
                    ] {
                        if !v.is_empty() {
                            o.insert(k.into(), serde_json::Value::String(v.clone()));
                        }
                    }
                    serde_json::Value::Object(o)
                })
                .collect(),
        ))
    }
    fn from_value(v: &Value, _: &Field) -> Self {
        let s = |c: &serde_json::Value, k: &str| c[k].as_str().unwrap_or_default().to_owned();
        match v {
            Value::Json(serde_json::Value::Array(a)) => a
                .iter()
                .map(|c| pb::Contact {
                    name: s(c, "name"),
                    title: s(c, "title"),
                    email: s(c, "email"),
                    linkedin_url: s(c, "linkedin_url"),
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

pub struct CompanyApi {
    svc: Service,
}

impl CompanyApi {
    pub fn new(svc: Service) -> Self {
        CompanyApi { svc }
    }
}

#[tonic::async_trait]
impl CompanyService for CompanyApi {
    async fn create_company(
        &self,
        req: Request<pb::CreateCompanyRequest>,
    ) -> Result<Response<pb::Company>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        Ok(Response::new(edge::create(&self.svc, &scope, r.company, &r.request_id).await?))
    }

    async fn get_company(
        &self,
        req: Request<pb::GetCompanyRequest>,
    ) -> Result<Response<pb::Company>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        Ok(Response::new(edge::get(&self.svc, &scope, &req.get_ref().id).await?))
    }

    async fn list_companies(
        &self,
        req: Request<pb::ListCompaniesRequest>,
    ) -> Result<Response<pb::ListCompaniesResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let args = list_args(r.page_size, &r.page_token, &r.filter, &r.order_by, r.show_deleted, r.count);
        let page = edge::list::<pb::Company>(&self.svc, &scope, args).await?;
        Ok(Response::new(pb::ListCompaniesResponse {
            companies: page.items,
            next_page_token: page.next_page_token,
            total_size: page.total_size,
        }))
    }

    async fn update_company(
        &self,
        req: Request<pb::UpdateCompanyRequest>,
    ) -> Result<Response<pb::Company>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        let c =
            edge::update(&self.svc, &scope, r.company, r.update_mask, |c| &c.id, |c| &c.etag, &r.request_id);
        Ok(Response::new(c.await?))
    }

    async fn delete_company(
        &self,
        req: Request<pb::DeleteCompanyRequest>,
    ) -> Result<Response<pb::Company>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.get_ref();
        Ok(Response::new(edge::delete(&self.svc, &scope, &r.id, &r.etag, r.force, &r.request_id).await?))
    }

    async fn undelete_company(
        &self,
        req: Request<pb::UndeleteCompanyRequest>,
    ) -> Result<Response<pb::Company>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.get_ref();
        Ok(Response::new(edge::undelete(&self.svc, &scope, &r.id, &r.request_id).await?))
    }

    async fn batch_get_companies(
        &self,
        req: Request<pb::BatchGetCompaniesRequest>,
    ) -> Result<Response<pb::BatchGetCompaniesResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let companies = edge::batch_get(&self.svc, &scope, &req.get_ref().ids).await?;
        Ok(Response::new(pb::BatchGetCompaniesResponse { companies }))
    }

    async fn search_companies(
        &self,
        req: Request<pb::SearchCompaniesRequest>,
    ) -> Result<Response<pb::SearchCompaniesResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let args = SearchArgs {
            query: &r.query,
            filter: &r.filter,
            page_size: r.page_size,
            page_token: &r.page_token,
        };
        let page = self.svc.search(&scope, &COMPANY, args).await?;
        Ok(Response::new(pb::SearchCompaniesResponse {
            scores: page.hits.iter().map(|h| h.score).collect(),
            companies: page.hits.iter().map(|h| pb::Company::from_record(&h.record)).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn merge_companies(
        &self,
        req: Request<pb::MergeCompaniesRequest>,
    ) -> Result<Response<pb::Company>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.get_ref();
        let rec = self.svc.merge(&scope, &COMPANY, &r.target_id, &r.source_ids, &r.request_id).await?;
        Ok(Response::new(pb::Company::from_record(&rec)))
    }

    async fn link_jobs_to_companies(
        &self,
        req: Request<pb::LinkJobsToCompaniesRequest>,
    ) -> Result<Response<pb::LinkJobsToCompaniesResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let l = self.svc.link_jobs_to_companies(&scope, req.get_ref().max_jobs).await?;
        Ok(Response::new(pb::LinkJobsToCompaniesResponse {
            linked: l.linked,
            ambiguous: l.ambiguous,
            remaining: l.remaining,
        }))
    }

    async fn create_opportunity(
        &self,
        req: Request<pb::CreateOpportunityRequest>,
    ) -> Result<Response<pb::Opportunity>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        Ok(Response::new(edge::create(&self.svc, &scope, r.opportunity, &r.request_id).await?))
    }

    async fn get_opportunity(
        &self,
        req: Request<pb::GetOpportunityRequest>,
    ) -> Result<Response<pb::Opportunity>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        Ok(Response::new(edge::get(&self.svc, &scope, &req.get_ref().id).await?))
    }

    async fn list_opportunities(
        &self,
        req: Request<pb::ListOpportunitiesRequest>,
    ) -> Result<Response<pb::ListOpportunitiesResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let args = list_args(r.page_size, &r.page_token, &r.filter, &r.order_by, r.show_deleted, r.count);
        let page = edge::list::<pb::Opportunity>(&self.svc, &scope, args).await?;
        Ok(Response::new(pb::ListOpportunitiesResponse {
            opportunities: page.items,
            next_page_token: page.next_page_token,
            total_size: page.total_size,
        }))
    }

    async fn update_opportunity(
        &self,
        req: Request<pb::UpdateOpportunityRequest>,
    ) -> Result<Response<pb::Opportunity>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        let o = edge::update(
            &self.svc,
            &scope,
            r.opportunity,
            r.update_mask,
            |o| &o.id,
            |o| &o.etag,
            &r.request_id,
        );
        Ok(Response::new(o.await?))
    }

    async fn delete_opportunity(
        &self,
        req: Request<pb::DeleteOpportunityRequest>,
    ) -> Result<Response<pb::Opportunity>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.get_ref();
        Ok(Response::new(edge::delete(&self.svc, &scope, &r.id, &r.etag, r.force, &r.request_id).await?))
    }

    async fn undelete_opportunity(
        &self,
        req: Request<pb::UndeleteOpportunityRequest>,
    ) -> Result<Response<pb::Opportunity>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.get_ref();
        Ok(Response::new(edge::undelete(&self.svc, &scope, &r.id, &r.request_id).await?))
    }
}
