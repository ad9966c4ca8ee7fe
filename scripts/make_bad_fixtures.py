"""Write fixtures/bad/: one small trace file per kind of bad input, each beside the
messages and exit code that `fpi validate` must give for it. Rerun after changing messages:
    python scripts/make_bad_fixtures.py"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BAD = ROOT / "fixtures" / "bad"

GOOD = {"turn_id": "t1", "session_id": "s1", "turn_index": 0, "timestamp": "2026-10-01T09:00:00Z",
        "asr": {"text": "turn on the kitchen light", "confidence": 0.91},
        "nlu": {"domain": "smart_home", "intent": "iot_hue_lighton", "confidence": 0.88,
                "slots": [{"name": "house_place", "value": "kitchen"}]},
        "result": {"status": "success", "action": "iot_hue_lighton", "response": "Okay.", "latency_ms": 420}}


def turn(**changes) -> str:
    out = json.loads(json.dumps(GOOD))
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = out
        for p in parents:
            node = node[p]
        if value is ...:
            del node[leaf]
        else:
            node[leaf] = value
    return json.dumps(out)


CASES: dict[str, bytes] = {
    "missing_required": "\n".join([turn(), turn(turn_id="t2", turn_index=1, session_id=...)]).encode(),
    "wrong_type": "\n".join([turn(), turn(turn_id="t2", turn_index=1, asr__confidence="high")]).encode(),
    "bool_for_number": "\n".join([turn(), turn(turn_id="t2", turn_index=1, asr__confidence=True)]).encode(),
    "out_of_range": "\n".join([turn(), turn(turn_id="t2", turn_index=1, nlu__confidence=1.7)]).encode(),
    "negative_index": "\n".join([turn(), turn(turn_id="t2", turn_index=-1)]).encode(),
    "fractional_index": "\n".join([turn(), turn(turn_id="t2", turn_index=1.5)]).encode(),
    "huge_index": "\n".join([turn(), turn(turn_id="t2", turn_index=10**19)]).encode(),
    "impossible_date": "\n".join([turn(), turn(turn_id="t2", turn_index=1, timestamp="2026-02-30T09:00:00Z")]).encode(),
    "nested_too_deep": ("\n".join([turn(), '{"turn_id": "t2", "session_id": "s1", "turn_index": 1, "asr": '
                                    + "[" * 3000 + "]" * 3000 + "}"])).encode(),
    "csv_export": b"turn_id,session_id,turn_index,asr_text\nt1,s1,0,turn on the light\n",
    "other_field_names": "\n".join(json.dumps({"turn_id": f"t{i}", "session_id": "s1", "turn_index": i, "asr_text": "lights on",
                                               "intent": "lights_on", "status": "ok"}) for i in range(3)).encode(),
    "nan": (turn() + "\n" + turn(turn_id="t2", turn_index=1).replace('"confidence": 0.91', '"confidence": NaN')).encode(),
    "infinity": (turn() + "\n" + turn(turn_id="t2", turn_index=1).replace('"confidence": 0.91', '"confidence": 1e999')).encode(),
    "bad_enum": "\n".join([turn(), turn(turn_id="t2", turn_index=1, result__status="done")]).encode(),
    "bad_label": "\n".join([turn(), turn(turn_id="t2", turn_index=1, label="tts")]).encode(),
    "bad_timestamp": "\n".join([turn(), turn(turn_id="t2", turn_index=1, timestamp="yesterday at 9")]).encode(),
    "duplicate_turn_id": "\n".join([turn(), turn(turn_index=1)]).encode(),
    "duplicate_turn_index": "\n".join([turn(), turn(turn_id="t2")]).encode(),
    "malformed_json": (turn() + "\n" + '{"turn_id": "t2", "session_id": "s1", "turn_index": 1,' + "\n").encode(),
    "not_an_object": (turn() + "\n[1, 2, 3]\n").encode(),
    "not_utf8": turn().encode() + b"\n" + turn(turn_id="t2", turn_index=1).encode().replace(b"kitchen", b"k\xffchen"),
    "empty": b"",
    "blank_lines_only": b"\n  \n\n",
    "stage_form_unknown_stage": "\n".join([
        json.dumps({"turn_id": "t1", "session_id": "s1", "turn_index": 0, "stage": "asr", "data": GOOD["asr"]}),
        json.dumps({"turn_id": "t2", "session_id": "s1", "turn_index": 1, "stage": "tts", "data": {}}),
    ]).encode(),
    "stage_form_bad_field": "\n".join([
        json.dumps({"turn_id": "t1", "session_id": "s1", "turn_index": 0, "stage": "asr", "data": GOOD["asr"]}),
        json.dumps({"turn_id": "t2", "session_id": "s1", "turn_index": 1, "stage": "asr", "data": {"text": "hi"}}),
        json.dumps({"turn_id": "t2", "session_id": "s1", "turn_index": 1, "stage": "nlu", "data": {"intent": 5}}),
    ]).encode(),
    "mixed_forms_turn_first": "\n".join([
        turn(),
        json.dumps({"turn_id": "t2", "session_id": "s1", "turn_index": 1, "stage": "asr", "data": {"text": "hi"}}),
    ]).encode(),
    "mixed_forms_stage_first": "\n".join([
        json.dumps({"turn_id": "t1", "session_id": "s1", "turn_index": 0, "stage": "asr", "data": GOOD["asr"]}),
        turn(turn_id="t2", turn_index=1),
    ]).encode(),
    "spans_without_mapping": json.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": [
        {"traceId": "0" * 31 + "1", "spanId": "0" * 15 + "1", "name": "turn", "startTimeUnixNano": "1"}]}]}]}).encode() + b"\n",
}

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(12))

# Documents people write (rules, gate policies, mappings) and a damaged model: each with the command that reads it.
DOCUMENTS: dict[str, tuple[str, bytes, list[str]]] = {
    "rules_aliases": ("yaml", LAUGHS.encode(), ["rules", "lint", "{path}"]),
    "rules_duplicate_key": ("yaml", b"rules:\n  - id: a\n    description: d\n    when: asr.confidence < 0.5\n"
                                    b"    when: nlu.confidence < 0.5\n    then: {assign: asr}\n", ["rules", "lint", "{path}"]),
    "rules_condition_too_deep": ("yaml", ("rules:\n  - id: a\n    description: d\n    when: " + "(" * 60 + "asr.confidence < 0.5"
                                          + ")" * 60 + "\n    then: {assign: asr}\n").encode(), ["rules", "lint", "{path}"]),
    "policy_nan_threshold": ("yaml", b"model:\n  macro_f1: .nan\n",
                             ["gate", "fixtures/traces.jsonl", "--policy", "{path}"]),
    "policy_two_model_blocks": ("yaml", b"model:\n  macro_f1: 0.5\nmodel:\n  accuracy: 0.9\n",
                                ["gate", "fixtures/traces.jsonl", "--policy", "{path}"]),
    "mapping_unknown_field": ("yaml", b"fields:\n  session_id: call\n  asr.txt: transcript\n", ["map", "check", "{path}"]),
    "mapping_aliases": ("yaml", LAUGHS.encode(), ["map", "check", "{path}"]),
    "mapping_bad_value": ("csv", b"call,text,score\nc1,hello,90\nc1,again,loud\n",
                          ["validate", "{path}", "--mapping", "fixtures/bad/documents/mapping_for_csv.yaml"]),
}
EXTRA_FILES = {"mapping_for_csv.yaml": b"fields:\n  session_id: call\n  asr.text: text\n  asr.confidence: {from: score, scale: [0, 100]}\n"}


def _expect(args: list[str], where: Path) -> dict:
    run = subprocess.run([sys.executable, "-m", "fpi", *args], cwd=ROOT, capture_output=True, text=True)
    messages = [line.removeprefix("error: ") for line in run.stderr.splitlines() if "fixtures/bad/" in line]
    print(f"{where.name}: exit {run.returncode}: {messages}")
    return {"exit_code": run.returncode, "messages": messages}


def main() -> None:
    BAD.mkdir(parents=True, exist_ok=True)
    for name, data in CASES.items():
        path = BAD / f"{name}.jsonl"
        path.write_bytes(data)
        expected = _expect(["validate", str(path.relative_to(ROOT))], path)
        (BAD / f"{name}.expected.json").write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")
    documents = BAD / "documents"
    documents.mkdir(exist_ok=True)
    for name, data in EXTRA_FILES.items():
        (documents / name).write_bytes(data)
    for name, (extension, data, command) in DOCUMENTS.items():
        path = documents / f"{name}.{extension}"
        path.write_bytes(data)
        args = [part.replace("{path}", str(path.relative_to(ROOT))) for part in command]
        expected = {"command": args, **_expect(args, path)}
        (documents / f"{name}.expected.json").write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
