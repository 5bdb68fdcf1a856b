"""The knowledge store: SQLite + sqlite-vec + FTS5, ingestion, chunking and hybrid retrieval."""
