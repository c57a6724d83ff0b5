"""Hot paths and defaults, measured side by side in one run (`make bench-hotpaths`):

1. a training step in a Ray Train worker (default resources, threads set by ncl_ray/train/threads.py) vs the same step
   in a plain process with the same number of torch threads; also the worker pinned to one thread (what Ray's
   OMP_NUM_THREADS=1 gave before) — tiny model at B=32 and ViT-B/32 at 12 x 224 px, B=2;
2. the loss alone, forward + backward at B=128, D=512: CLIP's loss vs NCL at 0 iterations with a full 16k queue;
3. each epoch's wait for its first batch in the main job (conf/default.yaml, 4 epochs) with each `data.in_memory`:
   decoded clips in the object store, the cache's encoded bytes there, the Parquet cache streamed from disk;
   beside it the data pipeline's start-up that the overlap hides;
4. test-time NCL on a 1M-video gallery (bank 1000 queries, 1000 test queries, D=256, 5 iterations): time and
   peak memory in a fresh process, with the default byte budget.

    python -m bench.hotpaths [--skip-vit]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.loss import loss_alone
from bench.report import last_json, write

CORES = len(os.sched_getaffinity(0))
MODELS = {"tiny": dict(arch="tiny", B=32, T=8, S=32, steps=12), "ViT-B-32": dict(arch="ViT-B-32", B=2, T=12, S=224,
                                                                               steps=3)}


def step_times(arch: str, B: int, T: int, S: int, steps: int) -> list:
    """Seconds of `steps` training steps after one warm-up (NCL loss, queue 256, 5 iterations)."""
    import torch

    from ncl_ray.model.clip import ModelSpec, build_model
    from ncl_ray.ncl.loss import NCLLoss
    from ncl_ray.train.builders import build_optimizer, build_scheduler
    from ncl_ray.train.loop import StepOptions, train_step

    torch.manual_seed(0)
    model = build_model(ModelSpec(arch, "", "meanP", S, 32))
    loss = NCLLoss(model.embed_dim, 256, 5)
    opt = build_optimizer(model, 1e-5, 1e-7, 0.0)
    sched = build_scheduler(opt, 10 ** 6, 0.0)
    batch = {"frames": torch.randint(0, 255, (B, T, S, S, 3), dtype=torch.uint8),
             "tokens": torch.randint(1, 49000, (B, 1, 32), dtype=torch.int32), "n_captions": torch.ones(B)}
    out = []
    for i in range(steps + 1):
        t = time.perf_counter()
        train_step(model, loss, batch, opt, sched, torch.Generator(), torch.device("cpu"),
                   StepOptions(diagnostics=False))
        if i:
            out.append(time.perf_counter() - t)
    return out


def _worker_loop(config):
    import ray.train
    import torch

    from ncl_ray.config.schema import from_dict
    from ncl_ray.train.threads import set_worker_threads

    cfg = from_dict(config["cfg"])
    threads = set_worker_threads(cfg, ray.train.get_context().get_local_world_size())
    if config["pin"]:
        torch.set_num_threads(threads := 1)
    times = step_times(**config["model"])
    with open(config["out"], "w") as f:  # Train V2 keeps reported metrics only with checkpoints: a file instead
        json.dump({"times": times, "threads": threads}, f)


def in_ray_worker(model: dict, pin_one_thread: bool, storage: str) -> dict:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ncl_ray.config.schema import load_config, to_dict

    cfg = load_config("conf/default.yaml", ["train.num_workers=1"])  # the default resources: 0.5 CPU
    out = os.path.join(storage, f"worker-{time.time_ns()}.json")
    trainer = TorchTrainer(_worker_loop, train_loop_config={"cfg": to_dict(cfg), "model": model, "pin": pin_one_thread,
                                                            "out": out},
                           scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.5}),
                           run_config=RunConfig(name=f"w{time.time_ns()}", storage_path=storage))
    trainer.fit()
    return json.load(open(out))


def main_job_epoch_starts(in_memory: str, work: str) -> dict:
    runs = os.path.join(work, f"runs-{in_memory}")
    cmd = [sys.executable, "-m", "ncl_ray", "train", "conf/default.yaml", "train.epochs=4", "train.eval_every_epochs=0",
           f"data.in_memory={in_memory}", f"run.storage_path={runs}", "run.name=epochs",
           f"data.cache_dir={work}/cache", f"data.root={work}/data"]
    subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0"))
    prof = json.load(open(os.path.join(runs, "epochs", "results.json")))["profile"]
    return {"waits": prof["epoch_start_s"], "startups": prof["epoch_pipeline_start_s"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs="*")
    ap.add_argument("--skip-vit", action="store_true")
    args = ap.parse_args()
    if args.one is not None:  # a plain process: the steps on CORES threads
        import torch

        torch.set_num_threads(CORES)
        print(json.dumps(step_times(**MODELS[args.one[0]])))
        return
    import ray

    from ncl_ray.runtime.cluster import init_ray

    rows, notes = [], {"cores": CORES}
    work = tempfile.mkdtemp(prefix="ncl-hot-")
    init_ray("", num_cpus=CORES, verbose=False)
    try:
        for name, model in MODELS.items():
            if name != "tiny" and args.skip_vit:
                continue
            plain, worker, pinned = [], [], []
            for _ in range(2):  # interleaved rounds
                out = subprocess.run([sys.executable, "-m", "bench.hotpaths", "--one", name], capture_output=True,
                                     text=True, check=True).stdout
                plain += last_json(out)
                w = in_ray_worker(model, False, work)
                worker += w["times"]
                threads = w["threads"]
                pinned += in_ray_worker(model, True, work)["times"]
            p, w, one = (statistics.median(x) for x in (plain, worker, pinned))
            rows += [{"measure": f"{name} step, plain process, {CORES} threads", "value": p, "unit": "s", "ratio": 1.0},
                     {"measure": f"{name} step, Ray Train worker (0.5 CPU, {threads} threads)", "value": w, "unit": "s",
                      "ratio": w / p},
                     {"measure": f"{name} step, Ray Train worker pinned to 1 thread (before)", "value": one,
                      "unit": "s", "ratio": one / p}]
            notes[f"worker_vs_plain_{name}"] = w / p
    finally:
        ray.shutdown()
    clip, ncl0 = loss_alone(variants=((0, False),))  # the same measurement as bench/loss.py
    rows += [{"measure": "CLIP loss, B=128 D=512 (fwd+bwd)", "value": clip["step_ms"] / 1e3, "unit": "s", "ratio": 1.0},
             {"measure": "NCL loss n_iters=0, queue 16k (fwd+bwd)", "value": ncl0["step_ms"] / 1e3, "unit": "s",
              "ratio": ncl0["ratio"]}]
    notes["loss_iters0_queue_vs_clip"] = ncl0["ratio"]
    for in_memory in ("true", "encoded", "false"):
        ep = main_job_epoch_starts(in_memory, work)
        label = {"true": "decoded clips in the object store", "encoded": "encoded clips in the object store",
                 "false": "Parquet cache streamed from disk"}[in_memory]
        later_wait, later_start = max(ep["waits"][1:]), max(ep["startups"][1:])
        rows += [{"measure": f"epoch 1 first-batch wait ({label})", "value": ep["waits"][0], "unit": "s",
                  "ratio": float("nan")},
                 {"measure": f"epoch 2+ first-batch wait, max ({label})", "value": later_wait, "unit": "s",
                  "ratio": float("nan")},
                 {"measure": f"epoch 2+ pipeline start-up hidden by the overlap, max ({label})", "value": later_start,
                  "unit": "s", "ratio": float("nan")}]
        notes[f"epoch2plus_wait_s_in_memory_{in_memory}"] = later_wait
    out = subprocess.run([sys.executable, "-m", "bench.eval_scale", "--one", "1000000", "blocked"],
                         capture_output=True, text=True, check=True).stdout
    ev = last_json(out)
    rows += [{"measure": "1M-gallery NCL evaluation: time", "value": ev["seconds"], "unit": "s", "ratio": float("nan")},
             {"measure": "1M-gallery NCL evaluation: peak extra memory", "value": ev["peak_extra_mb"] / 1024,
              "unit": "GiB", "ratio": float("nan")}]
    notes["eval_1m_seconds"], notes["eval_1m_peak_gib"] = ev["seconds"], ev["peak_extra_mb"] / 1024
    write("hotpaths", rows, notes)


if __name__ == "__main__":
    main()
