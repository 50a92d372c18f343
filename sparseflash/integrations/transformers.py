"""Hugging Face transformers integration: sparseflash as an attention implementation.

    import sparseflash as sf
    from sparseflash.integrations.transformers import register

    name = register(sf.local(4) | sf.global_blocks(1), block_size=128)   # "block_sparse"
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=name)

:func:`register` adds an attention function and the mask function it needs (the 2-D padding
mask, as for FlashAttention-2) under ``name``. The model's attention modules then call
:func:`sparseflash.sparse_attention` with their query, key and value states (GQA as they are,
the KV cache's keys included), their ``scaling``, the padding from ``attention_mask`` (left or
right) and ``dropout`` during training. Generation with a KV cache works: a decode step's query
sits at the end of the cache, as sparse_attention's bottom-right positions put it. Positions
are those of the tensors, so with left padding a sequence's pattern starts at the padding,
the same with and without a cache.

transformers rejects implementation names containing "flash", so ``name`` may not.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from ..layout import BlockLayout
from ..pattern import Pattern

__all__ = ["register"]


def register(pattern: Union[Pattern, BlockLayout], *, block_size: int = 128,
             name: str = "block_sparse") -> str:
    """Register sparseflash with transformers as attention implementation ``name`` (returned).

    Args:
        pattern: the block pattern every attention layer uses (a Pattern, compiled per shape
            and cached; or a BlockLayout, which then fixes the lengths).
        block_size: tokens per block for a Pattern.
        name: the ``attn_implementation`` name; must not contain "flash" (transformers
            reserves those names).
    """
    if not isinstance(pattern, (Pattern, BlockLayout)):
        raise TypeError(f"pattern must be a sparseflash Pattern or BlockLayout, got {type(pattern).__name__}")
    if not isinstance(name, str) or not name or "flash" in name.lower():
        raise ValueError(f"name must be a non-empty string without 'flash' (transformers rejects those), got {name!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 16:
        raise ValueError(f"block_size must be an int >= 16, got {block_size!r}")
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("sparseflash.integrations.transformers needs transformers >= 4.56: "
                          "pip install transformers") from exc
    from ..attention import sparse_attention

    def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                  value: torch.Tensor, attention_mask: Optional[torch.Tensor],
                  dropout: float = 0.0, scaling: Optional[float] = None,
                  is_causal: Optional[bool] = None, **kwargs) -> Tuple[torch.Tensor, None]:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        kpm = None
        if attention_mask is not None:
            if attention_mask.dim() != 2 or attention_mask.shape[1] != key.shape[2]:
                raise ValueError(
                    f"{name}: expected a (batch, kv_len) padding mask matching the keys "
                    f"({key.shape[2]}), got shape {tuple(attention_mask.shape)}; a static cache "
                    f"(keys longer than the tokens seen) is not supported")
            kpm = attention_mask.bool()
        layout_kw = {} if isinstance(pattern, BlockLayout) else dict(block_size=block_size, causal=bool(causal))
        out = sparse_attention(query, key, value, pattern, scale=scaling, key_padding_mask=kpm,
                               dropout_p=float(dropout) if module.training else 0.0, **layout_kw)
        return out.transpose(1, 2).contiguous(), None      # (batch, seq, heads, head_dim)

    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, flash_attention_mask)
    return name
