//! OutreachService: the Campaign and CampaignEvent mappings and thin handlers.

use tonic::{Request, Response, Status};

use super::{
    context::scope,
    convert::time,
    resource::{self as edge, ProtoResource, list_args},
};
use crate::{
    domain::outreach::{CAMPAIGN, CAMPAIGN_EVENT, CAMPAIGN_EVENT_TYPE, DUE_FOLLOW_UPS},
    domain::value::Value,
    error::{Error, FieldViolation},
    pb::{self, outreach_service_server::OutreachService},
    proto_resource,
    service::{ListArgs, Service},
};

proto_resource!(
    pb::Campaign,
    CAMPAIGN,
    [
        id,
        company_id,
        opportunity_id,
        contact_method,
        contact_person,
        message_content,
        status,
        sent_time,
        response_time,
        follow_up_time,
        notes,
        create_time,
        update_time,
        delete_time,
    ],
    etag
);

proto_resource!(pb::CampaignEvent, CAMPAIGN_EVENT, [id, campaign_id, seq, event, event_time, create_time]);

pub struct OutreachApi {
    svc: Service,
}

impl OutreachApi {
    pub fn new(svc: Service) -> Self {
        OutreachApi { svc }
    }
}

#[tonic::async_trait]
impl OutreachService for OutreachApi {
    async fn create_campaign(
        &self,
        req: Request<pb::CreateCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        Ok(Response::new(edge::create(&self.svc, &scope, r.campaign, &r.request_id).await?))
    }

    async fn get_campaign(
        &self,
        req: Request<pb::GetCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        Ok(Response::new(edge::get(&self.svc, &scope, &req.get_ref().id).await?))
    }

    async fn list_campaigns(
        &self,
        req: Request<pb::ListCampaignsRequest>,
    ) -> Result<Response<pb::ListCampaignsResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let args = list_args(r.page_size, &r.page_token, &r.filter, &r.order_by, r.show_deleted, r.count);
        let page = edge::list::<pb::Campaign>(&self.svc, &scope, args).await?;
        Ok(Response::new(pb::ListCampaignsResponse {
            campaigns: page.items,
            next_page_token: page.next_page_token,
            total_size: page.total_size,
        }))
    }

    async fn update_campaign(
        &self,
        req: Request<pb::UpdateCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        let c =
            edge::update(&self.svc, &scope, r.campaign, r.update_mask, |c| &c.id, |c| &c.etag, &r.request_id);
        Ok(Response::new(c.await?))
    }

    async fn delete_campaign(
        &self,
        req: Request<pb::DeleteCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.get_ref();
        Ok(Response::new(edge::delete(&self.svc, &scope, &r.id, &r.etag, false, &r.request_id).await?))
    }

    async fn undelete_campaign(
        &self,
        req: Request<pb::UndeleteCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.get_ref();
        Ok(Response::new(edge::undelete(&self.svc, &scope, &r.id, &r.request_id).await?))
    }

    async fn record_campaign_event(
        &self,
        req: Request<pb::RecordCampaignEventRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.get_ref();
        let event = CAMPAIGN_EVENT_TYPE.name_of(r.event).ok_or_else(|| {
            Error::invalid("event", "event must be SENT, OPENED, REPLIED, INTERESTED or REJECTED")
        })?;
        let mut errs: Vec<FieldViolation> = Vec::new();
        let at = match time("event_time", &r.event_time, &mut errs) {
            Value::Time(t) => Some(t),
            _ => None,
        };
        if !errs.is_empty() {
            return Err(Error::InvalidArgument(errs).into());
        }
        let rec = self.svc.record_campaign_event(&scope, &r.id, event, at, &r.request_id).await?;
        Ok(Response::new(pb::Campaign::from_record(&rec)))
    }

    async fn list_campaign_events(
        &self,
        req: Request<pb::ListCampaignEventsRequest>,
    ) -> Result<Response<pb::ListCampaignEventsResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        // The campaign itself must be visible (NOT_FOUND otherwise, as for
        // any other tenant's id).
        self.svc.get(&scope, &CAMPAIGN, &r.campaign_id, crate::service::View::Basic).await?;
        let args = ListArgs {
            page_size: r.page_size,
            page_token: &r.page_token,
            order_by: "seq",
            ..ListArgs::default()
        };
        let page =
            self.svc.list_children(&scope, &CAMPAIGN_EVENT, "campaign_id", &r.campaign_id, args).await?;
        Ok(Response::new(pb::ListCampaignEventsResponse {
            events: page.items.iter().map(pb::CampaignEvent::from_record).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn list_due_follow_ups(
        &self,
        req: Request<pb::ListDueFollowUpsRequest>,
    ) -> Result<Response<pb::ListDueFollowUpsResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let mut errs: Vec<FieldViolation> = Vec::new();
        let before = match time("before", &r.before, &mut errs) {
            Value::Time(t) => t,
            _ if !r.page_token.is_empty() => {
                return Err(
                    Error::invalid("before", "send the first page's `before` with its page_token").into()
                );
            }
            _ => chrono::Utc::now(),
        };
        if !errs.is_empty() {
            return Err(Error::InvalidArgument(errs).into());
        }
        let filter =
            format!("follow_up_time <= \"{}\"", before.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        let args = ListArgs {
            page_size: r.page_size,
            page_token: &r.page_token,
            filter: &filter,
            order_by: "follow_up_time",
            subset: Some(&DUE_FOLLOW_UPS),
            ..ListArgs::default()
        };
        let page = edge::list::<pb::Campaign>(&self.svc, &scope, args).await?;
        Ok(Response::new(pb::ListDueFollowUpsResponse {
            campaigns: page.items,
            next_page_token: page.next_page_token,
        }))
    }
}
