"""What a file is, told once from its first bytes, for every reader and engine."""

import gzip

import polars as pl

from fpi.io.sniff import detect_format, file_head, is_classified, is_gzip, is_otlp, is_parquet, looks_compressed, whole_turn_lines


def test_each_kind_of_file_is_told_by_its_first_bytes(tmp_path):
    frame = pl.DataFrame({"turn_id": ["t"], "failure_point": ["asr"]})
    frame.write_parquet(tmp_path / "r.parquet")
    parquet = (tmp_path / "r.parquet").read_bytes()
    spans = b'{"resourceSpans": [{"scopeSpans": []}]}\n'
    assert detect_format(parquet) == "parquet" and is_parquet(parquet)
    assert detect_format(spans) == "otlp" and is_otlp(b"\xef\xbb\xbf  " + spans)
    assert detect_format(b'\n{"turn_id": "t"}\n') == "jsonl" and detect_format(b"[1, 2]\n") == "jsonl"
    assert detect_format(b"call\ttext\n") == "tsv" and detect_format(b"call,text\n") == "csv"
    assert is_gzip(gzip.compress(b"x")) and not is_gzip(b"x")
    assert looks_compressed(b"\x78\x9c...") and looks_compressed(b"\x28\xb5\x2f\xfd") and not looks_compressed(b'{"a": 1}')


def test_records_are_told_from_traces(tmp_path):
    assert is_classified(b'{"turn_id": "t", "failure_point": "asr"}\n')
    assert not is_classified(b'{"turn_id": "t", "failure_point": "asr", "asr": {"text": "x"}}\n')
    pl.DataFrame({"turn_id": ["t"], "failure_point": ["asr"]}).write_csv(tmp_path / "r.csv")
    assert is_classified(tmp_path / "r.csv") and is_classified((tmp_path / "r.csv").read_bytes()) is False


def test_a_gzipped_file_is_read_through_and_a_damaged_one_gives_no_head(tmp_path):
    good, damaged = tmp_path / "t.jsonl.gz", tmp_path / "d.jsonl.gz"
    good.write_bytes(gzip.compress(b'{"turn_id": "t"}\n'))
    damaged.write_bytes(gzip.compress(b'{"turn_id": "t"}\n' * 1000)[:40])
    assert file_head(good) == b'{"turn_id": "t"}\n' and file_head(damaged) is None
    assert whole_turn_lines(b'{"turn_id": "t", "asr": {}}\n')
    assert not whole_turn_lines(b'{"turn_id": "t", "stage": "asr", "data": {}}\n') and not whole_turn_lines(b"a,b\n")
