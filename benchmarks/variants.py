"""One cell of a config-sweep table: run a variant, check it against the first variant's
result, time it under CUDA graphs (no host time). Used by the fwd/bwd config probes."""
import triton.testing


def rel_err(got, ref) -> float:
    """Worst max|got - ref| / max|ref| over the tensors of a result."""
    got = got if isinstance(got, (tuple, list)) else (got,)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    return max(((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-6)).item()
               for a, b in zip(got, ref))


def time_cell(name: str, fn, ref, width: int, tol: float = 2e-2):
    """Returns (cell text, reference): ms right-aligned in ``width``, '!' when the result is
    off by more than ``tol`` from ``ref`` (the first variant's result, which it becomes when
    ``ref`` is None), 'err' when the variant fails (the error is printed)."""
    try:
        out = fn()
        ref = out if ref is None else ref
        bad = rel_err(out, ref) > tol
        ms = triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median")
        return f"{ms:>{width}.3f}{'!' if bad else ' '}", ref
    except Exception as e:  # noqa: BLE001 -- a variant that fails (e.g. out of shared memory) is a cell
        print(f"  {name}: {type(e).__name__}: {str(e)[:120]}")
        return f"{'err':>{width}} ", ref
