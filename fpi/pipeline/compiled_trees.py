"""A LightGBM model's trees compiled to native code: once per model and machine, then read from the cache.

LightGBM walks its trees through one shared loop, so the processor cannot learn any branch;
compiled, every split is its own branch and the trees predict about four times faster. The
code is generated here as LLVM IR from the numbers of the model's own text, the one LightGBM
parses (`fpi.pipeline.model_text`: split features, thresholds, category sets, leaf values; its
JSON dump would write a threshold of +inf as 1e300; nothing of the data is code), compiled with
llvmlite (which shap already brings, through numba), and cached by model, compiler and processor
in a store only fpi writes (`native_cache`: the user's own folder, every entry checked against the
digest recorded when it was written). Each split makes LightGBM's own decision
(`Tree::NumericalDecision`, `CategoricalDecision`) and leaves are summed in LightGBM's order: raw
scores are bit-identical, which tests hold it to. Without llvmlite, or when compiling fails,
LightGBM predicts. The trees come as anything that answers as a LightGBM booster does (`Trees`): a
loaded model's saved text is compiled, or read from the cache, without LightGBM."""

from __future__ import annotations

import ctypes
import hashlib
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np

from fpi.contract.distribution import version
from fpi.contract.errors import ModelError
from fpi.pipeline.model_text import TextTree, read_tree, tree_blocks
from fpi.pipeline.native_cache import NativeCache

CODE_VERSION = 3  # bump when the generated code changes, so cached objects are not reused
ROWS_PER_BLOCK = 1024  # rows each tree runs over before the next: its code stays in the instruction cache
ROWS_PER_TASK = 16_384  # rows a thread predicts at a time, when rows come in an order of their own
ZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold, a float
INT_RANGE = (-2147483649.0, 2147483648.0)  # where a double converts to a C int (categories)


class Trees(Protocol):
    """What compiling asks of a model's trees: a LightGBM booster, or a loaded model's saved text
    (`fpi.pipeline.model_folder.SavedBooster`), which gives its text without LightGBM."""

    def model_to_string(self, num_iteration: int | None = None) -> str: ...

    def num_model_per_iteration(self) -> int: ...

    def num_feature(self) -> int: ...


def _double(value: float) -> str:
    """A double as LLVM IR writes it exactly: the hex of its bits."""
    return "0x%016X" % struct.unpack("<Q", struct.pack("<d", float(value)))[0]


