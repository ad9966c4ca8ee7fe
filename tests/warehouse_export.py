"""Test data of another shape: turns as a team's warehouse exports them (flat columns, their own names, a
0-100 scale, epoch milliseconds, their status words), and the mapping that reads them as trace format v1."""

import polars as pl

WAREHOUSE = """\
format: csv
stages: [asr, nlu, result, feedback]
order: ts
fields:
  session_id: call_id
  asr.text: transcript
  asr.confidence: {from: asr_score, scale: [0, 100]}
  nlu.intent: intent
  nlu.confidence: intent_confidence
  result.status:
    from: status
    values: {ok: success, failed: error, no_match: fallback}
  result.response: response
  feedback.barge_in: interrupted
  timestamp: {from: ts, time: unix_ms}
  label: gold
"""


def warehouse_export(turns: pl.DataFrame) -> pl.DataFrame:
    """The turns as a warehouse would export them: flat, other names, a 0-100 scale, epoch ms, their status words."""
    asr, nlu, result = pl.col("asr").struct, pl.col("nlu").struct, pl.col("result").struct
    return turns.select(
        call_id="session_id", transcript=asr.field("text"), asr_score=(asr.field("confidence") * 100).round(2),
        intent=nlu.field("intent"), intent_confidence=nlu.field("confidence"),
        status=result.field("status").replace({"success": "ok", "error": "failed", "fallback": "no_match"}),
        response=result.field("response"), interrupted=pl.col("feedback").struct.field("barge_in"),
        ts=pl.col("timestamp").str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_zone="UTC").dt.epoch("ms"), gold="label")
