"""A model folder: LightGBM's text model (`booster.txt`) and JSON metadata (`model.json`), where the
shipped one is, and the checks both pass before LightGBM reads them: LightGBM trusts a model file,
and a truncated or edited one would crash the process, not raise. Nothing in the folder is code.
LightGBM reads the text only when something needs its booster (`SavedBooster`)."""

from __future__ import annotations

import hashlib
import json
import math
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from fpi.contract.errors import ModelError
from fpi.contract.small_files import TooLarge, read_small_file
from fpi.contract.trace_format import LABELS
from fpi.pipeline.features import CATEGORICAL, FEATURE_NAMES
from fpi.pipeline.log_profile import LEVELS
from fpi.pipeline.model_text import NODE_FIELDS, read_tree, tree_blocks

if TYPE_CHECKING:
    import lightgbm as lgb

DISTRIBUTION_POINTS = len(LEVELS)  # a training distribution's quantiles

MODEL_FORMAT = 1
MAX_BOOSTER_BYTES = 2 * 2**30  # a bound on what reading a model may take (the shipped booster is a few MB)
MAX_METADATA_BYTES = 64 * 2**20
BOOSTER_FILE = "booster.txt"
METADATA_FILE = "model.json"


def is_model_dir(path: Path) -> bool:
    return (path / METADATA_FILE).is_file() and (path / BOOSTER_FILE).is_file()


def default_model_dir() -> Path:
    return Path(str(resources.files("fpi").joinpath("models", "default")))


class SavedBooster:
    """A model folder's checked booster text, answering for the LightGBM booster it holds what its header
    says (what naming the model and compiling its trees ask: `fpi.pipeline.compiled_trees.Trees`); LightGBM
    parses it only when something needs the booster itself (training on, predicting or explaining with
    LightGBM). Compiled trees and fpi's TreeSHAP read the text itself (`model_text`), so classifying with
    compiled trees, explained or not, loads neither LightGBM nor what it imports (scikit-learn, SciPy, pandas)."""

    def __init__(self, text: str, path: Path, per_iteration: int, trees: int, features: int):
        self.text, self.path = text, path
        self._per_iteration, self._trees, self._features = per_iteration, trees, features
        self._booster: lgb.Booster | None = None

    def booster(self) -> lgb.Booster:
        """LightGBM's booster of the text, parsed on first use; a ModelError when LightGBM cannot read it."""
        if self._booster is None:
            import lightgbm as lgb

            try:
                self._booster = lgb.Booster(model_str=self.text)
            except lgb.basic.LightGBMError as exc:
                raise ModelError(f"{self.path}: not a readable LightGBM text model ({exc})") from exc
        return self._booster

    def model_to_string(self, num_iteration: int | None = None) -> str:
        """LightGBM's text of the first `num_iteration` rounds: the saved text itself when they are all its
        trees (LightGBM writes a text it wrote back byte for byte, so the model's name and its compiled
        trees' key are the same either way), else LightGBM's."""
        if num_iteration is None or num_iteration < 1 or num_iteration * self._per_iteration >= self._trees:
            return self.text
        return self.booster().model_to_string(num_iteration=num_iteration)

    def num_model_per_iteration(self) -> int:
        return self._per_iteration

    def num_trees(self) -> int:
        return self._trees

    def num_feature(self) -> int:
        return self._features