class _TreeWriter:
    """LLVM IR text of one tree: a function that adds the tree's leaf to each row's score of its class."""

    def __init__(self, tree: TextTree, index: int, klass: int, classes: int, pointer: str):
        self.tree, self.index, self.klass, self.classes, self.pointer = tree, index, klass, classes, pointer
        self.lines: list[str] = []
        self.blocks = 0
        self.values = 0

    def _block(self) -> str:
        self.blocks += 1
        return f"b{self.blocks}"

    def _value(self) -> str:
        self.values += 1
        return f"%v{self.values}"

    def function(self) -> str:
        p = self.pointer
        first = self._block()
        self.lines += [
            f"define internal void @tree{self.index}({p} noalias %X, i64 %lo, i64 %hi, {p} noalias %out, i64 %rs, i64 %cs) "
            "noinline nounwind {",
            "entry:", "  br label %loop",
            "loop:", "  %i = phi i64 [ %lo, %entry ], [ %i.next, %next ]",
            "  %more = icmp slt i64 %i, %hi", "  br i1 %more, label %row, label %done",
            "row:", "  %at = mul i64 %i, %rs", f"  %x = getelementptr double, {p} %X, i64 %at",
            f"  %slot = mul i64 %i, {self.classes}", f"  %slot.k = add i64 %slot, {self.klass}",
            f"  %o = getelementptr double, {p} %out, i64 %slot.k", f"  br label %{first}",
        ]
        self._node(self.tree.root, first)
        self.lines += [
            "next:", "  %i.next = add i64 %i, 1", "  br label %loop",
            "done:", "  ret void", "}", "",
        ]
        return "\n".join(self.lines)

    def _node(self, node: int, label: str) -> None:
        """Node `node` of the tree, or its leaf `~node` when negative, as the block `label`."""
        add, tree = self.lines.append, self.tree
        add(f"{label}:")
        if node < 0:
            old, new = self._value(), self._value()
            add(f"  {old} = load double, {self.pointer} %o")
            add(f"  {new} = fadd double {old}, {_double(tree.leaf_value[~node])}")
            add(f"  store double {new}, {self.pointer} %o")
            add("  br label %next")
            return
        left, right = self._block(), self._block()
        offset, at, read, size, small, x = (self._value() for _ in range(6))
        add(f"  {offset} = mul i64 %cs, {tree.split_feature[node]}")
        add(f"  {at} = getelementptr double, {self.pointer} %x, i64 {offset}")
        add(f"  {read} = load double, {self.pointer} {at}")
        add(f"  {size} = call double @llvm.fabs.f64(double {read})")  # LightGBM reads a dense row as sparse:
        add(f"  {small} = fcmp ole double {size}, {_double(ZERO)}")  # values this small are absent, so 0
        add(f"  {x} = select i1 {small}, double 0.0, double {read}")
        if tree.categorical(node):
            self._categorical(node, x, left, right)
        else:
            self._numerical(node, x, left, right)
        self._node(tree.left_child[node], left)
        self._node(tree.right_child[node], right)

    def _numerical(self, node: int, x: str, left: str, right: str) -> None:
        """NaN is 0 unless NaN is the missing value; the missing value goes the default way; then `x <= threshold`."""
        add = self.lines.append
        missing = self.tree.missing(node)
        default = left if self.tree.default_left(node) else right
        threshold = _double(self.tree.threshold[node])
        if missing == 2:
            nan, compare = self._value(), self._block()
            add(f"  {nan} = fcmp uno double {x}, {x}")
            add(f"  br i1 {nan}, label %{default}, label %{compare}")
            add(f"{compare}:")
            value = x
        else:
            nan, value = self._value(), self._value()
            add(f"  {nan} = fcmp uno double {x}, {x}")
            add(f"  {value} = select i1 {nan}, double 0.0, double {x}")
            if missing == 1:
                above, below, zero, compare = self._value(), self._value(), self._value(), self._block()
                add(f"  {above} = fcmp oge double {value}, {_double(-ZERO)}")
                add(f"  {below} = fcmp ole double {value}, {_double(ZERO)}")
                add(f"  {zero} = and i1 {above}, {below}")
                add(f"  br i1 {zero}, label %{default}, label %{compare}")
                add(f"{compare}:")
        goes_left = self._value()
        add(f"  {goes_left} = fcmp ole double {value}, {threshold}")
        add(f"  br i1 {goes_left}, label %{left}, label %{right}")

    def _categorical(self, node: int, x: str, left: str, right: str) -> None:
        """NaN, negative and unlisted categories go right; the listed ones left."""
        add = self.lines.append
        above, below, inside, convert, code = self._value(), self._value(), self._value(), self._block(), self._value()
        add(f"  {above} = fcmp ogt double {x}, {_double(INT_RANGE[0])}")
        add(f"  {below} = fcmp olt double {x}, {_double(INT_RANGE[1])}")
        add(f"  {inside} = and i1 {above}, {below}")
        add(f"  br i1 {inside}, label %{convert}, label %{right}")
        add(f"{convert}:")
        add(f"  {code} = fptosi double {x} to i32")
        cases = " ".join(f"i32 {c}, label %{left}" for c in self.tree.categories(node))
        add(f"  switch i32 {code}, label %{right} [ {cases} ]")


def module_text(text: str, trees: int, classes: int) -> str:
    """LLVM IR of a text model's first `trees` trees (`classes` a round) and of `predict(X, lo, hi, out, rs, cs)`,
    which adds every tree's leaf to rows lo..hi of `out` (rows × classes, row-major); feature f of
    row i is X[i * rs + f * cs], so rows and columns come in either order."""
    from llvmlite import ir

    pointer = str(ir.DoubleType().as_pointer())
    parts = [_TreeWriter(read_tree(block), k, k % classes, classes, pointer).function()
             for k, block in enumerate(tree_blocks(text)[:trees])]
    calls = "\n".join(f"  call void @tree{k}({pointer} %X, i64 %i, i64 %end, {pointer} %out, i64 %rs, i64 %cs)"
                      for k in range(len(parts)))
    parts.append("\n".join([
        "declare double @llvm.fabs.f64(double)",
        f"define void @predict({pointer} noalias %X, i64 %lo, i64 %hi, {pointer} noalias %out, i64 %rs, i64 %cs) nounwind {{",
        "entry:", "  br label %loop",
        "loop:", "  %i = phi i64 [ %lo, %entry ], [ %end, %block ]",
        "  %more = icmp slt i64 %i, %hi", "  br i1 %more, label %block, label %done",
        "block:", f"  %step = add i64 %i, {ROWS_PER_BLOCK}", "  %short = icmp slt i64 %step, %hi",
        "  %end = select i1 %short, i64 %step, i64 %hi", calls, "  br label %loop",
        "done:", "  ret void", "}", ""]))
    return "\n".join(parts)


