"""The recipe's GPU step with each optimisation switchable, side by side in one run on one CUDA device.

    python -m bench.gpu [--batches 128,16,64] [--rounds 5] [--window 3] [--out bench/out]

ViT-B/32, 12 frames x 224 px, 32-token captions, meanP, bf16 autocast, AdamW with the recipe's two learning
rates, NCL with a full 4096 queue and 3 iterations (conf/msrvtt.yaml), one worker (the gathers are identities).
Switches, all off in the `baseline` row (the step before these changes) and all on in `all + compile`:

    sliced_text   the text tower at 32 positions instead of 77 (VideoCLIP.slice_text)
    fused_adamw   AdamW(fused=True)
    amp_frames    uint8 -> bf16 normalisation (one multiply-add) instead of fp32
    copy_ahead    pinned batches copied on a side stream by a producer thread (train/transfer.py) instead of a
                  pageable copy on the compute stream
    sync_free     no host read per step: scalars stay on the GPU, the queue's counters live on the host
    compile       torch.compile of both towers (inductor, static shapes; compiled before the timed region)

Rows: baseline, baseline + each eager switch alone, all eager switches, all + compile. A sample is `window`
consecutive steps between two synchronisations (so the host may run ahead, as in training); rows are
interleaved per round and the median is reported. Also: evaluation embedding (baseline vs sliced vs compiled),
the FLOPs of one clip counted by torch's FlopCounterMode (2 per multiply-add) and the MFU they give against the
card's dense bf16 peak, peak memory per row, 50 training steps compiled vs eager from one seed (loss agreement),
and JPEG clip decoding on the GPU (nvJPEG through torchvision) vs one CPU core (the clip cache's PIL path).
"""

import argparse
import copy
import json
import queue
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import torch

from bench.loss import filled_loss
from ncl_ray.data.framecodec import decode_clip, encode_clip
from ncl_ray.data.gpujpeg import decode_clips
from ncl_ray.evaluation.evaluate import embed_rows
from ncl_ray.model.clip import VideoCLIP, ModelSpec, build_model
from ncl_ray.ncl.queue import FeatureQueue
from ncl_ray.model.compile import compile_model
from ncl_ray.train.builders import build_optimizer, build_scheduler
from ncl_ray.train.loop import StepOptions, train_step
from ncl_ray.train.transfer import Ahead

T, S, L = 12, 224, 32
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core FLOP/s (spec sheets)
EAGER = ("sliced_text", "fused_adamw", "amp_frames", "copy_ahead", "sync_free")
ROWS = {"baseline": set(), **{f"+{s}": {s} for s in EAGER}, "all eager": set(EAGER),
        "all + compile": set(EAGER) | {"compile"},
        # the same, fed JPEG clip blobs that the feeder thread decodes with nvJPEG on the side stream
        "all + compile + nvJPEG input": set(EAGER) | {"compile", "jpeg"},
        # the towers as CUDA graphs (torch.compile mode="reduce-overhead"): no per-kernel launch cost
        "all + compile (CUDA graphs)": set(EAGER) | {"graphs"}}


def jpeg_batch(B: int, seed: int) -> dict:
    """A batch as data.decode_on=worker delivers it: B clip-cache blobs (12 JPEG frames each) and captions."""
    b = host_batch(B, seed, False)
    yy, xx = np.mgrid[0:S, 0:S]
    blobs = [encode_clip(np.stack([np.stack([(xx * (i % 7 + 1) + t * 9) % 256, (yy * 3 + i) % 256,
                                             (xx + yy + 5 * t) % 256], -1) for t in range(T)]).astype(np.uint8),
                         "jpeg", 90) for i in range(B)]
    return {"jpeg": blobs, "tokens": b["tokens"].pin_memory(), "n_captions": b["n_captions"].pin_memory()}


def host_batch(B: int, seed: int, pinned: bool) -> dict:
    g = torch.Generator().manual_seed(seed)
    b = {"frames": torch.randint(0, 255, (B, T, S, S, 3), dtype=torch.uint8, generator=g),
         "tokens": torch.randint(1, 49000, (B, 1, L), dtype=torch.int32, generator=g),
         "n_captions": torch.ones(B, dtype=torch.long)}
    b["tokens"][:, 0, L - 1] = 49407  # an end token: pooling reads the same position either way
    return {k: v.pin_memory() for k, v in b.items()} if pinned else b


