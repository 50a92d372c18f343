"""Command line: ``sparseflash show | presets | demo`` (also ``python -m sparseflash``).

Expected errors (bad patterns, bad arguments) print one line to stderr and exit non-zero.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from typing import List, Optional

import torch

from .estimate import DEVICES, estimate, get_device
from .pattern import Pattern

__all__ = ["main"]

# The demo's default pattern, in the text form; _cmd_demo composes the same in Python.
DEMO_EXPR = "bigbird(window=2, globals=1, random=2) | strided(32)"
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class _CliError(Exception):
    """An error worth one line on stderr."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's default prints the whole usage block
        raise _CliError(f"{message} (see '{self.prog} --help')")


def _tokens(text: str) -> int:
    """A token count: ``16384``, ``16k`` or ``1M`` (k = 1024)."""
    scale = {"k": 1024, "m": 1024 ** 2}.get(text[-1:].lower(), 1)
    digits = text[:-1] if scale > 1 else text
    try:
        value = int(digits) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a token count such as 4096 or 16k, got {text!r}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive token count, got {text!r}")
    return value


def _checked(text: str, convert, ok, expected: str):
    """``convert(text)`` if it parses and passes ``ok``, else an argparse error saying what was
    expected."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _positive(text: str) -> int:
    return _checked(text, int, lambda v: v > 0, "a positive integer")


def _positive_float(text: str) -> float:
    return _checked(text, float, lambda v: v > 0 and math.isfinite(v), "a positive number")


def _probability(text: str) -> float:
    """A dropout probability in [0, 1)."""
    return _checked(text, float, lambda v: 0 <= v < 1, "a probability in [0, 1)")


def _softcap(text: str) -> float:
    """A softcap: a finite float >= 0 (0: off)."""
    return _checked(text, float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0 (0: off)")


def _param(text: str):
    """``KEY=VALUE`` for a preset parameter; VALUE is an int or a list of ints."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        if value.startswith("[") and value.endswith("]"):
            parsed = [int(v) for v in value[1:-1].split(",") if v.strip()]
        else:
            parsed = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or a list like [0,-1] in {text!r}")
    return key, parsed


# ----------------------------------------------------------------------------- helpers
def _resolve_pattern(text: str, params) -> Pattern:
    """A preset name (with ``--param`` overrides) or a pattern in the text form."""
    from . import load, parse, presets

    if text in presets():
        return load(text, **dict(params))
    if params:
        raise _CliError(f"--param applies to presets only, and {text!r} is not one "
                        f"(presets: {', '.join(presets())})")
    return parse(text)


def _compile_timed(pattern: Pattern, seq_len: int, **kwargs):
    from . import compile

    t0 = time.perf_counter()
    layout = compile(pattern, seq_len, **kwargs)
    return layout, (time.perf_counter() - t0) * 1e3


def _summary(layout, compile_ms: float) -> str:
    return (f"grid {layout.num_q_blocks}x{layout.num_kv_blocks} blocks of {layout.block_size} x "
            f"{layout.num_heads} head(s): density {layout.density:.2%}, nnz {layout.nnz:,} "
            f"({layout.num_full:,} full, {layout.num_partial:,} partial), "
            f"{layout.max_row_blocks} key blocks max per query block; compiled in {compile_ms:.2f} ms")


def _print_estimates(layout, head_dim: int, batch: int, dtype, device: str, **options) -> list:
    """Print and return the forward and forward+backward estimates; ``options``: estimate()'s
    dropout_p, softcap, alibi."""
    estimates = []
    for backward in (False, True):
        estimates.append(estimate(layout, head_dim, batch=batch, dtype=dtype, device=device,
                                  backward=backward, **options))
        print()
        print(estimates[-1])
    return estimates


