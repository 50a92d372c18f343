"""The benchmark harness: sparseflash against SDPA (flash, cuDNN), FlexAttention and eager.

One entry point, named suites::

    python -m benchmarks.run --suite dense|sparse|scaling|compile|all --out DIR [--quick]
    python -m benchmarks.run --suite all --device cpu --tiny --out /tmp/bench   # CPU smoke run

Suites (issue 4 has the targets they measure):

* ``dense``   TFLOP/s of every implementation, d = 128 and 64, N = 1K, 4K, 16K with
  B*N = 16K and H*d = 2048, causal and not, forward and forward+backward.
* ``sparse``  time against density for local, butterfly, bigbird and strided layouts at
  N = 16K and 64K (block 128, densities ~50% to ~3%), ours against FlexAttention running
  the *same* block tables (its BlockMask is built from our layout), with a dense reference
  row per N.
* ``scaling`` runtime and peak memory against N (FlashAttention paper, Figure 3): dense
  causal up to 64K, local and bigbird up to 1M tokens, eager attention until it runs out
  of memory.
* ``compile`` mask build time: ``sparseflash.compile`` against FlexAttention's
  ``create_block_mask`` (eager and compiled), plus ``benchmarks.compile_bench`` if present.

Every measurement is one row (see ``ROW_FIELDS``) written to ``results.json`` and
``results.csv`` after every case, so a run cut short still leaves its data. Times are
medians of CUDA-event-timed calls with the L2 cache flushed before each (the method of
``triton.testing.do_bench``), the impls of a case timed interleaved (``benchmarks/timing.py``:
on the GPU ``--heat`` seconds of all of them in turn, then ``--rounds`` rounds, every other one
reversed; ``ms`` the mean of the rounds' medians, ``ms_rounds`` each); peak memory is
``torch.cuda.max_memory_allocated`` over one call after a reset. A peer that is missing or fails is recorded with a note, never a crash.

FLOP conventions, recorded side by side:

* ``flops_blocks`` = 4 * d * block^2 * nnz * B per forward (nnz from the layout, all heads):
  the work on computed blocks; every implementation of a case gets the same count, so
  TFLOP/s ratios are time ratios.
* ``flops_anchor`` = 4 * B * H * N^2 * d per forward, halved for causal: the convention of
  docs/anchors.md and the FlashAttention papers, for dense cases (sparse cases repeat
  ``flops_blocks``).
* forward+backward counts 3.5x the forward.

``tflops`` is the anchor convention for dense cases and the computed-block one otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime as _dt
import gc
import json
import math
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import sparseflash as sf
from sparseflash import BlockLayout
from sparseflash.layout import K_POS, Q_POS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import timing  # noqa: E402

PASSES = ("fwd", "fwd+bwd")
FWD_BWD_FACTOR = 3.5           # forward+backward FLOPs over forward FLOPs (docs/anchors.md)
SUITES = ("dense", "sparse", "scaling", "compile")
# Share of the time budget each suite expects. A suite may overrun its share into the suites
# after it, but never into the part RESERVE of their shares; time a suite leaves passes on.
SUITE_WEIGHTS = {"dense": 0.42, "sparse": 0.19, "scaling": 0.23, "compile": 0.16}
RESERVE = 0.7
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
GIB = float(1 << 30)

ROW_FIELDS = (
    "suite", "case", "family", "pattern", "target_density", "density", "nnz", "seq_len",
    "batch", "heads", "head_dim", "block_size", "causal", "dtype", "impl", "pass", "status",
    "note", "ms", "tflops", "tflops_blocks", "tflops_anchor", "flops_blocks", "flops_anchor",
    "peak_mem_gib", "extra_mem_gib", "first_call_ms", "reps", "predicted_ms", "err_ref",
    "err_out_rel", "err_out_max_abs", "err_grad_rel", "err_ok", "ms_rounds",
)


# ============================================================================ configuration
@dataclass(frozen=True)
class Config:
    """Every size a run sweeps. ``full``, ``quick`` and ``tiny`` below are the three presets."""

    block: int
    # dense suite: B*N = dense_tokens, H*d = dense_width
    dense_seq_lens: Tuple[int, ...]
    dense_head_dims: Tuple[int, ...]
    dense_causal: Tuple[bool, ...]
    dense_tokens: int
    dense_width: int
    dense_eager_max_n: int           # eager is N^2 in memory and slow; the scaling suite sweeps it
    # sparse suite
    sparse_seq_lens: Tuple[int, ...]
    sparse_heads: int
    sparse_head_dim: int
    sparse_families: Tuple[str, ...]
    sparse_densities: Tuple[float, ...]
    # scaling suite (B = 1)
    scaling_heads: int
    scaling_head_dim: int
    scaling_dense_seq_lens: Tuple[int, ...]
    scaling_sparse_seq_lens: Tuple[int, ...]
    scaling_sparse_patterns: Tuple[Tuple[str, str], ...]   # (family, pattern expression)
    scaling_dense_impls: Tuple[str, ...]
    scaling_eager_max_n: int         # beyond it eager is not tried (its OOM cut-off still applies)
    scaling_sparse_impls: Tuple[str, ...]
    # compile suite
    compile_seq_lens: Tuple[int, ...]
    cbm_eager_seq_lens: Tuple[int, ...]
    cbm_compiled_seq_lens: Tuple[int, ...]
    # timing
    warmup_ms: float
    rep_ms: float
    min_reps: int
    budget_s: float


ALL_IMPLS = ("ours", "flex", "fa4", "sdpa_flash", "sdpa_cudnn", "eager")
COMPILE_PATTERN = "bigbird(window=3, globals=2, random=3) | strided(64)"  # issue 2's target
SCALING_SPARSE = (("local", "local(8)"), ("bigbird", "bigbird(window=3, globals=2, random=3)"))

FULL = Config(
    block=128,
    dense_seq_lens=(16384, 4096, 1024), dense_head_dims=(128, 64), dense_causal=(False, True),
    dense_tokens=16384, dense_width=2048, dense_eager_max_n=4096,
    sparse_seq_lens=(16384, 65536), sparse_heads=16, sparse_head_dim=128,
    sparse_families=("local", "butterfly", "bigbird", "strided"),
    sparse_densities=(0.5, 0.25, 0.12, 0.06, 0.03),
    scaling_heads=16, scaling_head_dim=128,
    scaling_dense_seq_lens=(1024, 2048, 4096, 8192, 16384, 32768, 65536),
    scaling_sparse_seq_lens=(16384, 65536, 262144, 1048576),
    scaling_sparse_patterns=SCALING_SPARSE,
    scaling_dense_impls=ALL_IMPLS, scaling_sparse_impls=("ours", "flex"), scaling_eager_max_n=1 << 30,
    compile_seq_lens=(131072, 1048576), cbm_eager_seq_lens=(16384, 65536, 131072),
    cbm_compiled_seq_lens=(131072, 1048576),
    warmup_ms=25.0, rep_ms=60.0, min_reps=3, budget_s=480.0,
)

QUICK = dataclasses.replace(
    FULL,
    dense_seq_lens=(16384,), dense_head_dims=(128,), dense_eager_max_n=0,
    sparse_seq_lens=(16384,), sparse_families=("local", "bigbird"),
    sparse_densities=(0.5, 0.12, 0.03),
    scaling_dense_seq_lens=(1024, 4096, 16384, 65536),
    scaling_sparse_seq_lens=(262144, 1048576),
    scaling_sparse_patterns=SCALING_SPARSE[1:],
    scaling_dense_impls=("ours", "sdpa_flash", "sdpa_cudnn", "eager"),
    scaling_sparse_impls=("ours",), scaling_eager_max_n=4096,
    cbm_eager_seq_lens=(16384,), cbm_compiled_seq_lens=(),
    warmup_ms=10.0, rep_ms=40.0, budget_s=150.0,
)

TINY = Config(
    block=32,
    dense_seq_lens=(256, 128), dense_head_dims=(32, 16), dense_causal=(False, True),
    dense_tokens=512, dense_width=64, dense_eager_max_n=256,
    sparse_seq_lens=(512, 1024), sparse_heads=2, sparse_head_dim=32,
    sparse_families=("local", "butterfly", "bigbird", "strided"),
    sparse_densities=(0.5, 0.25, 0.12),
    scaling_heads=2, scaling_head_dim=32,
    scaling_dense_seq_lens=(128, 256, 512, 1024),
    scaling_sparse_seq_lens=(1024, 2048, 4096),
    scaling_sparse_patterns=(("local", "local(2)"), ("bigbird", "bigbird(window=1, globals=1, random=1)")),
    scaling_dense_impls=ALL_IMPLS, scaling_sparse_impls=("ours", "flex", "eager"), scaling_eager_max_n=4096,
    compile_seq_lens=(4096, 16384), cbm_eager_seq_lens=(1024, 4096), cbm_compiled_seq_lens=(),
    warmup_ms=2.0, rep_ms=10.0, min_reps=3, budget_s=900.0,
)


# ============================================================================ cases
@dataclass
class Case:
    """One attention problem; every implementation in ``impls`` runs every pass in ``passes``."""

    suite: str
    family: str                 # dense, dense-causal, local, butterfly, bigbird, strided
    pattern: str                # text form of the pattern (a sparseflash expression)
    seq_len: int
    batch: int
    heads: int
    head_dim: int
    block_size: int
    causal: bool
    impls: Tuple[str, ...]
    passes: Tuple[str, ...] = PASSES
    target_density: float = float("nan")
    sweep: str = ""             # cases of one sweep share eager's out-of-memory cut-off

    @property
    def is_dense(self) -> bool:
        return self.pattern == "dense()"

    @property
    def name(self) -> str:
        mask = "dense" if self.is_dense else self.pattern.replace(" ", "")
        return (f"{mask}{'-causal' if self.causal else ''} N={self.seq_len} d={self.head_dim} "
                f"B={self.batch} H={self.heads}")


def pattern_from_text(text: str) -> sf.Pattern:
    """A pattern from its text form, e.g. ``"bigbird(window=3, globals=2, random=3) | strided(64)"``.

    Uses ``sparseflash.parse`` where it exists; the text form is otherwise a Python
    expression over the pattern factories, evaluated with nothing else in scope.
    """
    parse = getattr(sf, "parse", None)
    if parse is not None:
        return parse(text)
    scope = {name: getattr(sf, name) for name in sf.pattern.__all__ if name[0].islower()}
    return eval(text, {"__builtins__": {}}, scope)  # noqa: S307 - trusted, from this file or its results


def compile_layout(case: Case) -> BlockLayout:
    return sf.compile(pattern_from_text(case.pattern), case.seq_len, block_size=case.block_size,
                      causal=case.causal, num_heads=case.heads)


# Candidate patterns per sparse family, sparse to dense; pick_densities keeps those nearest the
# target densities. Butterfly alone tops out at (log2 nq + 1) / nq, so denser butterflies add a band.
_WIDTHS = (0, 1, 2, 3, 4, 6, 8, 11, 16, 22, 32, 45, 64, 90, 128, 181, 256, 362, 512)
_STRIDES = (1, 2, 3, 4, 6, 8, 11, 16, 22, 32, 45, 64, 90, 128)
FAMILIES: Dict[str, Callable[[int], List[str]]] = {
    "local": lambda nq: [f"local({w})" for w in _WIDTHS if w < nq],
    "strided": lambda nq: [f"strided({s})" for s in _STRIDES if s <= nq],
    "bigbird": lambda nq: [f"bigbird(window={w}, globals=2, random=3)" for w in _WIDTHS if w < nq],
    "butterfly": lambda nq: ([f"butterfly({f})" for f in range(1, max(2, math.ceil(math.log2(nq))))]
                             + ["butterfly()"] + [f"butterfly() | local({w})" for w in _WIDTHS[2:] if w < nq]),
}


def pick_densities(family: str, seq_len: int, block: int, targets: Sequence[float]) -> List[Tuple[float, str]]:
    """(target, pattern text) for each target density: the family member nearest in log density."""
    nq = -(-seq_len // block)
    candidates = []
    for text in FAMILIES[family](nq):
        layout = sf.compile(pattern_from_text(text), seq_len, block_size=block)
        candidates.append((layout.density, text))
    picked, seen = [], set()
    for target in targets:
        density, text = min(candidates, key=lambda c: abs(math.log(c[0] / target)))
        if text not in seen and abs(math.log(density / target)) < math.log(2.0):
            seen.add(text)
            picked.append((target, text))
    return picked


def dense_cases(cfg: Config, impls: Sequence[str]) -> List[Case]:
    cases = []
    for d in cfg.dense_head_dims:
        for causal in cfg.dense_causal:
            for n in cfg.dense_seq_lens:
                use = tuple(i for i in impls if i != "eager" or n <= cfg.dense_eager_max_n)
                cases.append(Case("dense", "dense-causal" if causal else "dense", "dense()", n,
                                  cfg.dense_tokens // n, cfg.dense_width // d, d, cfg.block, causal,
                                  use, target_density=1.0))
    return cases


def sparse_cases(cfg: Config, impls: Sequence[str]) -> List[Case]:
    use = tuple(i for i in impls if i in ("ours", "flex", "fa4"))
    cases = []
    for n in cfg.sparse_seq_lens:
        common = dict(seq_len=n, batch=1, heads=cfg.sparse_heads, head_dim=cfg.sparse_head_dim,
                      block_size=cfg.block, causal=False)
        # The dense reference: "TFLOP/s on computed blocks >= 0.9x our own dense TFLOP/s".
        dense_impls = tuple(i for i in impls if i in ("ours", "flex", "fa4", "sdpa_flash", "sdpa_cudnn"))
        cases.append(Case("sparse", "dense", "dense()", impls=dense_impls, target_density=1.0, **common))
        for family in cfg.sparse_families:
            for target, text in pick_densities(family, n, cfg.block, cfg.sparse_densities):
                cases.append(Case("sparse", family, text, impls=use, target_density=target, **common))
    return cases


def scaling_cases(cfg: Config, impls: Sequence[str]) -> List[Case]:
    h, d = cfg.scaling_heads, cfg.scaling_head_dim
    cases = []
    def use(names, n):
        return tuple(i for i in names if i in impls and (i != "eager" or n <= cfg.scaling_eager_max_n))
    for n in cfg.scaling_dense_seq_lens:
        cases.append(Case("scaling", "dense-causal", "dense()", n, 1, h, d, cfg.block, True,
                          use(cfg.scaling_dense_impls, n), target_density=1.0, sweep="dense-causal"))
    for family, text in cfg.scaling_sparse_patterns:
        for n in cfg.scaling_sparse_seq_lens:
            cases.append(Case("scaling", family, text, n, 1, h, d, cfg.block, False,
                              use(cfg.scaling_sparse_impls, n), sweep=family))
    return cases


# ============================================================================ environment
def environment(args, device: torch.device) -> dict:
    """Where and with what the run was made: command, GPU, versions, date."""
    meta = {
        "command": "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in args.argv),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "sparseflash": getattr(sf, "__version__", None),
        "device": str(device),
        "dtype": args.dtype,
        "mode": "tiny" if args.tiny else "quick" if args.quick else "full",
        "suites": args.suites,
        "estimate_device": args.estimate_device,
    }
    try:
        import triton
        meta["triton"] = triton.__version__
    except ImportError:
        meta["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / GIB, 1),
                    gpu_sms=props.multi_processor_count, gpu_capability=f"{props.major}.{props.minor}",
                    cudnn=torch.backends.cudnn.version())
    else:
        meta["gpu"] = None
    try:
        root = Path(__file__).resolve().parent.parent
        # a copy of the tree without .git (the GPU machine) gets the commit from the caller
        meta["git_commit"] = os.environ.get("SPARSEFLASH_GIT_COMMIT") or subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                            text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        meta["git_commit"] = None
    # the code that ran, whatever .git says (the GPU machine's copy of the tree can carry a
    # stale .git: run23's records read an older HEAD than the tree that ran)
    meta["source_sha256"] = source_digest(Path(__file__).resolve().parent.parent)
    return meta


def source_digest(root: Path) -> str:
    """sha256 over the paths and bytes of the package's and the benchmarks' Python files
    (``sparseflash/**/*.py``, ``benchmarks/*.py``), in path order: equal digests, same code.
    To match a record with a commit, check the commit out and compare
    ``python -c "from pathlib import Path; from benchmarks.run import source_digest;
    print(source_digest(Path('.')))"`` with its ``meta.source_sha256``."""
    import hashlib

    h = hashlib.sha256()
    files = sorted(list(root.glob("sparseflash/**/*.py")) + list(root.glob("benchmarks/*.py")))
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


# ============================================================================ implementations
class Skip(Exception):
    """An implementation cannot run this case; the message goes into the row's note."""


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _short(exc: BaseException, limit: int = 160) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _causal_mask_mod(b, h, q_idx, kv_idx):
    # Module level, so torch.compile sees the same function object (no recompile) every case.
    return kv_idx <= q_idx


def flex_mask_mod(layout: BlockLayout) -> Optional[Callable]:
    """A cheaper ``mask_mod`` for the compiled Flex kernel, or None where only the exact one
    (:func:`sparseflash.integrations.flex.layout_mask_mod`) is right.

    The compiled kernel visits only the blocks of the BlockMask and calls ``mask_mod`` only
    in partial ones; when Flex's blocks are ours (aligned grids) the causal or length cut is
    all a partial block needs, with no block lookup. A layout without partial blocks never
    calls it; it gets the causal rule too, so causal and non-causal cases of one shape share
    one compiled kernel (a mask_mod is part of what torch.compile specialises on).
    """
    bs, seq_len, kv_len, causal = layout.block_size, layout.seq_len, layout.kv_len, layout.causal
    shift = kv_len - seq_len
    aligned = all(int(layout.seqs[0, c]) % bs == 0 for c in (Q_POS, K_POS))
    if layout.window is not None or layout.key_padding_mask is not None or not aligned:
        return None
    ragged = seq_len % bs or kv_len % bs
    if layout.num_partial == 0 or (causal and not ragged and shift == 0):
        return _causal_mask_mod

    def length_mask_mod(b, h, q_idx, kv_idx):
        keep = (q_idx < seq_len) & (kv_idx < kv_len)
        if causal:
            keep = keep & (kv_idx <= q_idx + shift)
        return keep
    return length_mask_mod


def flex_block_mask(layout: BlockLayout, device, exact_mask_mod: bool = False):
    """A FlexAttention BlockMask holding exactly the layout's blocks
    (:func:`sparseflash.to_flex_block_mask`). Flex's uncompiled path ignores the block tables
    and calls ``mask_mod`` on every pair, so it needs ``exact_mask_mod`` (the rule that looks
    the blocks up); the compiled kernel gets the cheaper :func:`flex_mask_mod` where it is
    right."""
    mask_mod = None if exact_mask_mod else flex_mask_mod(layout)
    return sf.to_flex_block_mask(layout, device=device, mask_mod=mask_mod)


def eager_attention(q, k, v, masked_out: Optional[torch.Tensor], scale: float):
    """Standard attention, FlashAttention paper Algorithm 0: S and P materialised in HBM.

    ``masked_out``: bool [N, Nk], True where a pair is *not* attended (or None).
    """
    s = torch.matmul(q, k.transpose(-2, -1))
    s.mul_(scale)
    if masked_out is not None:
        s.masked_fill_(masked_out, float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1), v)


def token_mask(layout: BlockLayout, device) -> Optional[torch.Tensor]:
    """Bool [N, Nk] mask of head 0 (the benchmarks' layouts share one table), None if all pass."""
    if layout.causal is False and layout.density == 1.0 and layout.num_partial == 0:
        return None
    blocks = torch.from_numpy(layout.to_dense()[0]).to(device)
    bs = layout.block_size
    m = blocks.repeat_interleave(bs, 0).repeat_interleave(bs, 1)[: layout.seq_len, : layout.kv_len]
    if layout.causal:
        t = torch.arange(layout.seq_len, device=device)[:, None]
        s = torch.arange(layout.kv_len, device=device)[None, :]
        m &= s <= t + (layout.kv_len - layout.seq_len)
    return m


class Peers:
    """Builds one attention callable ``fn(q, k, v) -> out`` per (implementation, case).

    Imports and compiles lazily; whatever is missing raises :class:`Skip` with the reason.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype, flex_compile: bool,
                 flex_dynamic_scaling: bool):
        self.device, self.dtype = device, dtype
        self.flex_compile = flex_compile
        self.flex_dynamic_scaling = flex_dynamic_scaling
        self.notes: Dict[str, str] = {}
        self._flex: Dict[bool, Callable] = {}
        self._ours = None

    # -- ours
    def ours_function(self):
        if self._ours is None:
            try:
                self._ours = sf.sparse_attention
            except AttributeError:
                try:
                    from sparseflash.attention import sparse_attention
                    self._ours = sparse_attention
                except ImportError as exc:
                    raise Skip(f"sparseflash.sparse_attention not importable ({_short(exc, 80)})")
        return self._ours

    def ours(self, case: Case, layout: BlockLayout):
        attn = self.ours_function()
        backend = "triton" if self.device.type == "cuda" else "torch"

        def fn(q, k, v):
            return attn(q, k, v, layout, block_size=layout.block_size, causal=layout.causal,
                        backend=backend)
        return fn

    # -- FlexAttention
    def flex_function(self, dynamic: bool):
        if dynamic in self._flex:
            return self._flex[dynamic]
        try:
            from torch.nn.attention.flex_attention import flex_attention
        except ImportError as exc:
            raise Skip(f"FlexAttention unavailable in torch {torch.__version__} ({_short(exc, 60)})")
        if not self.flex_compile:
            self.notes["flex"] = "FlexAttention ran uncompiled (its unfused eager path)"
            self._flex[dynamic] = flex_attention
            return flex_attention
        import torch._dynamo.config as dynamo_config
        # Each case brings new shapes; raise the limits before compiling so Flex never falls
        # back to the eager path after too many recompiles.
        for attr in ("cache_size_limit", "recompile_limit"):
            if hasattr(dynamo_config, attr):
                setattr(dynamo_config, attr, 1000)
        for attr in ("accumulated_cache_size_limit", "accumulated_recompile_limit"):
            if hasattr(dynamo_config, attr):
                setattr(dynamo_config, attr, 10000)
        self._flex[dynamic] = torch.compile(flex_attention, dynamic=dynamic)
        return self._flex[dynamic]

    def flex(self, case: Case, layout: BlockLayout):
        dynamic = self.flex_dynamic_scaling and case.suite == "scaling"
        flex = self.flex_function(dynamic)
        t0 = time.perf_counter()
        # Uncompiled Flex ignores the block tables and needs a mask_mod that names the blocks.
        block_mask = flex_block_mask(layout, self.device, exact_mask_mod=not self.flex_compile)
        build_ms = (time.perf_counter() - t0) * 1e3

        if self.device.type == "cuda":
            def fn(q, k, v):
                nonlocal flex
                try:
                    return flex(q, k, v, block_mask=block_mask)
                except Exception as exc:  # noqa: BLE001
                    if not dynamic or _is_oom(exc):
                        raise
                    # Dynamic shapes are the less travelled path: fall back to one compile per shape.
                    self.notes["flex_dynamic"] = f"dynamic shapes failed ({_short(exc, 100)}); compiled per shape"
                    self.flex_dynamic_scaling = False
                    flex = self.flex_function(False)
                    return flex(q, k, v, block_mask=block_mask)
        else:
            # FlexAttention has no backward on the CPU and refuses inputs that require grad.
            def fn(q, k, v):
                return flex(q.detach(), k.detach(), v.detach(), block_mask=block_mask)
            fn.passes = ("fwd",)
        fn.note = f"mask from our tables {build_ms:.0f} ms" + (", dynamic shapes" if dynamic else "")
        return fn

    # -- FlashAttention-4 (flash-attn-4, CuTe DSL), on our own tables
    def fa4(self, case: Case, layout: BlockLayout):
        if self.device.type != "cuda":
            raise Skip("FA4 needs CUDA")
        if self.dtype not in (torch.float16, torch.bfloat16):
            raise Skip("FA4 takes fp16/bf16 only")
        try:
            from flash_attn.cute import flash_attn_func
        except Exception as exc:  # noqa: BLE001 - any import failure means "not installed here"
            raise Skip(f"FA4 not installed (flash_attn.cute: {_short(exc, 60)}); ../shared/fa4 installs it")
        if case.is_dense:
            extra = dict(causal=case.causal)
        else:
            from sparseflash.integrations.fa4 import fa4_mask_args
            fwd, bwd = sf.to_fa4_block_sparse(layout, batch=case.batch, device=self.device)
            extra = dict(block_sparse_tensors=fwd, block_sparse_tensors_bwd=bwd, **fa4_mask_args(layout))

        def fn(q, k, v):
            # FA4 reads (B, N, H, d): the transposed views keep the last dim contiguous, no copy
            out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), **extra)
            return (out[0] if isinstance(out, tuple) else out).transpose(1, 2)
        return fn

    # -- SDPA
    def sdpa(self, case: Case, layout: BlockLayout, which: str):
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
        except ImportError as exc:
            raise Skip(f"torch.nn.attention.sdpa_kernel unavailable ({_short(exc, 60)})")
        if not case.is_dense:
            raise Skip("SDPA has no block-sparse mode")
        if which == "sdpa_cudnn" and self.device.type != "cuda":
            raise Skip("cuDNN attention needs CUDA")
        backend = {"sdpa_flash": "FLASH_ATTENTION", "sdpa_cudnn": "CUDNN_ATTENTION"}[which]
        if not hasattr(SDPBackend, backend):
            raise Skip(f"SDPBackend.{backend} missing in torch {torch.__version__}")
        backend = getattr(SDPBackend, backend)
        causal = case.causal
        import torch.nn.functional as F

        def fn(q, k, v):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return fn

    # -- eager
    def eager(self, case: Case, layout: BlockLayout):
        if self.device.type == "cuda":
            # Trying a size that cannot fit costs a failed N^2 allocation and nothing else we
            # learn; sizes that might fit are tried and their out-of-memory error recorded.
            need = eager_bytes(case, torch.empty((), dtype=self.dtype).element_size())
            if need > torch.cuda.get_device_properties(self.device).total_memory:
                raise Skip(f"oom (predicted: S and P alone need {need / GIB:.0f} GiB)")
        mask = token_mask(layout, self.device)
        masked_out = None if mask is None else ~mask
        del mask
        scale = 1.0 / math.sqrt(case.head_dim)

        def fn(q, k, v):
            return eager_attention(q, k, v, masked_out, scale)
        return fn

    def build(self, impl: str, case: Case, layout: BlockLayout):
        if impl == "ours":
            return self.ours(case, layout)
        if impl == "flex":
            return self.flex(case, layout)
        if impl == "fa4":
            return self.fa4(case, layout)
        if impl in ("sdpa_flash", "sdpa_cudnn"):
            return self.sdpa(case, layout, impl)
        if impl == "eager":
            return self.eager(case, layout)
        raise ValueError(f"unknown implementation {impl!r}")


def eager_bytes(case: Case, element_size: int) -> float:
    """HBM that eager attention's forward holds at its peak: S and P, N x N per head."""
    return 2.0 * case.batch * case.heads * case.seq_len * case.seq_len * element_size


# ============================================================================ measuring
class Timer:
    """Median time of ``fn()`` in ms: CUDA events around each call with L2 flushed before it,
    as ``triton.testing.do_bench`` does, but with a floor on the number of timed calls so slow
    cases are not timed once. On the CPU, ``perf_counter`` around each call."""

    def __init__(self, device: torch.device, warmup_ms: float, rep_ms: float, min_reps: int):
        self.device, self.warmup_ms, self.rep_ms, self.min_reps = device, warmup_ms, rep_ms, min_reps
        self._flush = None
        if device.type == "cuda":
            self._flush = torch.empty(256 << 20, dtype=torch.int8, device=device)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def wall_ms(self, fn) -> float:
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return (time.perf_counter() - t0) * 1e3

    def __call__(self, fn) -> Tuple[float, int]:
        estimate = self.wall_ms(fn)
        n_warm = int(min(100, max(1, self.warmup_ms / max(estimate, 1e-3))))
        n_rep = int(min(1000, max(self.min_reps, self.rep_ms / max(estimate, 1e-3))))
        for _ in range(n_warm):
            fn()
        times = []
        if self.device.type == "cuda":
            starts = [torch.cuda.Event(enable_timing=True) for _ in range(n_rep)]
            ends = [torch.cuda.Event(enable_timing=True) for _ in range(n_rep)]
            for start, end in zip(starts, ends):
                self._flush.zero_()
                start.record()
                fn()
                end.record()
            self.sync()
            times = [s.elapsed_time(e) for s, e in zip(starts, ends)]
        else:
            for _ in range(n_rep):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times), n_rep

    def peak_memory(self, fn, input_bytes: int) -> Tuple[float, float]:
        """(peak GiB counting the inputs, GiB allocated beyond what was live before the call)."""
        if self.device.type != "cuda":
            return float("nan"), float("nan")
        self.sync()
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        fn()
        self.sync()
        extra = torch.cuda.max_memory_allocated(self.device) - before
        return (extra + input_bytes) / GIB, extra / GIB


def make_step(fn, q, k, v, dout, pass_name: str):
    """The callable a pass times: forward only, or forward then the gradients of q, k, v."""
    if pass_name == "fwd":
        def step():
            return fn(q, k, v)
    else:
        def step():
            out = fn(q, k, v)
            return torch.autograd.grad(out, (q, k, v), dout)
    return step


def _errors(a: torch.Tensor, b: torch.Tensor) -> Tuple[float, float]:
    """(||a - b|| / ||b||, max |a - b|), over (batch, head) slices so no fp32 copy of a whole
    large tensor is made; NaN anywhere gives NaN."""
    diff2 = ref2 = 0.0
    max_abs = 0.0
    for x, y in zip(a.detach().flatten(0, 1), b.detach().flatten(0, 1)):
        d = x.float() - y.float()
        diff2 += float(d.square().sum())
        ref2 += float(y.float().square().sum())
        max_abs = max(max_abs, float(d.abs().max()))
    rel = math.sqrt(diff2) / max(math.sqrt(ref2), 1e-30)
    return rel, max_abs


def guard_tolerance(dtype: torch.dtype) -> Tuple[float, float]:
    """(output, gradient) relative error allowed between two implementations in ``dtype``."""
    if dtype == torch.float32:
        return 1e-3, 5e-3    # Triton's fp32 dot runs as tf32
    return 2e-2, 5e-2


# ============================================================================ the runner
class Progress:
    """A progress bar without tqdm: redrawn in place on a terminal, a line per 10% otherwise."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream = max(total, 1), 0, stream
        self.t0 = time.perf_counter()
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self._last_decile = -1

    def add(self, n: int):
        self.total += n

    def update(self, label: str = "", n: int = 1):
        self.done += n
        frac = min(1.0, self.done / self.total)
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        text = (f"[{bar}] {self.done}/{self.total} {100 * frac:3.0f}% "
                f"{_fmt_s(elapsed)} elapsed, ~{_fmt_s(eta)} left  {label}")
        if self.tty:
            self.stream.write("\r" + text[:150].ljust(150))
            if self.done >= self.total:
                self.stream.write("\n")
        elif int(frac * 10) != self._last_decile:
            self._last_decile = int(frac * 10)
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear_line(self):
        if self.tty:
            self.stream.write("\r" + " " * 150 + "\r")


def _fmt_s(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    return f"{int(s // 60)}m{int(s % 60):02d}s"


TABLE_COLUMNS = (("impl", 12), ("pass", 8), ("ms", 10), ("TFLOP/s", 8), ("peak GiB", 9),
                 ("pred ms", 8), ("err", 8), ("note", 0))


class Runner:
    """Runs cases, keeps the rows, prints the table and writes the result files."""

    def __init__(self, args, cfg: Config, device: torch.device, out_dir: Path):
        self.args, self.cfg, self.device, self.out_dir = args, cfg, device, out_dir
        self.dtype = DTYPES[args.dtype]
        self.timer = Timer(device, cfg.warmup_ms, cfg.rep_ms, cfg.min_reps)
        flex_compile = {"on": True, "off": False, "auto": device.type == "cuda"}[args.flex_compile]
        self.peers = Peers(device, self.dtype, flex_compile, flex_dynamic_scaling=args.flex_dynamic_scaling)
        self.rows: List[dict] = []
        self.meta = environment(args, device)
        self.meta["config"] = dataclasses.asdict(cfg)
        self.meta["flex_compiled"] = flex_compile
        self.meta["peer_notes"] = self.peers.notes
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + (args.budget_s if args.budget_s else cfg.budget_s)
        self.suite_deadline = self.deadline
        self.eager_oom_at: Dict[Tuple[str, str, str], int] = {}
        self.progress: Optional[Progress] = None
        self._estimate = self._load_estimate()
        self.gen = torch.Generator(device=device).manual_seed(args.seed)

    # -- helpers
    def _load_estimate(self):
        try:
            from sparseflash.estimate import estimate
            return estimate
        except Exception as exc:  # noqa: BLE001 - an unfinished estimator must not stop a run
            self.meta["estimate_note"] = f"estimate unavailable: {_short(exc, 100)}"
            return None

    def predicted_ms(self, layout: BlockLayout, case: Case, pass_name: str) -> float:
        if self._estimate is None:
            return float("nan")
        try:
            est = self._estimate(layout, case.head_dim, batch=case.batch, dtype=self.dtype,
                                 device=self.args.estimate_device, backward=pass_name == "fwd+bwd")
            return float(est.predicted_ms)
        except Exception as exc:  # noqa: BLE001
            self.meta["estimate_note"] = f"estimate failed: {_short(exc, 100)}"
            return float("nan")

    def over_budget(self, need_s: float = 0.0) -> bool:
        """True once the suite's share of the budget is spent (or fewer than ``need_s`` seconds remain)."""
        return time.perf_counter() + need_s > self.suite_deadline

    def random_inputs(self, case: Case):
        shape = (case.batch, case.heads, case.seq_len, case.head_dim)

        def make():   # drawn on the device: at 1M tokens a CPU draw would take seconds per tensor
            return torch.randn(shape, generator=self.gen, device=self.device, dtype=self.dtype).requires_grad_(True)
        q, k, v = make(), make(), make()
        dout = make().detach()
        return q, k, v, dout

    def cleanup(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- rows
    def base_row(self, case: Case, layout: Optional[BlockLayout], impl: str, pass_name: str) -> dict:
        row = {f: None for f in ROW_FIELDS}
        row.update(suite=case.suite, case=case.name, family=case.family, pattern=case.pattern,
                   target_density=case.target_density, seq_len=case.seq_len, batch=case.batch,
                   heads=case.heads, head_dim=case.head_dim, block_size=case.block_size,
                   causal=case.causal, dtype=self.args.dtype, impl=impl, **{"pass": pass_name})
        if layout is not None:
            factor = FWD_BWD_FACTOR if pass_name == "fwd+bwd" else 1.0
            blocks = 4.0 * case.head_dim * case.block_size ** 2 * layout.nnz * case.batch * factor
            if case.is_dense:
                anchor = 4.0 * case.batch * case.heads * case.seq_len ** 2 * case.head_dim * factor
                anchor /= 2 if case.causal else 1
            else:
                anchor = blocks
            row.update(density=layout.density, nnz=layout.nnz, flops_blocks=blocks, flops_anchor=anchor)
        return row

    def add_row(self, row: dict):
        self.rows.append(row)
        self.print_row(row)
        if self.progress is not None:
            self.progress.update(f"{row['impl']} {row['pass']} {row['case']}")

    def print_header(self, title: str, impl_width: int = 12):
        self.impl_width = impl_width
        self.out(f"\n== {title}")
        self.out("  ".join(name.ljust(self._width(name, width)) if width else name
                           for name, width in TABLE_COLUMNS))

    def _width(self, name: str, width: int) -> int:
        return getattr(self, "impl_width", width) if name == "impl" else width

    def print_case(self, case: Case, layout: Optional[BlockLayout]):
        dens = f" density={layout.density:.3f}" if layout is not None else ""
        self.out(f"-- {case.name}{dens}")

    def out(self, text: str):
        if self.progress is not None:
            self.progress.clear_line()
        print(text, flush=True)

    def print_row(self, r: dict):
        def num(x, fmt):
            return fmt.format(x) if isinstance(x, (int, float)) and x is not None and math.isfinite(x) else "-"
        err = "-" if r.get("err_out_rel") is None else f"{r['err_out_rel']:.1e}" + ("" if r.get("err_ok") else "!")
        note = " ".join(x for x in (r["status"] if r["status"] != "ok" else "", r["note"] or "") if x)
        cells = [r["impl"], r["pass"], num(r["ms"], "{:.3f}"), num(r["tflops"], "{:.1f}"),
                 num(r["peak_mem_gib"], "{:.2f}"), num(r["predicted_ms"], "{:.3f}"), err, note]
        self.out("  ".join(str(c).ljust(self._width(name, w)) if w else str(c)
                           for c, (name, w) in zip(cells, TABLE_COLUMNS)))

    def write(self):
        """results.json (meta + rows) and results.csv; rewritten after every case."""
        self.meta["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        self.meta["date_utc_end"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.out_dir / "results.json.tmp"
        rows = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
                for r in self.rows]   # strict JSON: no NaN
        tmp.write_text(json.dumps({"meta": self.meta, "rows": rows}, indent=1, default=_json_default))
        tmp.replace(self.out_dir / "results.json")
        with open(self.out_dir / "results.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=ROW_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: ("" if v is None else v) for k, v in row.items()})

    # -- one case
    def skip_case(self, case: Case, layout, status: str, note: str):
        for impl in case.impls:
            for p in case.passes:
                row = self.base_row(case, layout, impl, p)
                row.update(status=status, note=note)
                self.add_row(row)

    def run_case(self, case: Case):
        """Build every implementation, call each once, check ours, then time and measure all."""
        if self.over_budget():
            self.skip_case(case, None, "skipped", "time budget")
            return
        try:
            layout = compile_layout(case)
        except Exception as exc:  # noqa: BLE001
            self.skip_case(case, None, "error", f"layout: {_short(exc)}")
            return
        self.print_case(case, layout)
        try:
            q, k, v, dout = self.random_inputs(case)
        except Exception as exc:  # noqa: BLE001
            self.cleanup()
            self.skip_case(case, layout, "oom" if _is_oom(exc) else "error", f"inputs: {_short(exc)}")
            return
        input_bytes = 4 * q.numel() * q.element_size()     # q, k, v, dout
        rows: Dict[Tuple[str, str], dict] = {}
        fns: Dict[str, Callable] = {}
        steps: Dict[Tuple[str, str], Callable] = {}

        # 1. build each implementation and make its first call (compile, JIT, autotune)
        for impl in case.impls:
            status, note = "ok", ""
            try:
                oom_n = self.eager_oom_at.get((case.suite, case.sweep, impl))
                if oom_n is not None and case.seq_len > oom_n:
                    raise Skip(f"oom (already out of memory at N={oom_n})")
                fns[impl] = self.peers.build(impl, case, layout)
                note = getattr(fns[impl], "note", "")
            except Skip as exc:
                status, note = ("oom" if str(exc).startswith("oom") else "skipped"), str(exc)
            except Exception as exc:  # noqa: BLE001 - a failing peer is recorded, never fatal
                status, note = ("oom" if _is_oom(exc) else "error"), f"setup: {_short(exc)}"
                self.cleanup()
            for p in case.passes:
                row = rows[(impl, p)] = self.base_row(case, layout, impl, p)
                row.update(status=status, note=note)
                if impl not in fns:
                    continue
                if p not in getattr(fns[impl], "passes", PASSES):
                    row.update(status="skipped", note=f"no {p} on {self.device.type}")
                    continue
                if self.over_budget():
                    row.update(status="skipped", note="time budget")
                    continue
                step = make_step(fns[impl], q, k, v, dout, p)
                try:
                    row["first_call_ms"] = self.timer.wall_ms(step)
                    steps[(impl, p)] = step
                except Exception as exc:  # noqa: BLE001
                    self._record_failure(case, impl, row, exc)

        # 2. correctness guard, before any timing
        self.guard(case, q, k, v, dout, rows, fns, steps)

        # 3. time and measure memory: the impls interleaved after a heat phase
        #    (benchmarks/timing.py: the GPU runs faster for its first seconds of load)
        self.time_interleaved(case, rows, steps, input_bytes)
        for (impl, p), row in rows.items():
            if impl == "ours":
                row["predicted_ms"] = self.predicted_ms(layout, case, p)
            self.add_row(row)
        del q, k, v, dout, steps, fns
        self.cleanup()
        self.write()

    def time_interleaved(self, case: Case, rows, steps, input_bytes: int):
        """Times every step that ran its first call (``steps``), the impls interleaved: on the GPU
        ``--heat`` seconds of all of them in turn, then ``--rounds`` rounds, every other one
        reversed (:func:`benchmarks.timing.interleaved`); each row's ``ms`` is the mean of its
        rounds' medians (``ms_rounds``), ``reps`` the timed calls of all rounds. A step that
        raises is recorded as before (``_record_failure``) and not called again."""
        todo = list(steps.items())
        if todo and self.over_budget():
            for key, _ in todo:
                rows[key].update(status="skipped", note="time budget")
            return
        failed: Dict[Tuple[str, str], BaseException] = {}
        reps: Dict[Tuple[str, str], int] = {}

        def guarded(key, step):
            def call():
                if key in failed:
                    return None
                try:
                    return step()
                except Exception as exc:  # noqa: BLE001 - recorded below, never fatal
                    failed[key] = exc
                    self.cleanup()
                    return None
            call.key = key
            return call

        def timer(call):
            ms, n = self.timer(call)
            reps[call.key] = reps.get(call.key, 0) + n
            return ms, n
        impls = list(dict.fromkeys(impl for (impl, _), _ in todo))
        jobs = [(impl, tuple(guarded(key, step) for key, step in todo if key[0] == impl),
                 contextlib.nullcontext) for impl in impls]
        res = timing.interleaved(timer, self.device, jobs, rounds=self.args.rounds,
                                 heat_s=timing.gpu_heat(self.device, self.args.heat),
                                 peak=lambda call, dev: self.timer.peak_memory(call, input_bytes))
        for impl, calls, _ in jobs:
            times, peaks = res[impl]
            for call, t, pk in zip(calls, times, peaks):
                row = rows[call.key]
                if call.key in failed:
                    self._record_failure(case, impl, row, failed[call.key])
                    continue
                row["ms"], row["reps"] = timing.mean(t), reps[call.key]
                row["ms_rounds"] = [round(x, 5) for x in t]
                row["peak_mem_gib"], row["extra_mem_gib"] = pk
                secs = row["ms"] / 1e3
                row["tflops_blocks"] = row["flops_blocks"] / secs / 1e12
                row["tflops_anchor"] = row["flops_anchor"] / secs / 1e12
                row["tflops"] = row["tflops_anchor"] if case.is_dense else row["tflops_blocks"]

    def _record_failure(self, case: Case, impl: str, row: dict, exc: BaseException):
        if _is_oom(exc):
            row.update(status="oom", note=_short(exc, 80))
            key = (case.suite, case.sweep, impl)
            if case.sweep:   # larger N of this sweep will not fit either
                self.eager_oom_at[key] = min(self.eager_oom_at.get(key, case.seq_len), case.seq_len)
        else:
            row.update(status="error", note=_short(exc))
            if self.args.verbose:
                traceback.print_exc()
        self.cleanup()

    def guard(self, case: Case, q, k, v, dout, rows, fns, steps):
        """Compare ours with a peer on this case's inputs; the errors go on each row of ours.

        The reference is SDPA (dense) or FlexAttention (sparse), else eager; gradients are
        compared too when both ran forward+backward and a second set of gradients fits.
        """
        ours_rows = [rows[("ours", p)] for p in case.passes if ("ours", p) in rows]
        if ("ours", "fwd") not in steps and ("ours", "fwd+bwd") not in steps:
            return
        prefer = ("sdpa_flash", "sdpa_cudnn", "flex", "eager") if case.is_dense else ("flex", "eager")
        ref = next((r for r in prefer if any((r, p) in steps for p in case.passes)), None)
        note = None
        if ref is None:
            note = "no peer ran: output not checked"
        else:
            with_grad = ("ours", "fwd+bwd") in steps and (ref, "fwd+bwd") in steps
            if with_grad and 8 * q.numel() * q.element_size() > 24 * GIB:
                with_grad, note = False, "gradients not checked at this size"
            try:
                out_ours = fns["ours"](q, k, v)
                out_ref = fns[ref](q, k, v)
                out_rel, out_abs = _errors(out_ours, out_ref)
                grad_rel = None
                if with_grad:
                    g_ours = torch.autograd.grad(out_ours, (q, k, v), dout)
                    g_ref = torch.autograd.grad(out_ref, (q, k, v), dout)
                    grad_rel = max(_errors(a, b)[0] for a, b in zip(g_ours, g_ref))
                    del g_ours, g_ref
                del out_ours, out_ref
                tol_out, tol_grad = guard_tolerance(self.dtype)
                ok = math.isfinite(out_rel) and out_rel <= tol_out and (
                    grad_rel is None or (math.isfinite(grad_rel) and grad_rel <= tol_grad))
                for row in ours_rows:
                    row.update(err_ref=ref, err_out_rel=out_rel, err_out_max_abs=out_abs,
                               err_grad_rel=grad_rel, err_ok=bool(ok))
                if not ok:
                    note = f"CHECK FAILED vs {ref}" + (f"; {note}" if note else "")
            except Exception as exc:  # noqa: BLE001
                note = f"check did not run: {_short(exc, 80)}"
                self.cleanup()
        if note:
            for row in ours_rows:
                row["note"] = f"{row['note']}; {note}" if row["note"] else note

    # -- suites
    def start_suite(self, suite: str, later_weight: float, what: str):
        """Set the suite's deadline: the run's, less a reserve for the suites still to come."""
        now = time.perf_counter()
        total = sum(SUITE_WEIGHTS[s] for s in self.args.suites)
        reserve = RESERVE * later_weight / total * (self.deadline - self.t0)
        self.suite_deadline = max(now, self.deadline - reserve)
        self.print_header(f"suite {suite}: {what}, budget {max(0.0, self.suite_deadline - now):.0f} s",
                          impl_width=36 if suite == "compile" else 12)


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (torch.dtype, Path)):
        return str(x)
    return repr(x)


# ============================================================================ compile suite
def bigbird_strided_mask_mod(seq_len: int, block: int, device):
    """COMPILE_PATTERN as a FlexAttention mask_mod, written as a Flex user would: closed form for
    the band, globals and stride; BigBird's random blocks looked up in a [nq, nk] table."""
    random_blocks = torch.from_numpy(
        sf.compile(sf.random(3), seq_len, block_size=block, cache=False).to_dense()[0]).to(device)

    def mask_mod(b, h, q_idx, kv_idx):
        qb, kb = q_idx // block, kv_idx // block
        band = (qb - kb).abs() <= 3
        glob = (qb < 2) | (kb < 2)
        stride = (qb - kb) % 64 == 0
        return band | glob | stride | random_blocks[qb, kb]
    return mask_mod


def run_compile_suite_rows(runner: Runner) -> None:
    """Mask build time: ours (host) vs FlexAttention's create_block_mask, eager and compiled."""
    cfg, device, timer = runner.cfg, runner.device, runner.timer
    block = cfg.block
    pattern = pattern_from_text(COMPILE_PATTERN)

    def row(impl: str, n: int, **kw) -> dict:
        r = {f: None for f in ROW_FIELDS}
        r.update(suite="compile", case=f"{COMPILE_PATTERN} N={n}", family="bigbird|strided",
                 pattern=COMPILE_PATTERN, seq_len=n, batch=1, heads=1, block_size=block,
                 causal=False, impl=impl, **{"pass": "build"}, status="ok", note="")
        r.update(kw)
        return r

    flex_module = None
    try:
        from torch.nn.attention import flex_attention as flex_module
    except ImportError as exc:
        runner.meta["peer_notes"]["create_block_mask"] = f"unavailable: {_short(exc, 80)}"

    for n in cfg.compile_seq_lens:
        if runner.over_budget():
            runner.add_row(row("sparseflash.compile", n, status="skipped", note="time budget"))
            continue
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            layout = sf.compile(pattern, n, block_size=block, cache=False)
            times.append((time.perf_counter() - t0) * 1e3)
        runner.add_row(row("sparseflash.compile", n, ms=statistics.median(times), first_call_ms=times[0],
                           density=layout.density, nnz=layout.nnz, note="host, uncached"))
        # tables to the device (a fresh layout: nothing cached yet), then Flex's BlockMask
        t0 = time.perf_counter()
        layout.to(device)
        timer.sync()
        runner.add_row(row("sparseflash layout.to(device)", n, ms=(time.perf_counter() - t0) * 1e3,
                           density=layout.density, nnz=layout.nnz))
        if flex_module is not None:
            try:
                times = [timer.wall_ms(lambda: flex_block_mask(layout, device)) for _ in range(3)]
                runner.add_row(row("flex BlockMask.from_kv_blocks(ours)", n, ms=statistics.median(times),
                                   first_call_ms=times[0], reps=3, density=layout.density, nnz=layout.nnz,
                                   note="host tables -> device BlockMask, transposes included"))
            except Exception as exc:  # noqa: BLE001
                runner.add_row(row("flex BlockMask.from_kv_blocks(ours)", n, status="oom" if _is_oom(exc) else "error",
                                   note=_short(exc)))
                runner.cleanup()
    if flex_module is None:
        return
    for compiled, lens in ((False, cfg.cbm_eager_seq_lens), (True, cfg.cbm_compiled_seq_lens)):
        impl = "flex create_block_mask" + (" (_compile=True)" if compiled else " (eager)")
        oom_at = None
        for n in lens:
            # A compiled create_block_mask spends tens of seconds in torch.compile first.
            if runner.over_budget(need_s=45.0 if compiled else 5.0):
                runner.add_row(row(impl, n, status="skipped", note="time budget"))
                continue
            if oom_at is not None:
                runner.add_row(row(impl, n, status="oom", note=f"already out of memory at N={oom_at}"))
                continue
            try:
                mask_mod = bigbird_strided_mask_mod(n, block, device)

                def build():
                    return flex_module.create_block_mask(mask_mod, 1, 1, n, n, device=device, BLOCK_SIZE=block,
                                                     _compile=compiled)
                first = timer.wall_ms(build)
                if timer.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                    before = torch.cuda.memory_allocated(device)
                t0 = time.perf_counter()
                times = []
                for _ in range(3):
                    times.append(timer.wall_ms(build))
                    if time.perf_counter() - t0 > 5:
                        break
                peak = ((torch.cuda.max_memory_allocated(device) - before) / GIB
                        if timer.device.type == "cuda" else None)
                bm = build()
                same = np.array_equal(bm.to_dense()[0, 0].cpu().numpy().astype(bool),
                                      sf.compile(pattern, n, block_size=block).to_dense()[0])
                runner.add_row(row(impl, n, ms=statistics.median(times), first_call_ms=first,
                                   peak_mem_gib=peak, reps=len(times),
                                   note="same blocks as ours" if same else "BLOCKS DIFFER FROM OURS"))
                del bm
            except Exception as exc:  # noqa: BLE001
                if _is_oom(exc):
                    oom_at = n
                runner.add_row(row(impl, n, status="oom" if _is_oom(exc) else "error", note=_short(exc, 100)))
            runner.cleanup()
    runner.write()


def run_external_compile_bench(runner: Runner) -> None:
    """``benchmarks/compile_bench.py`` (issue 2's compile-time targets), when it exists.

    Always its quick case list (the 128K and 1M targets among them): the full list is a host
    CPU benchmark that needs no GPU time. It runs each case in a fresh process and writes
    its own files under ``OUT/compile``.
    """
    def row(**kw) -> dict:
        r = {f: None for f in ROW_FIELDS}
        r.update(suite="compile", case="benchmarks.compile_bench (quick)", family="compile_bench",
                 impl="compile_bench.run_compile_suite", **{"pass": "build"}, status="ok", note="")
        r.update(kw)
        return r

    try:
        from benchmarks import compile_bench
    except ImportError as exc:
        runner.meta["compile_bench"] = f"not run: {_short(exc, 80)}"
        return
    if not hasattr(compile_bench, "run_compile_suite"):
        runner.meta["compile_bench"] = "not run: benchmarks.compile_bench has no run_compile_suite"
        return
    if runner.over_budget(need_s=15.0):    # about what its quick list takes, fresh processes included
        runner.add_row(row(status="skipped", note="time budget"))
        return
    t0 = time.perf_counter()
    try:
        import inspect
        fn = compile_bench.run_compile_suite
        kwargs = {"quick": True} if "quick" in inspect.signature(fn).parameters else {}
        result = fn(str(runner.out_dir / "compile"), **kwargs)
        runner.meta["compile_bench"] = json.loads(json.dumps(result, default=_json_default))
        runner.add_row(row(ms=(time.perf_counter() - t0) * 1e3, note=f"wrote {runner.out_dir / 'compile'}"))
    except Exception as exc:  # noqa: BLE001
        runner.add_row(row(status="error", note=_short(exc), ms=(time.perf_counter() - t0) * 1e3))
    runner.write()


# ============================================================================ planning
# For --dry-run only: a rough wall-time model of a run on an H100, from docs/anchors.md-level
# throughputs (forward, forward+backward TFLOP/s) and guessed first-call (compile/JIT) costs.
PLAN_TFLOPS = {"ours": (400, 300), "flex": (420, 350), "fa4": (650, 600), "sdpa_flash": (320, 290),
               "sdpa_cudnn": (580, 500), "eager": (40, 40)}
PLAN_FIRST_CALL_S = {"flex": 15.0, "ours": 6.0, "fa4": 8.0}     # new shape (Flex) or new config (ours)
PLAN_COMPILE_SUITE_S = {"quick": 20.0, "full": 90.0}


def plan_seconds(cases: Sequence[Case], cfg: Config, flex_dynamic_scaling: bool, rounds: int = 1,
                 heat_s: float = 0.0) -> float:
    """Planned seconds of ``cases``: first calls, then ``rounds`` timings of each pass after
    ``heat_s`` seconds of heat a case."""
    total, seen = 0.0, set()
    for c in cases:
        layout = compile_layout(c)
        total += heat_s
        for impl in c.impls:
            if impl == "flex":
                key = ("flex", c.head_dim) if (flex_dynamic_scaling and c.suite == "scaling") \
                    else ("flex", c.batch, c.heads, c.seq_len, c.head_dim)
            else:
                key = (impl, c.head_dim, c.causal)
            if key not in seen:
                seen.add(key)
                total += PLAN_FIRST_CALL_S.get(impl, 0.5)
            for i, p in enumerate(c.passes):
                factor = FWD_BWD_FACTOR if p == "fwd+bwd" else 1.0
                nnz = (c.heads * layout.num_q_blocks * layout.num_kv_blocks) if impl == "eager" else layout.nnz
                t = 4.0 * c.head_dim * c.block_size ** 2 * nnz * c.batch * factor / (PLAN_TFLOPS[impl][i] * 1e12)
                calls = 4 + rounds * (max(1.0, cfg.warmup_ms / 1e3 / t) + max(cfg.min_reps, cfg.rep_ms / 1e3 / t))
                total += calls * (t + 2e-4)
    return total


# ============================================================================ main
def parse_args(argv: Optional[Sequence[str]] = None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="all", help="dense, sparse, scaling, compile, all, or a comma list")
    p.add_argument("--out", required=True, type=Path, help="directory for results.json, results.csv, plots")
    p.add_argument("--quick", action="store_true", help="a small subset (<= 3 min on an H100, compile warm-up included)")
    p.add_argument("--tiny", action="store_true", help="tiny shapes, for a CPU run of the whole pipeline")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default bf16 on CUDA, fp32 on CPU")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--impls", default=",".join(ALL_IMPLS), help="comma list among " + ",".join(ALL_IMPLS))
    p.add_argument("--budget-s", type=float, default=None,
                   help="wall-clock budget; later cases are recorded as skipped (default: 480 full, 150 quick)")
    p.add_argument("--flex-compile", default="auto", choices=("auto", "on", "off"),
                   help="torch.compile FlexAttention (auto: on CUDA only)")
    p.add_argument("--no-flex-dynamic-scaling", dest="flex_dynamic_scaling", action="store_false",
                   help="compile Flex per shape in the scaling suite too (slower start, no dynamic shapes)")
    p.add_argument("--estimate-device", default="h100", help="device profile for sparseflash.estimate")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=timing.ROUNDS,
                   help="interleaved timing rounds per case, every other one reversed (benchmarks/timing.py)")
    p.add_argument("--heat", type=float, default=3.0,
                   help="seconds of every impl of a case in turn before its rounds, on the GPU (benchmarks/timing.py)")
    p.add_argument("--dry-run", action="store_true", help="list the cases and exit")
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failing implementations")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    suites = SUITES if args.suite == "all" else tuple(s.strip() for s in args.suite.split(","))
    bad = [s for s in suites if s not in SUITES]
    if bad:
        p.error(f"--suite: unknown {bad}; choose from {SUITES} or all")
    args.suites = list(suites)
    impls = tuple(i.strip() for i in args.impls.split(",") if i.strip())
    bad = [i for i in impls if i not in ALL_IMPLS]
    if bad:
        p.error(f"--impls: unknown {bad}; choose from {ALL_IMPLS}")
    args.impl_list = impls
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    if not args.heat >= 0:
        p.error(f"--heat must be a number of seconds >= 0, got {args.heat}")
    return args


def build_cases(args, cfg: Config) -> Dict[str, List[Case]]:
    builders = {"dense": dense_cases, "sparse": sparse_cases, "scaling": scaling_cases}
    return {s: builders[s](cfg, args.impl_list) for s in args.suites if s in builders}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here; use --device cpu --tiny", file=sys.stderr)
        return 2
    if args.dtype is None:
        args.dtype = "bf16" if device.type == "cuda" else "fp32"
    cfg = TINY if args.tiny else QUICK if args.quick else FULL
    if args.tiny and args.quick:
        cfg = dataclasses.replace(TINY, budget_s=QUICK.budget_s)
    cases = build_cases(args, cfg)
    n_measure = sum(len(c.impls) * len(c.passes) for cs in cases.values() for c in cs)
    if args.dry_run:
        for suite, cs in cases.items():
            print(f"== {suite}: {len(cs)} cases")
            for c in cs:
                print(f"  {c.name:<70} {','.join(c.impls)}")
        print(f"{n_measure} measurements" + (" (+ the compile suite)" if "compile" in args.suites else ""))
        if not args.tiny:
            parts = {suite: plan_seconds(cs, cfg, args.flex_dynamic_scaling, args.rounds,
                                         timing.gpu_heat(device, args.heat))
                     for suite, cs in cases.items()}
            if "compile" in args.suites:
                parts["compile"] = PLAN_COMPILE_SUITE_S["quick" if args.quick else "full"]
            print(f"rough H100 wall time (a planning guess, not a measurement): {sum(parts.values()):.0f} s = "
                  + ", ".join(f"{k} {v:.0f} s" for k, v in parts.items())
                  + f"; budget {args.budget_s or cfg.budget_s:.0f} s")
        return 0

    runner = Runner(args, cfg, device, args.out)
    m = runner.meta
    print(f"sparseflash benchmarks: {m['command']}\n  {m.get('gpu') or 'CPU'}, torch {m['torch']}, "
          f"triton {m['triton']}, {m['date_utc']}, mode {m['mode']}, dtype {args.dtype}, "
          f"budget {runner.deadline - runner.t0:.0f} s, {n_measure} measurements", flush=True)
    runner.progress = Progress(n_measure)
    later = sum(SUITE_WEIGHTS[s] for s in args.suites)
    for suite in args.suites:
        later -= SUITE_WEIGHTS[suite]
        try:
            if suite == "compile":
                runner.start_suite(suite, later, "mask build times")
                run_compile_suite_rows(runner)
                run_external_compile_bench(runner)
            else:
                runner.start_suite(suite, later, f"{len(cases[suite])} cases")
                for case in cases[suite]:
                    runner.run_case(case)
        except KeyboardInterrupt:
            runner.meta["interrupted"] = suite
            runner.write()
            raise
        runner.write()
    runner.progress.clear_line()
    runner.write()
    print(f"\nwrote {args.out / 'results.json'} and results.csv ({len(runner.rows)} rows) "
          f"in {time.perf_counter() - runner.t0:.0f} s", flush=True)
    if not args.no_plots:
        try:
            from benchmarks import plots
            for path in plots.make_all(args.out):
                print(f"wrote {path}")
        except ImportError as exc:
            print(f"plots skipped: {exc} (pip install matplotlib)")
        except Exception as exc:  # noqa: BLE001 - plotting must not lose the data
            print(f"plots failed: {_short(exc)}")
    try:
        from benchmarks import report
        print()
        print(report.targets_text(runner.rows, runner.meta))
    except Exception as exc:  # noqa: BLE001
        print(f"targets summary failed: {_short(exc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
