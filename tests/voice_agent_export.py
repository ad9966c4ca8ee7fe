"""Voice-agent calls as the real frameworks log them, written by the real OpenTelemetry SDK.

Labeled calls come from the simulator's llm-agent profile, made into what a voice agent shows: on a
share of the ASR failures the STT heard nothing (no transcript, `stt.incomplete`) and the bot asks
again ("Sorry, I didn't catch that"). The same calls are then written as Pipecat traces them
(`conversation` -> `turn` -> `stt` / `llm` / `function_call` / `tts`, or the old `stt_<service>`
names) and as LiveKit Agents 1.6 and 1.7 do (`agent_session` -> sibling `user_speaking`, `user_turn`,
and one `agent_turn` per LLM step, linked by `lk.speech_id` / `lk.parent_generation_id`; `lk.pii.*`
content keys in 1.7). Each turn span carries its gold label as `gold.label`, for `fpi eval`."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode, set_span_in_context
from otel_export import SECOND, SeededIds, _otlp_json

from fpi import simulate

REPROMPTS = ("Sorry, I didn't catch that.", "Sorry, could you repeat that?", "I didn't quite get that, can you say it again?")
MS = 1_000_000


@dataclass
class Call:
    """One labeled exchange: what the user said (empty: the STT heard nothing), the tool the LLM called
    and whether it failed, what the bot said, and how the user reacted."""

    session_id: str
    index: int
    label: str
    text: str
    tool: str | None
    tool_failed: bool
    llm_failed: bool
    reply: str
    barge_in: bool
    latency_s: float


def voice_calls(n: int, seed: int, *, heard_nothing: float = 0.3) -> list[Call]:
    """`n` labeled exchanges of an LLM voice agent; `heard_nothing` of the ASR failures are silences."""
    frame = simulate(n, seed=seed, profile="llm-agent")
    draw = random.Random(seed)
    calls = []
    for row in frame.iter_rows(named=True):
        result, label = row["result"], row["label"]
        text, tool, reply = row["asr"]["text"], result["action"], result["response"] or ""
        if label == "asr" and draw.random() < heard_nothing:
            text, tool, reply = "", None, draw.choice(REPROMPTS)
        failed = result["status"] == "error" and bool(text)
        latency = draw.uniform(0.7, 1.8) + (draw.uniform(2, 6) if failed and draw.random() < 0.3 else 0.0)
        calls.append(Call(row["session_id"], row["turn_index"], label, text, tool, failed and tool is not None,
                          failed and tool is None, reply, bool(row["feedback"]["barge_in"]) and not (failed and tool is None),
                          round(latency, 3)))  # a reply that never played cannot be interrupted
    return calls


def _by_session(calls: list[Call]) -> list[list[Call]]:
    sessions: dict[str, list[Call]] = {}
    for call in calls:
        sessions.setdefault(call.session_id, []).append(call)
    return [sorted(s, key=lambda c: c.index) for s in sessions.values()]


def _provider(seed: int, service: str) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}), id_generator=SeededIds(seed))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


# ------------------------------------------------------------------ Pipecat

PIPECAT_NAMES = {"new": ("stt", "llm", "tts"), "old": ("stt_deepgramsttservice", "llm_openaillmservice", "tts_cartesiattsservice")}


def pipecat_calls(calls: list[Call], *, names: str = "new", confidence: bool = False, seed: int = 0) -> bytes:
    """The calls as Pipecat traces them; `names="old"` as releases before 0.0.68 and Langfuse's guide name
    spans (with `gen_ai.system` and `metrics.ttfb_ms`); `confidence` adds a team's `stt.confidence`."""
    provider, exporter = _provider(seed, "voice-bot")
    turns, services = provider.get_tracer("pipecat.turn"), provider.get_tracer("pipecat")
    clock = 1_790_000_000 * SECOND
    confidences = random.Random(seed + 1)
    for session in _by_session(calls):
        conversation = turns.start_span("conversation", start_time=clock)
        conversation.set_attributes({"conversation.id": session[0].session_id, "conversation.type": "voice"})
        for call in session:
            turn = turns.start_span("turn", context=set_span_in_context(conversation), start_time=clock)
            turn.set_attributes({"turn.number": call.index + 1, "turn.type": "conversation",
                                 "conversation.id": call.session_id, "gold.label": call.label,
                                 "turn.user_bot_latency_seconds": call.latency_s})
            inner = set_span_in_context(turn)
            score = confidences.uniform(0.2, 0.75) if call.label == "asr" else confidences.uniform(0.6, 0.99)
            _pipecat_stt(services, inner, call, clock, names, score if confidence else None)
            _pipecat_llm(services, inner, call, clock, names)
            if call.reply and not call.llm_failed:
                tts = services.start_span(PIPECAT_NAMES[names][2], context=inner, start_time=clock + 3 * SECOND)
                tts.set_attributes({"gen_ai.operation.name": "tts", "gen_ai.output.type": "speech", "voice_id": "v-1",
                                    "text": call.reply, "metrics.character_count": len(call.reply)})
                tts.set_attribute(*(("metrics.ttfb", 0.18) if names == "new" else ("metrics.ttfb_ms", 180.0)))
                if call.barge_in:
                    tts.set_attribute("tts.interrupted", True)
                tts.end(end_time=clock + 5 * SECOND)
            hung_up = call is session[-1] and call.index % 3 == 0  # the caller hung up during the last turn
            turn.set_attributes({"turn.duration_seconds": 6.0, "turn.was_interrupted": call.barge_in or hung_up})
            if hung_up:
                turn.set_attribute("turn.ended_by_conversation_end", True)
            turn.end(end_time=clock + 6 * SECOND)
            clock += 10 * SECOND
        conversation.end(end_time=clock)
    return _otlp_json(list(exporter.get_finished_spans()), per_line=300)


