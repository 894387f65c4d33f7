//! Content of a versioned resource (a declared `Versions`): uploads that
//! become a new version, streamed downloads of any version, and a version
//! with its content for unary reads. Content is never held more than once:
//! an upload writes chunk rows as it receives them (keeping everything only
//! while it may still become the record's inline text), a download reads a
//! few chunk rows per short transaction and hands them on in pieces.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tracing::Instrument;
use uuid::Uuid;

use super::{
    Service, named, not_found, parse_id,
    write::{Unit, check_etag, refuse_deleted},
};
use crate::{
    domain::{audit::Action, document::hex, record::Record, schema::Resource, value::Value},
    error::Error,
    store::{
        Scope,
        content::{self, CHUNK_BYTES},
        records::{self, View},
        replica::before_write,
    },
};

/// Bytes per message of a download stream.
pub const DOWNLOAD_PIECE: usize = 64 * 1024;
/// Pieces a download buffers ahead of a slow reader (1 MiB).
const DOWNLOAD_AHEAD: usize = 16;
/// Longest wait for a free upload slot (see `Service::uploads`).
const UPLOAD_SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Longest wait for an upload's next message: a stalled client does not
/// hold a connection and its transaction forever.
pub const UPLOAD_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// What the first message of an upload says.
#[derive(Clone, Copy, Debug, Default)]
pub struct UploadHead<'a> {
    pub id: &'a str,
    /// Empty: guessed (text/plain for UTF-8 text, else application/octet-stream).
    pub content_type: &'a str,
    /// Expected SHA-256 of the whole content (hex); empty: not checked.
    pub sha256: &'a str,
    /// Replaces the record's filename when set.
    pub filename: &'a str,
    pub etag: &'a str,
    pub request_id: &'a str,
}

/// Content types kept as inline text when the bytes are UTF-8.
fn textual(content_type: &str) -> bool {
    let t = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    t.is_empty()
        || t.starts_with("text/")
        || t.ends_with("+json")
        || t.ends_with("+xml")
        || matches!(
            t.as_str(),
            "application/json" | "application/xml" | "application/yaml" | "application/x-yaml"
        )
}

