"""Temporal pooling of per-frame CLIP features, as CLIP4Clip (Luo et al. 2021, arXiv 2104.08860) builds it.

    pool = TemporalPooling("seqTransf", width=512, heads=8, layers=4, positions=77)
    pool.init_from_clip(clip)            # CLIP4Clip's initialisation: text blocks 0..layers-1, text positions
    video = pool(frames, frame_mask)     # (B, T, D), (B, T) -> (B, D) unit norm

meanP (CLIP4Clip's "parameter-free" head): every frame feature is L2-normalised first, then the mean over the
valid frames (frame_mask) is taken and normalised again. Normalising before the mean matters: frames with a
larger raw norm would otherwise weigh more.

seqTransf: frame position embeddings (an embedding table of the text tower's length, initialised from CLIP's
text positional embedding) are added, `layers` residual attention blocks copied from CLIP's text transformer
(QuickGELU, LayerNorm with epsilon 1e-12 inside the square root) run over the frames with an additive key mask
(-1e6 on padded frames), the result is added to the raw frame features, then meanP as above. Blocks beyond the
text tower's depth start from CLIP4Clip's random init (normal(0, 0.02) linear weights, zero biases).
"""

from collections import OrderedDict
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

MASK_FILL = -1e6  # CLIP4Clip's additive attention mask on padded frames


def masked_mean_pool(frames: torch.Tensor, frame_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """CLIP4Clip's meanP: (B, T, D) frame features, (B, T) mask -> (B, D) unit-norm video features."""
    frames = F.normalize(frames, dim=-1)  # (B, T, D) each frame on the sphere first
    if frame_mask is None:
        return F.normalize(frames.mean(dim=1), dim=-1)
    m = frame_mask.to(frames.dtype).unsqueeze(-1)  # (B, T, 1)
    count = m.sum(dim=1).clamp(min=1.0)  # (B, 1): a row without valid frames divides by 1, as CLIP4Clip
    return F.normalize((frames * m).sum(dim=1) / count, dim=-1)  # (B, D)


class TFLayerNorm(nn.Module):
    """LayerNorm with the epsilon inside the square root (CLIP4Clip's, eps 1e-12), computed in fp32."""

    def __init__(self, width: int, eps: float = 1e-12):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        return self.weight * ((x - u) / torch.sqrt(s + self.eps)) + self.bias


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class FrameBlock(nn.Module):
    """One residual attention block; parameter names match CLIP's text blocks so their weights load directly."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1 = TFLayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_2 = TFLayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(4 * width, width))]))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """x (T, B, D) sequence-first; attn_mask (B*heads, T, T) additive."""
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class TemporalPooling(nn.Module):
    """(B, T, D) frame features and a (B, T) frame mask -> (B, D) unit-norm video feature (meanP or seqTransf)."""

    def __init__(self, kind: str, width: int, heads: int = 8, layers: int = 4, positions: int = 77):
        super().__init__()
        if kind not in ("meanP", "seqTransf"):
            raise ValueError(f"unknown temporal pooling {kind!r} (meanP or seqTransf)")
        self.kind = kind
        if kind == "seqTransf":
            self.frame_position_embeddings = nn.Embedding(positions, width)
            self.blocks = nn.ModuleList(FrameBlock(width, heads) for _ in range(layers))
            self.apply(_clip4clip_init)

    def init_from_clip(self, clip: nn.Module) -> int:
        """Copy CLIP's text positional embedding and its first text blocks (CLIP4Clip's initialisation).
        Returns how many blocks were copied."""
        if self.kind != "seqTransf":
            return 0
        pos = clip.positional_embedding.detach().float()  # (L, D)
        table = self.frame_position_embeddings.weight
        if pos.shape[1] != table.shape[1]:
            raise ValueError(f"seqTransf width {table.shape[1]} differs from the text tower's width {pos.shape[1]}")
        with torch.no_grad():
            n = min(pos.shape[0], table.shape[0])
            table[:n].copy_(pos[:n])
        text_blocks = clip.transformer.resblocks
        copied = min(len(self.blocks), len(text_blocks))
        for i in range(copied):
            source = {k: v.detach().float() for k, v in text_blocks[i].state_dict().items()}
            self.blocks[i].load_state_dict(source)
        return copied

    def forward(self, frames: torch.Tensor, frame_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.kind == "seqTransf":
            B, T, _ = frames.shape
            if T > self.frame_position_embeddings.num_embeddings:
                raise ValueError(f"{T} frames exceed seqTransf's {self.frame_position_embeddings.num_embeddings} "
                                 f"frame positions")
            mask = frame_mask if frame_mask is not None else frames.new_ones(B, T)
            x = frames + self.frame_position_embeddings.weight[:T]  # (B, T, D)
            add = (1.0 - mask.to(frames.dtype)).unsqueeze(1) * MASK_FILL  # (B, 1, T): keys of padded frames
            add = add.expand(-1, T, -1).repeat_interleave(self.blocks[0].heads, dim=0)  # (B*heads, T, T)
            x = x.permute(1, 0, 2)  # (T, B, D)
            for block in self.blocks:
                x = block(x, add)
            frames = x.permute(1, 0, 2) + frames  # (B, T, D) residual to the raw frame features
        return masked_mean_pool(frames, frame_mask)


def _clip4clip_init(module: nn.Module) -> None:
    """CLIP4Clip's `init_weights`: linear and embedding weights normal(0, 0.02), linear biases zero."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
