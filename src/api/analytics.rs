//! AnalyticsService: thin handlers over `service::analytics`.

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, stream::BoxStream};
use prost_types::Timestamp;
use tonic::{Request, Response, Status};

use super::{
    context::scope,
    convert::{json_to_value, time, time_out},
};
use crate::{
    domain::{company::OPPORTUNITY_STATUS, value::Value},
    error::{Error, FieldViolation},
    pb::{self, analytics_service_server::AnalyticsService},
    service::{
        Service,
        analytics::{AggregateArgs, TrendArgs, TrendPoint},
    },
};

pub struct AnalyticsApi {
    svc: Service,
}

impl AnalyticsApi {
    pub fn new(svc: Service) -> Self {
        AnalyticsApi { svc }
    }
}

/// An optional request time; a malformed one is INVALID_ARGUMENT.
fn instant(field: &str, t: &Option<Timestamp>) -> Result<Option<DateTime<Utc>>, Status> {
    let mut errs: Vec<FieldViolation> = Vec::new();
    let v = time(field, t, &mut errs);
    if !errs.is_empty() {
        return Err(Error::InvalidArgument(errs).into());
    }
    Ok(if let Value::Time(t) = v { Some(t) } else { None })
}

fn null_or(v: Option<f64>) -> prost_types::Value {
    json_to_value(&v.map_or(serde_json::Value::Null, serde_json::Value::from))
}

fn point(p: &TrendPoint) -> pb::TrendPoint {
    let t = DateTime::<Utc>::from_timestamp_micros(p.bucket_start_us).unwrap_or_default();
    pb::TrendPoint {
        bucket_start: time_out(&Value::Time(t)),
        value: p.value,
        change_ratio: p.change_ratio,
        moving_average: p.moving_average,
    }
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsApi {
    async fn aggregate_metrics(
        &self,
        req: Request<pb::AggregateMetricsRequest>,
    ) -> Result<Response<pb::AggregateMetricsResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let metrics: Vec<(i32, String)> = r.metrics.iter().map(|m| (m.function, m.field.clone())).collect();
        let args = AggregateArgs {
            entity: r.entity,
            filter: &r.filter,
            group_by: &r.group_by,
            metrics: &metrics,
            limit: r.limit,
        };
        let out = self.svc.aggregate_metrics(&scope, args).await?;
        Ok(Response::new(pb::AggregateMetricsResponse {
            rows: out
                .rows
                .iter()
                .map(|row| pb::AggregateRow {
                    group_values: row.group_values.iter().map(json_to_value).collect(),
                    values: row.values.iter().map(|v| null_or(*v)).collect(),
                })
                .collect(),
            total_groups: out.total_groups,
            truncated: out.truncated,
        }))
    }

    async fn get_trend(
        &self,
        req: Request<pb::GetTrendRequest>,
    ) -> Result<Response<pb::GetTrendResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let args = TrendArgs {
            entity: r.entity,
            time_field: &r.time_field,
            bucket: r.bucket,
            start: instant("start_time", &r.start_time)?,
            end: instant("end_time", &r.end_time)?,
            metric: r.metric.as_ref().map(|m| (m.function, m.field.as_str())),
            filter: &r.filter,
            group_by: &r.group_by,
            time_zone: &r.time_zone,
            window: r.moving_average_window,
        };
        let out = self.svc.trend(&scope, args).await?;
        Ok(Response::new(pb::GetTrendResponse {
            points: out.points.iter().map(point).collect(),
            series: out
                .series
                .iter()
                .map(|s| pb::TrendSeries {
                    group_value: Some(json_to_value(&s.group_value)),
                    points: s.points.iter().map(point).collect(),
                })
                .collect(),
        }))
    }

    async fn get_outreach_funnel(
        &self,
        req: Request<pb::GetOutreachFunnelRequest>,
    ) -> Result<Response<pb::GetOutreachFunnelResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let (start, end) = (instant("start_time", &r.start_time)?, instant("end_time", &r.end_time)?);
        let stages = self.svc.outreach_funnel(&scope, start, end, &r.filter).await?;
        Ok(Response::new(pb::GetOutreachFunnelResponse {
            stages: stages
                .iter()
                .map(|s| pb::FunnelStageCount {
                    stage: pb::FunnelStage::from_str_name(&format!("FUNNEL_STAGE_{}", s.stage))
                        .map_or(0, |x| x as i32),
                    count: s.count,
                    conversion_from_previous: s.conversion_from_previous,
                    conversion_from_sent: s.conversion_from_sent,
                })
                .collect(),
        }))
    }

    async fn get_opportunity_pipeline(
        &self,
        req: Request<pb::GetOpportunityPipelineRequest>,
    ) -> Result<Response<pb::GetOpportunityPipelineResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let stages = self.svc.opportunity_pipeline(&scope, &req.get_ref().filter).await?;
        Ok(Response::new(pb::GetOpportunityPipelineResponse {
            stages: stages
                .iter()
                .map(|s| pb::PipelineStage {
                    status: OPPORTUNITY_STATUS.number_of(s.status),
                    count: s.count,
                    total_estimated_value: s.total_estimated_value,
                })
                .collect(),
        }))
    }

    type GenerateReportStream = BoxStream<'static, Result<pb::GenerateReportResponse, Status>>;

    async fn generate_report(
        &self,
        req: Request<pb::GenerateReportRequest>,
    ) -> Result<Response<Self::GenerateReportStream>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.into_inner();
        let rx = self.svc.report(scope, r.report, r.format, &r.params)?;
        Ok(Response::new(
            tokio_stream::wrappers::ReceiverStream::new(rx)
                .map(|c| {
                    c.map(|c| pb::GenerateReportResponse { data: c.data, rows: c.rows }).map_err(Status::from)
                })
                .boxed(),
        ))
    }

    async fn get_query_stats(
        &self,
        req: Request<pb::GetQueryStatsRequest>,
    ) -> Result<Response<pb::GetQueryStatsResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let out = self.svc.query_stats(&scope, req.get_ref().limit).await?;
        Ok(Response::new(pb::GetQueryStatsResponse {
            shapes: out
                .shapes
                .iter()
                .map(|s| pb::StatementShape {
                    shape: s.sql.clone(),
                    operation: s.operation.to_owned(),
                    table: s.collection.clone(),
                    count: s.count as i64,
                    mean_ms: s.mean_ms,
                    p99_ms: s.p99_ms,
                    max_ms: s.max_ms,
                })
                .collect(),
            pg_stat_statements_available: out.pg_stat_statements.is_some(),
            pg_stat_statements: out
                .pg_stat_statements
                .unwrap_or_default()
                .into_iter()
                .map(|p| pb::PgStatStatement {
                    query: p.query,
                    calls: p.calls,
                    mean_ms: p.mean_ms,
                    max_ms: p.max_ms,
                    total_ms: p.total_ms,
                    rows: p.rows,
                })
                .collect(),
        }))
    }
}
