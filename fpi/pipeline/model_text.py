"""LightGBM's text model read without LightGBM: each `Tree=N` block as its lists of numbers, so a model's
trees are checked before LightGBM reads them (`model_folder`) and explained (`treeshap`) with no
LightGBM loaded. Decision types are LightGBM's bit fields (`tree.h`): bit 0 categorical, bit 1 default
left, bits 2-3 the missing type (0 none, 1 zero, 2 NaN)."""

from __future__ import annotations

import re
from dataclasses import dataclass

TREE_HEADER = re.compile(r"^Tree=\d+\n", flags=re.MULTILINE)
NODE_FIELDS = ("split_feature", "decision_type", "left_child", "right_child")


def tree_blocks(text: str) -> list[str]:
    """The text of each tree, after its `Tree=N` line, up to `end of trees`."""
    _, _, body = text.partition("\nTree=0\n")
    return TREE_HEADER.split("Tree=0\n" + body[:body.index("end of trees")])[1:]


@dataclass(frozen=True)
class TextTree:
    """One tree as its text lists it: node `n` sends rows to `left_child[n]` or `right_child[n]`, a later
    node, or leaf `~child` when negative; counts are the training rows that reached each node and leaf
    (zeros when the text has none, as LightGBM reads it); a categorical node's threshold indexes
    `cat_boundaries`, which delimit its words of `cat_threshold`, a bitset of the categories going left."""

    num_leaves: int
    leaf_value: list[float]
    leaf_count: list[int]
    split_feature: list[int]
    decision_type: list[int]
    left_child: list[int]
    right_child: list[int]
    threshold: list[float]
    internal_count: list[int]
    num_cat: int
    cat_boundaries: list[int]
    cat_threshold: list[int]

    @property
    def root(self) -> int:
        """Node 0, or leaf `~0` when the tree is a single leaf (LightGBM then predicts its value)."""
        return 0 if self.num_leaves > 1 else ~0

    def categorical(self, node: int) -> bool:
        return bool(self.decision_type[node] & 1)

    def default_left(self, node: int) -> bool:
        """Where the missing value goes."""
        return bool(self.decision_type[node] & 2)

    def missing(self, node: int) -> int:
        """What is missing at a numerical node: 0 nothing, 1 zero, 2 NaN."""
        return self.decision_type[node] >> 2 & 3

    def rows(self, child: int) -> int:
        """The training rows that reached a node (child >= 0) or leaf `~child`."""
        return self.internal_count[child] if child >= 0 else self.leaf_count[~child]

    def categories(self, node: int) -> list[int]:
        """The categories a categorical node sends left, ascending."""
        at = int(self.threshold[node])
        words = self.cat_threshold[self.cat_boundaries[at]:self.cat_boundaries[at + 1]]
        return [32 * w + bit for w, word in enumerate(words) for bit in range(32) if word >> bit & 1]


def read_tree(block: str) -> TextTree:
    """A tree's numbers; ValueError when a field is missing or not a number (whether they fit together is
    `model_folder`'s check)."""
    fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)

    def ints(name: str, absent: str = "") -> list[int]:
        return [int(v) for v in fields.get(name, absent).split()]

    if "num_leaves" not in fields or "leaf_value" not in fields:
        raise ValueError("no num_leaves or leaf_value")
    leaves, categories = int(fields["num_leaves"]), int(fields.get("num_cat", "0"))
    nodes = dict(zip(NODE_FIELDS, map(ints, NODE_FIELDS), strict=True))
    return TextTree(num_leaves=leaves, leaf_value=[float(v) for v in fields["leaf_value"].split()],
                    leaf_count=ints("leaf_count", "0 " * leaves), **nodes,
                    threshold=[float(v) for v in fields.get("threshold", "").split()],
                    internal_count=ints("internal_count", "0 " * max(leaves - 1, 0)), num_cat=categories,
                    cat_boundaries=ints("cat_boundaries", "0") if categories else [0],
                    cat_threshold=ints("cat_threshold") if categories else [])
