"""Readers and writers at the edge: trace files and frames of every shape (JSON Lines, Parquet, CSV, OpenTelemetry spans, through mappings) into typed turns, and records out."""
