"""GPU figures for the CLIP4Clip recipe, side by side in one run on one CUDA device:
1. the training step (ViT-B/32, 12 frames x 224 px, 32 words, meanP, bf16 autocast, AdamW with the recipe's two
   learning rates) at per-GPU batch 16 / 32 / 64: plain contrastive (NCL at 0 iterations, no queue = CLIP's loss)
   vs NCL (queue 4096 with 3 iterations = conf/msrvtt.yaml, and queue 16384 with 5): time per phase, clips/s,
   peak GPU memory, and NCL's overhead over plain (interleaved rounds, median);
2. evaluation embedding (forward only, fp16 autocast, as the evaluator runs it): clips/s;
3. the loss alone (forward + backward) at B=128..1024, D=512, queue 16k: CLIP's formula vs NCL at 0 / 5 iterations
   (bench/loss.py's measurement, on the GPU).
One GPU worker: the gathers are identities; on N GPUs the global batch and the Sinkhorn matrix grow N-fold
(part 3 gives the loss at those sizes).

    python -m bench.gpu [--batches 16,32,64] [--rounds 8]
"""

import argparse
import statistics

import torch

from bench.loss import filled_loss, loss_alone, seconds, synthetic_batch
from bench.report import write
from ncl_ray.evaluation.evaluate import embed_rows
from ncl_ray.model.clip import build_model
from ncl_ray.train.builders import build_optimizer, build_scheduler
from ncl_ray.train.loop import train_step

T, S, L = 12, 224, 32
LOSSES = {"plain (CLIP loss)": (0, 0), "NCL q4096 3 it (recipe)": (4096, 3), "NCL q16384 5 it": (16384, 5)}


def step_rows(model, device, batch_size: int, rounds: int) -> list:
    """Training steps per loss variant at one batch size, interleaved; median step and phases."""
    opt = build_optimizer(model, 1e-4, 1e-7, 0.2)
    sched = build_scheduler(opt, 10 ** 6, 0.0)
    batch = synthetic_batch(batch_size, T, S)  # captions of L = 32 tokens
    losses = {name: filled_loss(model.embed_dim, q, it).to(device) for name, (q, it) in LOSSES.items()}
    samples = {name: [] for name in losses}
    phases = {name: {} for name in losses}
    peak = {}
    for name, loss in losses.items():  # warm-up (cuDNN/cuBLAS heuristics, allocator) and peak memory
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(2):
            train_step(model, loss, batch, opt, sched, torch.Generator(), device, torch.bfloat16, diagnostics=False)
        torch.cuda.synchronize(device)
        peak[name] = torch.cuda.max_memory_allocated(device)
    for _ in range(rounds):
        for name, loss in losses.items():
            timings = {}
            samples[name].append(seconds(lambda loss=loss, timings=timings: train_step(
                model, loss, batch, opt, sched, torch.Generator(), device, torch.bfloat16, timings=timings,
                diagnostics=False), device))
            for k, v in timings.items():
                phases[name].setdefault(k, []).append(v)
    plain = statistics.median(samples["plain (CLIP loss)"])
    rows = []
    for name, (q, it) in LOSSES.items():
        med = statistics.median(samples[name])
        rows.append({"batch": batch_size, "loss": name, "queue": q, "iters": it, "step_ms": 1e3 * med,
                     "clips_per_s": batch_size / med, "ratio_to_plain": med / plain,
                     "peak_gpu_gib": peak[name] / 2 ** 30,
                     **{f"{k}_ms": 1e3 * statistics.median(v) for k, v in phases[name].items()}})
    return rows


def embed_row(model, device, batch_size: int, rounds: int) -> dict:
    """Evaluation embedding: one video and its captions per row, fp16 autocast, no gradients."""
    batch = synthetic_batch(batch_size, T, S)
    batch["index"] = torch.arange(batch_size)
    model.eval()
    with torch.no_grad():
        for _ in range(2):
            embed_rows(model, batch, device, torch.float16)
        times = [seconds(lambda: embed_rows(model, batch, device, torch.float16), device) for _ in range(rounds)]
    model.train()
    med = statistics.median(times)
    return {"batch": batch_size, "embed_ms": 1e3 * med, "clips_per_s": batch_size / med}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="16,32,64")
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench.gpu needs a CUDA device (torch.cuda.is_available() is False)")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    model = build_model("ViT-B-32", "", "meanP", S, L).to(device)
    steps = []
    for b in (int(x) for x in args.batches.split(",")):
        steps += step_rows(model, device, b, args.rounds)
        print(f"step rows at batch {b} done", flush=True)
    embeds = [embed_row(model, device, b, args.rounds) for b in (64, 256)]
    losses = [dict(r, batch=B) for B in (128, 256, 512, 1024)
              for r in loss_alone(B, variants=((0, False), (5, False)), rounds=4 * args.rounds, device=device)]
    props = torch.cuda.get_device_properties(device)
    meta = {"device": props.name, "gpu_memory_gib": props.total_memory / 2 ** 30, "torch": torch.__version__,
            "cuda": torch.version.cuda, "model": "ViT-B/32 (random init), 12 x 224 px, 32 words, meanP, bf16 autocast",
            "embed": embeds}
    write("gpu", steps, meta)
    write("gpu_loss", losses, {"device": props.name})
    for e in embeds:
        print(f"embed batch {e['batch']}: {e['embed_ms']:.1f} ms, {e['clips_per_s']:.0f} clips/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
