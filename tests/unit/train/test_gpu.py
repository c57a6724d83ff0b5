"""The CUDA paths against the CPU in one process: NCL loss and its gradients, a bf16-autocast training step, the
fp16 evaluation embedding. Skipped, with the reason, on machines without a CUDA device."""

import pytest
import torch
import torch.nn.functional as F

from ncl_ray.evaluation.evaluate import embed_rows
from ncl_ray.model.clip import ModelSpec, build_model
from ncl_ray.ncl.loss import NCLLoss
from ncl_ray.train.builders import build_optimizer, build_scheduler
from ncl_ray.train.loop import StepOptions, train_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
CUDA = torch.device("cuda")


def _filled_loss(dim: int, queue: int, iters: int, seed: int) -> NCLLoss:
    g = torch.Generator().manual_seed(seed)
    loss = NCLLoss(dim, queue, iters)
    loss.text_queue.enqueue(F.normalize(torch.randn(queue, dim, generator=g), dim=1))
    loss.video_queue.enqueue(F.normalize(torch.randn(queue, dim, generator=g), dim=1))
    return loss


def _batch(B: int, T: int, S: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"frames": torch.randint(0, 255, (B, T, S, S, 3), dtype=torch.uint8, generator=g),
            "tokens": torch.randint(1, 49000, (B, 2, 32), dtype=torch.int32, generator=g),
            "n_captions": torch.full((B,), 2), "index": torch.arange(B)}


def test_ncl_loss_and_gradients_on_gpu_equal_the_cpu():
    B, D = 64, 128
    g = torch.Generator().manual_seed(0)
    v0 = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=1).float()
    t0 = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=1).float()
    results = {}
    for device in (torch.device("cpu"), CUDA):
        loss = _filled_loss(D, 512, 5, seed=1).to(device)
        v, t = v0.to(device, copy=True).requires_grad_(), t0.to(device, copy=True).requires_grad_()
        out = loss(v, t, torch.tensor(30.0, device=device), diagnostics=True)
        out["contrastive_loss"].backward()
        results[device.type] = (out["contrastive_loss"].item(), v.grad.cpu(), t.grad.cpu())
    (lc, gvc, gtc), (lg, gvg, gtg) = results["cpu"], results["cuda"]
    assert abs(lc - lg) <= 1e-4 * abs(lc)
    for a, b in ((gvc, gvg), (gtc, gtg)):
        assert (a - b).norm() <= 1e-3 * a.norm()  # TF32 may be on for matmuls: well under 1e-3


def test_bf16_training_step_on_gpu_tracks_the_cpu_step():
    torch.manual_seed(0)
    cpu_model = build_model(ModelSpec("tiny", "", "meanP", 32, 32))
    gpu_model = build_model(ModelSpec("tiny", "", "meanP", 32, 32))
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_model.to(CUDA)
    batch = _batch(8, 4, 32, seed=2)
    losses = {}
    for name, model, device, amp in (("cpu", cpu_model, torch.device("cpu"), None),
                                     ("cuda", gpu_model, CUDA, torch.bfloat16)):
        opt = build_optimizer(model, 1e-3, 1e-4, 0.2)
        sched = build_scheduler(opt, 100, 0.0)
        loss = _filled_loss(model.embed_dim, 256, 3, seed=3).to(device)
        steps = [train_step(model, loss, batch, opt, sched, torch.Generator().manual_seed(4), device,
                            StepOptions(amp))
                 for _ in range(3)]
        losses[name] = [s["train/contrastive_loss"] for s in steps]
        assert all(torch.isfinite(torch.tensor(x)) for x in losses[name])
    for c, g in zip(losses["cpu"], losses["cuda"]):
        assert abs(c - g) <= 0.03 * abs(c)  # bf16 autocast against fp32: within a few percent
    assert next(gpu_model.parameters()).device.type == "cuda"


def test_fp16_evaluation_embedding_on_gpu_matches_the_cpu():
    torch.manual_seed(0)
    model = build_model(ModelSpec("tiny", "", "meanP", 32, 32)).eval()
    batch = _batch(6, 4, 32, seed=5)
    with torch.no_grad():
        cpu = embed_rows(model, batch, torch.device("cpu"))
        gpu = embed_rows(model.to(CUDA), batch, CUDA, torch.float16)
    for key in ("video", "text"):
        a, b = cpu[key].reshape(-1, cpu[key].shape[-1]), gpu[key].reshape(-1, gpu[key].shape[-1]).float()
        keep = a.norm(dim=1) > 0  # padded caption slots are zero on both
        assert torch.equal(keep, b.norm(dim=1) > 0)
        cos = F.cosine_similarity(a[keep], b[keep], dim=1)
        assert cos.min() > 0.999