class Feeder:
    """A producer thread that sends pinned batches ahead (copy_ahead), as the epoch feeder does in training."""

    def __init__(self, batch: dict, device: torch.device):
        self.ahead, self.q = Ahead(device, frame_shape=(T, S, S, 3)), queue.Queue(maxsize=2)
        self.batch, self.stop = batch, threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop.is_set():
            item = self.ahead.send(dict(self.batch))
            while not self.stop.is_set():
                try:
                    self.q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def next(self) -> dict:
        return self.ahead.receive(self.q.get())

    def close(self):
        self.stop.set()
        self.t.join(timeout=5)


class Row:
    """One configuration: its model (shared eager model, or the compiled copy), optimizer, loss and input."""

    def __init__(self, name, switches, models, B, device):
        self.name, self.sw, self.device = name, switches, device
        self.model = models["graphs" if "graphs" in switches else "compile" if "compile" in switches else "eager"]
        self.opt = build_optimizer(self.model, 1e-4, 1e-7, 0.2, fused="fused_adamw" in switches)
        self.sched = build_scheduler(self.opt, 10 ** 6, 0.0)
        self.loss = filled_loss(self.model.embed_dim, 4096, 3).to(device).train()
        source = jpeg_batch(B, 0) if "jpeg" in switches else host_batch(B, 0, True)
        self.feeder = Feeder(source, device) if "copy_ahead" in switches else None
        self.pageable = host_batch(B, 0, False)

    def step(self):
        VideoCLIP.slice_text = "sliced_text" in self.sw
        FeatureQueue.host_counters = "sync_free" in self.sw
        batch = self.feeder.next() if self.feeder else self.pageable
        return train_step(self.model, self.loss, batch, self.opt, self.sched, torch.Generator(), self.device,
                          StepOptions(torch.bfloat16, diagnostics=False, as_floats="sync_free" not in self.sw,
                                      amp_frames="amp_frames" in self.sw))


def window_seconds(row: Row, window: int) -> tuple:
    """(seconds per step, CPU cores the process used meanwhile: training thread plus feeder thread)."""
    torch.cuda.synchronize()
    t, cpu = time.perf_counter(), time.process_time()
    for _ in range(window):
        row.step()
    torch.cuda.synchronize()
    wall = time.perf_counter() - t
    return wall / window, (time.process_time() - cpu) / wall


