"""Voice agents as they really log, written by the real OpenTelemetry SDK (tests/voice_agent_export.py):
LiveKit's sibling user and agent turns make one record per exchange, with the transcript, confidence,
tool calls, reply and errors wherever LiveKit puts them; Pipecat's old span names read as the new ones;
an empty transcript answered with "Sorry, I didn't catch that" is an ASR failure."""

from __future__ import annotations

import polars as pl
import pytest
from voice_agent_export import _by_session, livekit_calls, pipecat_calls, voice_calls

from fpi import classify, load_traces


@pytest.fixture(scope="module")
def calls():
    return voice_calls(600, seed=5)


@pytest.fixture(scope="module")
def exported(calls):
    """The module's calls as a framework logs them, each export written once for every test that reads it:
    exported("pipecat", names="old"), exported("livekit", version="1.6")."""
    defaults = {"pipecat": {"names": "new"}, "livekit": {"version": "1.7", "redaction": False}}
    writers = {"pipecat": pipecat_calls, "livekit": livekit_calls}
    made: dict[tuple, bytes] = {}

    def export(framework: str, **options) -> bytes:
        options = {**defaults[framework], **options}
        key = (framework, *sorted(options.items()))
        if key not in made:
            made[key] = writers[framework](calls, **options)
        return made[key]

    return export


def _in_order(calls):
    return [c for session in _by_session(calls) for c in session]


@pytest.mark.parametrize("version", ["1.6", "1.7"])
@pytest.mark.slow
def test_livekit_gives_one_record_per_exchange_with_what_it_logged(calls, exported, version):
    turns = load_traces(exported("livekit", version=version, redaction=version == "1.7"), mapping="livekit").sort("timestamp")
    ordered = _in_order(calls)
    assert turns.height == len(calls)  # not one per agent_turn: tool steps and discarded preemptive replies join theirs
    assert turns["asr"].struct.field("text").to_list() == [c.text for c in ordered]
    confidence = turns["asr"].struct.field("confidence")
    assert confidence.is_null().to_list() == [not c.text for c in ordered]  # LiveKit's 0 is "no confidence"
    assert turns["result"].struct.field("action").to_list() == [c.tool for c in ordered]
    failed = [c.tool_failed or c.llm_failed for c in ordered]
    assert (turns["result"].struct.field("status") == "error").to_list() == failed  # redacted: only llm_request_run is ERROR
    assert turns["result"].struct.field("response").to_list() == [c.reply if not c.llm_failed else None for c in ordered]
    # the barge-in is lk.is_interruption while the reply plays, not lk.interrupted (also set on hang-up)
    assert turns["feedback"].struct.field("barge_in").to_list() == [c.barge_in for c in ordered]
    assert turns["timestamp"].is_not_null().all()


@pytest.mark.slow
def test_livekit_1_6_and_1_7_read_alike(exported):
    old = load_traces(exported("livekit", version="1.6"), mapping="livekit").sort("timestamp")
    new = load_traces(exported("livekit", version="1.7"), mapping="livekit").sort("timestamp")
    for column in ("asr", "nlu", "result", "feedback", "timestamp"):
        assert old[column].equals(new[column], null_equal=True), column


def test_a_reply_no_user_turn_precedes_is_a_turn_of_its_own():
    """A greeting (`session.say`) before the caller speaks: its agent_turn is an exchange without ASR."""
    from opentelemetry.trace import set_span_in_context
    from otel_export import SECOND, _otlp_json
    from voice_agent_export import _provider

    provider, exporter = _provider(3, "agent")
    tracer = provider.get_tracer("livekit-agents")
    session = tracer.start_span("agent_session", start_time=SECOND)
    root = set_span_in_context(session)
    greeting = tracer.start_span("agent_turn", context=root, start_time=2 * SECOND)
    greeting.set_attributes({"lk.speech_id": "s0", "lk.response.text": "Hello, how can I help?"})
    greeting.end(end_time=3 * SECOND)
    user = tracer.start_span("user_turn", context=root, start_time=4 * SECOND)
    user.set_attribute("lk.user_transcript", "what time is it")
    user.end(end_time=5 * SECOND)
    reply = tracer.start_span("agent_turn", context=root, start_time=5 * SECOND)
    reply.set_attributes({"lk.speech_id": "s1", "lk.response.text": "It is noon."})
    reply.end(end_time=6 * SECOND)
    session.end(end_time=7 * SECOND)
    turns = load_traces(_otlp_json(list(exporter.get_finished_spans()), per_line=10), mapping="livekit").sort("turn_index")
    assert turns["asr"].to_list()[0] is None
    assert turns["asr"].struct.field("text").to_list() == [None, "what time is it"]
    assert turns["result"].struct.field("response").to_list() == ["Hello, how can I help?", "It is noon."]