def _pipecat_stt(tracer, context, call: Call, clock: int, names: str, confidence: float | None) -> None:
    stt = tracer.start_span(PIPECAT_NAMES[names][0], context=context, start_time=clock)
    provider = "gen_ai.provider.name" if names == "new" else "gen_ai.system"
    stt.set_attributes({provider: "deepgram", "gen_ai.request.model": "nova-3", "gen_ai.operation.name": "stt",
                        "vad_enabled": True, "is_final": bool(call.text), "language": "en-US"})
    stt.set_attribute(*(("metrics.ttfb", 0.21) if names == "new" else ("metrics.ttfb_ms", 210.0)))
    if call.text:
        stt.set_attribute("transcript", call.text)
    else:
        stt.set_attribute("stt.incomplete", True)
    if confidence is not None:
        stt.set_attribute("stt.confidence", round(confidence, 4) if call.text else 0.0)
    stt.end(end_time=clock + SECOND)


def _pipecat_llm(tracer, context, call: Call, clock: int, names: str) -> None:
    provider = "gen_ai.provider.name" if names == "new" else "gen_ai.system"
    common = {provider: "openai", "gen_ai.request.model": "gpt-4o", "gen_ai.operation.name": "chat",
              "gen_ai.output.type": "text", "stream": True, "tool_count": 3}
    start = clock + SECOND + 200 * MS
    if call.tool:
        first = tracer.start_span(PIPECAT_NAMES[names][1], context=context, start_time=start)
        first.set_attributes({**common, "input": json.dumps([{"role": "user", "content": call.text}]), "output": ""})
        first.end(end_time=start + 300 * MS)
        tool = tracer.start_span("function_call", context=context, start_time=start + 300 * MS)
        tool.set_attributes({"gen_ai.tool.name": call.tool, "gen_ai.tool.call.id": f"call_{call.session_id}_{call.index}",
                             "gen_ai.tool.call.arguments": "{}"})
        if call.tool_failed:
            tool.set_status(Status(StatusCode.ERROR, "tool raised"))
        tool.end(end_time=start + 500 * MS)
        start += 500 * MS
    llm = tracer.start_span(PIPECAT_NAMES[names][1], context=context, start_time=start)
    llm.set_attributes({**common, "input": json.dumps([{"role": "user", "content": call.text}])})
    llm.set_attribute(*(("metrics.ttfb", 0.35) if names == "new" else ("metrics.ttfb_ms", 350.0)))
    if call.llm_failed:
        llm.set_status(Status(StatusCode.ERROR, "APIError: upstream 500"))
    else:
        llm.set_attribute("output", call.reply)
    llm.end(end_time=start + 600 * MS)


