"""VideoCLIP: an open_clip backbone encodes every sampled frame; temporal pooling makes the video feature.

    model = build_model(ModelSpec(arch="tiny", pretrained="", pooling="meanP", image_size=32, context_length=32))
    out = model(video, tokens, frame_mask)   # {"video_features", "text_features", "logit_scale"}

The returned dict is the loss's keyword arguments (open_clip's contract). `arch="tiny"` builds a small,
randomly initialised CLIP in code (tests, CPU runs); any other name goes to `open_clip.create_model`, with
`pretrained` an open_clip tag (e.g. "openai"), OpenAI's TorchScript file (read as tensors, see weights.py) or a
local checkpoint path.

Parity with CLIP4Clip (arXiv 2104.08860): OpenAI's weights were trained with QuickGELU, so `activation="auto"`
builds it for them (open_clip would build nn.GELU for `ViT-B-32` + `openai` and only warn); video features are
pooled in CLIP4Clip's order (heads.py); the temperature is a parameter clamped after each optimizer step
(`clamp_temperature`), as CLIP does, so that it keeps its gradient at the clamp.
"""

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from torch import nn

from ncl_ray.model.heads import TemporalPooling
from ncl_ray.model.weights import is_openai_file, read_openai_file

MAX_LOGIT_SCALE = 100.0  # CLIP's clamp on 1/tau


ACTIVATIONS = ("auto", "quickgelu", "gelu")


def tiny_clip(embed_dim: int, image_size: int, context_length: int,
              cast_dtype: Optional[torch.dtype] = None, quick_gelu: bool = False) -> open_clip.CLIP:
    """A 2-layer ViT / 2-layer text transformer CLIP with the real BPE vocabulary, random init. The text width
    equals the embedding dimension, as in OpenAI's ViT-B models, so that CLIP4Clip's seqTransf fits."""
    vision = CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=max(4, image_size // 4),
                           image_size=image_size)
    text = CLIPTextCfg(context_length=context_length, vocab_size=49408, width=embed_dim, heads=2, layers=2)
    return open_clip.CLIP(embed_dim=embed_dim, vision_cfg=vision, text_cfg=text, cast_dtype=cast_dtype,
                          quick_gelu=quick_gelu)


def uses_quick_gelu(arch: str, pretrained: str, activation: str) -> bool:
    """QuickGELU or GELU for these weights; refuses GELU with OpenAI's weights (trained with QuickGELU)."""
    openai = pretrained == "openai" or (pretrained != "" and is_openai_file(pretrained))
    if activation == "gelu" and (openai or arch.endswith("-quickgelu")):
        raise ValueError(f"model.activation=gelu with model.arch={arch} model.pretrained={pretrained}: these "
                         f"weights were trained with QuickGELU; use model.activation=auto or quickgelu")
    if activation == "quickgelu":
        return True
    return activation == "auto" and openai


def _sliceable(clip: nn.Module) -> bool:
    """An open_clip CLIP text tower with a causal mask and pooling at the end token (the highest token id)."""
    return (getattr(clip, "attn_mask", None) is not None and getattr(clip, "text_pool_type", "") == "argmax"
            and getattr(clip, "text_projection", None) is not None and hasattr(clip, "token_embedding"))


class VideoCLIP(nn.Module):
    """CLIP4Clip-style retrieval model.

    Args:
        clip: an open_clip CLIP model (its own logit scale is unused; this module learns 1/tau).
        pooling: "meanP" or "seqTransf" (CLIP4Clip's heads, heads.py).
        temporal_layers: seqTransf blocks, initialised from CLIP's first text blocks.
        init_temperature: tau at initialisation.
        learn_temperature: learn tau or keep it fixed.
    """

    slice_text = True  # False: the text tower at the full context length (bench/gpu.py's baseline)

    def __init__(self, clip: nn.Module, pooling: str = "meanP", temporal_layers: int = 4,
                 init_temperature: float = 0.07, learn_temperature: bool = True):
        super().__init__()
        self.clip = clip
        self.clip.logit_scale.requires_grad_(False)  # unused: keeps DDP from waiting for its gradient
        self.embed_dim = int(clip.visual.output_dim)
        self.context_length = int(clip.context_length)
        width = int(clip.positional_embedding.shape[1])
        if pooling == "seqTransf" and width != self.embed_dim:
            raise ValueError(f"model.pooling=seqTransf needs the text width ({width}) to equal the embedding "
                             f"dimension ({self.embed_dim}), as CLIP4Clip's head does")
        self.pool = TemporalPooling(pooling, width, heads=max(1, width // 64), layers=temporal_layers,
                                    positions=int(clip.positional_embedding.shape[0]))
        self.pool.init_from_clip(clip)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)),
                                        requires_grad=learn_temperature)

    @torch.no_grad()
    def clamp_temperature(self) -> None:
        """After each optimizer step: 1/tau <= 100 on the parameter (CLIP, openai/CLIP#46), not in the forward,
        where a clamp would cut the temperature's gradient (1/0.01 = 100.0000076 > 100 in fp32)."""
        self.logit_scale.clamp_(max=math.log(MAX_LOGIT_SCALE))

    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, T, 3, H, W) normalised frames -> (B, T, D) raw frame features (fp32)."""
        B, T = video.shape[:2]
        video = video.to(self.clip.visual.conv1.weight.dtype)  # fp16 when the backbone is kept in fp16
        return self.clip.encode_image(video.flatten(0, 1)).float().view(B, T, -1)  # (B, T, D)

    def encode_video(self, video: torch.Tensor, frame_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """video (B, T, 3, H, W) normalised frames, frame_mask (B, T) (None = all valid) -> (B, D) unit norm."""
        return self.pool(self.encode_frames(video), frame_mask)  # (B, D)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) with L <= the model's context length -> (B, D) unit-norm features.

        The text tower runs at L positions, not the context length (77 for OpenAI's models): the positional
        embedding is sliced and the causal mask cut to L x L, as CLIP4Clip does for its 32 words. With a causal
        mask and end-of-text pooling the outputs equal the padded run's (zero tokens after the end cannot be
        attended to), for 77/L of the text tower's cost. Text towers without that layout are padded instead."""
        L = tokens.shape[1]
        if L > self.context_length:
            raise ValueError(f"{L} tokens exceed the model's context length {self.context_length}")
        clip = self.clip
        if not (self.slice_text and _sliceable(clip)):
            if L < self.context_length:
                tokens = F.pad(tokens, (0, self.context_length - L))
            return F.normalize(clip.encode_text(tokens.long()).float(), dim=-1)  # (B, D)
        cast = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens.long()).to(cast)  # (B, L, W)
        x = x + clip.positional_embedding[:L].to(cast)  # (B, L, W)
        x = clip.transformer(x, attn_mask=clip.attn_mask[:L, :L])  # (B, L, W)
        x = clip.ln_final(x)  # (B, L, W)
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # (B, W) at the end token
        x = x @ clip.text_projection if not isinstance(clip.text_projection, nn.Linear) else clip.text_projection(x)
        return F.normalize(x.float(), dim=-1)  # (B, D)

    def forward(self, video: torch.Tensor, tokens: torch.Tensor,
                frame_mask: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        return {
            "video_features": self.encode_video(video, frame_mask),
            "text_features": self.encode_text(tokens),
            "logit_scale": self.logit_scale.exp(),  # clamped on the parameter (clamp_temperature)
        }

    def param_groups(self) -> Tuple[List[nn.Parameter], List[nn.Parameter]]:
        """(backbone parameters, new-layer parameters), trainable only."""
        backbone = [p for p in self.clip.parameters() if p.requires_grad]
        new = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("clip.")]
        return backbone, new


