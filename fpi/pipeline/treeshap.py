"""Exact path-dependent TreeSHAP, leaf by leaf, about ten times faster than LightGBM's `pred_contrib`.

A leaf with value v, reached through the distinct features U of its path, adds to feature i's
SHAP value  v (o_i - z_i) ∫₀¹ Π_{j∈U, j≠i} ((1-t) z_j + t o_j) dt,  where z_j is the share of
training rows the path's splits on j let through and o_j is 1 when the row passes them all, else 0
(TreeSHAP, Lundberg et al. 2020, is this sum computed by a recursion). The integrand is a
polynomial of degree |U|-1, so Gauss-Legendre with ⌈|U|/2⌉ points integrates it exactly, and
each of its factors is one of two constants known from the model alone: a leaf costs about
2·|U|·⌈|U|/2⌉ multiplications, without a branch or a division, and a block of rows goes through
each leaf side by side, in vector registers. Values agree with LightGBM's to rounding (tests hold
them to 1e-9 on hostile rows). Splits decide as LightGBM's `tree.h` does, as in `fpi.pipeline.compiled_trees`,
on the trees as the model's text gives them (`fpi.pipeline.model_text`: no LightGBM is loaded to explain).
numba (which shap brings) compiles the kernel once and caches it; each row is computed on its
own, so results do not depend on the number of threads."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from fpi.pipeline.compiled_trees import INT_RANGE, ZERO, Trees, in_row_ranges
from fpi.pipeline.model_text import TextTree, read_tree, tree_blocks

BLOCK = 64  # rows through each leaf side by side: long enough for vectors and to spread each leaf's bookkeeping
MAX_SLOTS = 64  # distinct features on one path the kernel has room for; deeper models use LightGBM


@dataclass(frozen=True)
class ClassLeaves:
    """One class's trees, flattened for the kernel: split nodes; leaves; each leaf's distinct path
    features ("slots", with the share z of rows their splits let through); the path's splits on
    each slot ("steps"); and per slot and quadrature point the factor when the row fails the
    slot's splits, (1-t) z, and when it passes them, (1-t) z + t, with their inverses."""

    node_feature: np.ndarray
    node_threshold: np.ndarray
    node_kind: np.ndarray  # 0 numerical, 1 categorical
    node_missing: np.ndarray  # 0 None, 1 Zero, 2 NaN
    node_default_left: np.ndarray
    node_categories: np.ndarray  # offsets into categories
    categories: np.ndarray
    leaf_value: np.ndarray
    leaf_slots: np.ndarray  # offsets into the slot arrays
    leaf_points: np.ndarray
    leaf_weights: np.ndarray  # offsets into weights
    weights: np.ndarray  # Gauss-Legendre weights on [0, 1]
    slot_feature: np.ndarray
    slot_zero: np.ndarray
    slot_steps: np.ndarray  # offsets into the step arrays
    slot_constants: np.ndarray  # offsets into cold, hot and their inverses
    cold: np.ndarray
    hot: np.ndarray
    cold_inverse: np.ndarray
    hot_inverse: np.ndarray
    step_node: np.ndarray
    step_left: np.ndarray  # the path goes left at that node
    expected: float  # Σ leaf value × leaf rows / root rows: the class's base value


def _flatten(trees: list[TextTree]) -> ClassLeaves | None:
    """The trees as kernel arrays; None when a path lets no training row through (counts lost, as
    in a refitted model: the quadrature divides by z) or is too deep for the kernel."""
    node_feature: list[int] = []
    node_threshold: list[float] = []
    node_kind: list[int] = []
    node_missing: list[int] = []
    node_default_left: list[bool] = []
    node_categories, categories = [0], []
    leaf_value: list[float] = []
    leaf_slots = [0]
    slot_feature: list[int] = []
    slot_zero: list[float] = []
    slot_steps = [0]
    step_node: list[int] = []
    step_left: list[bool] = []
    expected = 0.0

    def walk(tree: TextTree, at: int, slots: dict[int, tuple[tuple[int, ...], tuple[bool, ...], float]], root_rows: float) -> None:
        """`slots`: the path's distinct features in the order met, each with its splits (nodes, ways) and the
        product of their shares."""
        nonlocal expected
        if at < 0:
            value = tree.leaf_value[~at]
            expected += value * (tree.leaf_count[~at] / root_rows if root_rows else 1.0)
            if not slots:
                return  # a tree of one leaf adds to the base value only
            leaf_value.append(value)
            for feature, (nodes, ways, zero) in slots.items():
                slot_feature.append(feature)
                slot_zero.append(zero)
                step_node.extend(nodes)
                step_left.extend(ways)
                slot_steps.append(len(step_node))
            leaf_slots.append(len(slot_feature))
            return
        index, feature, categorical = len(node_feature), tree.split_feature[at], tree.categorical(at)
        node_feature.append(feature)
        node_kind.append(int(categorical))
        node_missing.append(tree.missing(at))
        node_default_left.append(tree.default_left(at))
        node_threshold.append(0.0 if categorical else tree.threshold[at])
        if categorical:
            categories.extend(tree.categories(at))
        node_categories.append(len(categories))
        rows = float(tree.internal_count[at])
        nodes, ways, zero = slots.get(feature, ((), (), 1.0))
        for child, left in ((tree.left_child[at], True), (tree.right_child[at], False)):
            share = tree.rows(child) / rows if rows else 0.0
            walk(tree, child, {**slots, feature: ((*nodes, index), (*ways, left), zero * share)}, root_rows)

    for tree in trees:
        walk(tree, tree.root, {}, float(tree.rows(tree.root)))
    return _class_leaves((node_feature, node_threshold, node_kind, node_missing, node_default_left, node_categories, categories),
                         (leaf_value, leaf_slots, slot_feature, slot_zero, slot_steps, step_node, step_left), expected)


