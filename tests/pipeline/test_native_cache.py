"""The compiled-trees cache runs only what fpi wrote for this user: planted, damaged, foreign or
special entries are rebuilt or refused, never loaded; a foreign folder means LightGBM predicts."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from conftest import run_cli
from fpi.pipeline.compiled_trees import NativeTrees
from fpi.pipeline.native_cache import NativeCache, UntrustedCache
from hostile_trees import booster as _booster, hostile_rows as _hostile_rows


@pytest.fixture(scope="module")
def booster():
    return _booster("nan", seed=21)


def _entry(folder, booster):
    return folder / f"{NativeTrees.key(booster.model_to_string(), booster.num_trees())}.o"


def _predicts_like_lightgbm(booster, cache):
    native = NativeTrees.compile(booster, booster.num_trees(), cache=cache)
    X = _hostile_rows(booster, seed=2)
    np.testing.assert_array_equal(native.raw_scores(X), booster.predict(X, raw_score=True))


def test_a_new_cache_folder_is_private_and_entries_carry_a_digest(booster, tmp_path):
    folder = tmp_path / "cache" / "trees"
    _predicts_like_lightgbm(booster, folder)
    assert os.stat(folder).st_mode & 0o777 == 0o700
    assert _entry(folder, booster).with_suffix(".digest").is_file()
    assert os.stat(_entry(folder, booster)).st_mode & 0o077 == 0


@pytest.mark.parametrize("planted", [b"", b"\x7fELF\x02\x01\x01" + b"\0" * 57, os.urandom(4096)],
                         ids=["empty", "truncated", "random"])
def test_a_planted_or_damaged_entry_is_rebuilt_not_loaded(booster, tmp_path, planted):
    _predicts_like_lightgbm(booster, tmp_path)
    entry = _entry(tmp_path, booster)
    good = entry.read_bytes()
    entry.write_bytes(planted)
    assert NativeTrees.compile(booster, booster.num_trees(), cache=tmp_path, compile_if_missing=False) is None
    _predicts_like_lightgbm(booster, tmp_path)
    assert entry.read_bytes() == good


@pytest.mark.slow
def test_a_valid_object_of_other_trees_is_not_taken_for_these(booster, tmp_path):
    other = _booster("zero", seed=22)
    _predicts_like_lightgbm(other, tmp_path)
    shutil.copy(_entry(tmp_path, other), _entry(tmp_path, booster))
    assert NativeTrees.compile(booster, booster.num_trees(), cache=tmp_path, compile_if_missing=False) is None
    _predicts_like_lightgbm(booster, tmp_path)


def test_an_object_planted_without_the_users_secret_is_not_loaded(booster, tmp_path):
    _predicts_like_lightgbm(booster, tmp_path / "theirs")
    mine = tmp_path / "mine"
    NativeCache(mine).put("unrelated", b"x")  # a cache of the user's own, with its own secret
    for suffix in (".o", ".digest"):
        shutil.copy(_entry(tmp_path / "theirs", booster).with_suffix(suffix), _entry(mine, booster).with_suffix(suffix))
    assert NativeTrees.compile(booster, booster.num_trees(), cache=mine, compile_if_missing=False) is None


def test_a_fifo_entry_neither_hangs_nor_loads(booster, tmp_path):
    os.mkfifo(_entry(tmp_path, booster))
    assert NativeTrees.compile(booster, booster.num_trees(), cache=tmp_path, compile_if_missing=False) is None


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_a_folder_others_may_write_is_refused(booster, tmp_path, mode):
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(mode)
    with pytest.raises(UntrustedCache, match="writable by others"):
        NativeTrees.compile(booster, booster.num_trees(), cache=folder)
    assert not list(folder.iterdir())


def test_an_entry_others_may_write_is_refused(booster, tmp_path):
    _predicts_like_lightgbm(booster, tmp_path)
    _entry(tmp_path, booster).chmod(0o666)
    with pytest.raises(UntrustedCache, match="writable by others"):
        NativeTrees.compile(booster, booster.num_trees(), cache=tmp_path)


def test_a_folder_of_another_user_is_refused(booster, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)
    with pytest.raises(UntrustedCache, match="belongs to another user"):
        NativeTrees.compile(booster, booster.num_trees(), cache=tmp_path)


def test_classify_with_a_foreign_cache_warns_once_and_predicts_with_lightgbm(fixture_traces, tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("FPI_CACHE_DIR", str(shared))
    native = run_cli("classify", fixture_traces, "--predictor", "native", "-o", tmp_path / "native.jsonl")
    plain = run_cli("classify", fixture_traces, "--predictor", "lightgbm", "-o", tmp_path / "plain.jsonl")
    assert native.exit_code == 0 and native.stderr.count("warning:") == 1 and "writable by others" in native.stderr
    assert (tmp_path / "native.jsonl").read_bytes() == (tmp_path / "plain.jsonl").read_bytes()
    assert not list(shared.iterdir())


def _set_threads(meta, value):
    meta["params"]["num_threads"] = value


def _duplicate_vocabulary(meta, _):
    name = next(iter(meta["vocabularies"]))
    meta["vocabularies"][name] = ["a", "a"]


def _text_reference(meta, _):
    table = next(iter(meta["reference"]["tables"]))
    meta["reference"]["tables"][table]["points"][3] = "0.5"


@pytest.mark.parametrize(("edit", "value", "said"), [
    (_set_threads, 0, "params.num_threads: expected a whole number from 1"),
    (_set_threads, -3, "params.num_threads: expected a whole number from 1"),
    (_set_threads, "2", "params.num_threads: expected a whole number from 1"),
    (_duplicate_vocabulary, None, "a value is listed twice"),
    (_text_reference, None, "two lists of numbers"),
])
def test_model_parameters_are_checked_on_load(tmp_path, edit, value, said):
    from fpi.contract.errors import ModelError
    from fpi.pipeline.model import FailurePointModel
    from fpi.pipeline.model_folder import default_model_dir

    shutil.copytree(default_model_dir(), tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    edit(meta, value)
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=said):
        FailurePointModel.load(tmp_path / "m")


def test_a_digest_file_of_any_bytes_is_a_mismatch_not_a_crash(booster, tmp_path):
    _predicts_like_lightgbm(booster, tmp_path)
    _entry(tmp_path, booster).with_suffix(".digest").write_bytes("é\xff".encode() + os.urandom(40))
    assert NativeTrees.compile(booster, booster.num_trees(), cache=tmp_path, compile_if_missing=False) is None


def test_entries_no_run_loaded_for_a_month_go_when_another_is_written(tmp_path):
    from fpi.pipeline.native_cache import UNUSED_DAYS

    cache = NativeCache(tmp_path)
    for key in ("old", "used", "recent"):
        cache.put(key, key.encode())
    month_ago = os.stat(tmp_path / "old.o").st_mtime - (UNUSED_DAYS + 1) * 86400
    for key in ("old", "used"):
        os.utime(tmp_path / f"{key}.o", (month_ago, month_ago))
    assert cache.get("used") == b"used"  # loaded today: kept
    cache.put("new", b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.digest", "new.o", "recent.digest", "recent.o", "secret",
                                                          "used.digest", "used.o"]
    assert cache.get("old") is None and cache.get("used") == b"used"
