"""Temporal pooling of per-frame CLIP features (CLIP4Clip): meanP and seqTransf."""

import torch
from torch import nn


class TemporalPooling(nn.Module):
    """(B, T, D) frame features -> (B, D) video feature.

    meanP: the mean over frames. seqTransf: a small transformer over frames with learned position embeddings,
    added residually to the frame features before the mean, so training starts from meanP.
    """

    def __init__(self, kind: str, dim: int, layers: int = 2, max_frames: int = 128):
        super().__init__()
        if kind not in ("meanP", "seqTransf"):
            raise ValueError(f"unknown temporal pooling {kind!r} (meanP or seqTransf)")
        self.kind = kind
        if kind == "seqTransf":
            self.position = nn.Parameter(torch.zeros(max_frames, dim))  # (T_max, D)
            block = nn.TransformerEncoderLayer(dim, nhead=max(1, dim // 64), dim_feedforward=4 * dim,
                                               dropout=0.0, batch_first=True, norm_first=True)
            self.transformer = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
            for p in self.transformer.parameters():  # small residual branch at start
                if p.dim() > 1:
                    nn.init.normal_(p, std=0.02)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.kind == "seqTransf":
            T = frames.shape[1]
            frames = frames + self.transformer(frames + self.position[:T])  # (B, T, D)
        return frames.mean(dim=1)  # (B, D)
