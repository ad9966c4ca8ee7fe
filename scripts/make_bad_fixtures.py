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
}


def main() -> None:
    BAD.mkdir(parents=True, exist_ok=True)
    for name, data in CASES.items():
        path = BAD / f"{name}.jsonl"
        path.write_bytes(data)
        run = subprocess.run([sys.executable, "-m", "fpi", "validate", str(path.relative_to(ROOT))],
                             cwd=ROOT, capture_output=True, text=True)
        messages = [line.removeprefix("error: ") for line in run.stderr.splitlines() if "fixtures/bad/" in line]
        expected = {"exit_code": run.returncode, "messages": messages}
        (BAD / f"{name}.expected.json").write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")
        print(f"{name}: exit {run.returncode}: {messages}")


if __name__ == "__main__":
    main()