def _add_layout_args(p: argparse.ArgumentParser, *, seq_len: Optional[int], kv_len: bool) -> None:
    p.add_argument("--seq-len", type=_tokens, required=seq_len is None, default=seq_len,
                   help="query length in tokens (16k = 16384)" +
                        (f"; default {seq_len}" if seq_len else ""))
    if kv_len:
        p.add_argument("--kv-len", type=_tokens, default=None, help="key length in tokens (default: seq-len)")
    p.add_argument("--block-size", type=_positive, default=128, help="tokens per block (default 128)")
    p.add_argument("--causal", action="store_true", help="token-level causal mask, bottom-right aligned")
    p.add_argument("--width", type=_positive, default=64, help="ASCII map width in characters")


def _add_estimate_args(p: argparse.ArgumentParser, *, heads: int, head_dim: int, shape: bool) -> None:
    p.add_argument("--heads", type=_positive, default=heads, help=f"attention heads (default {heads})")
    p.add_argument("--head-dim", type=_positive, default=head_dim, help=f"head dim d (default {head_dim})")
    if shape:
        p.add_argument("--batch", type=_positive, default=1, help="batch size for the estimate (default 1)")
        p.add_argument("--dtype", choices=sorted(_DTYPES), default="bf16", help="dtype for the estimate")
        p.add_argument("--dropout", type=_probability, default=0.0, metavar="P",
                       help="attention dropout for the estimate (default 0)")
        p.add_argument("--softcap", type=_softcap, default=0.0, metavar="CAP",
                       help="softcap for the estimate (default 0: off)")
        p.add_argument("--alibi", action="store_true", help="estimate with ALiBi slopes")
    p.add_argument("--device", dest="gpu", default="h100",
                   help=f"GPU profile for the estimate: {', '.join(sorted(DEVICES))} (default h100)")


def _check_device(name: str) -> None:
    try:
        get_device(name)
    except ValueError:
        raise ValueError(f"--device: unknown GPU profile {name!r}; choose from "
                         f"{', '.join(sorted(DEVICES))}") from None


def _check_png(path: str) -> None:
    """Fail before any work if the figure could not be written: no matplotlib, a folder that
    does not exist, or an extension matplotlib cannot write."""
    from pathlib import Path

    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise ImportError("--png needs matplotlib: pip install 'sparseflash[viz]'") from None
    folder = Path(path).parent
    if not folder.is_dir():
        raise ValueError(f"--png: folder {str(folder)!r} does not exist")
    kinds = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in kinds:
        raise ValueError(f"--png: cannot tell the image format of {path!r}; use one of the "
                        f"extensions {', '.join('.' + k for k in sorted(kinds))}")


def _check_show_args(args) -> None:
    """Argument errors that would otherwise surface only after the map is drawn (exit 1)."""
    _check_device(args.gpu)
    if not 0 <= args.head < args.heads:
        raise ValueError(f"--head must be in [0, {args.heads}) for --heads {args.heads}, got {args.head}")
    if args.world > 1:
        unit = args.world * args.block_size * (2 if args.sharding == "zigzag" else 1)
        if args.kv_len not in (None, args.seq_len):
            raise ValueError("--world: context parallelism splits one sequence of queries and keys; "
                             "leave --kv-len unset")
        if args.seq_len % unit:
            raise ValueError(f"--world {args.world}: --seq-len {args.seq_len} must be a multiple of {unit} "
                             f"(world x block_size{' x 2 for zigzag' if args.sharding == 'zigzag' else ''}: "
                             f"a block lives on one rank)")
        if args.alibi and args.sharding != "contiguous":
            raise ValueError("--alibi across ranks needs --sharding contiguous")
    elif args.link_gbps is not None:
        raise ValueError("--link-gbps needs --world 2 or more")
    if args.png:
        _check_png(args.png)


