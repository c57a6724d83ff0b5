"""CLIP4Clip parity, against hand-written references of the rules CLIP4Clip applies (its modeling, module_clip,
module_cross, optimization and main_task_retrieval code, read to pin each rule; nothing copied):

- OpenAI CLIP forward: pre-LN residual blocks with QuickGELU, causal text mask, EOT token (argmax) pooling,
  class-token + ln_post + proj for frames;
- meanP: normalise each frame, masked mean, normalise; seqTransf: + frame positions (CLIP's text positions),
  text blocks 0..3 with LayerNorm eps 1e-12 inside the sqrt, additive -1e6 key mask, residual to the frames;
- BertAdam: no bias correction, per-tensor clip, decay added to the update, warmup_cosine over the run.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from ncl_ray.model.bertadam import BertAdam, clip4clip_groups, warmup_cosine
from ncl_ray.model.clip import ModelSpec, build_model


def _ln(x, w, b, eps):
    u = x.mean(-1, keepdim=True)
    s = ((x - u) ** 2).mean(-1, keepdim=True)
    return (x - u) / torch.sqrt(s + eps) * w + b


def _block(sd, p, x, heads, add_mask, eps):
    """x (B, L, D); add_mask broadcastable to (B, heads, L, L)."""
    B, L, D = x.shape
    h = _ln(x, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], eps)
    q, k, v = (h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]).split(D, dim=-1)
    q, k, v = (t.view(B, L, heads, D // heads).transpose(1, 2) for t in (q, k, v))  # (B, h, L, d)
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // heads) + add_mask, dim=-1) @ v
    a = a.transpose(1, 2).reshape(B, L, D) @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
    x = x + a
    h = _ln(x, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], eps) @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
    h = h * torch.sigmoid(1.702 * h)  # QuickGELU
    return x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]


def _layers(sd, prefix):
    return len({k.split(".")[len(prefix.split(".")) - 1] for k in sd if k.startswith(prefix)})


def ref_text(sd, tokens):
    L = tokens.shape[1]
    x = sd["token_embedding.weight"][tokens] + sd["positional_embedding"][:L]
    causal = torch.full((L, L), float("-inf")).triu(1)
    heads = sd["ln_final.weight"].shape[0] // 64
    for i in range(_layers(sd, "transformer.resblocks.")):
        x = _block(sd, f"transformer.resblocks.{i}.", x, heads, causal, 1e-5)
    x = _ln(x, sd["ln_final.weight"], sd["ln_final.bias"], 1e-5) @ sd["text_projection"]
    return x[torch.arange(len(tokens)), tokens.argmax(-1)]


def ref_image(sd, images):
    w = sd["visual.conv1.weight"]
    x = F.conv2d(images, w, stride=w.shape[-1]).flatten(2).transpose(1, 2)  # (N, P, D)
    cls = sd["visual.class_embedding"].expand(len(x), 1, -1)
    x = torch.cat([cls, x], 1) + sd["visual.positional_embedding"]
    x = _ln(x, sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"], 1e-5)
    heads = w.shape[0] // 64
    for i in range(_layers(sd, "visual.transformer.resblocks.")):
        x = _block(sd, f"visual.transformer.resblocks.{i}.", x, heads, 0.0, 1e-5)
    return _ln(x[:, 0], sd["visual.ln_post.weight"], sd["visual.ln_post.bias"], 1e-5) @ sd["visual.proj"]


def ref_meanp(frames, mask):
    frames = frames / frames.norm(dim=-1, keepdim=True)
    m = mask.float().unsqueeze(-1)
    v = (frames * m).sum(1) / m.sum(1)
    return v / v.norm(dim=-1, keepdim=True)


def ref_seqtransf(sd, frames, mask, layers=4):
    T = frames.shape[1]
    x = frames + sd["positional_embedding"][:T]
    add = ((1.0 - mask.float()) * -1e6)[:, None, None, :]  # (B, 1, 1, T) on the keys
    heads = sd["ln_final.weight"].shape[0] // 64
    for i in range(layers):
        x = _block(sd, f"transformer.resblocks.{i}.", x, heads, add, 1e-12)
    return ref_meanp(x + frames, mask)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def vitb32():
    torch.manual_seed(0)
    model = build_model(ModelSpec("ViT-B-32", "", "seqTransf", 224, 32, activation="quickgelu"))
    for p in model.clip.parameters():  # random weights, larger than open_clip's init so that errors show
        p.data.add_(torch.randn_like(p) * 0.02)
    model.pool.init_from_clip(model.clip)
    return model.eval()


def test_vitb32_text_frames_video_and_logits_equal_the_reference(vitb32):
    sd = {k: v.float() for k, v in vitb32.clip.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    video = torch.randn(2, 3, 3, 224, 224, generator=g)  # (B, T, 3, H, W)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)  # the second video has 2 real frames
    tokens = torch.zeros(2, 32, dtype=torch.long)
    tokens[:, 0], tokens[0, 1:6], tokens[0, 6] = 49406, torch.arange(320, 325), 49407
    tokens[1, 1:3], tokens[1, 3] = torch.tensor([500, 600]), 49407
    with torch.no_grad():
        text = vitb32.encode_text(tokens)
        frames = vitb32.encode_frames(video)
        video_feat = vitb32.encode_video(video, mask)
        ref_t = ref_text(sd, tokens)
        ref_f = ref_image(sd, video.flatten(0, 1)).view(2, 3, -1)
        ref_v = ref_seqtransf(sd, ref_f, mask)
    assert _rel(text, F.normalize(ref_t, dim=-1)) < 1e-4
    assert _rel(frames, ref_f) < 1e-4
    assert _rel(video_feat, ref_v) < 1e-4
    logits = 100.0 * text @ video_feat.T
    ref_logits = 100.0 * F.normalize(ref_t, dim=-1) @ ref_v.T
    assert _rel(logits, ref_logits) < 1e-4
    # a padded frame's content changes nothing
    video2 = video.clone()
    video2[1, 2] = torch.randn(3, 224, 224, generator=g)
    with torch.no_grad():
        assert torch.allclose(vitb32.encode_video(video2, mask)[1], video_feat[1], atol=1e-6)


def test_meanp_normalises_frames_before_the_mean():
    torch.manual_seed(0)
    model = build_model(ModelSpec("tiny", "", "meanP", 16, 16, embed_dim=32, activation="quickgelu")).eval()
    video = torch.randn(3, 4, 3, 16, 16)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        frames = model.encode_frames(video)
        assert torch.allclose(model.encode_video(video, mask), ref_meanp(frames, mask), atol=1e-6)
        raw_mean = F.normalize(frames.mean(1), dim=-1)  # the other order differs
        assert (model.encode_video(video) - raw_mean).abs().max() > 1e-4


def test_seqtransf_starts_from_clips_text_blocks_and_positions():
    torch.manual_seed(0)
    model = build_model(ModelSpec("tiny", "", "seqTransf", 16, 16, embed_dim=64, temporal_layers=3,
                                  activation="quickgelu"))
    clip_sd = model.clip.state_dict()
    assert torch.equal(model.pool.frame_position_embeddings.weight, clip_sd["positional_embedding"])
    for i in range(2):  # the tiny text tower has 2 blocks: both copied, the third keeps CLIP4Clip's init
        for k, v in model.pool.blocks[i].state_dict().items():
            assert torch.equal(v, clip_sd[f"transformer.resblocks.{i}.{k}"]), k
    third = model.pool.blocks[2]
    assert torch.equal(third.mlp.c_fc.bias, torch.zeros_like(third.mlp.c_fc.bias))
    assert abs(float(third.mlp.c_fc.weight.detach().std()) - 0.02) < 0.003
    assert model.pool.blocks[0].ln_1.eps == 1e-12


def test_quickgelu_for_openai_weights_and_a_clear_refusal_of_gelu():
    from ncl_ray.model.clip import uses_quick_gelu

    assert uses_quick_gelu("ViT-B-32", "openai", "auto") is True
    assert uses_quick_gelu("ViT-B-32", "", "auto") is False
    with pytest.raises(ValueError, match="model.activation=gelu.*QuickGELU"):
        uses_quick_gelu("ViT-B-32", "openai", "gelu")


def test_temperature_is_clamped_on_the_parameter_and_keeps_its_gradient():
    model = build_model(ModelSpec("tiny", "", "meanP", 16, 16, init_temperature=0.01))
    out = model(torch.randn(2, 2, 3, 16, 16), torch.randint(1, 49000, (2, 16)))
    (out["logit_scale"] * 1.0).backward()
    assert model.logit_scale.grad is not None and float(model.logit_scale.grad) > 0  # not cut by a clamp
    with torch.no_grad():
        model.logit_scale.add_(1.0)
    model.clamp_temperature()
    assert float(model.logit_scale.exp()) == pytest.approx(100.0, rel=1e-6)


def _ref_bertadam(p, grads, lr, wd, warmup, t_total, b1=0.9, b2=0.98, e=1e-6, max_norm=1.0):
    """Scalar-by-scalar BertAdam on a list of gradients; returns the parameter after each step."""
    p, m, v, out = p.clone(), torch.zeros_like(p), torch.zeros_like(p), []
    for s, g in enumerate(grads):
        n = float(g.norm())
        if n > max_norm:
            g = g * (max_norm / (n + 1e-6))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        x = s / t_total
        factor = x / warmup if x < warmup else 0.5 * (1 + math.cos(math.pi * x))
        p = p - lr * factor * (m / (v.sqrt() + e) + wd * p)
        out.append(p.clone())
    return out


def test_bertadam_steps_equal_the_reference():
    g = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5, 3, generator=g))
    b = torch.nn.Parameter(torch.randn(3, generator=g))
    start_w, start_b = w.detach().clone(), b.detach().clone()
    opt = BertAdam([{"params": [w], "weight_decay": 0.2}, {"params": [b], "weight_decay": 0.0}],
                   lr=1e-2, warmup=0.25, t_total=8, weight_decay=0.2)
    gw = [torch.randn(5, 3, generator=g) * (3.0 if i % 2 else 0.1) for i in range(8)]  # some above norm 1
    gb = [torch.randn(3, generator=g) for _ in range(8)]
    seen = []
    for i in range(8):
        w.grad, b.grad = gw[i].clone(), gb[i].clone()
        seen.append(opt.current_lrs()[0])
        opt.step()
        assert torch.allclose(w, _ref_bertadam(start_w, gw, 1e-2, 0.2, 0.25, 8)[i], atol=1e-6)
        assert torch.allclose(b, _ref_bertadam(start_b, gb, 1e-2, 0.0, 0.25, 8)[i], atol=1e-6)
    assert seen[0] == 0.0 and seen[1] == pytest.approx(1e-2 * 0.5)  # lr 0 at the first step, as CLIP4Clip
    assert seen[2] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 0.25)))  # no restart after warm-up
    assert warmup_cosine(0.05, 0.1) == pytest.approx(0.5)


def test_clip4clip_groups_backbone_rate_for_clip_and_temperature_and_no_decay_for_biases():
    model = build_model(ModelSpec("tiny", "", "seqTransf", 16, 16))
    groups = clip4clip_groups(model, lr=1e-4, backbone_lr=1e-7, weight_decay=0.2)
    where = {id(p): (gr["lr"], gr["weight_decay"]) for gr in groups for p in gr["params"]}
    named = dict(model.named_parameters())
    assert where[id(named["logit_scale"])] == (1e-7, 0.2)
    assert where[id(named["clip.visual.ln_pre.weight"])] == (1e-7, 0.2)  # CLIP's norms are ln_*: decayed
    assert where[id(named["clip.visual.conv1.weight"])] == (1e-7, 0.2)
    assert where[id(named["pool.blocks.0.mlp.c_fc.bias"])] == (1e-4, 0.0)
    assert where[id(named["pool.frame_position_embeddings.weight"])] == (1e-4, 0.2)
    assert sum(len(gr["params"]) for gr in groups) == len([p for p in model.parameters() if p.requires_grad])


def _micro_arch(tmp_path):
    import json

    import open_clip

    cfg = {"embed_dim": 64, "quick_gelu": True,
           "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 8, "head_width": 64},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2}}
    (tmp_path / "ncl-c4c-micro.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(str(tmp_path / "ncl-c4c-micro.json"))
    return "ncl-c4c-micro"


def test_openai_torchscript_file_is_read_as_tensors_without_running_it(tmp_path):
    import open_clip

    from ncl_ray.model.weights import WeightsFileError, is_openai_file, read_openai_file

    arch = _micro_arch(tmp_path)
    torch.manual_seed(0)
    reference = open_clip.create_model(arch).eval()
    open_clip.model.convert_weights_to_lp(reference, torch.float16)  # OpenAI's files hold fp16 weights
    traced = torch.jit.trace_module(reference, {"encode_image": torch.randn(1, 3, 16, 16).half()},
                                    check_trace=False)
    path = tmp_path / "ViT-micro.pt"
    traced.save(str(path))
    assert is_openai_file(str(path)) and not is_openai_file(__file__)
    state = read_openai_file(str(path))
    for name, value in reference.state_dict().items():
        assert torch.equal(state[name], value) and state[name].dtype == value.dtype, name
    model = build_model(ModelSpec(arch, str(path), "meanP", 16, 16))  # QuickGELU chosen for an OpenAI file
    for name, value in reference.state_dict().items():
        assert torch.equal(model.clip.state_dict()[name].half(), value.half()), name
    assert model.clip.transformer.resblocks[0].mlp.gelu.__class__.__name__ == "QuickGELU"

    # a file whose pickle would run a command is refused, naming the file, and the command never runs
    import os
    import pickle
    import zipfile

    marker = tmp_path / "ran"

    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("bad/data.pkl", pickle.dumps(Hostile(), protocol=2))
        z.writestr("bad/constants.pkl", pickle.dumps((), protocol=2))
        z.writestr("bad/code/__torch__/x.py", "")
    with pytest.raises(WeightsFileError, match="bad.pt: refused: holds (posix|os).system"):
        read_openai_file(str(bad))
    assert not marker.exists()


def _clip4clip_state(model):
    """A model's weights under CLIP4Clip's names (what its `pytorch_model.bin.N` holds)."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("clip.") and not k.endswith("attn_mask"):
            out[k] = v.clone()
        elif k.startswith("pool.blocks."):
            out[k.replace("pool.blocks.", "transformerClip.resblocks.")] = v.clone()
        elif k == "pool.frame_position_embeddings.weight":
            out["frame_position_embeddings.weight"] = v.clone()
    out["clip.logit_scale"] = torch.tensor(4.0)
    return out


