"""Test data written by the real OpenTelemetry SDK: turns of trace format v1 become spans shaped as
Pipecat's and LiveKit Agents' native tracing write them, encoded with the OTLP exporter's own
encoder, and printed as OTLP/JSON the way the Collector's file exporter writes it (hex ids, integer
enums, one ExportTraceServiceRequest a line)."""

from __future__ import annotations

import json
import random
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Status, StatusCode, set_span_in_context

SECOND = 1_000_000_000


class SeededIds(IdGenerator):
    """Ids from a seeded generator, so a test's spans are the same on every run."""

    def __init__(self, seed: int):
        self.random = random.Random(seed)

    def generate_span_id(self) -> int:
        return self.random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self.random.getrandbits(128) or 1


def _otlp_json(spans: list, *, per_line: int) -> bytes:
    """The Collector's file exporter form: ids in hex, enums as integers, a request a line."""
    lines = []
    for start in range(0, len(spans), per_line):
        request = MessageToDict(encode_spans(spans[start:start + per_line]), use_integers_for_enums=True)
        for resource_spans in request.get("resourceSpans", []):
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in span:
                            span[key] = __import__("base64").b64decode(span[key]).hex()
        lines.append(json.dumps(request, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _sessions(turns: list[dict]) -> dict[str, list[dict]]:
    sessions: dict[str, list[dict]] = {}
    for turn in turns:
        sessions.setdefault(turn["session_id"], []).append(turn)
    return {k: sorted(v, key=lambda t: t["turn_index"]) for k, v in sessions.items()}


def tool_status(status: str | None) -> str:
    """What a tool call can say of a result: it worked, or it failed."""
    return "error" if status == "error" else "success"


def pipecat_export(turns: list[dict], *, team_attributes: bool = False, seed: int = 0, per_line: int = 200,
                   shuffle: bool = False) -> bytes:
    """Spans as Pipecat's native tracing writes them: conversation -> turn -> stt, llm (tool call below
    it), tts. Standard Pipecat attributes only, unless `team_attributes` adds stt.confidence,
    nlu.intent and nlu.confidence as a team would (Pipecat's own spans carry no confidences)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "voice-bot"}), id_generator=SeededIds(seed))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("pipecat.turn")
    clock = 1_790_000_000 * SECOND
    for session_id, session in _sessions(turns).items():
        conversation = tracer.start_span("conversation", start_time=clock)
        conversation.set_attribute("conversation.id", session_id)
        conversation.set_attribute("conversation.type", "voice")
        for turn in session:
            context = set_span_in_context(conversation)
            span = tracer.start_span("turn", context=context, start_time=clock)
            span.set_attribute("turn.number", turn["turn_index"] + 1)
            span.set_attribute("turn.type", "conversation")
            span.set_attribute("conversation.id", session_id)
            inner = set_span_in_context(span)
            asr, nlu, result = turn.get("asr"), turn.get("nlu"), turn.get("result")
            if asr:
                stt = tracer.start_span("stt", context=inner, start_time=clock + 1)
                stt.set_attribute("gen_ai.provider.name", "deepgram")
                stt.set_attribute("gen_ai.operation.name", "stt")
                stt.set_attribute("vad_enabled", True)
                if asr["text"]:
                    stt.set_attribute("transcript", asr["text"])
                stt.set_attribute("is_final", True)
                stt.set_attribute("language", "en-US")
                stt.set_attribute("metrics.ttfb", 0.21)
                if team_attributes and asr.get("confidence") is not None:
                    stt.set_attribute("stt.confidence", asr["confidence"])
                stt.end(end_time=clock + 2)
            if nlu:
                llm = tracer.start_span("llm", context=inner, start_time=clock + 3)
                llm.set_attribute("gen_ai.provider.name", "openai")
                llm.set_attribute("gen_ai.operation.name", "chat")
                llm.set_attribute("gen_ai.output.type", "text")
                llm.set_attribute("stream", True)
                llm.set_attribute("input", json.dumps([{"role": "user", "content": (asr or {}).get("text") or ""}]))
                if result and result.get("response"):
                    llm.set_attribute("output", result["response"])
                if team_attributes:
                    llm.set_attribute("nlu.intent", nlu["intent"])
                    if nlu.get("confidence") is not None:
                        llm.set_attribute("nlu.confidence", nlu["confidence"])
                if result and result.get("action"):
                    tool = tracer.start_span("llm_tool_call", context=set_span_in_context(llm), start_time=clock + 4)
                    tool.set_attribute("tool.function_name", result["action"])
                    tool.set_attribute("tool.call_id", f"call_{turn['turn_id']}")
                    tool.set_attribute("tool.arguments", "{}")
                    tool.set_attribute("tool.result_status", tool_status(result.get("status")))
                    tool.end(end_time=clock + 5)
                elif result and result.get("status") == "error":  # the LLM call itself failed
                    llm.set_status(Status(StatusCode.ERROR, "LLM service error"))
                llm.end(end_time=clock + 6)
            if result and result.get("response"):
                tts = tracer.start_span("tts", context=inner, start_time=clock + 7)
                tts.set_attribute("gen_ai.operation.name", "tts")
                tts.set_attribute("text", result["response"])
                tts.set_attribute("metrics.character_count", len(result["response"]))
                tts.end(end_time=clock + 8)
            span.set_attribute("turn.duration_seconds", 2.5)
            span.set_attribute("turn.was_interrupted", bool((turn.get("feedback") or {}).get("barge_in")))
            span.end(end_time=clock + 9)
            clock += 10 * SECOND
        conversation.end(end_time=clock)
    spans = list(exporter.get_finished_spans())
    if shuffle:  # children before parents, as a collector may batch them
        random.Random(seed).shuffle(spans)
    return _otlp_json(spans, per_line=per_line)


def livekit_export(turns: list[dict], *, seed: int = 0) -> bytes:
    """Spans as LiveKit Agents writes them: under agent_session, a user_turn (transcript and its
    confidence) beside the agent_turn that answers it (llm_node, function_tool, tts_node -> tts_request)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "agent"}), id_generator=SeededIds(seed))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("livekit-agents")
    clock = 1_790_000_000 * SECOND
    for session in _sessions(turns).values():
        agent_session = tracer.start_span("agent_session", start_time=clock)
        root = set_span_in_context(agent_session)
        for turn in session:
            asr, nlu, result = turn.get("asr"), turn.get("nlu"), turn.get("result")
            if asr:
                user = tracer.start_span("user_turn", context=root, start_time=clock)
                user.set_attribute("lk.pii.user_transcript", asr["text"])
                if asr.get("confidence") is not None:
                    user.set_attribute("lk.transcript_confidence", asr["confidence"])
                user.end(end_time=clock + 2)
            span = tracer.start_span("agent_turn", context=root, start_time=clock + 3)
            span.set_attribute("lk.speech_id", f"speech_{turn['turn_id']}")
            inner = set_span_in_context(span)
            if nlu:
                llm = tracer.start_span("llm_node", context=inner, start_time=clock + 4)
                if result and result.get("response"):
                    llm.set_attribute("lk.pii.response.text", result["response"])
                if result and result.get("status") == "error" and not result.get("action"):
                    llm.set_status(Status(StatusCode.ERROR, "provider error"))
                llm.end(end_time=clock + 5)
                if result and result.get("action"):
                    tool = tracer.start_span("function_tool", context=inner, start_time=clock + 6)
                    tool.set_attribute("lk.function_tool.name", result["action"])
                    tool.set_attribute("lk.function_tool.is_error", tool_status(result.get("status")) == "error")
                    tool.end(end_time=clock + 7)
            span.set_attribute("lk.interrupted", bool((turn.get("feedback") or {}).get("barge_in")))
            span.end(end_time=clock + 9)
            clock += 10 * SECOND
        agent_session.end(end_time=clock)
    return _otlp_json(list(exporter.get_finished_spans()), per_line=500)


def span_timestamp(position: int) -> str:
    """The timestamp the exports above give the turn at `position` (in session order): a turn every 10 s."""
    import datetime
    return datetime.datetime.fromtimestamp(1_790_000_000 + 10 * position, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def as_span_information(turn: dict[str, Any], *, confidences: bool = True) -> dict[str, Any]:
    """A turn reduced to what the spans carry: transcript (and its confidence), intent (and its
    confidence), tool call and its status, response text, interruption."""
    out: dict[str, Any] = {k: turn[k] for k in ("turn_id", "session_id", "turn_index")}
    if turn.get("asr"):
        out["asr"] = {"text": turn["asr"]["text"]}
        if confidences:
            out["asr"]["confidence"] = turn["asr"].get("confidence")
    if turn.get("nlu"):
        out["nlu"] = {"intent": turn["nlu"]["intent"]}
        if confidences:
            out["nlu"]["confidence"] = turn["nlu"].get("confidence")
    if turn.get("nlu") and turn.get("result"):
        result = turn["result"]
        out["result"] = {"status": tool_status(result.get("status")), "action": result.get("action"),
                         "response": result.get("response")}
    out["feedback"] = {"barge_in": bool((turn.get("feedback") or {}).get("barge_in"))}
    return out
