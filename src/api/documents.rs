//! DocumentService: the Document, DocumentVersion, Conversation and Message
//! mappings and thin handlers. Content streams are turned into byte
//! streams for the service's upload and download use cases.

use bytes::Bytes;
use futures_util::{StreamExt, stream::BoxStream};
use tonic::{Request, Response, Status, Streaming};

use super::{
    context::scope,
    convert::{text_out, time_out},
    resource::{self as edge, ProtoResource},
};
use crate::{
    api::middleware::conventions::{inbound, is_oversize},
    domain::{
        document::{CONVERSATION, DOCUMENT, DOCUMENT_VERSION, MAX_CONTENT_BYTES, MESSAGE, PENDING_DOCUMENTS},
        record::Record,
        value::Value,
    },
    error::Error,
    pb::{self, document_service_server::DocumentService},
    proto_resource,
    service::{ListArgs, SearchArgs, Service, UploadHead, View},
};

proto_resource!(
    pb::Document,
    DOCUMENT,
    [
        id,
        title,
        kind,
        content,
        content_type,
        metadata,
        status,
        version,
        filename,
        size_bytes,
        sha256,
        processing_status,
        owner,
        create_time,
        update_time,
        delete_time,
    ],
    etag
);

proto_resource!(
    pb::Conversation,
    CONVERSATION,
    [id, title, metadata, owner, message_count, total_tokens, create_time, update_time],
    etag
);

proto_resource!(
    pb::Message,
    MESSAGE,
    [id, conversation_id, seq, role, content, token_count, metadata, create_time]
);

/// A version row as its message (output only; `content` for
/// GetDocumentVersion is added by the handler).
fn version_out(rec: &Record) -> pb::DocumentVersion {
    let res = &DOCUMENT_VERSION;
    let int = |f: &str| if let Value::Int(n) = rec.get(res, f) { *n } else { 0 };
    pb::DocumentVersion {
        id: rec.id().to_string(),
        document_id: text_out(rec.get(res, "document_id")),
        version: int("version"),
        content_type: text_out(rec.get(res, "content_type")),
        size_bytes: int("size_bytes"),
        sha256: text_out(rec.get(res, "sha256")),
        author: text_out(rec.get(res, "author")),
        create_time: time_out(rec.get(res, "create_time")),
        content: String::new(),
    }
}

fn view(v: i32, default: View) -> View {
    match pb::DocumentView::try_from(v) {
        Ok(pb::DocumentView::Basic) => View::Basic,
        Ok(pb::DocumentView::Full) => View::Full,
        _ => default,
    }
}

pub struct DocumentApi {
    svc: Service,
}

impl DocumentApi {
    pub fn new(svc: Service) -> Self {
        DocumentApi { svc }
    }
}