def _class_leaves(nodes: tuple[list, ...], paths: tuple[list, ...], expected: float) -> ClassLeaves | None:
    """The walked trees' lists as the kernel's arrays, with each leaf's Gauss-Legendre points."""
    node_feature, node_threshold, node_kind, node_missing, node_default_left, node_categories, categories = nodes
    leaf_value, leaf_slots, slot_feature, slot_zero, slot_steps, step_node, step_left = paths
    slots_per_leaf: np.ndarray = np.diff(np.asarray(leaf_slots, dtype=np.int64))
    zero = np.asarray(slot_zero, dtype=np.float64)
    if (slots_per_leaf > MAX_SLOTS).any() or not (zero > 0).all():
        return None
    points: np.ndarray = (slots_per_leaf + 1) // 2
    rules = {n: np.polynomial.legendre.leggauss(int(n)) for n in np.unique(points)}
    nodes_of, weights_of = ({n: (x + 1) / 2 for n, (x, _) in rules.items()}, {n: w / 2 for n, (_, w) in rules.items()})
    weights = np.concatenate([weights_of[n] for n in points]) if len(points) else np.empty(0)
    slot_points = np.repeat(points, slots_per_leaf)
    t = np.concatenate([nodes_of[n] for n in slot_points]) if len(slot_points) else np.empty(0)
    cold = (1 - t) * np.repeat(zero, slot_points)
    hot = cold + t
    ints = lambda values: np.asarray(values, dtype=np.int64)  # noqa: E731
    return ClassLeaves(
        ints(node_feature), np.asarray(node_threshold, dtype=np.float64), ints(node_kind), ints(node_missing),
        np.asarray(node_default_left, dtype=np.bool_), ints(node_categories), ints(categories),
        np.asarray(leaf_value, dtype=np.float64), ints(leaf_slots), points.astype(np.int64),
        np.concatenate([[0], np.cumsum(points)[:-1]]).astype(np.int64), weights,
        ints(slot_feature), zero, ints(slot_steps), np.concatenate([[0], np.cumsum(slot_points)[:-1]]).astype(np.int64),
        cold, hot, 1 / cold, 1 / hot, ints(step_node), np.asarray(step_left, dtype=np.bool_), expected)


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _decide(X, start, rows, goes_left, node_feature, node_threshold, node_kind, node_missing, node_default_left,
            node_categories, categories):
    """Each split's decision for rows start..start+rows, as LightGBM's `tree.h` makes it."""
    for n in range(node_feature.shape[0]):
        feature, kind, missing = node_feature[n], node_kind[n], node_missing[n]
        for r in range(rows):
            x = X[start + r, feature]
            if abs(x) <= ZERO:  # LightGBM reads a dense row as sparse: values this small are 0
                x = 0.0
            if kind == 1:
                left = False
                if x > INT_RANGE[0] and x < INT_RANGE[1]:
                    code = int(x)
                    if code >= 0:
                        for c in range(node_categories[n], node_categories[n + 1]):
                            if categories[c] == code:
                                left = True
                goes_left[n, r] = left
            else:
                if x != x and missing != 2:
                    x = 0.0
                if (missing == 1 and -ZERO <= x <= ZERO) or (missing == 2 and x != x):
                    goes_left[n, r] = node_default_left[n]
                else:
                    goes_left[n, r] = x <= node_threshold[n]


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _kernel(X, lo, hi, out, node_feature, node_threshold, node_kind, node_missing, node_default_left,
            node_categories, categories, leaf_value, leaf_slots, leaf_points, leaf_weights, weights,
            slot_feature, slot_zero, slot_steps, slot_constants, cold, hot, cold_inverse, hot_inverse,
            step_node, step_left):
    """Adds rows lo..hi's contributions into `out`: each split's decision for a block of rows, then
    leaf by leaf the path's passes, the integrand's product at each point, and each slot's share,
    summed per feature in a block of its own (contiguous, so vectors) and added to `out` once."""
    nodes, leaves, features = node_feature.shape[0], leaf_value.shape[0], out.shape[1]
    goes_left = np.zeros((nodes, BLOCK), dtype=np.bool_)  # rows past the last one stay defined
    passes = np.empty((MAX_SLOTS, BLOCK), dtype=np.bool_)
    product = np.empty(((MAX_SLOTS + 1) // 2, BLOCK), dtype=np.float64)
    total = np.empty(BLOCK, dtype=np.float64)
    share = np.empty((features, BLOCK), dtype=np.float64)
    for start in range(lo, hi, BLOCK):
        rows = min(BLOCK, hi - start)
        _decide(X, start, rows, goes_left, node_feature, node_threshold, node_kind, node_missing, node_default_left,
                node_categories, categories)
        share[:, :] = 0.0
        for leaf in range(leaves):
            first, last = leaf_slots[leaf], leaf_slots[leaf + 1]
            points, w, value = leaf_points[leaf], leaf_weights[leaf], leaf_value[leaf]
            for q in range(points):
                for r in range(BLOCK):
                    product[q, r] = weights[w + q] * value
            for s in range(first, last):
                j = s - first
                for r in range(BLOCK):
                    passes[j, r] = True
                for step in range(slot_steps[s], slot_steps[s + 1]):
                    node, left = step_node[step], step_left[step]
                    for r in range(BLOCK):
                        passes[j, r] = passes[j, r] & (goes_left[node, r] == left)
                c = slot_constants[s]
                for q in range(points):
                    h, k = hot[c + q], cold[c + q]
                    for r in range(BLOCK):
                        product[q, r] *= h if passes[j, r] else k
            for s in range(first, last):
                j, c, zero, feature = s - first, slot_constants[s], slot_zero[s], slot_feature[s]
                for r in range(BLOCK):
                    total[r] = 0.0
                for q in range(points):
                    h, k = hot_inverse[c + q], cold_inverse[c + q]
                    for r in range(BLOCK):
                        total[r] += product[q, r] * (h if passes[j, r] else k)
                for r in range(BLOCK):
                    share[feature, r] += total[r] * ((1.0 - zero) if passes[j, r] else -zero)
        for r in range(rows):
            for f in range(features):
                out[start + r, f] += share[f, r]


class TreeShap:
    """TreeSHAP of a LightGBM model's first `trees` trees, one class at a time (each class's trees read from
    the model's text and flattened on first use, so no LightGBM is needed); `contributions(X, k)` is
    LightGBM's `pred_contrib` for class k."""

    def __init__(self, booster: Trees, trees: int, *, threads: int = 2):
        self._blocks = tree_blocks(booster.model_to_string(num_iteration=-1))[:trees]
        self.threads = threads
        self.classes, self.features = booster.num_model_per_iteration(), booster.num_feature()
        self._leaves: dict[int, ClassLeaves | None] = {}

    def leaves(self, klass: int) -> ClassLeaves | None:
        """Class `klass`'s trees for the kernel (LightGBM orders trees round by round, class by class);
        None when the kernel cannot take them (see `_flatten`)."""
        if klass not in self._leaves:
            self._leaves[klass] = _flatten([read_tree(block) for block in self._blocks[klass::self.classes]])
        return self._leaves[klass]

    def expected(self, klass: int) -> float:
        leaves = self.leaves(klass)
        if leaves is None:
            raise ValueError(f"class {klass}'s trees need LightGBM's TreeSHAP")
        return leaves.expected

    def contributions(self, X: np.ndarray, klass: int) -> np.ndarray:
        """Each row's SHAP values for class `klass` (rows × features); with `expected(klass)` they
        sum to the class's raw score."""
        leaves = self.leaves(klass)
        if leaves is None:
            raise ValueError(f"class {klass}'s trees need LightGBM's TreeSHAP")
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.features:
            raise ValueError(f"expected rows of {self.features} features, got shape {X.shape}")
        out = np.zeros((X.shape[0], self.features))
        arrays = [getattr(leaves, name) for name in ClassLeaves.__dataclass_fields__ if name != "expected"]
        in_row_ranges(X.shape[0], self.threads, lambda lo, hi: _kernel(X, lo, hi, out, *arrays))
        return out
