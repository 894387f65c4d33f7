-- DocumentService: versioned documents (their content history kept as
-- immutable versions whose bytes are chunk rows), assistant conversations
-- and their messages. Same invariants as V1: tenant_id leads every key,
-- FORCE RLS, the service role owns nothing; versions, chunks and messages
-- are append-only for it.

------------------------------------------------------------------------------
-- Documents
------------------------------------------------------------------------------
CREATE TABLE documents (
    tenant_id         uuid        NOT NULL,
    id                uuid        NOT NULL,
    title             text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 500),
    kind              text,
    -- The current version's text when it is text of at most 4 MiB (FULL
    -- reads, search); NULL for binary or larger content, which only the
    -- version chunks hold.
    content           text,
    content_type      text,
    metadata          jsonb       NOT NULL DEFAULT '{}',
    status            text        NOT NULL DEFAULT 'DRAFT',
    version           bigint      NOT NULL DEFAULT 1 CHECK (version >= 1),
    filename          text,
    size_bytes        bigint      NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
    sha256            text,
    processing_status text        NOT NULL DEFAULT 'PENDING',
    owner             text        NOT NULL,
    create_time       timestamptz NOT NULL DEFAULT now(),
    update_time       timestamptz NOT NULL DEFAULT now(),
    delete_time       timestamptz,
    revision          bigint      NOT NULL DEFAULT 1,
    -- Title above body; the body's first 256 Ki characters are indexed
    -- (a tsvector holds at most 1 MB).
    search_vector     tsvector    GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A') ||
        setweight(to_tsvector('english', left(coalesce(content, ''), 262144)), 'B')
    ) STORED,
    PRIMARY KEY (tenant_id, id)
);
-- The TOASTed text is not compressed again on every write of the row.
ALTER TABLE documents ALTER COLUMN content SET STORAGE EXTERNAL;
CREATE INDEX documents_search_gin       ON documents USING gin (search_vector);
CREATE INDEX documents_title_trgm       ON documents USING gin (title gin_trgm_ops);
CREATE INDEX documents_metadata_gin     ON documents USING gin (metadata);
CREATE INDEX documents_create_time_idx  ON documents (tenant_id, create_time, id);
CREATE INDEX documents_update_time_idx  ON documents (tenant_id, update_time, id);
CREATE INDEX documents_title_idx        ON documents (tenant_id, title, id);
CREATE INDEX documents_kind_idx         ON documents (tenant_id, kind, create_time);
CREATE INDEX documents_owner_idx        ON documents (tenant_id, owner, create_time);
-- ClaimDocuments: pending live documents, oldest first (the service's
-- `pending_documents` subset).
CREATE INDEX documents_pending_idx ON documents (tenant_id, create_time, id)
    WHERE delete_time IS NULL AND processing_status IN ('PENDING');

-- One row per content change: version 1, 2, 3... per document.
CREATE TABLE document_versions (
    tenant_id    uuid        NOT NULL,
    id           uuid        NOT NULL,
    document_id  uuid        NOT NULL,
    version      bigint      NOT NULL CHECK (version >= 1),
    content_type text,
    size_bytes   bigint      NOT NULL CHECK (size_bytes >= 0),
    sha256       text        NOT NULL,
    author       text        NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    revision     bigint      NOT NULL DEFAULT 1, -- constant: versions never change
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, document_id, version),
    FOREIGN KEY (tenant_id, document_id) REFERENCES documents (tenant_id, id)
);
CREATE INDEX document_versions_create_time_idx ON document_versions (tenant_id, create_time, id);

-- A version's bytes, in order. An upload writes its chunks before the
-- version row exists (the number is assigned at the end, under the
-- document's row lock), so the key is checked at commit.
CREATE TABLE document_chunks (
    tenant_id  uuid    NOT NULL,
    version_id uuid    NOT NULL,
    seq        integer NOT NULL CHECK (seq >= 0),
    data       bytea   NOT NULL,
    PRIMARY KEY (tenant_id, version_id, seq),
    FOREIGN KEY (tenant_id, version_id) REFERENCES document_versions (tenant_id, id)
        DEFERRABLE INITIALLY DEFERRED
);
-- Content is often compressed already (images, PDFs): stored as is.
ALTER TABLE document_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

------------------------------------------------------------------------------
-- Conversations and messages
------------------------------------------------------------------------------
CREATE TABLE conversations (
    tenant_id     uuid        NOT NULL,
    id            uuid        NOT NULL,
    title         text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 500),
    metadata      jsonb       NOT NULL DEFAULT '{}',
    owner         text        NOT NULL,
    message_count bigint      NOT NULL DEFAULT 0 CHECK (message_count >= 0),
    total_tokens  bigint      NOT NULL DEFAULT 0 CHECK (total_tokens >= 0),
    create_time   timestamptz NOT NULL DEFAULT now(),
    update_time   timestamptz NOT NULL DEFAULT now(),
    revision      bigint      NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX conversations_create_time_idx ON conversations (tenant_id, create_time, id);
CREATE INDEX conversations_update_time_idx ON conversations (tenant_id, update_time, id);
CREATE INDEX conversations_title_idx       ON conversations (tenant_id, title, id);
CREATE INDEX conversations_metadata_gin    ON conversations USING gin (metadata);

-- Messages of a conversation, numbered 1, 2, 3... in commit order.
CREATE TABLE messages (
    tenant_id       uuid        NOT NULL,
    id              uuid        NOT NULL,
    conversation_id uuid        NOT NULL,
    seq             bigint      NOT NULL CHECK (seq >= 1),
    role            text        NOT NULL,
    content         text        NOT NULL,
    token_count     bigint      NOT NULL DEFAULT 0 CHECK (token_count >= 0),
    metadata        jsonb       NOT NULL DEFAULT '{}',
    create_time     timestamptz NOT NULL DEFAULT now(),
    revision        bigint      NOT NULL DEFAULT 1, -- constant: messages never change
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, conversation_id, seq),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id)
);
CREATE INDEX messages_create_time_idx ON messages (tenant_id, create_time, id);

------------------------------------------------------------------------------
-- Row-level security and grants
------------------------------------------------------------------------------
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['documents', 'document_versions', 'document_chunks', 'conversations', 'messages']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = app_tenant()) '
                       'WITH CHECK (tenant_id = app_tenant())', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE ON documents, conversations TO bi_data_app;
-- The history: never updated nor deleted by the service (like audit_events).
GRANT SELECT, INSERT ON document_versions, document_chunks, messages TO bi_data_app;