@pytest.mark.slow
def test_old_pipecat_span_names_classify_as_the_new(calls, exported):
    new = classify(exported("pipecat"), mapping="pipecat")
    old = classify(exported("pipecat", names="old"), mapping="pipecat")
    assert old.height == new.height == len(calls)
    assert (old["failure_point"] == new["failure_point"]).mean() >= 0.98
    assert (old["failure_point"] == "asr").sum() > 0


@pytest.mark.slow
def test_pipecat_signals_are_read(calls, exported):
    turns = load_traces(exported("pipecat"), mapping="pipecat").sort("timestamp")
    ordered = _in_order(calls)
    assert turns["asr"].struct.field("text").to_list() == [c.text for c in ordered]  # stt.incomplete, no transcript: ""
    assert turns["feedback"].struct.field("barge_in").to_list() == [c.barge_in for c in ordered]  # hang-ups are not
    assert turns["result"].struct.field("action").to_list() == [c.tool for c in ordered]
    assert (turns["result"].struct.field("status") == "error").to_list() == [c.tool_failed or c.llm_failed for c in ordered]
    assert turns["timestamp"].is_not_null().all()


@pytest.mark.slow
def test_an_empty_transcript_answered_with_a_reprompt_is_an_asr_failure(calls, exported):
    for data, mapping in ((exported("pipecat"), "pipecat"), (exported("livekit"), "livekit")):
        records = classify(data, mapping=mapping).sort("timestamp")
        heard_nothing = pl.Series([not c.text for c in _in_order(calls)])
        assert heard_nothing.sum() >= 3
        verdicts = records.filter(heard_nothing)
        assert verdicts["failure_point"].to_list() == ["asr"] * heard_nothing.sum()
        assert verdicts["rule"].to_list() == ["asr-heard-nothing-reprompted"] * heard_nothing.sum()


@pytest.mark.slow
def test_explain_and_classify_give_the_same_probabilities_on_mapped_spans(calls, tmp_path):
    """Both run one pipeline on the mapped turns: wake and ER, which Pipecat lacks, are never named."""
    import json

    from conftest import run_cli

    export = tmp_path / "calls.otlp.jsonl"
    export.write_bytes(pipecat_calls(calls[:300]))
    out = tmp_path / "records.jsonl"
    assert run_cli("classify", export, "--mapping", "pipecat", "--explain", "-o", out).exit_code == 0
    records = pl.read_ndjson(out)
    explained = records.filter(pl.col("explanation").struct.field("decided_by") == "model")
    assert explained.height > 0
    for row in records.head(3).iter_rows(named=True):
        result = run_cli("explain", export, "--mapping", "pipecat", "--turn", row["turn_id"], "--format", "json")
        assert result.exit_code == 0, result.stderr
        shown = json.loads(result.stdout)
        assert shown["probabilities"] == row["probabilities"]
        assert shown["probabilities"]["wake"] == shown["probabilities"]["er"] == 0.0
        assert all(bar["value"] is not None for bar in shown["contributions"] if not bar["feature"].startswith("not logged"))
    turns = load_traces(export, mapping="pipecat")
    cited = {f["feature"] for features in explained["explanation"].struct.field("features").to_list() for f in features}
    assert cited and not cited & {"asr_nbest_margin", "asr_confidence", "wake_score", "er_min_score", "nlu_confidence"}
    assert turns["asr"].struct.field("nbest").is_null().all()  # what those would have read


USER_MAPPING = """\
format: otlp
stages: [asr, nlu, result]
spans:
  turn: {name: turn}
  select:
    stt: {name: stt}
    llm: {attribute: gen_ai.operation.name, equals: chat}
fields:
  session_id: turn:conversation.id
  asr.text: stt:transcript
  nlu.intent: {from: "llm:@name", values: {}, otherwise: respond}
  result.status: {value: success}
  result.response: llm:output
"""


