//! What the caller sent, answered by the gRPC conventions: bytes that do not
//! decode are INVALID_ARGUMENT, a message over the limit RESOURCE_EXHAUSTED,
//! error details stay small enough for every client, and values outside
//! what the wire types mean (year 10000, a braced UUID) are refused.

use bi_data::pb::{self, CreateJobRequest, GetJobRequest, UpdateJobRequest};
use bytes::{Buf, BufMut};
use prost_types::{FieldMask, Timestamp};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

use crate::common::*;

/// Sends bodies as they are and returns the answer's bytes: for requests no
/// well-behaved client would produce.
#[derive(Clone, Default)]
struct RawCodec;

struct Raw;

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

async fn raw_call(app: &TestApp, token: &str, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(authed(token, body), path, RawCodec).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let mut deep = Vec::new();
    // A value nested past prost's recursion limit (100), in a job's Struct.
    let mut value = prost_types::Value { kind: Some(prost_types::value::Kind::NullValue(0)) };
    for _ in 0..200 {
        value = prost_types::Value {
            kind: Some(prost_types::value::Kind::ListValue(prost_types::ListValue { values: vec![value] })),
        };
    }
    let mut nested = pb::Job { title: "deep".into(), ..Default::default() };
    nested.attributes = Some(prost_types::Struct { fields: [("v".to_owned(), value)].into_iter().collect() });
    prost::Message::encode(&CreateJobRequest { job: Some(nested), request_id: String::new() }, &mut deep)
        .unwrap();
    let cases: Vec<(&str, &'static str, Vec<u8>)> = vec![
        ("varint where the id string is", "/bi.data.v1.JobService/GetJob", vec![0x08, 0x05]),
        ("invalid UTF-8 in the id", "/bi.data.v1.JobService/GetJob", vec![0x0a, 0x02, 0xff, 0xfe]),
        ("truncated string", "/bi.data.v1.JobService/GetJob", vec![0x0a, 0x05, b'a']),
        ("field number 0", "/bi.data.v1.JobService/GetJob", vec![0x00, 0x01]),
        ("random bytes", "/bi.data.v1.JobService/ListJobs", vec![0xff; 64]),
        ("a Struct nested 200 deep", "/bi.data.v1.JobService/CreateJob", deep),
    ];
    for (what, path, body) in cases {
        let token = if path.ends_with("CreateJob") { &t.writer } else { &t.reader };
        let e = raw_call(&app, token, path, body).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert!(e.message().starts_with("malformed protobuf message"), "{what}: {}", e.message());
    }
    // A well-formed body through the same path still works.
    let ok = raw_call(&app, &t.reader, "/bi.data.v1.JobService/ListJobs", Vec::new()).await;
    assert!(ok.is_ok(), "{ok:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_message_over_the_limit_is_resource_exhausted() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let huge = "x".repeat(20 << 20);
    let e = app
        .jobs()
        .create_job(authed(&t.writer, CreateJobRequest { job: Some(job(&huge)), request_id: String::new() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // One oversize row in an import stream.
    let rows = vec![job("small"), job(&huge)];
    let e = app.jobs().import_jobs(authed(&t.writer, tokio_stream::iter(rows))).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    app.stop().await;
}

#[tokio::test]
async fn error_details_are_bounded() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let j = app
        .jobs()
        .create_job(authed(
            &t.writer,
            CreateJobRequest { job: Some(job("masked")), request_id: String::new() },
        ))
        .await
        .unwrap()
        .into_inner();
    let paths = (0..10_000).map(|i| format!("no_such_field_{i}")).collect();
    let e = app
        .jobs()
        .update_job(authed(
            &t.writer,
            UpdateJobRequest {
                job: Some(pb::Job { id: j.id.clone(), etag: j.etag.clone(), ..Default::default() }),
                update_mask: Some(FieldMask { paths }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("more violations not listed"), "{}", e.message());
    let listed = violations(&e);
    assert!(!listed.is_empty() && listed.len() <= 20, "{} violations listed", listed.len());
    // grpcio refuses metadata over 16 KiB.
    assert!(
        e.message().len() + e.details().len() < 12 * 1024,
        "{} bytes",
        e.message().len() + e.details().len()
    );
    app.stop().await;
}

#[tokio::test]
async fn values_outside_the_wire_types_are_refused() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    // Protobuf Timestamps end at 9999-12-31T23:59:59Z.
    for seconds in [253_402_300_800_i64, -62_135_596_801] {
        let mut j = job("far future");
        j.posting_time = Some(Timestamp { seconds, nanos: 0 });
        let e = app
            .jobs()
            .create_job(authed(&t.writer, CreateJobRequest { job: Some(j), request_id: String::new() }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{seconds}: {e:?}");
    }
    let mut last = job("last second");
    last.posting_time = Some(Timestamp { seconds: 253_402_300_799, nanos: 999_999_999 });
    let created = app
        .jobs()
        .create_job(authed(&t.writer, CreateJobRequest { job: Some(last), request_id: String::new() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.posting_time.map(|p| p.seconds), Some(253_402_300_799));
    // Only the canonical spelling of an id.
    let id = created.id.clone();
    for spelling in [format!("{{{id}}}"), format!("urn:uuid:{id}"), id.replace('-', "")] {
        let e =
            app.jobs().get_job(authed(&t.reader, GetJobRequest { id: spelling.clone() })).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{spelling}: {e:?}");
    }
    app.jobs().get_job(authed(&t.reader, GetJobRequest { id })).await.unwrap();
    app.stop().await;
}