# ------------------------------------------------------------------ LiveKit

def livekit_calls(calls: list[Call], *, version: str = "1.7", seed: int = 0, redaction: bool = False) -> bytes:
    """The calls as LiveKit Agents 1.6 or 1.7 trace them. Per exchange: `user_speaking` and `user_turn`
    (with `eou_detection` below it) beside one `agent_turn` per LLM step (two with a tool call), sometimes
    a discarded preemptive `agent_turn` first; a barge-in is a `user_speaking` with `lk.is_interruption`
    that starts while the bot speaks. With `redaction`, only `llm_request_run` is marked ERROR."""
    provider, exporter = _provider(seed, "agent")
    tracer = provider.get_tracer("livekit-agents")
    pii = "lk.pii." if version == "1.7" else "lk."
    clock = 1_790_000_000 * SECOND
    draw = random.Random(seed + 2)
    for session in _by_session(calls):
        root = tracer.start_span("agent_session", start_time=clock)
        root.set_attributes({"lk.agent_label": "assistant", "lk.job_id": f"job-{session[0].session_id}",
                             f"{pii}room_name": session[0].session_id})
        context = set_span_in_context(root)
        for call in session:
            _livekit_user(tracer, context, call, clock, pii, draw)
            speech = f"speech_{call.session_id}_{call.index}"
            start = clock + 2 * SECOND
            if draw.random() < 0.2:  # a preemptive reply, discarded when the final transcript came
                early = tracer.start_span("agent_turn", context=context, start_time=clock + 1500 * MS)
                early.set_attributes({"lk.speech_id": f"pre_{speech}", "lk.generation_id": f"pre_{speech}_1", "lk.interrupted": True})
                early.end(end_time=clock + 1900 * MS)
            if call.tool:
                start = _livekit_step(tracer, context, call, start, speech, 1, pii, redaction, tool_step=True, hung_up=False)
            hung_up = call is session[-1] and call.index % 3 == 0  # the caller hung up: lk.interrupted, no barge-in
            end = _livekit_step(tracer, context, call, start, speech, 2 if call.tool else 1, pii, redaction, tool_step=False,
                                hung_up=hung_up)
            if call.barge_in:  # the user speaks over the bot
                barge = tracer.start_span("user_speaking", context=context, start_time=end - 800 * MS)
                barge.set_attributes({"lk.participant_kind": "SIP", "lk.is_interruption": "true"})
                barge.end(end_time=end + SECOND)
            clock += 10 * SECOND
        root.end(end_time=clock)
    return _otlp_json(list(exporter.get_finished_spans()), per_line=400)


def _livekit_user(tracer, context, call: Call, clock: int, pii: str, draw: random.Random) -> None:
    """`user_speaking` (unless this turn's speech already began as a barge-in) and the `user_turn`."""
    speaking = tracer.start_span("user_speaking", context=context, start_time=clock + 100 * MS)
    speaking.set_attributes({"lk.participant_kind": "SIP", "lk.is_interruption": "false"})
    speaking.end(end_time=clock + SECOND)
    user = tracer.start_span("user_turn", context=context, start_time=clock + 100 * MS)
    confidence = draw.uniform(0.2, 0.75) if call.label == "asr" else draw.uniform(0.6, 0.99)
    user.set_attributes({"gen_ai.request.model": "nova-3", "gen_ai.provider.name": "deepgram", f"{pii}user_transcript": call.text,
                         "lk.transcript_confidence": round(confidence, 4) if call.text else 0.0, "gold.label": call.label,
                         "lk.transcription_delay": 0.3, "lk.end_of_turn_delay": 0.5})
    eou = tracer.start_span("eou_detection", context=set_span_in_context(user), start_time=clock + SECOND)
    eou.set_attributes({"lk.eou.probability": round(draw.uniform(0.6, 0.99), 3), "lk.eou.unlikely_threshold": 0.15})
    eou.end(end_time=clock + SECOND + 50 * MS)
    user.end(end_time=clock + 1600 * MS)


