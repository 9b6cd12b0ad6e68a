//! Job-file readers (JSONL, OpenAI Batch JSONL, Parquet), whole-file validation, publishing and the run manifest.
