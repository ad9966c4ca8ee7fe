"""Engines hand the pipeline batches of whole sessions: the whole input in memory, a streamed run in bounded memory, or Spark."""