def read_model_folder(where: Path) -> tuple[dict, SavedBooster]:
    """The metadata and the booster's text of a model folder, each checked against this fpi and the
    other; a ModelError says what is wrong and how to mend it."""
    meta_path, booster_path = where / METADATA_FILE, where / BOOSTER_FILE
    if not meta_path.is_file() or not booster_path.is_file():
        raise ModelError(f"{where}: not a model directory: expected {METADATA_FILE} and {BOOSTER_FILE} "
                         "(make one with `fpi train`)")
    meta = _read_metadata(meta_path)
    try:
        text = read_small_file(booster_path, MAX_BOOSTER_BYTES).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(f"{booster_path}: not a LightGBM text model (not UTF-8 text: {exc})") from exc
    except (OSError, TooLarge) as exc:
        raise ModelError(f"{booster_path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    written = meta.get("booster_sha256")
    if written is not None and written != hashlib.sha256(text.encode("utf-8")).hexdigest():
        raise ModelError(f"{booster_path}: changed since model.json was written (its checksum differs); the model "
                         "folder is damaged or mixed from two models: write it again with `fpi train`")
    return meta, _check_booster(text, meta, booster_path)


def _read_metadata(meta_path: Path) -> dict:
    try:
        meta = json.loads(read_small_file(meta_path, MAX_METADATA_BYTES).decode("utf-8"))
    except OSError as exc:
        raise ModelError(f"{meta_path}: cannot be read ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{meta_path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != "fpi-model":
        raise ModelError(f"{meta_path}: not an fpi model (expected \"format\": \"fpi-model\")")
    if meta.get("format_version") != MODEL_FORMAT:
        raise ModelError(f"{meta_path}: model format {meta.get('format_version')} is not supported by this fpi "
                         f"(expected {MODEL_FORMAT}); retrain it with `fpi train`")
    features = meta.get("features")
    if meta.get("classes") != list(LABELS):
        raise ModelError(f"{meta_path}: the model's classes are not this fpi's ({', '.join(LABELS)}); retrain it with `fpi train`")
    if not isinstance(features, list) or not features or not all(isinstance(name, str) for name in features) \
            or len(set(features)) != len(features):
        raise ModelError(f"{meta_path}: `features` must list the model's inputs, each once; retrain it with `fpi train`")
    unknown = sorted(set(features) - set(FEATURE_NAMES))
    if unknown:  # a model from an earlier fpi reads fewer features, which this one still computes
        raise ModelError(f"{meta_path}: the model reads features unknown to this fpi ({', '.join(unknown)}); retrain it with `fpi train`")
    problems = [f"{meta_path}: {where_}: {what}" for where_, what in _metadata_problems(meta)]
    if problems:
        raise ModelError("\n".join(problems))
    return meta


_METADATA_TYPES: dict[str, tuple[type, ...]] = {
    "classes": (list,), "features": (list,), "vocabularies": (dict,), "best_iteration": (int,), "params": (dict,)}


def _metadata_problems(meta: dict) -> list[tuple[str, str]]:
    """What is missing or mistyped in model.json (beyond format and features, checked first)."""
    problems = []
    for key, kinds in _METADATA_TYPES.items():
        value = meta.get(key)
        if key not in meta:
            problems.append((key, "required field is missing; the model folder is damaged, write it again with `fpi train`"))
        elif not isinstance(value, kinds) or isinstance(value, bool):
            problems.append((key, f"expected {'an integer' if kinds == (int,) else kinds[0].__name__}, got {type(value).__name__}"))
    if isinstance(meta.get("best_iteration"), int) and not isinstance(meta.get("best_iteration"), bool) and meta["best_iteration"] < 1:
        problems.append(("best_iteration", f"expected at least 1, got {meta['best_iteration']}"))
    vocabularies = meta.get("vocabularies")
    if isinstance(vocabularies, dict) and isinstance(meta.get("features"), list):
        for name in (name for name in CATEGORICAL if name in meta["features"]):
            values = vocabularies.get(name)
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                problems.append((f"vocabularies.{name}", "expected a list of strings"))
            elif len(set(values)) != len(values):
                problems.append((f"vocabularies.{name}", "a value is listed twice; each category has one code"))
    threads = meta["params"].get("num_threads", 1) if isinstance(meta.get("params"), dict) else 1
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= 1024:
        problems.append(("params.num_threads", f"expected a whole number from 1 to 1024 (or none), got {threads!r}"))
    problems += _reference_problems(meta.get("reference"))
    problems += _training_data_problems(meta.get("training_data"))
    return problems


def _reference_problems(reference: object) -> list[tuple[str, str]]:
    """`reference` (optional): quantile tables of finite numbers, points and shares alike long, and whole counts."""
    if reference is None:
        return []
    if not isinstance(reference, dict):
        return [("reference", f"expected an object, got {type(reference).__name__}")]
    problems = []
    for part in ("tables", "by_intent"):
        tables = reference.get(part) or {}
        if not isinstance(tables, dict):
            problems.append((f"reference.{part}", "expected an object of quantile tables"))
            continue
        for name, table in tables.items():
            if (not isinstance(table, dict) or not isinstance(table.get("points"), list) or not isinstance(table.get("shares"), list)
                    or len(table["points"]) != len(table["shares"]) or not all(map(_finite, table["points"] + table["shares"]))):
                problems.append((f"reference.{part}.{name}", "expected `points` and `shares`: two lists of numbers, alike long"))
    counts = reference.get("counts") or {}
    if not isinstance(counts, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in counts.values()):
        problems.append(("reference.counts", "expected whole numbers"))
    return problems


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _training_data_problems(data: object) -> list[tuple[str, str]]:
    """`training_data` (optional): the label prior and the features' distributions the model learned from."""
    if data is None:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("prior"), dict) or not isinstance(data.get("distributions"), dict):
        return [("training_data", "expected an object with `prior` and `distributions` objects")]
    problems = []
    prior = data["prior"]
    if set(prior) != set(LABELS) or not all(_finite(v) and v >= 0 for v in prior.values()) or not sum(prior.values()) > 0:
        problems.append(("training_data.prior", f"expected a share of at least 0 for each of {', '.join(LABELS)}"))
    for name, points in data["distributions"].items():
        if (name not in FEATURE_NAMES or not isinstance(points, list) or len(points) != DISTRIBUTION_POINTS
                or not all(_finite(v) for v in points) or points != sorted(points)):
            problems.append((f"training_data.distributions.{name}",
                             f"expected a known feature with {DISTRIBUTION_POINTS} ascending numbers"))
    return problems


def training_data(meta: dict) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The label prior and feature distributions of a vetted model.json (empty for a model without them)."""
    data = meta.get("training_data") or {}
    return ({k: float(v) for k, v in data.get("prior", {}).items()},
            {k: [float(v) for v in points] for k, points in data.get("distributions", {}).items()})


def _check_booster(text: str, meta: dict, path: Path) -> SavedBooster:
    """A LightGBM text model that agrees with model.json, checked before LightGBM reads it: LightGBM
    trusts the header's tree sizes, and a truncated file would crash the process, not raise."""
    head, found, rest = text.partition("\nTree=0\n")
    if not found or "end of trees" not in rest or "end of parameters" not in rest:
        raise ModelError(f"{path}: not a complete LightGBM text model (no trees, or cut short before `end of trees`); "
                         "write it again with `fpi train`")
    fields = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    try:
        sizes = [int(size) for size in fields.get("tree_sizes", "").split()]
        classes, features = int(fields.get("num_class", "")), fields.get("feature_names", "").split()
        per_iteration = int(fields.get("num_tree_per_iteration", classes))
    except ValueError:
        raise ModelError(f"{path}: the LightGBM header is damaged (tree_sizes, num_class or num_tree_per_iteration "
                         "not numbers)") from None
    trees = len(("Tree=0\n" + rest[:rest.index("end of trees")]).encode("utf-8"))
    if not sizes or sum(sizes) != trees:
        raise ModelError(f"{path}: the trees take {trees:,} bytes but the header promises {sum(sizes):,}: the file is "
                         "truncated or edited; write it again with `fpi train`")
    if classes != len(meta["classes"]):
        raise ModelError(f"{path}: {classes} classes, but model.json names {len(meta['classes'])}")
    if per_iteration != classes:
        raise ModelError(f"{path}: {per_iteration} trees a round, not one for each of its {classes} classes")
    if features != list(meta["features"]):
        raise ModelError(f"{path}: {len(features)} features, not the {len(meta['features'])} model.json names (or in "
                         "another order)")
    if len(sizes) < meta["best_iteration"] * classes:
        raise ModelError(f"{path}: {len(sizes)} trees, fewer than best_iteration {meta['best_iteration']} x {classes} classes")
    for number, block in enumerate(tree_blocks(text)):
        problem = _tree_problem(block, len(features))
        if problem:
            raise ModelError(f"{path}: tree {number} is damaged ({problem}); write the model again with `fpi train`")
    return SavedBooster(text, path, per_iteration, len(sizes), len(features))


def _tree_problem(block: str, features: int) -> str | None:
    """What in one tree would send LightGBM out of bounds or round a cycle (it trusts the file): every
    child is a later node or an existing leaf, every split feature and category index is in range,
    every number parses. None when the tree is sound."""
    try:
        tree = read_tree(block)
    except ValueError:
        return "a field is missing or not a number"
    leaves, nodes = tree.num_leaves, tree.num_leaves - 1
    if leaves < 1 or len(tree.leaf_value) != leaves or not all(math.isfinite(v) for v in tree.leaf_value):
        return "leaf values do not match num_leaves"
    if len(tree.leaf_count) != leaves or len(tree.internal_count) != nodes:
        return "leaf or node counts do not match num_leaves"
    if any(len(getattr(tree, name)) != nodes for name in NODE_FIELDS) or len(tree.threshold) != nodes:
        return "node lists do not match num_leaves"
    if any(not 0 <= f < features for f in tree.split_feature):
        return "a split feature out of range"
    for node, (left, right) in enumerate(zip(tree.left_child, tree.right_child, strict=True)):
        for child in (left, right):
            if (child >= 0 and not node < child < nodes) or (child < 0 and not 0 <= ~child < leaves):
                return f"node {node} has child {child}, which is neither a later node nor a leaf"
    if tree.num_cat:
        boundaries = tree.cat_boundaries
        if (len(boundaries) != tree.num_cat + 1 or boundaries[0] != 0 or boundaries[-1] != len(tree.cat_threshold)
                or boundaries != sorted(boundaries)):
            return "categorical boundaries do not match their bitsets"
        for kind, threshold in zip(tree.decision_type, tree.threshold, strict=True):
            if kind & 1 and not (threshold.is_integer() and 0 <= threshold < tree.num_cat):
                return "a categorical split points past its categories"
    return None