impl Service {
    /// Stores the content `body` streams as the next version of record
    /// `head.id` of `res`, atomically: chunk rows are written as they
    /// arrive in one transaction, the version number is taken under the
    /// record's row lock at the end; a stream that breaks (or a caller that
    /// goes away) rolls all of it back. Past `max` bytes the upload stops at
    /// once with RESOURCE_EXHAUSTED; a given SHA-256 must match. Content
    /// identical to the current version's bytes (same digest) creates no
    /// version and returns the record as it is. An upload holds a pooled
    /// connection for its whole stream, so at most half the pool uploads
    /// at once (UNAVAILABLE after waiting 5 s for a slot).
    pub async fn upload<S>(
        &self,
        scope: &Scope,
        res: &'static Resource,
        head: UploadHead<'_>,
        max: u64,
        mut body: S,
    ) -> Result<Record, Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + Unpin + Send,
    {
        let spec = res.versions.ok_or_else(|| Error::Internal(format!("{} has no versions", res.name)))?;
        let id = parse_id(&format!("{}_id", res.name), head.id)?;
        let expected = match head.sha256.trim() {
            "" => None,
            s if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => Some(s.to_ascii_lowercase()),
            _ => return Err(Error::invalid("sha256", "sha256 must be 64 hexadecimal characters")),
        };
        if head.content_type.len() > 255 || head.filename.chars().count() > 500 {
            return Err(Error::invalid("content_type", "content_type (255) or filename (500) is too long"));
        }
        let _slot = tokio::time::timeout(UPLOAD_SLOT_WAIT, self.uploads.clone().acquire_owned())
            .await
            .map_err(|_| Error::Unavailable("too many uploads in progress; retry later".into()))?
            .map_err(|_| Error::Internal("upload slots closed".into()))?;
        // Before any byte is stored: the record must be there and live.
        let seen = before_write(records::read_one(&self.store, scope, res, id, View::Basic))
            .await?
            .ok_or_else(|| not_found(res, id))?;
        refuse_deleted(res, &seen)?;
        let run = async {
            let mut u = Unit::begin(self, scope, head.request_id, format!("Upload/{}", res.name)).await?;
            if let Some(prev) = u.replay_one(res).await? {
                return Ok(prev);
            }
            let version_id = Uuid::now_v7();
            let (tx, tenant) = (u.tx(), scope.tenant);
            let mut hasher = Sha256::new();
            let mut total: u64 = 0;
            // Everything while the content may still be inline text; then
            // only what is not written yet. `flushed`: bytes of `buf` stored.
            let mut buf: Vec<u8> = Vec::new();
            let (mut flushed, mut inline, mut seq) = (0usize, true, 0i32);
            loop {
                let next =
                    tokio::time::timeout(UPLOAD_IDLE, body.next()).await.map_err(|_| Error::Aborted {
                        reason: "UPLOAD_STALLED",
                        message: format!(
                            "no content for {} s; the upload was dropped",
                            UPLOAD_IDLE.as_secs()
                        ),
                    })?;
                let Some(piece) = next else { break };
                let piece = piece?;
                total += piece.len() as u64;
                if total > max {
                    return Err(Error::ResourceExhausted {
                        reason: "CONTENT_TOO_LARGE",
                        message: format!("content is larger than {} MiB", max >> 20),
                    });
                }
                hasher.update(&piece);
                if inline && total > spec.inline_max as u64 {
                    inline = false;
                    buf.drain(..flushed);
                    flushed = 0;
                }
                buf.extend_from_slice(&piece);
                while buf.len() - flushed >= CHUNK_BYTES {
                    content::put_chunk(
                        tx,
                        tenant,
                        spec,
                        version_id,
                        seq,
                        &buf[flushed..flushed + CHUNK_BYTES],
                    )
                    .await?;
                    seq += 1;
                    flushed += CHUNK_BYTES;
                }
                if !inline {
                    buf.drain(..flushed);
                    flushed = 0;
                }
            }
            if buf.len() > flushed {
                content::put_chunk(tx, tenant, spec, version_id, seq, &buf[flushed..]).await?;
            }
            let digest = hex(&hasher.finalize());
            if let Some(want) = expected
                && want != digest
            {
                return Err(Error::invalid(
                    "sha256",
                    format!("the content's SHA-256 is {digest}, not the {want} announced"),
                ));
            }
            let text = if inline && textual(head.content_type) {
                String::from_utf8(buf).ok().filter(|t| !t.contains('\0'))
            } else {
                None
            };
            let content_type = match (head.content_type.trim(), &text) {
                ("", Some(_)) => "text/plain".to_owned(),
                ("", None) => "application/octet-stream".to_owned(),
                (t, _) => t.to_owned(),
            };
            let current = u.lock(res, id).await?;
            refuse_deleted(res, &current)?;
            check_etag(res, head.etag, &current)?;
            if matches!(current.get(res, spec.sha256), Value::Text(s) if *s == digest) {
                // The current version's bytes already: nothing to store
                // (the dropped unit rolls the chunks back).
                return Ok(current);
            }
            let mut next = current.values.clone();
            next[res.index(spec.content)] = text.map_or(Value::Null, Value::Text);
            next[res.index(spec.content_type)] = Value::Text(content_type);
            next[res.index(spec.size)] = Value::Int(total as i64);
            next[res.index(spec.sha256)] = Value::Text(digest);
            if !head.filename.is_empty()
                && let Some(i) = res.index_of("filename")
            {
                next[i] = Value::Text(head.filename.to_owned());
            }
            u.stage_version(version_id);
            let rec = u.write(res, &current, next, Action::Update).await?;
            if !u.version_written() {
                return Err(Error::Internal(format!("{} upload wrote no version", res.name)));
            }
            u.commit_one(res, &rec).await?;
            Ok(rec)
        };
        // The caller's deadline bounds the whole stream.
        let result = super::within(scope.deadline, run).await;
        result.map_err(|e| named(res, e))
    }

