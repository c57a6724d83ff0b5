"""VideoCLIP: an open_clip backbone encodes every sampled frame; temporal pooling makes the video feature.

    model = build_model(arch="tiny", pretrained="", pooling="meanP", image_size=32, context_length=32)
    out = model(video, tokens)   # {"video_features", "text_features", "logit_scale"}

The returned dict is the loss's keyword arguments (open_clip's contract). `arch="tiny"` builds a small,
randomly initialised CLIP in code (tests, CPU runs); any other name goes to `open_clip.create_model`, with
`pretrained` an open_clip tag (e.g. "openai") or a local checkpoint path.
"""

import math
from typing import Dict, List, Optional, Tuple

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from torch import nn

from ncl_ray.model.heads import TemporalPooling

MAX_LOGIT_SCALE = 100.0  # CLIP's clamp on 1/tau


def tiny_clip(embed_dim: int, image_size: int, context_length: int,
              cast_dtype: Optional[torch.dtype] = None) -> open_clip.CLIP:
    """A 2-layer ViT / 2-layer text transformer CLIP with the real BPE vocabulary, random init."""
    vision = CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=max(4, image_size // 4),
                           image_size=image_size)
    text = CLIPTextCfg(context_length=context_length, vocab_size=49408, width=64, heads=2, layers=2)
    return open_clip.CLIP(embed_dim=embed_dim, vision_cfg=vision, text_cfg=text, cast_dtype=cast_dtype)


class VideoCLIP(nn.Module):
    """CLIP4Clip-style retrieval model.

    Args:
        clip: an open_clip CLIP model (its own logit scale is unused; this module learns 1/tau).
        pooling: "meanP" or "seqTransf".
        temporal_layers: transformer layers for seqTransf.
        init_temperature: tau at initialisation.
        learn_temperature: learn tau or keep it fixed.
    """

    def __init__(self, clip: nn.Module, pooling: str = "meanP", temporal_layers: int = 2,
                 init_temperature: float = 0.07, learn_temperature: bool = True):
        super().__init__()
        self.clip = clip
        self.clip.logit_scale.requires_grad_(False)  # unused: keeps DDP from waiting for its gradient
        self.embed_dim = int(clip.visual.output_dim)
        self.context_length = int(clip.context_length)
        self.pool = TemporalPooling(pooling, self.embed_dim, temporal_layers)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)),
                                        requires_grad=learn_temperature)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, T, 3, H, W) normalised frames -> (B, D) unit-norm features."""
        B, T = video.shape[:2]
        video = video.to(self.clip.visual.conv1.weight.dtype)  # fp16 when the backbone is kept in fp16
        frames = self.clip.encode_image(video.flatten(0, 1))  # (B*T, D)
        return F.normalize(self.pool(frames.view(B, T, -1).float()), dim=-1)  # (B, D)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) with L <= the model's context length -> (B, D) unit-norm features."""
        L = tokens.shape[1]
        if L < self.context_length:  # causal mask + EOT pooling: zero padding changes nothing
            tokens = F.pad(tokens, (0, self.context_length - L))
        elif L > self.context_length:
            raise ValueError(f"{L} tokens exceed the model's context length {self.context_length}")
        return F.normalize(self.clip.encode_text(tokens.long()).float(), dim=-1)  # (B, D)

    def forward(self, video: torch.Tensor, tokens: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {
            "video_features": self.encode_video(video),
            "text_features": self.encode_text(tokens),
            "logit_scale": self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE),
        }

    def param_groups(self) -> Tuple[List[nn.Parameter], List[nn.Parameter]]:
        """(backbone parameters, new-layer parameters), trainable only."""
        backbone = [p for p in self.clip.parameters() if p.requires_grad]
        new = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("clip.")]
        return backbone, new


def build_model(arch: str, pretrained: str, pooling: str, image_size: int, context_length: int,
                embed_dim: int = 64, temporal_layers: int = 2, init_temperature: float = 0.07,
                learn_temperature: bool = True, grad_checkpointing: bool = False,
                clip_fp16: bool = False) -> VideoCLIP:
    """The only place that turns model settings into a module (see config.ModelConfig).

    clip_fp16: CLIP4Clip parity. The backbone's linear, convolution and attention weights are kept in fp16 (the
    original OpenAI CLIP layout: layer norms and embeddings stay fp32) and the optimizer updates them in place,
    with fp16 moment estimates and no fp32 master copy, as CLIP4Clip's BertAdam does; temporal pooling and the
    temperature stay fp32. Small updates round away and small squared gradients underflow, which changes how the
    backbone trains; CLIP4Clip's published numbers were obtained this way.
    """
    precision = "fp16" if clip_fp16 else "fp32"
    if arch == "tiny":
        if pretrained:
            raise ValueError("model.arch=tiny has no pretrained weights; set model.pretrained=''")
        clip = tiny_clip(embed_dim, image_size, context_length, torch.float16 if clip_fp16 else None)
        if clip_fp16:
            open_clip.model.convert_weights_to_lp(clip, torch.float16)
    else:
        try:
            clip = open_clip.create_model(arch, pretrained=pretrained or None, force_image_size=image_size,
                                          precision=precision)
        except RuntimeError as e:
            raise ValueError(f"cannot build open_clip model {arch!r} with pretrained={pretrained!r}: {e}") from e
    if grad_checkpointing:
        clip.set_grad_checkpointing(True)
    return VideoCLIP(clip, pooling, temporal_layers, init_temperature, learn_temperature)


def build_model_from_config(cfg) -> VideoCLIP:
    m, d = cfg.model, cfg.data
    return build_model(m.arch, m.pretrained, m.pooling, d.frame_size, d.max_words, m.embed_dim,
                       m.temporal_layers, m.init_temperature, m.learn_temperature, m.grad_checkpointing,
                       m.clip_fp16)
