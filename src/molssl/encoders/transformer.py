"""Transformer with an additive per-head attention bias, for padded molecules; pre- or post-LN.

Graph transformers (Graphormer, MoleBLEND) inject structure through a bias added to the attention
logits of every head, ``softmax(q k^T / sqrt(d) + bias) v``, and run on padded batches
``(B, Nmax, D)`` with a ``node_mask`` (``True`` = real atom). The bias and the padding are folded
into one float mask for :func:`torch.nn.functional.scaled_dot_product_attention`, which picks a
fused kernel where the device has one.

Padding never leaks: padded keys get a large negative logit (finite, so that a row with no real
key at all, e.g. a padded query row or an empty molecule, gives a uniform softmax rather than
NaN), and padded rows are zeroed after every block so they carry nothing from layer to layer.
By default the blocks run on the real tokens only and attend per size bucket of molecules
(:mod:`molssl.encoders.packed_layout`), which gives the same outputs with less work.

Stochastic depth (:class:`DropPath`, Huang et al. 2016) is available on both residual branches
of every block, off by default (``drop_path=0``), so Graphormer and every existing model are
unchanged unless a config asks for it; MoleBLEND pre-trains with it.

Blocks are pre-LN by default (``norm_first=True``: ``x + f(LN(x))``, then a final LayerNorm on
the stack), as the Graphormer paper and its original code (``graphormer/model.py``,
``EncoderLayer`` and ``final_ln``); ``norm_first=False`` gives post-LN blocks
(``LN(x + f(x))``, no final LayerNorm), MoleBLEND's arrangement
(``MoleBlend/modules/moleblend_encoder_layer.py`` with ``sandwich_ln`` off).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molssl.encoders.packed_layout import PackedLayout, bucketed_attention


def masked_logit_value(dtype: torch.dtype) -> float:
    """Logit given to padded keys: very negative, yet far enough from the dtype's limit that
    adding an attention score cannot overflow to ``-inf`` (which would turn an all-padded row
    into NaN)."""
    return torch.finfo(dtype).min / 2


def build_attention_mask(
    attn_bias: Tensor | None,
    node_mask: Tensor | None,
    dtype: torch.dtype,
) -> Tensor | None:
    """The float mask for ``scaled_dot_product_attention``: the bias with padded keys masked.

    Args:
        attn_bias: Additive per-head bias ``(B, H, N, N)`` (query rows, key columns), or any shape
            that broadcasts to it, or ``None``.
        node_mask: ``(B, N)`` bool, ``True`` at real positions, or ``None`` (nothing padded).
        dtype: dtype of the queries; the mask must match it.

    Returns:
        A float tensor broadcastable to ``(B, H, N, N)``, or ``None`` when there is neither a bias
        nor padding.
    """
    if node_mask is None:
        return None if attn_bias is None else attn_bias.to(dtype)
    padded_keys = ~node_mask[:, None, None, :]
    if attn_bias is None:
        mask = torch.zeros(padded_keys.shape, dtype=dtype, device=node_mask.device)
    else:
        mask = attn_bias.to(dtype)
    # Replace (not add) so that the value cannot overflow whatever the bias is.
    return mask.masked_fill(padded_keys, masked_logit_value(dtype))


class DropPath(nn.Module):
    """Stochastic depth on a residual branch: drop the whole branch of a molecule at random.

    In training, each molecule's branch output is kept with probability ``1 - p`` and then
    scaled by ``1 / (1 - p)``, so its expectation is the branch itself; in evaluation, and for
    ``p = 0``, this is the identity. The draw is per molecule (dimension 0 of a batch-first
    ``(B, N, D)`` tensor), the same for all its atoms, as stochastic depth is defined. (The
    ``DropPath`` of MoleBLEND's ``modules/droppath.py`` also draws along dimension 0, but its
    blocks run time-first ``(N, B, D)``, so there it drops an atom position for the whole batch.)

    Args:
        p: Drop probability, in ``[0, 1)``.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: Tensor, groups: Tensor | None = None, num_groups: int = 0) -> Tensor:
        """``x`` with each molecule's row zeroed with probability ``p`` (training only).

        With ``groups`` (the molecule of each row of a packed ``(T, D)`` tensor, ``num_groups``
        molecules), the draw is per molecule all the same: the ``num_groups`` draws of the
        padded layout, spread to the molecule's rows.
        """
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        if groups is not None:
            mask = torch.empty(num_groups, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
            return x * mask.index_select(0, groups) / keep
        shape = (x.size(0),) + (1,) * (x.dim() - 1)
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class BiasedSelfAttention(nn.Module):
    """Multi-head self-attention whose logits receive an additive float mask (bias + padding).

    Args:
        hidden_channels: Model width ``D``; must be divisible by ``num_heads``.
        num_heads: Number of heads ``H``.
        attention_dropout: Dropout on the attention weights (training only).
    """

    def __init__(
        self, hidden_channels: int, num_heads: int, attention_dropout: float = 0.0
    ) -> None:
        super().__init__()
        if hidden_channels % num_heads != 0:
            raise ValueError(
                f"hidden_channels ({hidden_channels}) must be divisible by num_heads ({num_heads})"
            )
        self.num_heads = num_heads
        self.head_dim = hidden_channels // num_heads
        self.attention_dropout = attention_dropout
        self.qkv = nn.Linear(hidden_channels, 3 * hidden_channels)
        self.out_proj = nn.Linear(hidden_channels, hidden_channels)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """Attend within each molecule.

        Args:
            x: ``(B, N, D)``.
            attn_mask: Float mask added to the logits, broadcastable to ``(B, H, N, N)``
                (see :func:`build_attention_mask`), or ``None``.

        Returns:
            ``(B, N, D)``.
        """
        batch_size, num_nodes, _ = x.shape
        qkv = self.qkv(x).view(batch_size, num_nodes, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attn_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        out = out.transpose(1, 2).reshape(batch_size, num_nodes, -1)
        return self.out_proj(out)

    def forward_packed(self, x: Tensor, layout: PackedLayout) -> Tensor:
        """:meth:`forward` on the real tokens only, ``x (T, D)`` packed as ``layout`` says: the
        projections run on the ``T`` real tokens, the attention itself on padded blocks
        (:func:`~molssl.encoders.packed_layout.bucketed_attention`)."""
        dropout_p = self.attention_dropout if self.training else 0.0
        return self.out_proj(bucketed_attention(self.qkv(x), layout, self.num_heads, dropout_p))


class TransformerLayer(nn.Module):
    """Transformer block, pre-LN (``x + attn(LN(x))`` then ``x + FFN(LN(x))``) or post-LN
    (``LN(x + attn(x))`` then ``LN(x + FFN(x))``).

    Either way, a branch's output passes its dropout and then its drop-path before the residual
    addition, as in MoleBLEND's ``moleblend_encoder_layer.py`` (where drop-path, when on,
    replaces the branch dropout: the same thing for its dropout of 0).

    Args:
        hidden_channels: Model width ``D``.
        num_heads: Number of attention heads.
        ffn_channels: Hidden width of the feed-forward network; ``None`` means ``D``.
        dropout: Dropout on both residual branches.
        attention_dropout: Dropout on the attention weights.
        activation_dropout: Dropout after the feed-forward activation.
        drop_path: Stochastic-depth probability of both residual branches (:class:`DropPath`,
            drawn independently for each branch, after the branch's dropout).
        norm_first: Pre-LN (``True``) or post-LN (``False``) block; the LayerNorms are the same
            modules (``attn_norm``, ``ffn_norm``) either way, only where they apply differs.
    """

    def __init__(
        self,
        hidden_channels: int,
        num_heads: int,
        ffn_channels: int | None = None,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        drop_path: float = 0.0,
        norm_first: bool = True,
    ) -> None:
        super().__init__()
        self.norm_first = bool(norm_first)
        ffn_channels = hidden_channels if ffn_channels is None else ffn_channels
        self.attn_norm = nn.LayerNorm(hidden_channels)
        self.attn = BiasedSelfAttention(hidden_channels, num_heads, attention_dropout)
        self.ffn_norm = nn.LayerNorm(hidden_channels)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_channels, ffn_channels),
            nn.GELU(),
            nn.Dropout(activation_dropout),
            nn.Linear(ffn_channels, hidden_channels),
        )
        self.dropout = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def forward(
        self, x: Tensor, attn_mask: Tensor | None = None, node_mask: Tensor | None = None
    ) -> Tensor:
        """One block.

        Args:
            x: ``(B, N, D)``.
            attn_mask: Float mask from :func:`build_attention_mask`, or ``None``.
            node_mask: ``(B, N)`` bool, ``True`` at real positions; padded rows are zeroed.

        Returns:
            ``(B, N, D)``.
        """
        if self.norm_first:
            x = x + self._branch(self.attn(self.attn_norm(x), attn_mask))
            x = x + self._branch(self.ffn(self.ffn_norm(x)))
        else:
            x = self.attn_norm(x + self._branch(self.attn(x, attn_mask)))
            x = self.ffn_norm(x + self._branch(self.ffn(x)))
        if node_mask is not None:
            x = x * node_mask.unsqueeze(-1).to(x.dtype)
        return x

    def forward_packed(self, x: Tensor, layout: PackedLayout) -> Tensor:
        """:meth:`forward` on the real tokens only, ``x (T, D)`` (see :class:`PackedLayout`)."""
        if self.norm_first:
            x = x + self._branch(self.attn.forward_packed(self.attn_norm(x), layout), layout)
            return x + self._branch(self.ffn(self.ffn_norm(x)), layout)
        x = self.attn_norm(x + self._branch(self.attn.forward_packed(x, layout), layout))
        return self.ffn_norm(x + self._branch(self.ffn(x), layout))

    def _branch(self, out: Tensor, layout: PackedLayout | None = None) -> Tensor:
        """A residual branch's output as it is added: dropout, then drop-path (per molecule of
        ``layout`` for packed tokens)."""
        if layout is None:
            return self.drop_path(self.dropout(out))
        return self.drop_path(self.dropout(out), layout.groups, layout.batch_size)

    def extra_repr(self) -> str:
        return f"norm_first={self.norm_first}"