# ----------------------------------------------------------------------------- commands
def _cmd_show(args) -> int:
    _check_show_args(args)
    pattern = _resolve_pattern(args.pattern, args.param)
    layout, compile_ms = _compile_timed(pattern, args.seq_len, kv_len=args.kv_len,
                                        block_size=args.block_size, causal=args.causal,
                                        num_heads=args.heads)
    picture = layout.to_string(width=args.width, head=args.head)
    print(f"pattern: {pattern}")
    print(picture)
    print(_summary(layout, compile_ms))
    estimates = _print_estimates(layout, args.head_dim, args.batch, _DTYPES[args.dtype], args.gpu,
                                 dropout_p=args.dropout, softcap=args.softcap, alibi=args.alibi)
    if args.world > 1:
        _print_shards(pattern, [e.predicted_ms for e in estimates], args)
    if args.png:
        from .visualize import plot

        plot(layout, args.png)
        print(f"\nwrote {args.png}")
    return 0


def _print_shards(pattern: Pattern, one: List[float], args) -> None:
    """Per rank of ``sparseflash.distributed.sparse_attention`` on ``args.world`` ranks
    (:func:`sparseflash.distributed.estimate_ranks`), and the slowest rank against one GPU
    (``one``: its forward and forward+backward ms, as printed above).
    The exchange is counted in bytes (and in ms at ``--link-gbps``), not overlapped."""
    from .distributed import estimate_ranks

    dtype = _DTYPES[args.dtype]
    options = dict(dropout_p=args.dropout, softcap=args.softcap, alibi=args.alibi)
    ranks = estimate_ranks(pattern, args.seq_len, args.world, head_dim=args.head_dim, num_heads=args.heads,
                           batch=args.batch, block_size=args.block_size, causal=args.causal,
                           sharding=args.sharding, dtype=dtype, device=args.gpu, **options)
    print(f"\ncontext parallel (sparseflash.distributed): {args.world} ranks, {args.sharding} shards of "
          f"{args.seq_len // args.world:,} tokens; per rank its plan and the estimate of its one call over its buffers")
    link = f"  {'K/V in ms':>9}" if args.link_gbps else ""
    print(f"  {'rank':>4}  {'blocks':>9}  {'K/V blocks in':>13}  {'guests':>6}  {'K/V in MB':>9}{link}  "
          f"{'fwd ms':>8}  {'fwd+bwd ms':>10}")
    for r in ranks:
        link = f"  {r.kv_bytes_in / args.link_gbps / 1e6:9.3f}" if args.link_gbps else ""
        print(f"  {r.rank:>4}  {r.blocks:>9,}  {r.key_blocks_received:>13,}  {r.guest_blocks:>6,}  "
              f"{r.kv_bytes_in / 1e6:9.1f}{link}  {r.forward_ms:8.3f}  {r.forward_backward_ms:10.3f}")
    worst_f = max(r.forward_ms for r in ranks)
    worst_fb = max(r.forward_backward_ms for r in ranks)
    print(f"  slowest rank {worst_f:.3f} ms forward, {worst_fb:.3f} ms forward+backward against "
          f"{one[0]:.3f} / {one[1]:.3f} on one GPU: at most {one[0] / worst_f:.2f}x / {one[1] / worst_fb:.2f}x "
          f"(compute only; the backward sends the received blocks' dK/dV home, as many bytes again)")


def _cmd_presets(args) -> int:
    from . import load, presets
    from .presets import describe

    names = presets()
    width = max((len(n) for n in names), default=0)
    rows = [(name, str(load(name)), describe(name).title) for name in names]
    text_width = max((len(text) for _, text, _ in rows), default=0)
    for name, text, title in rows:  # the text form with defaults; '#' starts a comment there
        print(f"{name:<{width}}  {text:<{text_width}}  # {title}")
    return 0