@pytest.mark.slow
def test_a_declared_stage_that_matches_nothing_is_a_warning_and_strict_exits_2(calls, tmp_path):
    from conftest import run_cli

    export = tmp_path / "old.otlp.jsonl"
    export.write_bytes(pipecat_calls(calls[:200], names="old"))
    (tmp_path / "mine.yaml").write_text(USER_MAPPING)
    for command in (("map", "check", export, "--mapping", tmp_path / "mine.yaml"), ("validate", export, "--mapping", tmp_path / "mine.yaml")):
        result = run_cli(*command)
        assert result.exit_code == 0, result.stderr
        assert "coverage of 200 turns: asr 0%, nlu 100%, result 100%" in result.stderr
        assert ("warning: stage asr: declared but found on 0 of 200 turns (from stt:transcript); stt ({name: stt}) matched no "
                "span: nearest span names seen: stt_deepgramsttservice?") in result.stderr
        strict = run_cli(*command, "--strict")
        assert strict.exit_code == 2 and "stt_deepgramsttservice" in strict.stderr
    shipped = run_cli("map", "check", export, "--mapping", "pipecat")
    assert shipped.exit_code == 0 and "warning" not in shipped.stderr and "asr 100%" in shipped.stderr


@pytest.mark.slow
def test_stages_the_logs_lack_are_no_rows_of_the_summary_or_the_report(calls, tmp_path):
    from conftest import run_cli

    export = tmp_path / "calls.otlp.jsonl"
    export.write_bytes(pipecat_calls(calls[:300]))
    out = tmp_path / "records.jsonl"
    result = run_cli("classify", export, "--mapping", "pipecat", "-o", out)
    assert result.exit_code == 0 and "coverage of 300 turns: asr 100%" in result.stderr
    rows = [line.split("│")[1].strip() for line in result.stderr.splitlines() if line.startswith("│")]
    assert rows == ["asr", "nlu", "result", "correct"]
    report = run_cli("report", out, "--format", "json")
    import json
    numbers = json.loads(report.stdout)
    assert [row["failure_point"] for row in numbers["components"]] == ["asr", "nlu", "result", "correct"]
    assert set(numbers["by_day"]["values"][0]["rates"]) == {"asr", "nlu", "result", "defects"}
    shown = run_cli("report", out)
    assert "wake" not in shown.stdout and " er " not in shown.stdout


@pytest.mark.slow
def test_macro_f1_on_voice_agent_exports_with_known_labels(tmp_path):
    """The figures the issue measures, on 1,500 SDK-written exchanges (seed 7; 0.51 and 0.63 here, 0.52 and 0.62 on
    3,000): before this change Pipecat scored 0.44
    (0.13 with old span names), LiveKit 0.34 and 0.23 with 1.96 records per exchange, and every empty-STT reprompt
    turn was `correct`."""
    from sklearn.metrics import f1_score

    calls = voice_calls(1500, seed=7)
    exports = {"pipecat": (pipecat_calls(calls), "pipecat"), "pipecat-old": (pipecat_calls(calls, names="old"), "pipecat"),
               "livekit-1.6": (livekit_calls(calls, version="1.6"), "livekit"),
               "livekit-1.7": (livekit_calls(calls, version="1.7", redaction=True), "livekit")}
    scores = {}
    for name, (data, shipped) in exports.items():
        (tmp_path / f"{name}.yaml").write_text(f"extends: {shipped}\nfields:\n  label: turn:gold.label\n")
        records = classify(data, mapping=tmp_path / f"{name}.yaml")
        assert records.height == len(calls)
        scores[name] = f1_score(records["label"], records["failure_point"], average="macro")
    assert scores["pipecat"] >= 0.5 and abs(scores["pipecat-old"] - scores["pipecat"]) <= 0.02
    assert scores["livekit-1.6"] >= 0.6 and scores["livekit-1.7"] == scores["livekit-1.6"]


@pytest.fixture(scope="module")
def labeled_export(calls, tmp_path_factory):
    """150 calls as Pipecat traces them, with a mapping that reads their gold labels."""
    folder = tmp_path_factory.mktemp("pipecat")
    (folder / "calls.otlp.jsonl").write_bytes(pipecat_calls(calls[:150]))
    (folder / "labeled.yaml").write_text("extends: pipecat\nfields:\n  label: turn:gold.label\n")
    return folder


