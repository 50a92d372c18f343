"""Shared test setup.

Without CUDA, the Triton kernels run under Triton's interpreter. Triton 3.6 reads
TRITON_INTERPRET when a kernel is decorated (at import of sparseflash.kernels.fwd/bwd), so
it is set here, before any test module imports them. With CUDA the compiled kernels run.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
