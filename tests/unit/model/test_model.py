import json

import open_clip
import pytest
import torch

from ncl_ray.model.clip import ModelSpec, build_model
from ncl_ray.train.loop import build_optimizer, build_scheduler


@pytest.mark.parametrize("pooling", ["meanP", "seqTransf"])
def test_forward_contract_and_shapes(pooling):
    model = build_model(ModelSpec("tiny", "", pooling, image_size=16, context_length=16, embed_dim=32))
    out = model(torch.randn(3, 4, 3, 16, 16), torch.randint(1, 49000, (3, 16)))
    assert set(out) == {"video_features", "text_features", "logit_scale"}
    assert out["video_features"].shape == (3, 32) and out["text_features"].shape == (3, 32)
    assert torch.allclose(out["video_features"].norm(dim=1), torch.ones(3), atol=1e-5)
    assert float(out["logit_scale"].detach()) == pytest.approx(1 / 0.07, rel=1e-5)


def test_frame_order_matters_only_for_seqtransf():
    torch.manual_seed(0)
    video = torch.randn(1, 4, 3, 16, 16)
    for pooling, same in (("meanP", True), ("seqTransf", False)):
        model = build_model(ModelSpec("tiny", "", pooling, 16, 16))
        with torch.no_grad():
            if pooling == "seqTransf":
                model.pool.frame_position_embeddings.weight.normal_()  # distinct positions
            a, b = model.encode_video(video), model.encode_video(video.flip(1))
        assert torch.allclose(a, b, atol=1e-5) == same


def test_open_clip_architecture_with_local_pretrained_weights(tmp_path):
    """Any open_clip architecture by name, weights from a local file (nothing is downloaded)."""
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "patch_size": 8,
                                           "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "ncl-test-micro.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(str(tmp_path / "ncl-test-micro.json"))
    reference = open_clip.create_model("ncl-test-micro")
    torch.save(reference.state_dict(), tmp_path / "weights.pt")
    model = build_model(ModelSpec("ncl-test-micro", str(tmp_path / "weights.pt"), "meanP", 16, 16))
    for name, value in reference.state_dict().items():
        assert torch.equal(model.clip.state_dict()[name], value), name
    with pytest.raises((ValueError, RuntimeError, FileNotFoundError)):
        build_model(ModelSpec("ncl-test-micro", str(tmp_path / "missing.pt"), "meanP", 16, 16))


def test_two_learning_rates_and_warmup_cosine():
    model = build_model(ModelSpec("tiny", "", "seqTransf", 16, 16))
    opt = build_optimizer(model, lr=1e-3, backbone_lr=1e-7, weight_decay=0.2)
    lrs = sorted({g["lr"] for g in opt.param_groups})
    assert lrs == [1e-7, 1e-3]
    assert all(g["weight_decay"] == 0 for g in opt.param_groups if all(p.ndim < 2 for p in g["params"]))
    sched = build_scheduler(opt, total_steps=100, warmup_ratio=0.1)
    seen = []
    for _ in range(100):
        seen.append(opt.param_groups[-1]["lr"])
        opt.step()
        sched.step()
    assert seen[0] < seen[9] == pytest.approx(1e-3) and seen[-1] < 1e-5


def _steps(model, backbone_lr, steps=2):
    from ncl_ray.ncl.loss import NCLLoss
    from ncl_ray.train.loop import StepOptions, train_step

    g = torch.Generator().manual_seed(1)
    loss_fn = NCLLoss(model.embed_dim, queue_size=8, n_iters=3)
    opt = build_optimizer(model, lr=1e-3, backbone_lr=backbone_lr, weight_decay=0.2)
    sched = build_scheduler(opt, total_steps=10, warmup_ratio=0.0)
    losses = []
    for _ in range(steps):
        batch = {"frames": torch.randint(0, 255, (4, 2, 16, 16, 3), generator=g, dtype=torch.uint8),
                 "tokens": torch.randint(1, 49000, (4, 1, 16), generator=g, dtype=torch.int32),
                 "n_captions": torch.ones(4, dtype=torch.long)}
        losses.append(train_step(model, loss_fn, batch, opt, sched, torch.Generator(), torch.device("cpu"),
                                 StepOptions(grad_clip=1.0))["train/contrastive_loss"])
    return losses, opt


def test_clip_fp16_parity_keeps_backbone_weights_and_adam_states_in_fp16():
    """CLIP4Clip parity: fp16 backbone weights and moments updated in place (no fp32 master copy), fp32 heads."""
    torch.manual_seed(0)
    model = build_model(ModelSpec("tiny", "", "seqTransf", 16, 16, clip_fp16=True))
    assert model.clip.visual.conv1.weight.dtype == torch.float16
    assert model.clip.transformer.resblocks[0].mlp.c_fc.weight.dtype == torch.float16
    assert model.clip.visual.ln_pre.weight.dtype == torch.float32  # layer norms stay fp32, as in OpenAI CLIP
    assert all(p.dtype == torch.float32 for p in model.pool.parameters())
    out = model(torch.randn(2, 3, 3, 16, 16), torch.randint(1, 49000, (2, 16)))
    assert out["video_features"].dtype == torch.float32 and torch.isfinite(out["video_features"]).all()

    w = model.clip.transformer.resblocks[0].mlp.c_fc.weight
    before = w.detach().clone()
    losses, opt = _steps(model, backbone_lr=1e-3, steps=3)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert w.dtype == torch.float16 and not torch.equal(w, before)  # trained in place, still fp16
    assert opt.state[w]["exp_avg"].dtype == torch.float16 and opt.state[w]["exp_avg_sq"].dtype == torch.float16
    head = model.pool.blocks[0].mlp.c_fc.weight
    assert opt.state[head]["exp_avg"].dtype == torch.float32
    fp32 = build_model(ModelSpec("tiny", "", "seqTransf", 16, 16))
    fp32.load_state_dict(model.state_dict())  # an fp16 checkpoint loads into an fp32 model and back
    assert fp32.clip.visual.conv1.weight.dtype == torch.float32
    assert torch.equal(fp32.clip.visual.conv1.weight.half(), model.clip.visual.conv1.weight)


@pytest.mark.parametrize("arch", ["tiny", "ViT-B-32"])
def test_text_tower_at_the_caption_length_equals_the_padded_run(arch):
    """32 tokens through a 77-position text tower: the sliced positions and causal mask give the padded run's
    features (and its gradients), as CLIP4Clip's 32-word text tower does."""
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch, "", "meanP", 32, 77))
    assert model.context_length == 77
    tokens = torch.randint(1, 49000, (3, 32))
    tokens[:, 0], tokens[0, 31], tokens[1, 9], tokens[2, 20] = 49406, 49407, 49407, 49407  # start, end tokens
    tokens[1, 10:] = 0
    tokens[2, 21:] = 0
    padded = torch.nn.functional.pad(tokens, (0, 77 - 32))
    reference = torch.nn.functional.normalize(model.clip.encode_text(padded).float(), dim=-1)  # open_clip's path
    sliced = model.encode_text(tokens)
    assert sliced.shape == (3, model.embed_dim)
    assert torch.allclose(sliced, reference, atol=1e-5), (sliced - reference).abs().max()
    weight = model.clip.token_embedding.weight
    g_sliced, g_ref = (torch.autograd.grad(f[:, :4].sum(), weight)[0] for f in (sliced, reference))
    assert torch.allclose(g_sliced, g_ref, atol=1e-5)
    with pytest.raises(ValueError, match="78 tokens exceed"):
        model.encode_text(torch.ones(1, 78, dtype=torch.long))
