"""Triton kernels for block-sparse FlashAttention.

``fwd.py`` and ``bwd.py`` hold pure ``@triton.jit`` code (and ``build.py`` the kernels that
build device layouts' tables, launched from :mod:`sparseflash.dynamic`); ``launch.py`` holds the launchers
(shapes, grids, allocation, per-(head_dim, block, dtype) configs). Importing this package
does not import Triton: the launchers are imported on first use, so ``TRITON_INTERPRET=1``
set before that takes effect.
"""