#[tonic::async_trait]
impl DocumentService for DocumentApi {
    async fn create_document(
        &self,
        req: Request<pb::CreateDocumentRequest>,
    ) -> Result<Response<pb::Document>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        Ok(Response::new(edge::create(&self.svc, &scope, r.document, &r.request_id).await?))
    }

    async fn get_document(
        &self,
        req: Request<pb::GetDocumentRequest>,
    ) -> Result<Response<pb::Document>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let rec = self.svc.get(&scope, &DOCUMENT, &r.id, view(r.view, View::Basic)).await?;
        Ok(Response::new(pb::Document::from_record(&rec)))
    }

    async fn list_documents(
        &self,
        req: Request<pb::ListDocumentsRequest>,
    ) -> Result<Response<pb::ListDocumentsResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let args = ListArgs {
            view: view(r.view, View::Basic),
            ..edge::list_args(r.page_size, &r.page_token, &r.filter, &r.order_by, r.show_deleted, r.count)
        };
        let page = edge::list::<pb::Document>(&self.svc, &scope, args).await?;
        Ok(Response::new(pb::ListDocumentsResponse {
            documents: page.items,
            next_page_token: page.next_page_token,
            total_size: page.total_size,
        }))
    }

    async fn update_document(
        &self,
        req: Request<pb::UpdateDocumentRequest>,
    ) -> Result<Response<pb::Document>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        let d =
            edge::update(&self.svc, &scope, r.document, r.update_mask, |d| &d.id, |d| &d.etag, &r.request_id);
        Ok(Response::new(d.await?))
    }

    async fn delete_document(
        &self,
        req: Request<pb::DeleteDocumentRequest>,
    ) -> Result<Response<pb::Document>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.get_ref();
        Ok(Response::new(edge::delete(&self.svc, &scope, &r.id, &r.etag, false, &r.request_id).await?))
    }

    async fn undelete_document(
        &self,
        req: Request<pb::UndeleteDocumentRequest>,
    ) -> Result<Response<pb::Document>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.get_ref();
        Ok(Response::new(edge::undelete(&self.svc, &scope, &r.id, &r.request_id).await?))
    }

    async fn list_document_versions(
        &self,
        req: Request<pb::ListDocumentVersionsRequest>,
    ) -> Result<Response<pb::ListDocumentVersionsResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        // The document itself must be visible (NOT_FOUND otherwise).
        self.svc.get(&scope, &DOCUMENT, &r.document_id, View::Basic).await?;
        let args = ListArgs {
            page_size: r.page_size,
            page_token: &r.page_token,
            order_by: "version desc",
            ..ListArgs::default()
        };
        let page =
            self.svc.list_children(&scope, &DOCUMENT_VERSION, "document_id", &r.document_id, args).await?;
        Ok(Response::new(pb::ListDocumentVersionsResponse {
            versions: page.items.iter().map(version_out).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_document_version(
        &self,
        req: Request<pb::GetDocumentVersionRequest>,
    ) -> Result<Response<pb::DocumentVersion>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let (rec, content) = self.svc.version_with_text(&scope, &DOCUMENT, &r.document_id, r.version).await?;
        Ok(Response::new(pb::DocumentVersion { content, ..version_out(&rec) }))
    }

    async fn search_documents(
        &self,
        req: Request<pb::SearchDocumentsRequest>,
    ) -> Result<Response<pb::SearchDocumentsResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let args = SearchArgs {
            query: &r.query,
            filter: &r.filter,
            page_size: r.page_size,
            page_token: &r.page_token,
        };
        let page = self.svc.search(&scope, &DOCUMENT, args).await?;
        Ok(Response::new(pb::SearchDocumentsResponse {
            hits: page
                .hits
                .iter()
                .map(|h| pb::DocumentHit {
                    document: Some(pb::Document::from_record(&h.record)),
                    score: h.score,
                    snippet: h.snippet.clone().unwrap_or_default(),
                })
                .collect(),
            next_page_token: page.next_page_token,
            fuzzy: page.fuzzy,
        }))
    }

    async fn claim_documents(
        &self,
        req: Request<pb::ClaimDocumentsRequest>,
    ) -> Result<Response<pb::ClaimDocumentsResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.get_ref();
        let claimed = self
            .svc
            .claim(
                &scope,
                &DOCUMENT,
                &PENDING_DOCUMENTS,
                "processing_status",
                "PROCESSING",
                r.limit,
                &r.request_id,
            )
            .await?;
        Ok(Response::new(pb::ClaimDocumentsResponse {
            documents: claimed.iter().map(pb::Document::from_record).collect(),
        }))
    }

    async fn upload_document_content(
        &self,
        req: Request<Streaming<pb::UploadDocumentContentRequest>>,
    ) -> Result<Response<pb::Document>, Status> {
        use pb::upload_document_content_request::Part;
        let (mut scope, _) = scope(self.svc.store(), &req, "")?;
        let mut stream = req.into_inner();
        let header = match stream.message().await.map_err(inbound)? {
            Some(pb::UploadDocumentContentRequest { part: Some(Part::Header(h)) }) => h,
            _ => return Err(Error::invalid("header", "the first message must be the header").into()),
        };
        if !header.request_id.is_empty() {
            scope.request_id = Some(header.request_id.clone());
        }
        let body = stream.map(|m| match m {
            Ok(pb::UploadDocumentContentRequest { part: Some(Part::Data(b)) }) => Ok(b),
            Ok(pb::UploadDocumentContentRequest { part: None }) => Ok(Bytes::new()),
            Ok(_) => Err(Error::invalid("header", "only the first message is a header")),
            Err(s) if is_oversize(&s) => {
                Err(Error::ResourceExhausted { reason: "MESSAGE_TOO_LARGE", message: s.message().to_owned() })
            }
            Err(s) => Err(Error::Aborted {
                reason: "STREAM_BROKEN",
                message: format!("upload stream broken: {}", s.message()),
            }),
        });
        let head = UploadHead {
            id: &header.document_id,
            content_type: &header.content_type,
            sha256: &header.sha256,
            filename: &header.filename,
            etag: &header.etag,
            request_id: &header.request_id,
        };
        let rec = self.svc.upload(&scope, &DOCUMENT, head, MAX_CONTENT_BYTES, body).await?;
        Ok(Response::new(pb::Document::from_record(&rec)))
    }

    type DownloadDocumentContentStream =
        BoxStream<'static, Result<pb::DownloadDocumentContentResponse, Status>>;

    async fn download_document_content(
        &self,
        req: Request<pb::DownloadDocumentContentRequest>,
    ) -> Result<Response<Self::DownloadDocumentContentStream>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.into_inner();
        let (version, rx) = self.svc.download(scope, &DOCUMENT, &r.document_id, r.version).await?;
        let head =
            pb::DownloadDocumentContentResponse { version: Some(version_out(&version)), data: Bytes::new() };
        let data = tokio_stream::wrappers::ReceiverStream::new(rx).map(|piece| {
            piece
                .map(|data| pb::DownloadDocumentContentResponse { version: None, data })
                .map_err(Status::from)
        });
        Ok(Response::new(futures_util::stream::once(async { Ok(head) }).chain(data).boxed()))
    }

    async fn create_conversation(
        &self,
        req: Request<pb::CreateConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        Ok(Response::new(edge::create(&self.svc, &scope, r.conversation, &r.request_id).await?))
    }

    async fn get_conversation(
        &self,
        req: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        Ok(Response::new(edge::get(&self.svc, &scope, &req.get_ref().id).await?))
    }

    async fn list_conversations(
        &self,
        req: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        let args = edge::list_args(r.page_size, &r.page_token, &r.filter, &r.order_by, false, r.count);
        let page = edge::list::<pb::Conversation>(&self.svc, &scope, args).await?;
        Ok(Response::new(pb::ListConversationsResponse {
            conversations: page.items,
            next_page_token: page.next_page_token,
            total_size: page.total_size,
        }))
    }

    async fn append_messages(
        &self,
        req: Request<pb::AppendMessagesRequest>,
    ) -> Result<Response<pb::AppendMessagesResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, &req.get_ref().request_id)?;
        let r = req.into_inner();
        let items = r.messages.iter().map(|m| m.to_draft()).collect();
        let (conversation, messages) =
            self.svc.append(&scope, &CONVERSATION, &r.conversation_id, items, &r.request_id).await?;
        Ok(Response::new(pb::AppendMessagesResponse {
            messages: messages.iter().map(pb::Message::from_record).collect(),
            conversation: Some(pb::Conversation::from_record(&conversation)),
        }))
    }

    async fn list_messages(
        &self,
        req: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let (scope, _) = scope(self.svc.store(), &req, "")?;
        let r = req.get_ref();
        // The conversation itself must be visible (NOT_FOUND otherwise).
        self.svc.get(&scope, &CONVERSATION, &r.conversation_id, View::Basic).await?;
        let args = ListArgs {
            page_size: r.page_size,
            page_token: &r.page_token,
            order_by: "seq",
            ..ListArgs::default()
        };
        let page =
            self.svc.list_children(&scope, &MESSAGE, "conversation_id", &r.conversation_id, args).await?;
        Ok(Response::new(pb::ListMessagesResponse {
            messages: page.items.iter().map(pb::Message::from_record).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