def _step_losses(model, batches, steps=3, **kw):
    opt = build_optimizer(model, 1e-3, 1e-4, 0.2)
    sched = build_scheduler(opt, 100, 0.0)
    loss = _filled_loss(model.embed_dim, 256, 3, seed=3).to(CUDA)
    return [float(train_step(model, loss, batches(i), opt, sched, torch.Generator().manual_seed(i), CUDA,
                             StepOptions(torch.bfloat16, **kw))["train/contrastive_loss"]) for i in range(steps)]


def test_inductor_compiled_towers_train_like_eager_ones():
    import copy

    from ncl_ray.model.compile import compile_model

    torch.manual_seed(0)
    eager = build_model(ModelSpec("tiny", "", "seqTransf", 32, 32)).to(CUDA)
    compiled = compile_model(copy.deepcopy(eager))
    a = _step_losses(eager, lambda i: _batch(8, 4, 32, seed=10 + i))
    b = _step_losses(compiled, lambda i: _batch(8, 4, 32, seed=10 + i))
    for x, y in zip(a, b):
        assert abs(x - y) <= 0.02 * abs(x)  # bf16 kernels fused differently: same loss within bf16 noise
    assert list(eager.state_dict()) == list(compiled.state_dict())


def test_side_stream_copy_gives_the_plain_steps_and_the_step_never_waits_for_the_gpu():
    import copy

    from ncl_ray.train.transfer import Ahead

    torch.manual_seed(0)
    plain = build_model(ModelSpec("tiny", "", "meanP", 32, 32)).to(CUDA)
    ahead_model = copy.deepcopy(plain)
    ahead = Ahead(CUDA)
    assert ahead.pins
    pinned = [{k: v.pin_memory() for k, v in _batch(8, 4, 32, seed=20 + i).items()} for i in range(4)]
    sent = [ahead.send(b) for b in pinned]  # copies queued on the side stream, all at once
    a = _step_losses(plain, lambda i: _batch(8, 4, 32, seed=20 + i), steps=4)
    b = _step_losses(ahead_model, lambda i: ahead.receive(sent[i]), steps=4)
    assert a == b  # the same bytes arrive, through another stream
    # with the batch on the GPU, a step with sync-free scalars makes no host wait (PyTorch raises on one)
    opt = build_optimizer(ahead_model, 1e-3, 1e-4, 0.2)
    assert opt.defaults.get("fused")
    sched = build_scheduler(opt, 100, 0.0)
    loss = _filled_loss(ahead_model.embed_dim, 256, 3, seed=3).to(CUDA)
    batch = ahead.receive(ahead.send({k: v.pin_memory() for k, v in _batch(8, 4, 32, seed=30).items()}))
    # warm-up: first calls may initialise handles
    train_step(ahead_model, loss, batch, opt, sched, torch.Generator(), CUDA,
               StepOptions(torch.bfloat16, diagnostics=False, as_floats=False))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        m = train_step(ahead_model, loss, batch, opt, sched, torch.Generator(), CUDA,
                       StepOptions(torch.bfloat16, diagnostics=False, as_floats=False))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(m["train/contrastive_loss"]).item()


def test_gpu_jpeg_decoding_matches_the_cpu_decoder():
    import numpy as np

    from ncl_ray.data.framecodec import decode_clip, encode_clip
    from ncl_ray.data.gpujpeg import decode_clips, gpu_jpeg_available

    assert gpu_jpeg_available(CUDA)
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8) for _ in range(3)]
    blobs = [encode_clip(c, "jpeg", 90) for c in clips]
    gpu = decode_clips(blobs, (4, 32, 32, 3), CUDA)
    assert gpu.device.type == "cuda" and gpu.shape == (3, 4, 32, 32, 3) and gpu.dtype == torch.uint8
    cpu = torch.from_numpy(np.stack([decode_clip(b, "jpeg", (4, 32, 32, 3)) for b in blobs]))
    assert (gpu.cpu().int() - cpu.int()).abs().float().mean() < 2.0  # the decoders' rounding differs slightly
