//! AuditService: lists the append-only audit trail (admin only; the role is
//! enforced by the auth layer).

use tonic::{Request, Response, Status};

use super::{context::scope, resource as edge};
use crate::{
    domain::audit::AUDIT_EVENT,
    pb::{self, audit_service_server::AuditService},
    proto_resource,
    service::Service,
};

proto_resource!(
    pb::AuditEvent,
    AUDIT_EVENT,
    [id, event_time, actor, entity, entity_id, action, before, after, request_id, trace_id]
);

pub struct AuditApi {
    svc: Service,
}

impl AuditApi {
    pub fn new(svc: Service) -> Self {
        AuditApi { svc }
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_events(
        &self,
        req: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let args = edge::list_args(r.page_size, &r.page_token, &r.filter, &r.order_by, false, r.count);
        let page = edge::list::<pb::AuditEvent>(&self.svc, &scope, args).await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            audit_events: page.items,
            next_page_token: page.next_page_token,
            total_size: page.total_size,
        }))
    }
}