def in_row_ranges(rows: int, threads: int, run: Callable[[int, int], object], piece: int | None = None) -> None:
    """`run(lo, hi)` over ranges of rows on `threads` threads at once: for native code that lets go of the GIL
    and writes each row on its own, so the result does not depend on the thread count. `threads` equal ranges,
    or ranges of `piece` rows taken in turn (a thread that gets less of the processor takes fewer)."""
    count = threads if piece is None else max(1, -(-rows // piece))
    cuts = np.linspace(0, rows, count + 1).astype(np.int64)
    ranges = [(int(lo), int(hi)) for lo, hi in zip(cuts[:-1], cuts[1:]) if hi > lo]
    if len(ranges) <= 1 or threads == 1:
        for lo, hi in ranges:
            run(lo, hi)
        return
    with ThreadPoolExecutor(min(threads, len(ranges))) as pool:
        list(pool.map(lambda r: run(*r), ranges))


def softmax(raw: np.ndarray) -> np.ndarray:
    """Class probabilities from raw scores, one way for every predictor (so they agree bit for bit)."""
    shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
    total = shifted[:, 0].copy()
    for k in range(1, shifted.shape[1]):
        total += shifted[:, k]
    return shifted / total[:, None]


class NativeTrees:
    """A booster's first `trees` trees as native code; `raw_scores` is LightGBM's `raw_score=True`."""

    def __init__(self, engine: object, address: int, classes: int, features: int, threads: int):
        if threads < 1:
            raise ModelError(f"compiled trees predict on at least one thread, not {threads}")
        self._engine = engine  # owns the code; the function lives as long as it does
        self._predict = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                         ctypes.c_int64, ctypes.c_int64)(address)
        self.classes, self.features, self.threads = classes, features, threads

    @staticmethod
    def key(text: str, trees: int) -> str:
        """What a compiled object depends on: the model's text, how many of its trees, the generated code, fpi,
        the compiler and the processor."""
        from llvmlite import __version__ as llvmlite_version
        from llvmlite import binding as llvm

        digest = hashlib.sha256(text.encode("utf-8"))
        for part in (str(trees), str(CODE_VERSION), version(), llvmlite_version, llvm.get_process_triple(), llvm.get_host_cpu_name(),
                     llvm.get_host_cpu_features().flatten()):
            digest.update(b"\0" + part.encode("utf-8"))
        return digest.hexdigest()

    @classmethod
    def compile(cls, booster: Trees, trees: int, *, cache: Path | None = None, threads: int = 2,
                compile_if_missing: bool = True) -> NativeTrees | None:
        """The compiled trees, from `cache` when there, else compiled (and cached when the folder is
        writable); None when not cached and `compile_if_missing` is false. ModelError when llvmlite is
        missing or the code does not compile."""
        try:
            from llvmlite import binding as llvm
        except ImportError as exc:
            raise ModelError("compiled trees need llvmlite (pip install llvmlite); LightGBM predicts without it") from exc
        try:
            llvm.initialize()  # llvmlite before 0.45 needs this; later ones initialise themselves and refuse it
        except RuntimeError:
            pass
        try:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            machine = llvm.Target.from_default_triple().create_target_machine(opt=1, reloc="pic", codemodel="jitdefault")
        except (RuntimeError, AttributeError) as exc:
            raise ModelError(f"this llvmlite cannot compile for this machine ({exc}); LightGBM predicts instead") from exc
        store, text = NativeCache(cache), booster.model_to_string(num_iteration=-1)
        key = cls.key(text, trees)
        obj = store.get(key)
        if obj is None:
            if not compile_if_missing:
                return None
            try:
                module = llvm.parse_assembly(module_text(text, trees, booster.num_model_per_iteration()))
                module.verify()
                obj = machine.emit_object(module)
            except RuntimeError as exc:
                raise ModelError(f"the model's trees did not compile ({exc}); LightGBM predicts instead") from exc
            store.put(key, obj)
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), machine)
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        engine.finalize_object()
        return cls(engine, engine.get_function_address("predict"), booster.num_model_per_iteration(),
                   booster.num_feature(), threads)

    def raw_scores(self, X: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
        """One row of class scores per row of X (float64, the model's feature order), on `threads` threads.
        `order`: the rows in an order that puts alike rows together, taken in that order (rows that go the same
        way through the trees one after another let the processor foresee the branches); each row's scores
        are the same in any order."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.features:
            raise ValueError(f"expected rows of {self.features} features, got shape {X.shape}")
        if X.strides[0] % 8 or X.strides[1] % 8:
            X = np.ascontiguousarray(X)
        out = np.zeros((X.shape[0], self.classes))
        if order is None:
            in_row_ranges(X.shape[0], self.threads, lambda lo, hi: self._rows(X, lo, hi, out))
            return out

        def run(lo: int, hi: int) -> None:
            rows = order[lo:hi]
            scores = np.zeros((hi - lo, self.classes))
            self._rows(np.ascontiguousarray(X[rows]), 0, hi - lo, scores)
            out[rows] = scores

        in_row_ranges(len(order), self.threads, run, ROWS_PER_TASK)
        return out

    def _rows(self, X: np.ndarray, lo: int, hi: int, out: np.ndarray) -> None:
        """Rows lo..hi of X (strides of whole doubles) added into the same rows of `out`."""
        self._predict(X.ctypes.data, lo, hi, out.ctypes.data, X.strides[0] // 8, X.strides[1] // 8)