def _cmd_demo(args) -> int:
    from . import bigbird, parse, strided

    _check_device(args.gpu)

    # 1. compose a pattern with the algebra; its text form parses back to the same value
    if args.pattern is None:
        pattern = bigbird(window=2, globals=1, random=2) | strided(32)
        print("pattern = bigbird(window=2, globals=1, random=2) | strided(32)")
        print(f"  text form {str(pattern)!r}; parse(text) == pattern: {parse(str(pattern)) == pattern}")
    else:
        pattern = parse(args.pattern)
        print(f"pattern: {pattern}")

    # 2. compile it at the demo length, then again to show the cache
    layout, compile_ms = _compile_timed(pattern, args.seq_len, block_size=args.block_size,
                                        causal=args.causal, num_heads=args.heads)
    _, cached_ms = _compile_timed(pattern, args.seq_len, block_size=args.block_size,
                                  causal=args.causal, num_heads=args.heads)
    print(layout.to_string(width=args.width))
    print(_summary(layout, compile_ms) + f" (cached: {cached_ms * 1e3:.0f} us)")

    # 3. estimate it against dense FlashAttention and standard attention
    _print_estimates(layout, args.head_dim, 1, torch.bfloat16, args.gpu)

    # 4. run it on the device present and check it against the float64 reference
    print()
    return _demo_run(args, pattern)


