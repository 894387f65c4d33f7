//! AuditService: lists the append-only audit trail (admin only; the role is
//! enforced by the auth layer).

use tonic::{Request, Response, Status};

use super::{
    context::scope,
    convert::*,
    resource::{self, ApiResource, ListArgs},
};
use crate::{
    domain::{
        audit::{AUDIT_ACTION, AUDIT_EVENT},
        record::Fields,
        schema::Resource,
        value::Value,
    },
    error::FieldViolation,
    pb::{self, audit_service_server::AuditService},
    store::{Store, records::Record},
};

impl ApiResource for pb::AuditEvent {
    const RES: &'static Resource = &AUDIT_EVENT;
    const FIELD: &'static str = "audit_event";

    fn to_values(&self) -> Result<(Vec<Value>, Vec<bool>), Vec<FieldViolation>> {
        Err(vec![FieldViolation::new("audit_event", "audit events are written by the service only")])
    }

    fn from_record(r: &Record) -> Self {
        let v = &r.values;
        let json = |v: &Value| structure_out(v);
        pb::AuditEvent {
            id: text_out(&v[0]),
            event_time: time_out(&v[1]),
            actor: text_out(&v[2]),
            entity: text_out(&v[3]),
            entity_id: text_out(&v[4]),
            action: enum_out(&AUDIT_ACTION, &v[5]),
            before: json(&v[6]),
            after: json(&v[7]),
            request_id: text_out(&v[8]),
            trace_id: text_out(&v[9]),
        }
    }

    fn normalize(_: &mut Fields<'_>) -> Result<(), Vec<FieldViolation>> {
        Ok(())
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn etag(&self) -> &str {
        ""
    }
}

pub struct AuditApi {
    store: Store,
}

impl AuditApi {
    pub fn new(store: Store) -> Self {
        AuditApi { store }
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_events(
        &self,
        req: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let (scope, _) = scope(&self.store, &req, "")?;
        let r = req.get_ref();
        let page = resource::list::<pb::AuditEvent>(
            &self.store,
            &scope,
            ListArgs {
                page_size: r.page_size,
                page_token: &r.page_token,
                filter: &r.filter,
                order_by: &r.order_by,
                show_deleted: false,
                count: r.count,
            },
        )
        .await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            audit_events: page.items,
            next_page_token: page.next_page_token,
            total_size: page.total_size,
        }))
    }
}