@dataclass(frozen=True)
class ModelSpec:
    """What build_model builds (config.ModelConfig plus the data's frame size and caption length)."""
    arch: str
    pretrained: str
    pooling: str
    image_size: int
    context_length: int
    embed_dim: int = 64  # arch=tiny only; open_clip models have their own
    temporal_layers: int = 4
    init_temperature: float = 0.07
    learn_temperature: bool = True
    grad_checkpointing: bool = False
    clip_fp16: bool = False
    activation: str = "auto"


def build_model(spec: ModelSpec) -> VideoCLIP:
    """The only place that turns model settings into a module (see config.ModelConfig).

    clip_fp16: CLIP4Clip parity. The backbone's linear, convolution and attention weights are kept in fp16 (the
    original OpenAI CLIP layout: layer norms and embeddings stay fp32) and the optimizer updates them in place,
    with fp16 moment estimates and no fp32 master copy, as CLIP4Clip's BertAdam does; temporal pooling and the
    temperature stay fp32. Small updates round away and small squared gradients underflow, which changes how the
    backbone trains; CLIP4Clip's published numbers were obtained this way.
    """
    arch, pretrained, activation = spec.arch, spec.pretrained, spec.activation
    if activation not in ACTIVATIONS:
        raise ValueError(f"model.activation={activation!r}: expected one of {', '.join(ACTIVATIONS)}")
    quick = uses_quick_gelu(arch, pretrained, activation)
    if arch == "tiny":
        if pretrained:
            raise ValueError("model.arch=tiny has no pretrained weights; set model.pretrained=''")
        clip = tiny_clip(spec.embed_dim, spec.image_size, spec.context_length, quick_gelu=quick)
    else:
        openai_file = pretrained != "" and is_openai_file(pretrained)
        try:
            clip = open_clip.create_model(arch, pretrained=(pretrained or None) if not openai_file else None,
                                          force_image_size=spec.image_size, force_quick_gelu=quick)
        except RuntimeError as e:
            raise ValueError(f"cannot build open_clip model {arch!r} with pretrained={pretrained!r}: {e}") from e
        if openai_file:
            expected = clip.state_dict()
            state = {k: v for k, v in read_openai_file(pretrained).items()  # less OpenAI's int attributes
                     if k in expected and k != "attn_mask"}
            missing = [k for k in expected if k not in state and k != "attn_mask"]
            wrong = [k for k, v in state.items() if v.shape != expected[k].shape]
            if missing or wrong:
                raise ValueError(f"model.pretrained={pretrained}: its tensors do not fit model.arch={arch} "
                                 f"(missing {missing[:3]}, other shapes {wrong[:3]})")
            clip.load_state_dict(state, strict=False)
    # the head is built (and seqTransf copied from the text tower) before the backbone goes to fp16, in fp32
    model = VideoCLIP(clip, spec.pooling, spec.temporal_layers, spec.init_temperature, spec.learn_temperature)
    if spec.clip_fp16:
        open_clip.model.convert_weights_to_lp(model.clip, torch.float16)
    if spec.grad_checkpointing:
        clip.set_grad_checkpointing(True)
    return model


def build_model_from_config(cfg) -> VideoCLIP:
    m, d = cfg.model, cfg.data
    return build_model(ModelSpec(m.arch, m.pretrained, m.pooling, d.frame_size, d.max_words, m.embed_dim,
                                 m.temporal_layers, m.init_temperature, m.learn_temperature,
                                 m.grad_checkpointing, m.clip_fp16, m.activation))
