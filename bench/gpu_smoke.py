"""The recipe on a GPU inside Ray Train, end to end, in one call (under 8 minutes on one H100/H200):

    python -m bench.gpu_smoke [--videos 240] [--out /tmp/ncl-ray-gpu-smoke]
    python -m bench.gpu_smoke --dry-run        # the same steps on the CPU with a tiny model (checks the script)

1. an MSR-VTT-shaped corpus made on the spot (`make-data --profile realistic`);
2. ViT-B/32 with random weights written as an OpenAI TorchScript file (fp16, the layout `model.pretrained` reads);
3. `ncl-ray train conf/msrvtt.yaml` on it: fp16 CLIP weights with BertAdam, train.compile=auto, pairs with
   CLIP4Clip's frames, nvJPEG in the trainer (data.decode_on=auto), the NCL queue, 2 epochs, one GPU;
4. `ncl-ray eval` on its checkpoint (compiled embedding actors);
5. `bench.gpu` rows at batch 16 and 128 and the evaluation's embedding rate, in the same run.
One table (bench/out/gpu_smoke.json): loss per epoch (finite and falling), the eval's R@1, the recipe's clips/s
inside Ray Train beside bench.gpu's rate for the same step.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.report import write


def sh(cmd, log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd[:4]))} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - started


def openai_layout_weights(path: Path, arch: str) -> None:
    """Random weights of `arch` saved as OpenAI's files are: a traced TorchScript module with fp16 weights."""
    import open_clip
    import torch

    model = open_clip.create_model(arch).eval()
    open_clip.model.convert_weights_to_lp(model, torch.float16)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    traced = torch.jit.trace_module(model, {"encode_image": torch.randn(1, 3, size, size).half()}, check_trace=False)
    traced.save(str(path))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=240)
    ap.add_argument("--out", default="/tmp/ncl-ray-gpu-smoke")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny model, 16 px: the script's own check")
    args = ap.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run to check the steps on the CPU", file=sys.stderr)
        return 2
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    py = [sys.executable, "-m", "ncl_ray"]
    corpus, times = out / f"corpus-{args.videos}", {}
    if not (corpus / "manifest.jsonl").exists():
        times["corpus_s"] = sh(py + ["make-data", "--profile", "realistic", "--out", str(corpus), "--videos",
                                     str(args.videos)], out / "corpus.log")
    arch = "ViT-B-32"
    overrides = ["data.dataset=manifest", f"data.manifest={corpus}/manifest.jsonl", f"data.cache_dir={out}/cache",
                 "train.num_workers=1", "train.epochs=2", f"train.batch_size={args.batch}", "train.cpus_per_worker=4",
                 f"run.storage_path={out}/runs", f"run.name=smoke-{int(time.time())}", "train.log_every_steps=5"]
    if args.dry_run:
        overrides += ["model.arch=tiny", "model.pretrained=", "data.frame_size=32", "data.num_frames=4",
                      "train.use_gpu=false", "model.clip_fp16=false", "train.cpus_per_worker=1",
                      "ncl.queue_size=64", "train.batch_size=4"]
    else:
        weights = out / f"{arch}-random-openai-layout.pt"
        if not weights.exists():
            openai_layout_weights(weights, arch)
        overrides.append(f"model.pretrained={weights}")
    name = next(o.split("=", 1)[1] for o in overrides if o.startswith("run.name="))
    times["train_s"] = sh(py + ["train", "conf/msrvtt.yaml", *overrides], out / "train.log")
    run = out / "runs" / name
    results = json.loads((run / "results.json").read_text())
    times["eval_s"] = sh(py + ["eval", str(run), f"eval.out_dir={out}/eval"], out / "eval.log")
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    rows = [{"row": "recipe inside Ray Train", "clips_per_s": results["metrics"].get("train/clips_per_s", 0.0),
             "decoder": ", ".join(w["frame_decode"] for w in results["workers"]),
             "device": ", ".join(w["device"] for w in results["workers"])}]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    losses = [round(e.value, 4) for e in events.Scalars("train/epoch_loss")]  # one per epoch
    if not args.dry_run:
        gpu_out = out / "gpu"
        times["bench_gpu_s"] = sh([sys.executable, "-m", "bench.gpu", "--batches", f"{args.batch},128",
                                   "--rounds", "3", "--no-equivalence", "--no-jpeg", "--rows",
                                   "all + compile,all + compile + nvJPEG input,all + compile (CUDA graphs)",
                                   "--out", str(gpu_out)], out / "gpu.log")
        report = json.loads((gpu_out / "gpu.json").read_text())
        for r in report.get("train", []) + report.get("embed", []):
            rows.append({"row": f"bench.gpu {r['row']} B={r['batch']}", "clips_per_s": r.get("clips_per_s", 0.0),
                         "decoder": "-", "device": report.get("device", "cuda")})
    write("gpu_smoke", rows, {
        "loss per epoch": losses, "finite and falling": all(x == x for x in losses) and losses == sorted(losses,
                                                                                                      reverse=True),
        "eval t2v R@1 (ncl, none)": (metrics.get("ncl/t2v_R@1"), metrics.get("none/t2v_R@1")),
        "leak check": metrics.get("leak_check"), **{k: round(v, 1) for k, v in times.items()},
        "card": torch.cuda.get_device_name() if torch.cuda.is_available() else "none (dry run)"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
