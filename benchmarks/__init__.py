"""Benchmarks of sparseflash against SDPA, cuDNN, FlexAttention and eager attention.

One entry point, ``python -m benchmarks.run``; see ``benchmarks/README.md``.
"""
