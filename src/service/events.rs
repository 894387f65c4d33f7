//! Status moved by events: a campaign's status changes only through
//! RecordCampaignEvent, and every event is appended to the campaign's event
//! log (`campaign_events`, numbered by its declared sequence) in the same
//! transaction as the move. The rules of the move live in the domain
//! (`outreach::apply_event`) and the declared transitions.

use chrono::{DateTime, SubsecRound, Utc};

use super::{Draft, Service, named, parse_id, validate_new, write::refuse_deleted};
use crate::{
    domain::{
        audit::Action,
        order::OrderKey,
        outreach::{CAMPAIGN, CAMPAIGN_EVENT, MAX_EVENT_SKEW, apply_event},
        record::Record,
        value::Value,
    },
    error::Error,
    store::{
        Scope,
        records::{self, ListQuery, View},
    },
};

use super::write::Unit;

impl Service {
    /// Records `event` (a short name of `CAMPAIGN_EVENT_TYPE`) at `at` (now
    /// when `None`) on campaign `id` and returns the campaign.
    pub async fn record_campaign_event(
        &self,
        scope: &Scope,
        id: &str,
        event: &'static str,
        at: Option<DateTime<Utc>>,
        request_id: &str,
    ) -> Result<Record, Error> {
        let id = parse_id("id", id)?;
        let now = Utc::now();
        // Stored with microseconds: a repeat compares equal to what was kept.
        let given = at.is_some();
        let at = at.unwrap_or(now).trunc_subsecs(6);
        if at > now + MAX_EVENT_SKEW {
            return Err(Error::invalid("event_time", "event_time is more than an hour in the future"));
        }
        let res = &CAMPAIGN;
        let run = async {
            let mut u = Unit::begin(self, scope, request_id, "RecordEvent/campaign".into()).await?;
            if let Some(prev) = u.replay_one(res).await? {
                return Ok(prev);
            }
            let current = u.lock(res, id).await?;
            refuse_deleted(res, &current)?;
            let order = [OrderKey { field: CAMPAIGN_EVENT.field("seq").expect("seq"), desc: true }];
            let q = ListQuery {
                filter: None,
                order: &order,
                after: None,
                limit: 1,
                show_deleted: false,
                count: false,
                parent: Some(("campaign_id", Value::Uuid(id))),
                view: View::Full,
                subset: None,
            };
            let (last, _) = records::list(u.tx(), scope.tenant, &CAMPAIGN_EVENT, &q).await?;
            let latest = last.first().and_then(|e| {
                match (e.get(&CAMPAIGN_EVENT, "event"), e.get(&CAMPAIGN_EVENT, "event_time")) {
                    (Value::Text(ev), Value::Time(t)) => Some((ev.as_str(), *t)),
                    _ => None,
                }
            });
            // A retry without a time of the event the campaign last had.
            if !given && latest.is_some_and(|(last, _)| last == event) {
                return Ok(current);
            }
            let Some(next) = apply_event(&current.values, event, at, latest)? else {
                return Ok(current); // the same event again: nothing to do
            };
            let rec = u.write(res, &current, next, Action::Update).await?;
            let mut values = vec![Value::Null; CAMPAIGN_EVENT.fields.len()];
            values[CAMPAIGN_EVENT.index("campaign_id")] = Value::Uuid(id);
            values[CAMPAIGN_EVENT.index("event")] = Value::Text(event.to_owned());
            values[CAMPAIGN_EVENT.index("event_time")] = Value::Time(at);
            let set = values.iter().map(|v| !v.is_null()).collect();
            let values = validate_new(&CAMPAIGN_EVENT, Draft { values, set }, Vec::new())
                .map_err(Error::InvalidArgument)?;
            u.insert(&CAMPAIGN_EVENT, values).await?;
            u.commit_one(res, &rec).await?;
            Ok(rec)
        };
        run.await.map_err(|e| named(res, e))
    }
}

/// Jobs linked per LinkJobsToCompanies call: default and ceiling.
pub const LINK_DEFAULT: i64 = 10_000;
pub const LINK_MAX: i64 = 100_000;

/// What one linking call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linked {
    pub linked: i64,
    pub ambiguous: i64,
    pub remaining: i64,
}

impl Service {
    /// Links unlinked jobs to companies by name key (bounded per call),
    /// each job audited as an UPDATE of its company_id.
    pub async fn link_jobs_to_companies(&self, scope: &Scope, max_jobs: i32) -> Result<Linked, Error> {
        use crate::domain::job::JOB;
        let max = match max_jobs {
            n if n < 0 => return Err(Error::invalid("max_jobs", "max_jobs must not be negative")),
            0 => LINK_DEFAULT,
            n => i64::from(n).min(LINK_MAX),
        };
        let mut u = Unit::begin(self, scope, "", "LinkJobs/job".into()).await?;
        let ids = crate::store::link::link_jobs(u.tx(), scope.tenant, max).await?;
        for chunk in ids.chunks(super::MAX_BATCH) {
            for after in records::fetch_many(u.tx(), scope.tenant, &JOB, chunk, records::View::Full).await? {
                let mut before = after.to_json(&JOB);
                before["company_id"] = serde_json::Value::Null;
                u.audit(&JOB, Action::Update, Some(before), &after);
            }
        }
        let (ambiguous, remaining) = crate::store::link::unlinked(u.tx(), scope.tenant).await?;
        u.commit_none().await?;
        Ok(Linked { linked: ids.len() as i64, ambiguous, remaining })
    }
}
