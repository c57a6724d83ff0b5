"""The GPU step's switches, checked on the CPU: compiled towers against eager ones, host-side counts, the
queue's host counters. The CUDA side of each (inductor kernels, the side-stream copy, no host waits) is in
test_gpu.py."""

import copy

import torch

from ncl_ray.model.clip import ModelSpec, build_model
from ncl_ray.ncl.loss import NCLLoss
from ncl_ray.model.compile import compile_mode, compile_model
from ncl_ray.train.builders import build_optimizer, build_scheduler
from ncl_ray.train.loop import StepOptions, train_step


def _batch(B: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"frames": torch.randint(0, 255, (B, 4, 16, 16, 3), dtype=torch.uint8, generator=g),
            "tokens": torch.randint(1, 49000, (B, 2, 16), dtype=torch.int32, generator=g),
            "n_captions": torch.tensor([1, 2] * (B // 2)), "n_frames": torch.tensor([4, 3] * (B // 2))}


def _train(model, batch_fn, steps: int = 3):
    loss = NCLLoss(model.embed_dim, 16, 3)
    opt = build_optimizer(model, 1e-3, 1e-3, 0.2)
    sched = build_scheduler(opt, 100, 0.0)
    out = [train_step(model, loss, batch_fn(i), opt, sched, torch.Generator().manual_seed(i), torch.device("cpu"))
           for i in range(steps)]
    return [m["train/contrastive_loss"] for m in out], model.state_dict(), loss.text_queue.embeddings


def test_compiled_towers_train_like_eager_ones_with_unchanged_state_dicts():
    """Dynamo's graph capture and AOTAutograd's backward (what inductor compiles on a GPU; `aot_eager` runs
    the captured graphs without generating kernels, so the check takes seconds on a CPU)."""
    torch.manual_seed(0)
    eager = build_model(ModelSpec("tiny", "", "seqTransf", 16, 16))
    compiled = compile_model(copy.deepcopy(eager), backend="aot_eager")
    a_losses, a_state, a_queue = _train(eager, lambda i: _batch(4, i))
    b_losses, b_state, b_queue = _train(compiled, lambda i: _batch(4, i))
    assert len(set(a_losses)) == 3  # the steps changed the model
    assert torch.allclose(torch.tensor(a_losses), torch.tensor(b_losses), atol=1e-5)
    assert list(a_state) == list(b_state)  # no "_orig_mod." prefix: checkpoints stay loadable either way
    assert all(torch.allclose(a_state[k], b_state[k], atol=1e-5) for k in a_state)
    assert torch.allclose(a_queue, b_queue, atol=1e-5)


def test_a_batch_with_host_side_counts_trains_like_a_plain_one():
    """The copy-ahead path keeps `host_n_captions`/`host_n_frames` beside the moved tensors: same step."""
    torch.manual_seed(0)
    model = build_model(ModelSpec("tiny", "", "meanP", 16, 16))
    twin = copy.deepcopy(model)

    def with_host(i):
        b = _batch(4, i)
        return {**b, "host_n_captions": b["n_captions"].clone(), "host_n_frames": b["n_frames"].clone()}

    a_losses, a_state, _ = _train(model, lambda i: _batch(4, i))
    b_losses, b_state, _ = _train(twin, with_host)
    assert a_losses == b_losses and all(torch.equal(a_state[k], b_state[k]) for k in a_state)


def test_compile_is_on_for_gpus_by_default_and_settable():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert compile_mode("auto", cpu) is None and compile_mode("auto", gpu) == "default"
    assert compile_mode("true", cpu) == "default" and compile_mode("false", gpu) is None
    assert compile_mode("graphs", gpu) == "reduce-overhead" and compile_mode("graphs", cpu) == "default"


def test_sync_free_scalars_stay_tensors_until_read():
    torch.manual_seed(0)
    model = build_model(ModelSpec("tiny", "", "meanP", 16, 16))
    loss = NCLLoss(model.embed_dim, 16, 3)
    opt = build_optimizer(model, 1e-3, 1e-3, 0.2)
    m = train_step(model, loss, _batch(4, 0), opt, build_scheduler(opt, 10, 0.0), torch.Generator(),
                   torch.device("cpu"), StepOptions(as_floats=False, diagnostics=False))
    assert isinstance(m["train/contrastive_loss"], torch.Tensor) and m["train/contrastive_loss"].ndim == 0
    assert isinstance(m["train/lr"], float)
