"""sparseflash: block-sparse FlashAttention with a pattern DSL, a millisecond mask compiler,
an IO-cost estimator and Triton kernels.

The data path, one module per stage: pattern -> compiler -> layout -> kernels -> attention.
"""
from .pattern import (
    Pattern, PatternError, dense, local, strided, dilated, rows, columns, global_blocks,
    random, butterfly, fixed, bigbird, longformer, from_mask, from_fn, per_head,
)
from .layout import BlockLayout
from .compiler import compile, compile_cache_clear, compile_cache_info
from .attention import sparse_attention
from .parser import parse
from .presets import load, presets  # note: binds sparseflash.presets to the function
from .estimate import estimate, CostEstimate, DeviceProfile, DEVICES, register_device
from .visualize import plot

__version__ = "0.1.0"