def _components(text: str) -> set[str]:
    """The stage names that start rows or are named as checks in a rendered table or file."""
    import re

    return set(re.findall(r"\b(wake|asr|nlu|er|result)\b", text))


GATE_POLICY = """\
version: 1
min_support: 1
model:
  per_label:
    all: {f1: 0.0}
defect_rates:
  source: predicted
  per_component:
    all: 0.9
    wake: 0.01
regression:
  defect_rates:
    per_component:
      all: 0.5
"""


def test_the_gate_has_no_check_on_a_stage_the_logs_lack(labeled_export, tmp_path):
    """Pipecat logs no wake word and no entity resolution: a policy's `all` (and even a ceiling it names for wake)
    makes no check of them, in the table, the JSON and the JUnit file, and the gate says why."""
    import json
    import xml.etree.ElementTree as ET

    from conftest import run_cli

    export, mapping = labeled_export / "calls.otlp.jsonl", labeled_export / "labeled.yaml"
    (tmp_path / "policy.yaml").write_text(GATE_POLICY)
    assert run_cli("eval", export, "--mapping", mapping, "--save-metrics", tmp_path / "base.json").exit_code == 0
    gate = ("gate", export, "--mapping", mapping, "--policy", tmp_path / "policy.yaml", "--baseline", tmp_path / "base.json")
    machine = run_cli(*gate, "--format", "json", "--junit", tmp_path / "gate.xml")
    assert machine.exit_code == 0, machine.stderr
    verdict = json.loads(machine.stdout)
    named = [check["name"].split(".") for check in verdict["checks"]]
    assert {part for name in named for part in name} >= {"asr", "nlu", "result", "correct"}
    assert not {part for name in named for part in name} & {"wake", "er"}
    assert verdict["context"]["stages_lacking"] == ["wake", "er"]
    junit = ET.parse(tmp_path / "gate.xml").getroot()
    cases = [case.get("name", "") for case in junit.iter("testcase")]
    assert len(cases) == len(verdict["checks"]) and not _components(" ".join(cases)) & {"wake", "er"}
    assert {p.get("value") for p in junit.iter("property") if p.get("name") == "stages_lacking"} == {"wake, er"}
    human = run_cli(*gate)
    assert human.exit_code == 0 and "no checks on wake, er: these logs lack those stages" in human.stdout
    assert _components(human.stdout.split("these logs lack")[1]) == {"asr", "nlu", "result"}


def test_report_tables_and_the_page_have_no_row_for_a_stage_the_logs_lack(labeled_export, tmp_path):
    """The component table, the baseline comparison, the slices, their CSV and Markdown, and the HTML page's plots
    (which drew every stage, and failed on a missing one)."""
    import json

    from conftest import run_cli

    records = tmp_path / "records.jsonl"
    assert run_cli("classify", labeled_export / "calls.otlp.jsonl", "--mapping", labeled_export / "labeled.yaml",
                   "-o", records).exit_code == 0
    compared = ("report", records, "--baseline", records, "--by", "nlu.intent")
    numbers = json.loads(run_cli(*compared, "--format", "json").stdout)
    assert [row["failure_point"] for row in numbers["baseline"]["components"]] == ["asr", "nlu", "result"]
    assert [row["failure_point"] for row in numbers["components"]] == ["asr", "nlu", "result", "correct"]
    for suffix in ("md", "csv", "html"):
        result = run_cli(*compared, "-o", tmp_path / f"report.{suffix}")
        assert result.exit_code == 0, result.stderr
        assert not _components((tmp_path / f"report.{suffix}").read_text()) & {"wake", "er"}, suffix
    shown = run_cli(*compared)
    assert shown.exit_code == 0 and not _components(shown.stdout) & {"wake", "er"}