def _livekit_step(tracer, context, call: Call, start: int, speech: str, step: int, pii: str, redaction: bool,
                  *, tool_step: bool, hung_up: bool) -> int:
    """One `agent_turn` (one LLM step): llm_node -> llm_request -> llm_request_run, the function tool it
    called, or tts_node -> tts_request and agent_speaking. Returns when it ended."""
    turn = tracer.start_span("agent_turn", context=context, start_time=start)
    turn.set_attributes({"lk.speech_id": speech, "lk.generation_id": f"{speech}_{step}", "gold.label": call.label})
    if step > 1:
        turn.set_attribute("lk.parent_generation_id", f"{speech}_{step - 1}")
    else:
        turn.set_attribute(f"{pii}user_input", call.text)
    inner = set_span_in_context(turn)
    node = tracer.start_span("llm_node", context=inner, start_time=start + 10 * MS)
    node.set_attributes({"gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai", "lk.response.ttft": 0.4})
    request = tracer.start_span("llm_request", context=set_span_in_context(node), start_time=start + 20 * MS)
    request.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 420, "gen_ai.usage.output_tokens": 12})
    run = tracer.start_span("llm_request_run", context=set_span_in_context(request), start_time=start + 30 * MS)
    run.set_attribute("lk.retry_count", 0)
    failed = call.llm_failed and not tool_step
    if failed:
        message = "exception details redacted" if redaction else "APIStatusError: 500"
        run.set_attributes({"exception.type": "APIStatusError", "exception.message": message})
        run.set_status(Status(StatusCode.ERROR, message))
    run.end(end_time=start + 400 * MS)
    request.end(end_time=start + 410 * MS)
    if failed and not redaction:
        node.set_status(Status(StatusCode.ERROR, "APIStatusError: 500"))
    if tool_step:
        node.set_attribute(f"{pii}response.function_calls", json.dumps([{"name": call.tool, "arguments": "{}"}]))
        node.end(end_time=start + 420 * MS)
        tool = tracer.start_span("function_tool", context=inner, start_time=start + 430 * MS)
        tool.set_attributes({"lk.function_tool.id": f"call_{speech}", "lk.function_tool.name": call.tool,
                             f"{pii}function_tool.arguments": "{}", "lk.function_tool.is_error": call.tool_failed,
                             f"{pii}function_tool.output": "failed" if call.tool_failed else "done"})
        tool.end(end_time=start + 700 * MS)
        turn.set_attributes({"lk.interrupted": False, f"{pii}response.text": ""})
        turn.end(end_time=start + 710 * MS)
        return start + 720 * MS
    reply = "" if failed else call.reply
    if reply:
        node.set_attribute(f"{pii}response.text", reply)
    node.end(end_time=start + 420 * MS)
    end = start + 3 * SECOND
    if reply:
        tts = tracer.start_span("tts_node", context=inner, start_time=start + 430 * MS)
        tts.set_attributes({"gen_ai.request.model": "sonic-2", "lk.response.ttfb": 0.2})
        request = tracer.start_span("tts_request", context=set_span_in_context(tts), start_time=start + 440 * MS)
        request.set_attributes({"lk.tts.streaming": True, f"{pii}input_text": reply})
        request.end(end_time=start + 900 * MS)
        tts.end(end_time=start + 950 * MS)
        speaking = tracer.start_span("agent_speaking", context=inner, start_time=start + 700 * MS)
        speaking.end(end_time=end - 100 * MS)
    turn.set_attributes({"lk.interrupted": call.barge_in or hung_up, f"{pii}response.text": reply, "lk.e2e_latency": call.latency_s})
    turn.end(end_time=end)
    return end
