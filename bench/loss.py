"""NCL overhead benchmark, side by side in one run on the same model and batch:
1. one training step (tiny CPU model, B=128 clips) with plain contrastive loss vs NCL at queue 0/4k/16k and
   1/5/20 Sinkhorn iterations: step time and the ratio to plain;
2. Sinkhorn alone (two directions, queue 16k, 5 iterations, D=512) at batch 128..1024;
3. the loss alone, forward + backward at B=128, D=512, Q=16k: CLIP's loss (open_clip's formula) vs NCL at 0
   iterations with a full queue (must cost the same: <= 1.2x) and at 5 iterations, without and with the
   diagnostics (computed only on logged steps);
4. an estimate for the ViT-B/32 recipe: (NCL loss - CLIP loss) at B=128, D=512, Q=16k, 5 iterations,
   over a ViT-B/32 step extrapolated from 2 clips of 12 frames (CPU only; on a GPU see bench/RESULTS.md).

    python -m bench.loss [--repeats 5]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bench.report import write
from ncl_ray.model.clip import ModelSpec, build_model
from ncl_ray.ncl.loss import NCLLoss
from ncl_ray.ncl.sinkhorn import sinkhorn_biases
from ncl_ray.train.loop import build_optimizer, build_scheduler, train_step


def timed(fn, repeats):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def filled_loss(dim, queue, iters):
    loss = NCLLoss(dim, queue, iters)
    if queue:
        loss.text_queue.enqueue(F.normalize(torch.randn(queue, dim), dim=1))
        loss.video_queue.enqueue(F.normalize(torch.randn(queue, dim), dim=1))
    loss.eval()  # keep the queue as it is between repeats (enqueue is O(B) and not what is measured)
    return loss


def synthetic_batch(B: int, T: int, S: int) -> dict:
    """A training batch of random clips and one random caption each, as the data pipeline delivers it."""
    return {"frames": torch.randint(0, 255, (B, T, S, S, 3), dtype=torch.uint8),
            "tokens": torch.randint(1, 49000, (B, 1, 32), dtype=torch.int32), "n_captions": torch.ones(B)}


def seconds(fn, device) -> float:
    """Wall seconds of fn(), with a CUDA device's queued work drained before and after."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def loss_alone(B: int = 128, D: int = 512, Q: int = 16384,
               variants=((0, False), (0, True), (5, False), (5, True)), rounds: int = 30,
               device: str = "cpu") -> list:
    """The loss alone, forward + backward: CLIP's (open_clip's formula) first, then NCL with a full queue for each
    (iterations, diagnostics); median of interleaved rounds (on a GPU, timed between synchronisations). Rows with
    `ratio` to CLIP's."""
    device = torch.device(device)
    v = F.normalize(torch.randn(B, D, device=device), dim=1).requires_grad_()  # (B, D)
    t = F.normalize(torch.randn(B, D, device=device), dim=1).requires_grad_()  # (B, D)
    scale = torch.tensor(100.0, device=device)

    def loss_run(loss_fn, diagnostics=False):
        return lambda: loss_fn(v, t, scale, diagnostics=diagnostics)["contrastive_loss"].backward()

    def clip_run():
        logits = scale * t @ v.T  # (B, B); open_clip's ClipLoss on one worker
        labels = torch.arange(B, device=device)
        (0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))).backward()

    runs = [(f"CLIP loss alone (open_clip formula), B={B} D={D}", 0, 0, clip_run)] + [
        (f"NCL loss alone, {iters} it{' + diagnostics (logged steps)' * diag}", Q, iters,
         loss_run(filled_loss(D, Q, iters).to(device), diag)) for iters, diag in variants]
    samples = {name: [] for name, *_ in runs}
    for _ in range(rounds):  # interleaved rounds, median: these take 1-200 ms, where a shared machine's noise shows
        for name, _, _, fn in runs:
            samples[name].append(seconds(fn, device))
    med = {name: statistics.median(x) for name, x in samples.items()}
    clip_s = med[runs[0][0]]
    return [{"loss": name, "queue": q, "iters": it, "step_ms": 1e3 * med[name], "ratio": med[name] / clip_s}
            for name, q, it, _ in runs]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    torch.manual_seed(0)
    B = args.batch
    model = build_model(ModelSpec("tiny", "", "meanP", 32, 32))
    opt = build_optimizer(model, 1e-4, 1e-4, 0.0)
    sched = build_scheduler(opt, 10 ** 6, 0.0)
    batch = synthetic_batch(B, 8, 32)
    cpu = torch.device("cpu")

    def step(loss_fn):
        return lambda: train_step(model, loss_fn, batch, opt, sched, torch.Generator(), cpu)

    configs = [(0, 0)] + [(q, i) for q in (0, 4096, 16384) for i in (1, 5, 20)]
    fns = {c: step(filled_loss(64, *c)) for c in configs}
    best = {c: float("inf") for c in configs}
    for c in configs:
        fns[c]()  # warm-up
    for _ in range(args.repeats):  # interleaved rounds: drift of a shared machine hits every config alike
        for c in configs:
            t = time.perf_counter()
            fns[c]()
            best[c] = min(best[c], time.perf_counter() - t)
    plain = best[(0, 0)]
    rows = [{"loss": "plain contrastive" if c == (0, 0) else "NCL", "queue": c[0], "iters": c[1],
             "step_ms": 1e3 * best[c], "ratio": best[c] / plain} for c in configs]

    sk_rows = []
    for n in (128, 256, 512, 1024):
        q = F.normalize(torch.randn(16384 + n, 512), dim=1)
        g = F.normalize(torch.randn(n, 512), dim=1)

        def both(q=q, g=g):
            for _ in range(2):  # t2v and v2t
                sinkhorn_biases(100.0 * q @ g.T, 5)

        sk_rows.append({"batch": n, "sinkhorn_ms": 1e3 * timed(both, args.repeats)})

    loss_rows = loss_alone(B)
    ncl_extra = (loss_rows[3]["step_ms"] - loss_rows[0]["step_ms"]) / 1e3
    vit = build_model(ModelSpec("ViT-B-32", "", "meanP", 224, 32))
    vit_opt = torch.optim.AdamW(vit.parameters(), lr=1e-7)
    clips = synthetic_batch(2, 12, 224)
    vit_step = timed(lambda: train_step(vit, filled_loss(512, 0, 0), clips, vit_opt,
                                        build_scheduler(vit_opt, 10, 0.0), torch.Generator(), cpu), 1)
    vit_step_128 = vit_step / 2 * B
    write("loss", rows + loss_rows + [{"loss": f"sinkhorn x2, Q=16k, 5 it, B={r['batch']}", "queue": 16384, "iters": 5,
                           "step_ms": r["sinkhorn_ms"], "ratio": float("nan")} for r in sk_rows], {
        "model": "tiny CLIP (2-layer ViT/text, D=64), 8 frames x 32 px, batch 128, CPU",
        "ncl_overhead_q16k_it5_tiny": next(r["ratio"] for r in rows if r["queue"] == 16384 and r["iters"] == 5) - 1,
        "vitb32_cpu_step_estimate_s": vit_step_128,
        "ncl_extra_ms_q16k_it5_D512": 1e3 * ncl_extra,
        "loss_iters0_queue16k_vs_clip": loss_rows[1]["ratio"],
        "ncl_overhead_vitb32_cpu_estimate": ncl_extra / vit_step_128,
    })


if __name__ == "__main__":
    main()