def test_the_report_header_says_what_the_mapping_found(calls, tmp_path):
    """`fpi report` on raw spans classifies them through the mapping: its header, in every format, says what the
    mapping found of each stage and field, and warns of a declared stage it found on no turn."""
    import json

    from conftest import run_cli

    export = tmp_path / "old.otlp.jsonl"
    export.write_bytes(pipecat_calls(calls[:120], names="old"))
    (tmp_path / "mine.yaml").write_text(USER_MAPPING)
    report = ("report", export, "--mapping", tmp_path / "mine.yaml")
    found = "coverage of 120 turns: asr 0%, nlu 100%, result 100%"
    warning = "warning: stage asr: declared but found on 0 of 120 turns (from stt:transcript); stt ({name: stt}) matched no span"
    shown = run_cli(*report)
    assert shown.exit_code == 0 and found in shown.stdout and warning in shown.stdout
    header = shown.stdout.split("Failure points")[0]
    assert found in header and "fields not on every turn: asr.text absent" in header
    for suffix in ("md", "html"):
        assert run_cli(*report, "-o", tmp_path / f"report.{suffix}").exit_code == 0
        page = (tmp_path / f"report.{suffix}").read_text()
        assert found in page and "stt_deepgramsttservice" in page, suffix
    numbers = json.loads(run_cli(*report, "--format", "json").stdout)
    assert numbers["coverage"]["turns"] == 120 and numbers["coverage"]["stages"]["asr"] == 0.0
    assert numbers["coverage"]["fields"]["asr.text"] == 0.0 and len(numbers["coverage"]["warnings"]) == 1
    records = tmp_path / "records.jsonl"
    assert run_cli("classify", export, "--mapping", tmp_path / "mine.yaml", "-o", records).exit_code == 0
    assert "coverage" not in run_cli("report", records).stdout  # records carry no mapping: nothing to say


def test_agent_timing_signals_are_read_by_the_shipped_mappings(calls):
    """Pipecat's `metrics.ttfb` (seconds) on the STT and the first LLM call; LiveKit's turn detector's last
    `lk.eou.probability` and the first LLM step's `lk.response.ttft`. Older Pipecat's `metrics.ttfb_ms` is left unread."""
    few = calls[:40]
    pipecat = load_traces(pipecat_calls(few), mapping="pipecat")
    assert pipecat["asr"].struct.field("ttfb_ms").to_list() == [210.0] * 40
    assert pipecat["result"].struct.field("ttfb_ms").to_list() == [350.0] * 40
    assert pipecat["asr"].struct.field("eou_probability").is_null().all()
    old = load_traces(pipecat_calls(few, names="old"), mapping="pipecat")
    assert old["asr"].struct.field("ttfb_ms").is_null().all() and old["result"].struct.field("ttfb_ms").is_null().all()
    for version in ("1.6", "1.7"):
        livekit = load_traces(livekit_calls(few, version=version), mapping="livekit")
        eou = livekit["asr"].struct.field("eou_probability")
        assert eou.is_between(0.6, 0.99).all() and eou.n_unique() > 10
        assert livekit["result"].struct.field("ttfb_ms").to_list() == [400.0] * 40


def test_the_turn_detector_is_read_under_either_name_and_its_failure_is_no_value():
    """LiveKit writes 0 when the turn detector failed; newer releases name the span eot_detection, under eot_wait."""
    from opentelemetry.trace import set_span_in_context
    from otel_export import SECOND, _otlp_json
    from voice_agent_export import _provider

    provider, exporter = _provider(4, "agent")
    tracer = provider.get_tracer("livekit-agents")
    session = tracer.start_span("agent_session", start_time=SECOND)
    for i, (name, probability) in enumerate((("eou_detection", 0.0), ("eot_detection", 0.42), ("eou_detection", 0.9))):
        start = (10 * i + 2) * SECOND
        user = tracer.start_span("user_turn", context=set_span_in_context(session), start_time=start)
        user.set_attribute("lk.user_transcript", f"words {i}")
        parent = tracer.start_span("eot_wait", context=set_span_in_context(user), start_time=start) if name == "eot_detection" else user
        detector = tracer.start_span(name, context=set_span_in_context(parent), start_time=start + SECOND)
        detector.set_attribute("lk.eou.probability", probability)
        detector.end(end_time=start + SECOND)
        if parent is not user:
            parent.end(end_time=start + SECOND)
        user.end(end_time=start + 2 * SECOND)
    session.end(end_time=40 * SECOND)
    turns = load_traces(_otlp_json(list(exporter.get_finished_spans()), per_line=10), mapping="livekit").sort("turn_index")
    assert turns["asr"].struct.field("eou_probability").to_list() == [None, 0.42, 0.9]