def _demo_run(args, pattern: Pattern) -> int:
    from . import compile, from_mask
    from .attention import sparse_attention
    from .reference import reference_attention

    cuda = torch.cuda.is_available() and args.run_device != "cpu"
    if args.run_device == "cuda" and not cuda:
        raise _CliError("--run-device cuda but torch.cuda.is_available() is False")
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        backend, dtype, seq_len, heads = "triton", torch.bfloat16, args.seq_len, args.heads
        head_dim = args.head_dim
    else:  # the blockwise torch backend at a size that runs in seconds
        backend, dtype, seq_len = "torch", torch.float32, min(args.seq_len, args.cpu_seq_len)
        heads, head_dim = pattern.num_heads or min(args.heads, 4), min(args.head_dim, 64)
    layout = compile(pattern, seq_len, block_size=args.block_size, causal=args.causal,
                     num_heads=heads)
    gen = torch.Generator(device="cpu").manual_seed(0)
    q, k, v, grad_out = (torch.randn(1, heads, seq_len, head_dim, generator=gen).to(device, dtype)
                         for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(f"attention on {name} (backend={backend}, {str(dtype).replace('torch.', '')}): "
          f"B=1 H={heads} N={seq_len} d={head_dim}, block {args.block_size}, "
          f"density {layout.density:.2%}")

    def forward():
        return sparse_attention(q, k, v, layout, causal=args.causal, backend=backend)

    def forward_backward():
        out = forward()
        return torch.autograd.grad(out, (q, k, v), grad_out)

    fwd_ms = _time_ms(forward, device, args.repeats)
    both_ms = _time_ms(forward_backward, device, args.repeats)
    out = forward()
    grads = torch.autograd.grad(out, (q, k, v), grad_out)

    # reference: float64, dense-masked, on head 0 only (its N x N scores must fit)
    ref_layout = compile(from_mask(layout.to_dense()[0]), seq_len, block_size=args.block_size,
                         causal=args.causal)
    q0, k0, v0 = (t[:, :1].detach().double().requires_grad_(True) for t in (q, k, v))
    ref_out, _ = reference_attention(q0, k0, v0, ref_layout)
    ref_grads = torch.autograd.grad(ref_out, (q0, k0, v0), grad_out[:, :1].double())
    fwd_err = _max_rel_err(out[:, :1], ref_out)
    bwd_err = max(_max_rel_err(g[:, :1], r) for g, r in zip(grads, ref_grads))
    tol = {torch.float32: 1e-4, torch.float16: 1e-2}.get(dtype, 3e-2)
    ok = fwd_err <= tol and bwd_err <= tol   # NaN compares False

    line = "  {:<18}{:>10.3f} ms   max |err| / max |ref| vs float64 reference (head 0): {:.1e}  {}"
    print(line.format("forward", fwd_ms, fwd_err, "ok" if fwd_err <= tol else f"FAIL (> {tol:g})"))
    print(line.format("forward+backward", both_ms, bwd_err,
                      "ok (worst of dq, dk, dv)" if bwd_err <= tol else f"FAIL (> {tol:g})"))
    if cuda:
        profile = _profile_for(name)
        for ms, backward in ((fwd_ms, False), (both_ms, True)):
            est = estimate(layout, head_dim, dtype=dtype, device=profile, backward=backward)
            print(f"  {'forward+backward' if backward else 'forward':<18}{est.flops / ms / 1e9:>7.0f} "
                  f"TFLOP/s measured; the {profile} roofline predicts {est.predicted_ms:.3f} ms")
    return 0 if ok else 1


def _max_rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| over max |ref| (NaN anywhere gives NaN, which fails every check)."""
    return ((got.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def _time_ms(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def _profile_for(gpu_name: str) -> str:
    lowered = gpu_name.lower()
    return next((key for key in DEVICES if key in lowered), "h100")


# ----------------------------------------------------------------------------- entry point
def _build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="sparseflash", description=(
        "Block-sparse FlashAttention: show a pattern's layout and cost, list presets, run the demo."))
    parser.add_argument("--version", action="version", version=f"sparseflash {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{show,presets,demo}", parser_class=_Parser)
    sub.required = True

    show = sub.add_parser("show", help="ASCII map, density, compile time and cost estimate of a pattern")
    show.add_argument("pattern", metavar="EXPR_OR_PRESET",
                      help="a preset name or a pattern in the text form, e.g. 'local(2) | global_blocks(1)'")
    show.add_argument("-p", "--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                      help="override a preset parameter (repeatable)")
    _add_layout_args(show, seq_len=None, kv_len=True)
    _add_estimate_args(show, heads=1, head_dim=128, shape=True)
    show.add_argument("--head", type=int, default=0, help="head to draw in the ASCII map (default 0)")
    show.add_argument("--png", metavar="FILE", help="also save a matplotlib figure of the layout")
    show.add_argument("--world", type=_positive, default=1,
                      help="also plan context parallelism on this many ranks (default 1: off)")
    show.add_argument("--sharding", choices=("contiguous", "zigzag"), default="contiguous",
                      help="with --world: how the sequence is cut (default contiguous)")
    show.add_argument("--link-gbps", type=_positive_float, default=None, metavar="GB/S",
                      help="with --world: the link between ranks, to turn K/V bytes into ms")
    show.set_defaults(func=_cmd_show)

    presets = sub.add_parser("presets", help="list the named presets with their default expressions")
    presets.set_defaults(func=_cmd_presets)

    demo = sub.add_parser("demo", help="compose, compile, show, estimate and run a pattern end to end")
    demo.add_argument("--pattern", default=None, help=f"pattern text (default: {DEMO_EXPR})")
    _add_layout_args(demo, seq_len=16384, kv_len=False)
    _add_estimate_args(demo, heads=16, head_dim=128, shape=False)
    demo.add_argument("--run-device", choices=("auto", "cpu", "cuda"), default="auto",
                      help="where to run attention (auto: cuda if present)")
    demo.add_argument("--cpu-seq-len", type=_tokens, default=4096,
                      help="sequence length of the CPU run (default 4096)")
    demo.add_argument("--repeats", type=_positive, default=3, help="timed repeats (median)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 failed check or bad input, 2 usage)."""
    from .pattern import PatternError

    try:
        parser = _build_parser()
        argv = sys.argv[1:] if argv is None else list(argv)
        if not argv:
            parser.print_help()
            return 0
        args = parser.parse_args(argv)
        return args.func(args)
    except _CliError as exc:
        print(f"sparseflash: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print("sparseflash: error: out of memory; use a larger --block-size or a shorter --seq-len",
              file=sys.stderr)
        return 1
    except (ValueError, TypeError, ImportError, OSError) as exc:
        text = str(exc)
        if isinstance(exc, PatternError):  # its later lines draw a caret under the position
            text = text.strip().splitlines()[0] if text.strip() else text
        message = " ".join(text.split()) or type(exc).__name__
        print(f"sparseflash: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