class TransformerEncoder(nn.Module):
    """A stack of :class:`TransformerLayer` sharing one attention bias, pre-LN with a final
    LayerNorm (default) or post-LN without one.

    The same bias feeds every layer, as in Graphormer. Encoders that need a different bias per
    layer can call :func:`build_attention_mask` and iterate over :attr:`layers` themselves.

    Args:
        num_layers: Number of blocks.
        hidden_channels: Model width ``D``.
        num_heads: Number of attention heads ``H``.
        ffn_channels: Feed-forward hidden width; ``None`` means ``D``.
        dropout: Residual-branch dropout.
        attention_dropout: Attention-weight dropout.
        activation_dropout: Dropout after the feed-forward activation.
        final_norm: Apply a LayerNorm to the output; ``None`` (default) means ``norm_first``:
            a pre-LN stack needs one, a post-LN stack ends with its last block's LayerNorm.
        drop_path: Stochastic depth of the last block; block ``l`` of ``L`` gets
            ``drop_path * l / (L - 1)``, from 0 for the first block (the linear rule of
            MoleBLEND's ``moleblend_encoder.py``, ``torch.linspace(0, droppath_prob, layers)``).
            ``0`` (default) disables it.
        norm_first: Pre-LN blocks (default; Graphormer) or post-LN blocks (``False``;
            MoleBLEND), see :class:`TransformerLayer`.
    """

    def __init__(
        self,
        num_layers: int,
        hidden_channels: int,
        num_heads: int,
        ffn_channels: int | None = None,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        final_norm: bool | None = None,
        drop_path: float = 0.0,
        norm_first: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
        self.num_heads = num_heads
        last = max(num_layers - 1, 1)
        rates = [float(drop_path) * layer / last for layer in range(num_layers)]
        self.layers = nn.ModuleList(
            TransformerLayer(
                hidden_channels,
                num_heads,
                ffn_channels=ffn_channels,
                dropout=dropout,
                attention_dropout=attention_dropout,
                activation_dropout=activation_dropout,
                drop_path=rate,
                norm_first=norm_first,
            )
            for rate in rates
        )
        if final_norm is None:
            final_norm = norm_first
        self.final_norm: nn.Module = nn.LayerNorm(hidden_channels) if final_norm else nn.Identity()
        #: Run the token-wise work on the real tokens only (see
        #: :mod:`molssl.encoders.packed_layout`); ``False`` runs every block on the padded batch
        #: (the plain path the tests compare with).
        self.packed = True
        #: Size buckets of the attention on the CPU (1: one padded block for the batch). On
        #: CUDA one block: fewer, larger kernels pay more there than skipped padding.
        self.max_buckets = 4

    def forward(
        self,
        x: Tensor,
        attn_bias: Tensor | None = None,
        node_mask: Tensor | None = None,
    ) -> Tensor:
        """Run all blocks.

        Args:
            x: Padded inputs ``(B, N, D)``.
            attn_bias: Additive per-head bias, broadcastable to ``(B, H, N, N)``, or ``None``.
            node_mask: ``(B, N)`` bool, ``True`` at real positions, or ``None``.

        Returns:
            ``(B, N, D)``; padded rows are zero.

        Raises:
            ValueError: If the shapes of ``x``, ``attn_bias`` and ``node_mask`` disagree.
        """
        if x.dim() != 3:
            raise ValueError(f"x must be (B, N, D), got shape {tuple(x.shape)}")
        batch_size, num_nodes, _ = x.shape
        if node_mask is not None and node_mask.shape != (batch_size, num_nodes):
            raise ValueError(
                f"node_mask must have shape {(batch_size, num_nodes)}, got {tuple(node_mask.shape)}"
            )
        if attn_bias is not None:
            if attn_bias.dim() != 4 or attn_bias.shape[-2:] != (num_nodes, num_nodes):
                raise ValueError(
                    f"attn_bias must broadcast to (B, H, {num_nodes}, {num_nodes}), got "
                    f"{tuple(attn_bias.shape)}"
                )
            if attn_bias.size(1) not in (1, self.num_heads):
                raise ValueError(
                    f"attn_bias has {attn_bias.size(1)} heads, the encoder {self.num_heads}"
                )
        attn_mask = build_attention_mask(attn_bias, node_mask, x.dtype)
        if node_mask is not None and self.packed:
            buckets = self.max_buckets if x.device.type == "cpu" else 1
            layout = PackedLayout(node_mask, buckets, self.num_heads)
            layout.set_attention_mask(attn_mask)
            tokens = layout.pack(x)
            for layer in self.layers:
                tokens = layer.forward_packed(tokens, layout)
            return layout.pad(self.final_norm(tokens))
        if node_mask is not None:
            x = x * node_mask.unsqueeze(-1).to(x.dtype)
        for layer in self.layers:
            x = layer(x, attn_mask, node_mask)
        x = self.final_norm(x)
        if node_mask is not None:
            x = x * node_mask.unsqueeze(-1).to(x.dtype)
        return x
