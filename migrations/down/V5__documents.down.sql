-- Undoes V5__documents.sql: its tables, with their policies, indexes and
-- grants. Their rows (documents, versions, content chunks, conversations,
-- messages) are deleted with them.
DROP TABLE messages, conversations, document_chunks, document_versions, documents;
