"""Shared test setup.

Without CUDA, the Triton kernels run under Triton's interpreter. Triton 3.6 reads
TRITON_INTERPRET when a kernel is decorated (at import of sparseflash.kernels.fwd/bwd), so
it is set here, before any test module imports them. With CUDA the compiled kernels run.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# SPARSEFLASH_REPORT_EARLY=1 (benchmarks/gpu_shards.sh sets it) prints each failure's report
# the moment it happens: a GPU shard cut by its time limit never reaches pytest's summary, and
# its failures would otherwise be lost.
_CONFIG = None


def pytest_configure(config):
    global _CONFIG
    _CONFIG = config


def pytest_runtest_logreport(report):
    if os.environ.get("SPARSEFLASH_REPORT_EARLY") != "1" or not report.failed or _CONFIG is None:
        return
    reporter = _CONFIG.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    text = str(report.longrepr)
    reporter.write_line("")
    reporter.write_line(f"EARLY FAILED {report.nodeid} ({report.when})")
    reporter.write_line(text[-4000:])