def test_imported_clip4clip_checkpoint_gives_its_similarity_matrix(tmp_path, vitb32):
    from ncl_ray.runtime.checkpoint import load_checkpoint
    from ncl_ray.cli import main
    from ncl_ray.config.schema import from_dict
    from ncl_ray.model.clip import build_model_from_config

    state = _clip4clip_state(vitb32)
    torch.save(state, tmp_path / "pytorch_model.bin.4")
    out = tmp_path / "imported"
    assert main(["import", "clip4clip", str(tmp_path / "pytorch_model.bin.4"), "--out", str(out),
                 "model.arch=ViT-B-32", "data.frame_size=224"]) == 0
    ckpt = load_checkpoint(str(out))
    cfg = from_dict(ckpt["config"])
    assert cfg.model.pooling == "seqTransf" and cfg.model.temporal_layers == 4
    assert cfg.eval.bank_source == "captions" and ckpt["epoch"] == -1
    model = build_model_from_config(cfg)
    model.load_state_dict(ckpt["model"])
    model.eval()
    sd = {k[5:]: v.float() for k, v in state.items() if k.startswith("clip.")}
    g = torch.Generator().manual_seed(3)
    video = torch.randn(2, 2, 3, 224, 224, generator=g)
    mask = torch.ones(2, 2, dtype=torch.bool)
    tokens = torch.zeros(3, 32, dtype=torch.long)
    tokens[:, 0], tokens[:, 1], tokens[:, 2] = 49406, torch.tensor([400, 401, 402]), 49407
    with torch.no_grad():
        sims = model.logit_scale.exp() * model.encode_text(tokens) @ model.encode_video(video, mask).T
        ref_v = ref_seqtransf(sd, ref_image(sd, video.flatten(0, 1)).view(2, 2, -1), mask)
        ref = math.exp(4.0) * F.normalize(ref_text(sd, tokens), dim=-1) @ ref_v.T
    assert _rel(sims, ref) < 1e-4

    torch.save({"clip.visual.conv1.weight": torch.zeros(1), "note": "x"}, tmp_path / "not_tensors.bin")
    assert main(["import", "clip4clip", str(tmp_path / "not_tensors.bin"), "--out", str(tmp_path / "o2")]) == 2