    /// The version `number` of record `id` (0: the current one).
    pub async fn version(
        &self,
        scope: &Scope,
        res: &'static Resource,
        id: &str,
        number: i64,
    ) -> Result<Record, Error> {
        let spec = res.versions.ok_or_else(|| Error::Internal(format!("{} has no versions", res.name)))?;
        let field = format!("{}_id", res.name);
        let doc = parse_id(&field, id)?;
        if number < 0 {
            return Err(Error::invalid("version", "version must not be negative"));
        }
        let counter = res.counter.ok_or_else(|| Error::Internal(format!("{} has no counter", res.name)))?;
        content::find_version(&self.store, scope, spec, counter.field, doc, (number > 0).then_some(number))
            .await?
            .ok_or_else(|| match number {
                0 => not_found(res, doc),
                n => not_found(spec.resource, format!("{doc}@{n}")),
            })
    }

    /// A version and its content as text, for unary reads: refused
    /// (FAILED_PRECONDITION) when larger than the inline limit or not
    /// UTF-8 text; those are read with [`Service::download`].
    pub async fn version_with_text(
        &self,
        scope: &Scope,
        res: &'static Resource,
        id: &str,
        number: i64,
    ) -> Result<(Record, String), Error> {
        let spec = res.versions.ok_or_else(|| Error::Internal(format!("{} has no versions", res.name)))?;
        let v = self.version(scope, res, id, number).await?;
        let size = match v.get(spec.resource, spec.size) {
            Value::Int(n) => *n as usize,
            _ => 0,
        };
        if size > spec.inline_max {
            return Err(Error::FailedPrecondition {
                reason: "CONTENT_TOO_LARGE",
                message: format!(
                    "this version has {size} bytes, more than a unary message carries ({} MiB); \
                     read it with DownloadDocumentContent",
                    spec.inline_max >> 20
                ),
            });
        }
        let mut bytes = Vec::with_capacity(size);
        let mut after = -1;
        loop {
            let chunks = content::read_chunks(&self.store, scope, spec, v.id(), after).await?;
            let Some((last, _)) = chunks.last() else { break };
            after = *last;
            for (_, data) in chunks {
                bytes.extend_from_slice(&data);
            }
        }
        let text = String::from_utf8(bytes).map_err(|_| Error::FailedPrecondition {
            reason: "BINARY_CONTENT",
            message: "this version is not UTF-8 text; read it with DownloadDocumentContent".into(),
        })?;
        Ok((v, text))
    }

    /// Streams the content of version `number` (0: the current one) in
    /// pieces of [`DOWNLOAD_PIECE`] bytes: the version first, then a
    /// receiver of pieces. A few chunk rows are read per short read-only
    /// transaction; when the receiver is dropped (the caller cancelled) the
    /// reading stops after the statement in flight. The caller's deadline
    /// bounds the whole stream.
    pub async fn download(
        &self,
        scope: Scope,
        res: &'static Resource,
        id: &str,
        number: i64,
    ) -> Result<(Record, tokio::sync::mpsc::Receiver<Result<Bytes, Error>>), Error> {
        let spec = res.versions.ok_or_else(|| Error::Internal(format!("{} has no versions", res.name)))?;
        let v = self.version(&scope, res, id, number).await?;
        let store = self.store.clone();
        let version_id = v.id();
        let (out, rx) = tokio::sync::mpsc::channel(DOWNLOAD_AHEAD);
        tokio::spawn(
            async move {
                let work = async {
                    let mut after = -1;
                    loop {
                        let chunks = tokio::select! {
                            c = content::read_chunks(&store, &scope, spec, version_id, after) => c?,
                            () = out.closed() => return Ok(()),
                        };
                        let Some((last, _)) = chunks.last() else { return Ok(()) };
                        after = *last;
                        for (_, data) in chunks {
                            let data = Bytes::from(data);
                            let mut at = 0;
                            while at < data.len() {
                                let end = (at + DOWNLOAD_PIECE).min(data.len());
                                if out.send(Ok(data.slice(at..end))).await.is_err() {
                                    return Ok(()); // the caller went away
                                }
                                at = end;
                            }
                        }
                    }
                };
                let result = super::within(scope.deadline, work).await;
                if let Err(e) = result {
                    let _ = out.send(Err(e)).await;
                }
            }
            .in_current_span(), // statements stay children of the call's span
        );
        Ok((v, rx))
    }
}
