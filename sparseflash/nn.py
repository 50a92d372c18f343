"""Modules: block-sparse attention layers in the style of ``torch.nn.MultiheadAttention``.

:class:`SparseSelfAttention` owns the projections and calls
:func:`sparseflash.sparse_attention`; the pattern, the positions and the masks mean exactly
what they mean there.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .attention import sparse_attention
from .compiler import check_window
from .layout import BlockLayout
from .pattern import Pattern

__all__ = ["SparseSelfAttention"]


class SparseSelfAttention(nn.Module):
    """Multi-head self-attention over a block-sparse pattern.

    ``x -> in_proj -> (q, k, v) -> sparse_attention -> out_proj``, with
    ``head_dim = embed_dim // num_heads``.

    Args:
        embed_dim: model width; a multiple of ``num_heads`` with ``head_dim`` in [16, 256].
        num_heads: query heads.
        pattern: a :class:`~sparseflash.Pattern` (compiled per input shape, cached) or a
            :class:`~sparseflash.BlockLayout`. A layout brings its own ``block_size``,
            ``causal`` and window: leave those arguments at their defaults or repeat the
            layout's values; anything else is a ValueError.
        num_kv_heads: key/value heads (GQA/MQA; default ``num_heads``); must divide
            ``num_heads``. The k and v projections are ``num_kv_heads * head_dim`` wide.
        causal: key u visible to query t iff ``u <= t`` (absolute positions).
        dropout: attention dropout probability, applied inside the kernels in training mode
            (``sparse_attention``'s ``dropout_p``; ``torch.manual_seed`` reproduces it); a no-op
            in eval mode.
        block_size: tokens per layout block.
        window_size: ``(left, right)`` in tokens, -1 = unbounded side, or None.
        bias: add biases to the projections.
        batch_first: x is ``(batch, seq, embed_dim)`` if True (default), else
            ``(seq, batch, embed_dim)``.
        device, dtype: of the parameters.

    Attributes:
        in_proj: ``nn.Linear(embed_dim, (num_heads + 2 * num_kv_heads) * head_dim)``, the
            q, k and v projections fused in that order.
        out_proj: ``nn.Linear(embed_dim, embed_dim)``.
    """

    def __init__(self, embed_dim: int, num_heads: int, pattern: Union[Pattern, BlockLayout], *,
                 num_kv_heads: Optional[int] = None, causal: bool = False, dropout: float = 0.0,
                 block_size: int = 128, window_size: Optional[Tuple[int, int]] = None,
                 bias: bool = True, batch_first: bool = True,
                 device: Union[str, torch.device, None] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        _check_positive_int("embed_dim", embed_dim)
        _check_positive_int("num_heads", num_heads)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a multiple of num_heads ({num_heads})")
        head_dim = embed_dim // num_heads
        if not 16 <= head_dim <= 256:
            raise ValueError(f"embed_dim // num_heads is the head_dim and must be in [16, 256], got "
                             f"{embed_dim} // {num_heads} = {head_dim}")
        if num_kv_heads is None:
            num_kv_heads = num_heads
        _check_positive_int("num_kv_heads", num_kv_heads)
        if num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads ({num_kv_heads}) must divide num_heads ({num_heads})")
        if not isinstance(pattern, (Pattern, BlockLayout)):
            raise TypeError(f"pattern must be a sparseflash Pattern or BlockLayout, got {type(pattern).__name__}")
        if not isinstance(causal, bool):
            raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
        if (isinstance(dropout, bool) or not isinstance(dropout, (int, float))
                or not 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
        _check_positive_int("block_size", block_size)
        window = check_window(window_size)
        for name, value in (("bias", bias), ("batch_first", batch_first)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        if isinstance(pattern, BlockLayout):
            if pattern.num_heads != num_heads:
                raise ValueError(f"pattern: the layout was compiled with num_heads={pattern.num_heads}, "
                                 f"the module has num_heads={num_heads}")
            # the layout's settings win; an argument may repeat them or stay at its default
            for name, given, default, have in (("block_size", block_size, 128, pattern.block_size),
                                               ("causal", causal, False, pattern.causal),
                                               ("window_size", window, None, pattern.window)):
                if given != default and given != have:
                    raise ValueError(f"{name}={given!r} conflicts with the layout's {have!r}; a "
                                     f"BlockLayout brings its own {name}")
            block_size, causal, window = pattern.block_size, pattern.causal, pattern.window

        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.pattern = pattern
        self.causal = causal
        self.dropout = float(dropout)
        self.block_size = block_size
        self.window_size = window
        self.batch_first = batch_first
        factory = {"device": device, "dtype": dtype}
        self.in_proj = nn.Linear(embed_dim, (num_heads + 2 * num_kv_heads) * head_dim, bias=bias, **factory)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # nn.MultiheadAttention's initialisation
        nn.init.xavier_uniform_(self.in_proj.weight)
        if self.in_proj.bias is not None:
            nn.init.zeros_(self.in_proj.bias)
            nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor, key_padding_mask: Optional[Tensor] = None, *,
                cu_seqlens: Optional[Tensor] = None,
                return_lse: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Attend ``x`` to itself.

        Args:
            x: ``(batch, seq, embed_dim)`` (``batch_first``) or ``(seq, batch, embed_dim)``.
            key_padding_mask: bool ``(batch, seq)``, **True = the key may be attended**
                (sparseflash's convention). This is the OPPOSITE of
                ``nn.MultiheadAttention``, where True means "ignore": pass ``~mask`` when
                porting. Only bool masks are accepted (no float/additive masks).
            cu_seqlens: int32 ``(num_docs + 1,)`` offsets of documents packed along the
                sequence axis (batch must be 1); each document attends only to itself.
            return_lse: also return the log-sum-exp ``(batch, num_heads, seq)``.

        Returns:
            ``out`` shaped like x, and ``lse`` if asked.
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            layout = "(batch, seq, embed_dim)" if self.batch_first else "(seq, batch, embed_dim)"
            raise ValueError(f"x must be {layout} with embed_dim={self.embed_dim}, got shape {tuple(x.shape)}")
        if key_padding_mask is not None:
            if not isinstance(key_padding_mask, Tensor) or key_padding_mask.dtype != torch.bool:
                got = key_padding_mask.dtype if isinstance(key_padding_mask, Tensor) else type(key_padding_mask).__name__
                raise TypeError(f"key_padding_mask must be a bool tensor with True = attend (the "
                                f"opposite of nn.MultiheadAttention's True = ignore), got {got}")
        if not self.batch_first:
            x = x.transpose(0, 1)
        B, N, _ = x.shape
        H, Hkv, d = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = self.in_proj(x)                                           # [B, N, (H + 2 Hkv) d]
        q, k, v = qkv.split((H * d, Hkv * d, Hkv * d), dim=-1)
        # (B, N, heads, d) seen as (B, heads, N, d): sparse_attention reads the strides in place
        q = q.unflatten(-1, (H, d)).transpose(1, 2)
        k = k.unflatten(-1, (Hkv, d)).transpose(1, 2)
        v = v.unflatten(-1, (Hkv, d)).transpose(1, 2)
        own = isinstance(self.pattern, BlockLayout)
        out, lse = sparse_attention(
            q, k, v, self.pattern, block_size=None if own else self.block_size,
            causal=None if own else self.causal, window_size=None if own else self.window_size,
            key_padding_mask=key_padding_mask, cu_seqlens=cu_seqlens, return_lse=True,
            dropout_p=self.dropout if self.training else 0.0)
        out = self.out_proj(out.transpose(1, 2).reshape(B, N, H * d))  # [B, N, embed_dim]
        if not self.batch_first:
            out = out.transpose(0, 1)
        return (out, lse) if return_lse else out

    def extra_repr(self) -> str:
        extra = f", num_kv_heads={self.num_kv_heads}" if self.num_kv_heads != self.num_heads else ""
        if self.window_size is not None:
            extra += f", window_size={self.window_size}"
        if self.dropout:
            extra += f", dropout={self.dropout}"
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}{extra}, pattern={self.pattern}, "
                f"causal={self.causal}, block_size={self.block_size}, batch_first={self.batch_first}")


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