def test_published_protocol_is_labelled_in_the_report():
    from ncl_ray.ui.summary import Tested, report

    metrics = {f"test/{m}/{d}_{k}": 1.0 for m in ("none", "ncl") for d in ("t2v", "v2t", "v2t_lenient")
               for k in ("R@1", "R@5", "R@10", "MdR", "MnR")}
    kw = dict(split="test", bank="train", n_iters=3, queue=8, n_videos=100, tested="x", why="y", decoded=1,
              skipped=0, results="r", run_dir="d")
    assert "epoch selected on the test split" in report("run", metrics, ["none", "ncl"],
                                                        Tested(protocol="published", **kw))
    assert "selected on the test split" not in report("run", metrics, ["none", "ncl"], Tested(**kw))


def test_bertadam_with_fp16_clip_weights_updates_them_in_place_as_clip4clip():
    from ncl_ray.ncl.loss import NCLLoss
    from ncl_ray.train.builders import BertAdamSchedule, build_optimizer, build_scheduler
    from ncl_ray.train.loop import StepOptions, train_step

    torch.manual_seed(0)
    model = build_model(ModelSpec("tiny", "", "seqTransf", 16, 16, clip_fp16=True, activation="quickgelu"))
    opt = build_optimizer(model, lr=1e-3, backbone_lr=1e-3, weight_decay=0.2, name="bertadam",
                          schedule=BertAdamSchedule(total_steps=4, warmup_ratio=0.25))
    sched = build_scheduler(opt, 4, 0.25)
    loss_fn = NCLLoss(model.embed_dim, queue_size=8, n_iters=3)
    w = model.clip.transformer.resblocks[0].mlp.c_fc.weight
    before = w.detach().clone()
    g = torch.Generator().manual_seed(1)
    lrs = []
    for _ in range(3):
        batch = {"frames": torch.randint(0, 255, (4, 2, 16, 16, 3), generator=g, dtype=torch.uint8),
                 "tokens": torch.randint(1, 49000, (4, 1, 16), generator=g, dtype=torch.int32),
                 "n_captions": torch.ones(4, dtype=torch.long)}
        lrs.append(opt.current_lrs()[0])
        m = train_step(model, loss_fn, batch, opt, sched, torch.Generator(), torch.device("cpu"),
                       StepOptions(grad_clip=1.0))
        assert math.isfinite(m["train/contrastive_loss"])
    assert lrs[0] == 0.0 and lrs[1] > 0  # CLIP4Clip's schedule: no update at the first step
    assert w.dtype == torch.float16 and not torch.equal(w, before)  # updated in place, still fp16
    assert opt.state[w]["next_m"].dtype == torch.float16
    assert opt.state[model.pool.blocks[0].mlp.c_fc.weight]["next_m"].dtype == torch.float32
    assert float(model.logit_scale.detach().exp()) <= 100.0 + 1e-4
