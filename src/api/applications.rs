//! Application and EmployerResponse mappings (their methods live on
//! JobService, see `jobs.rs`).

use super::{convert::*, resource::ApiResource};
use crate::{
    domain::{
        application::{
            self, APPLICATION, APPLICATION_STATUS, EMPLOYER_RESPONSE, normalize_application,
            normalize_employer_response,
        },
        job::JOB,
        record::Fields,
        schema::Resource,
        value::Value,
    },
    error::FieldViolation,
    pb,
    store::records::Record,
};

fn opt_float(v: Option<f64>) -> Value {
    v.map_or(Value::Null, Value::Float)
}

fn opt_float_out(v: &Value) -> Option<f64> {
    if let Value::Float(f) = v { Some(*f) } else { None }
}

impl ApiResource for pb::Application {
    const RES: &'static Resource = &APPLICATION;
    const FIELD: &'static str = "application";
    const PARENTS: &'static [(&'static str, &'static Resource)] = &[("job_id", &JOB)];

    fn to_values(&self) -> Result<(Vec<Value>, Vec<bool>), Vec<FieldViolation>> {
        let mut e = Vec::new();
        let values = vec![
            Value::Null,
            uuid_field("job_id", &self.job_id, &mut e),
            enum_field("status", &APPLICATION_STATUS, self.status, &mut e),
            time("application_time", &self.application_time, &mut e),
            text(&self.cover_letter_version),
            text(&self.resume_version),
            time("interview_time", &self.interview_time, &mut e),
            time("response_time", &self.response_time, &mut e),
            text(&self.notes),
            opt_float(self.credibility_rating),
            opt_float(self.exaggeration_level),
            opt_float(self.integrity_score),
            Value::Null,
            Value::Null,
            Value::Null,
        ];
        values_or_errors(values, e)
    }

    fn from_record(r: &Record) -> Self {
        let v = &r.values;
        pb::Application {
            id: text_out(&v[0]),
            job_id: text_out(&v[1]),
            status: enum_out(&APPLICATION_STATUS, &v[2]),
            application_time: time_out(&v[3]),
            cover_letter_version: text_out(&v[4]),
            resume_version: text_out(&v[5]),
            interview_time: time_out(&v[6]),
            response_time: time_out(&v[7]),
            notes: text_out(&v[8]),
            credibility_rating: opt_float_out(&v[9]),
            exaggeration_level: opt_float_out(&v[10]),
            integrity_score: opt_float_out(&v[11]),
            create_time: time_out(&v[12]),
            update_time: time_out(&v[13]),
            delete_time: time_out(&v[14]),
            etag: r.etag(),
        }
    }

    fn normalize(fields: &mut Fields<'_>) -> Result<(), Vec<FieldViolation>> {
        normalize_application(fields)
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn etag(&self) -> &str {
        &self.etag
    }
}

impl ApiResource for pb::EmployerResponse {
    const RES: &'static Resource = &EMPLOYER_RESPONSE;
    const FIELD: &'static str = "employer_response";
    const PARENTS: &'static [(&'static str, &'static Resource)] =
        &[("application_id", &application::APPLICATION)];

    fn to_values(&self) -> Result<(Vec<Value>, Vec<bool>), Vec<FieldViolation>> {
        let mut e = Vec::new();
        let values = vec![
            Value::Null,
            uuid_field("application_id", &self.application_id, &mut e),
            text(&self.response_type),
            time("response_time", &self.response_time, &mut e),
            text(&self.subject_line),
            text(&self.email_content),
            text(&self.sender_email),
            opt_float(self.sentiment_score),
            Value::Bool(self.requires_action),
            text(&self.action_taken),
            time("follow_up_time", &self.follow_up_time, &mut e),
            Value::Null,
            Value::Null,
        ];
        values_or_errors(values, e)
    }

    fn from_record(r: &Record) -> Self {
        let v = &r.values;
        pb::EmployerResponse {
            id: text_out(&v[0]),
            application_id: text_out(&v[1]),
            response_type: text_out(&v[2]),
            response_time: time_out(&v[3]),
            subject_line: text_out(&v[4]),
            email_content: text_out(&v[5]),
            sender_email: text_out(&v[6]),
            sentiment_score: opt_float_out(&v[7]),
            requires_action: bool_out(&v[8]),
            action_taken: text_out(&v[9]),
            follow_up_time: time_out(&v[10]),
            create_time: time_out(&v[11]),
            update_time: time_out(&v[12]),
            etag: r.etag(),
        }
    }

    fn normalize(fields: &mut Fields<'_>) -> Result<(), Vec<FieldViolation>> {
        normalize_employer_response(fields)
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn etag(&self) -> &str {
        &self.etag
    }
}

impl ApiResource for pb::IngestRun {
    const RES: &'static Resource = &crate::domain::ingest::INGEST_RUN;
    const FIELD: &'static str = "ingest_run";

    fn to_values(&self) -> Result<(Vec<Value>, Vec<bool>), Vec<FieldViolation>> {
        Err(vec![FieldViolation::new("ingest_run", "ingest runs are written by ImportJobs only")])
    }

    fn from_record(r: &Record) -> Self {
        let v = &r.values;
        let int = |v: &Value| opt_int_out(v).unwrap_or(0);
        let errors = match &v[8] {
            Value::Json(serde_json::Value::Array(a)) => a
                .iter()
                .map(|e| pb::ImportError {
                    index: e["index"].as_i64().unwrap_or(-1),
                    reason: e["reason"].as_str().unwrap_or_default().to_owned(),
                    job_url: e["job_url"].as_str().unwrap_or_default().to_owned(),
                })
                .collect(),
            _ => Vec::new(),
        };
        pb::IngestRun {
            id: text_out(&v[0]),
            source_site: text_out(&v[1]),
            start_time: time_out(&v[2]),
            end_time: time_out(&v[3]),
            received: int(&v[4]),
            inserted: int(&v[5]),
            updated: int(&v[6]),
            failed: int(&v[7]),
            errors,
            create_time: time_out(&v[9]),
            update_time: time_out(&v[10]),
            etag: r.etag(),
        }
    }

    fn normalize(_: &mut Fields<'_>) -> Result<(), Vec<FieldViolation>> {
        Ok(())
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn etag(&self) -> &str {
        &self.etag
    }
}