def flops_per_clip(model, device, sliced: bool) -> dict:
    """Forward FLOPs of one clip (12 frames + one caption), counted by torch (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    VideoCLIP.slice_text = sliced
    b = host_batch(1, 0, False)
    frames = b["frames"].to(device).permute(0, 1, 4, 2, 3).float() / 255
    counts = {}
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for part, fn in (("video", lambda: model.encode_video(frames)),
                         ("text", lambda: model.encode_text(b["tokens"][:, 0].to(device)))):
            with FlopCounterMode(display=False) as fc:
                fn()
            counts[part] = fc.get_total_flops()
    VideoCLIP.slice_text = True
    return {"video_gflop": counts["video"] / 1e9, "text_gflop": counts["text"] / 1e9,
            "clip_forward_gflop": sum(counts.values()) / 1e9, "clip_train_gflop": 3 * sum(counts.values()) / 1e9}


def train_rows(models, B, device, rounds, window, peak, flops, names):
    rows = {n: Row(n, sw, models, B, device) for n, sw in ROWS.items() if n in names
            and all(models.get(k) is not None for k in ("compile", "graphs") if k in sw)}
    peaks, samples, cores = {}, {n: [] for n in rows}, {n: [] for n in rows}
    failed = []
    for n, row in list(rows.items()):  # warm-up (compilation, allocator, cuBLAS heuristics) and peak memory
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        try:
            for _ in range(3):
                row.step()
            torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001  (a row that cannot run is reported, the others still run)
            failed.append({"batch": B, "row": n, "error": f"{type(e).__name__}: {str(e)[:300]}"})
            if row.feeder:
                row.feeder.close()
            del rows[n]
            continue
        peaks[n] = (torch.cuda.max_memory_allocated() / 2 ** 30, time.perf_counter() - t)
    for _ in range(rounds):
        for n, row in rows.items():
            sec, used = window_seconds(row, window)
            samples[n].append(sec)
            cores[n].append(used)
    base = statistics.median(samples[next(iter(rows))])
    out = []
    for n, row in rows.items():
        med = statistics.median(samples[n])
        per_clip = flops["sliced" if "sliced_text" in row.sw else "padded"]["clip_train_gflop"] * 1e9
        out.append({"batch": B, "row": n, "step_ms": round(1e3 * med, 2), "clips_per_s": round(B / med, 1),
                    "speedup": round(base / med, 3), "mfu_pct": round(100 * B / med * per_clip / peak, 1),
                    "peak_gib": round(peaks[n][0], 2), "warmup_s": round(peaks[n][1], 1),
                    "process_cores": round(statistics.median(cores[n]), 2)})
        if row.feeder:
            row.feeder.close()
    return out + failed


def embed_rows_bench(models, device, B, rounds):
    batch = host_batch(B, 1, True)
    batch["index"] = torch.arange(B)
    out = []
    for name, model, sliced in (("baseline", models["eager"], False), ("sliced text", models["eager"], True),
                                ("sliced + compile", models.get("compile"), True),
                                ("sliced + CUDA graphs", models.get("graphs"), True)):
        if model is None:
            continue
        VideoCLIP.slice_text = sliced
        model.eval()
        try:
            with torch.no_grad():
                t = time.perf_counter()
                for _ in range(2):
                    embed_rows(model, batch, device, torch.bfloat16)
                warm = time.perf_counter() - t
                times = []
                for _ in range(rounds):
                    torch.cuda.synchronize()
                    t = time.perf_counter()
                    embed_rows(model, batch, device, torch.bfloat16)
                    torch.cuda.synchronize()
                    times.append(time.perf_counter() - t)
        except Exception as e:  # noqa: BLE001
            out.append({"batch": B, "row": name, "error": f"{type(e).__name__}: {str(e)[:300]}"})
            continue
        finally:
            model.train()
        med = statistics.median(times)
        out.append({"batch": B, "row": name, "embed_ms": round(1e3 * med, 2), "clips_per_s": round(B / med, 1),
                    "warmup_s": round(warm, 1)})
    VideoCLIP.slice_text = True
    return out


def profile_row(models, B, device, steps: int, name: str = "all + compile") -> dict:
    """Where a step's time goes: torch.profiler over `steps` steps of one row; the GPU's busy fraction (kernel
    time over wall time) and the top operators by GPU and by CPU time, per step."""
    from torch.profiler import ProfilerActivity, profile

    row = Row(name, ROWS[name], models, B, device)
    for _ in range(3):
        row.step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        for _ in range(steps):
            row.step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - t
    if row.feeder:
        row.feeder.close()
    ev = prof.key_averages()
    kernels = sum(e.self_device_time_total for e in ev) / 1e6  # seconds, kernels and copies
    top = lambda key: [{"op": e.key[:70], "ms_per_step": round(getattr(e, key) / 1e3 / steps, 2),  # noqa: E731
                        "calls_per_step": e.count // steps} for e in sorted(ev, key=lambda e: -getattr(e, key))[:12]]
    return {"row": name, "batch": B, "step_ms": 1e3 * wall / steps, "gpu_busy": kernels / wall,
            "top_gpu": top("self_device_time_total"), "top_cpu": top("self_cpu_time_total")}


def equivalence(device, steps: int = 50, B: int = 16) -> dict:
    """The same 50 steps (same seed, same batches) eager vs compiled: their losses step by step."""
    torch.manual_seed(0)
    a = build_model(ModelSpec("ViT-B-32", "", "meanP", S, L)).to(device)
    b = compile_model(copy.deepcopy(a))
    losses = {}
    for name, model in (("eager", a), ("compiled", b)):
        opt = build_optimizer(model, 1e-5, 1e-6, 0.2)
        sched = build_scheduler(opt, steps, 0.1)
        loss = filled_loss(model.embed_dim, 4096, 3).to(device).train()
        torch.manual_seed(1)
        loss.text_queue.queue.copy_(torch.nn.functional.normalize(torch.randn_like(loss.text_queue.queue), dim=1))
        loss.video_queue.queue.copy_(torch.nn.functional.normalize(torch.randn_like(loss.video_queue.queue), dim=1))
        losses[name] = [train_step(model, loss, host_batch(B, 100 + i % 4, False), opt, sched,
                                   torch.Generator().manual_seed(i), device,
                                   StepOptions(torch.bfloat16, diagnostics=False))["train/contrastive_loss"]
                        for i in range(steps)]
    diff = [abs(x - y) / abs(x) for x, y in zip(losses["eager"], losses["compiled"])]
    return {"steps": steps, "batch": B, "first_loss": losses["eager"][0], "last_loss_eager": losses["eager"][-1],
            "last_loss_compiled": losses["compiled"][-1], "max_rel_diff": max(diff),
            "mean_rel_diff": sum(diff) / len(diff)}


def jpeg_rates(device, n_clips: int = 64) -> dict:
    """Clip-cache blobs (12 JPEG frames at 224 px, quality 90) decoded by one CPU core vs on the GPU."""
    yy, xx = np.mgrid[0:S, 0:S]
    clips = []
    for i in range(n_clips):
        frames = np.stack([np.stack([(xx * (i + 1) + t * 7) % 256, (yy * 3 + i) % 256, (xx + yy + t) % 256], -1)
                           for t in range(T)]).astype(np.uint8)
        clips.append(encode_clip(frames, "jpeg", 90))
    shape = (T, S, S, 3)
    t = time.perf_counter()
    cpu = [decode_clip(c, "jpeg", shape) for c in clips]
    cpu_s = time.perf_counter() - t
    decode_clips(clips[:4], shape, device)  # warm-up (nvJPEG handles)
    times = []
    for _ in range(5):
        torch.cuda.synchronize()
        t = time.perf_counter()
        gpu = decode_clips(clips, shape, device)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    err = (gpu.cpu().float() - torch.from_numpy(np.stack(cpu)).float()).abs()
    return {"clips": n_clips, "cpu_clips_per_s_per_core": n_clips / cpu_s,
            "gpu_clips_per_s": n_clips / statistics.median(times), "max_abs_diff_vs_pil": float(err.max()),
            "mean_abs_diff_vs_pil": float(err.mean())}


def model_sections(args, device, peak, report, section) -> None:
    """FLOPs, the training rows at each batch size and evaluation embedding, on one eager model and its
    compiled copies."""
    torch.manual_seed(0)
    eager = build_model(ModelSpec("ViT-B-32", "", "meanP", S, L)).to(device)
    section("flops", lambda: {"padded": flops_per_clip(eager, device, False),
                              "sliced": flops_per_clip(eager, device, True)})
    names = args.rows.split(",") if args.rows else list(ROWS)
    models = {"eager": eager,
              "compile": None if args.no_compile else compile_model(copy.deepcopy(eager)),
              "graphs": compile_model(copy.deepcopy(eager), mode="reduce-overhead")
              if any("graphs" in ROWS[n] for n in names) else None}
    for i, B in enumerate(int(x) for x in args.batches.split(",")):
        done = list(report.get("train", []))
        section("train", lambda B=B, done=done: done + train_rows(models, B, device, args.rounds, args.window,
                                                                  peak, report["flops"], names))
        if i == 0 and args.profile and models["compile"] is not None:
            section("profile", lambda B=B: profile_row(models, B, device, args.profile))
        if i == 1 and args.embed:  # the acceptance's two batch sizes first, then evaluation, then the rest
            section("embed", lambda: embed_rows_bench(models, device, 256, args.rounds))
    if "embed" not in report and args.embed:
        section("embed", lambda: embed_rows_bench(models, device, 256, args.rounds))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="128,16,64")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--window", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--rows", default="", help="comma-separated row names (default: all); the first is the 1.0")
    ap.add_argument("--no-embed", dest="embed", action="store_false")
    ap.add_argument("--no-jpeg", dest="jpeg", action="store_false")
    ap.add_argument("--no-equivalence", dest="equivalence", action="store_false")
    ap.add_argument("--profile", type=int, default=0, help="profile N steps of the compiled row at the first batch")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench.gpu needs a CUDA device (torch.cuda.is_available() is False)")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    props = torch.cuda.get_device_properties(device)
    peak = next((v for k, v in PEAK_BF16.items() if k in props.name), 989e12)
    report = {"device": props.name, "torch": torch.__version__, "cuda": torch.version.cuda, "peak_bf16": peak,
              "model": "ViT-B/32 random init, 12 x 224 px, 32 tokens, meanP, bf16, NCL q4096 3 it"}

    def save(key, value):
        report[key] = value
        (out / "gpu.json").write_text(json.dumps(report, indent=2))
        print(key, json.dumps(value, indent=1), flush=True)

    def section(key, fn):  # one failing part is recorded and the others still run
        try:
            save(key, fn())
        except Exception as e:  # noqa: BLE001
            save(key + "_error", f"{type(e).__name__}: {e}")

    if args.jpeg:
        section("jpeg", lambda: jpeg_rates(device))
    model_sections(args, device, peak, report, section)  # its models are freed when it returns
    torch.cuda.empty_cache()
    if not args.no_compile and args.equivalence:
        section("equivalence", lambda: equivalence(device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
