"""The real recipe, rehearsed on CPU end to end, with a per-stage report: `make rehearsal`.

    python -m bench.rehearsal [--videos 160] [--out data/rehearsal] [key=value ...]

Stages, each timed in this one run: corpus generation (MSR-VTT's shape, `make-data --profile realistic`), the
clip cache build (`ncl-ray prepare`: decode + JPEG + Parquet write), a cache read of the train split (Parquet
read + JPEG decode in Ray Data tasks), training (`ncl-ray train conf/rehearsal.yaml`: input wait, forward,
loss, backward with DDP's all-reduce, optimizer, per steady-state step; one all-reduce of the gradients
alone), and the full test-split evaluation (embedding, scoring). Peak RSS per process role and the object
store's peak come from sampling /proc and Ray while the commands run. The report is printed and written to
<out>/report.json.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict

from bench.report import last_json

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("RayTrainWorker", "MapBatches", "MapWorker", "ReadParquet", "TrainController", "raylet", "gcs_server",
         "dashboard", "IDLE")


def _proc_table() -> Dict[int, tuple]:
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                rss = next(int(x.split()[1]) for x in (d / "status").read_text().splitlines()
                           if x.startswith("VmRSS:")) * 1024
                out[int(d.name)] = (ppid, cmd, rss)
            except (OSError, ValueError, IndexError, StopIteration):
                pass
    return out


class RssSampler:
    """Peak RSS per process role among the descendants of one process, sampled every `every_s`."""

    def __init__(self, root_pid: int, every_s: float = 1.0):
        self.root, self.every_s, self.peak = root_pid, every_s, {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            table = _proc_table()
            family, frontier = {self.root}, {self.root}
            while frontier:
                frontier = {p for p, (pp, _, _) in table.items() if pp in frontier and p not in family}
                family |= frontier
            for pid in family & set(table):
                _, cmd, rss = table[pid]
                role = next((r for r in ROLES if r in cmd), "driver" if pid == self.root else "other")
                self.peak[role] = max(self.peak.get(role, 0), rss)

    def stop(self) -> Dict[str, int]:
        self._stop.set()
        self._t.join(timeout=5)
        return dict(self.peak)


def run(cmd, env, log: Path) -> tuple:
    t = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        sampler = RssSampler(p.pid)
        rc = p.wait()
        peaks = sampler.stop()
    if rc != 0:
        sys.exit(f"{' '.join(cmd[:4])} failed (exit {rc}); see {log}:\n" + log.read_text()[-3000:])
    return time.perf_counter() - t, peaks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=160)
    ap.add_argument("--out", default="data/rehearsal")
    ap.add_argument("--config", default="conf/rehearsal.yaml")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / f"corpus-{args.videos}"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    py = [sys.executable, "-m", "ncl_ray"]
    common = [f"data.manifest={corpus}/manifest.jsonl", f"data.cache_dir={out}/cache", *args.overrides]
    report: Dict[str, dict] = {}

    gen_s = 0.0
    if not (corpus / "manifest.jsonl").exists():
        gen_s, _ = run(py + ["make-data", "--profile", "realistic", "--out", str(corpus), "--videos",
                             str(args.videos)], env, out / "generate.log")
    report["generate"] = {"wall_s": round(gen_s, 1), "videos": args.videos, "note": "0 = reused"}

    prep_s, prep_rss = run(py + ["prepare", args.config, *common], env, out / "prepare.log")
    caches = sorted((out / "cache").glob("clips-*/summary.json"), key=lambda p: p.stat().st_mtime)
    summary = json.loads(caches[-1].read_text())
    decoded = summary["total"] - len(summary["skipped"])
    raw = summary["num_frames"] * summary["size"] ** 2 * 3
    report["decode+cache write"] = {
        "wall_s": round(summary["seconds"] or prep_s, 1),
        "clips_per_s": round(decoded / max(summary["seconds"], 1e-9), 2),
        "bytes_per_clip": round(summary["bytes_per_clip"]), "raw_bytes_per_clip": raw,
        "compression": round(raw / max(summary["bytes_per_clip"], 1), 1), "encoding": summary["encoding"],
        "skipped": len(summary["skipped"]), "peak_rss_mb": {k: v >> 20 for k, v in prep_rss.items()}}

    read_s, read_rss = run([sys.executable, "-m", "bench.cache_read", caches[-1].parent.as_posix(),
                            str(corpus / "manifest.jsonl")], env, out / "cache_read.log")
    read = last_json((out / "cache_read.log").read_text())
    report["cache read (train split)"] = {**read, "peak_rss_mb": {k: v >> 20 for k, v in read_rss.items()}}

    name = f"rehearsal-{int(time.time())}"
    train_s, train_rss = run(py + ["train", args.config, *common, f"run.storage_path={out}/runs",
                                   f"run.name={name}"], env, out / "train.log")
    results = json.loads((out / "runs" / name / "results.json").read_text())
    prof, m = results["profile"], results["metrics"]
    step = sum(v for k, v in prof.items() if k.endswith("_s_per_step"))
    clips_per_step = results["metrics"].get("train/clips_per_s", 0)
    report["training"] = {
        "wall_s": round(train_s, 1), "steady_steps": prof.get("steps"),
        "seconds_per_step": round(step, 3), "clips_per_s": round(clips_per_step, 2),
        **{k.replace("_s_per_step", "_s"): round(v, 3) for k, v in prof.items() if k.endswith("_s_per_step")},
        "allreduce_alone_s": round(prof.get("allreduce_s", 0.0), 3),
        "object_store_peak_mb": round(prof.get("object_store_peak_bytes", 0) / 2**20, 1),
        "peak_rss_mb": {k: v >> 20 for k, v in train_rss.items()}}
    report["evaluation (test split)"] = {
        "videos": m.get("test/time/videos"), "embed_s": round(m.get("test/time/embed_s", 0), 1),
        "score_s": round(m.get("test/time/score_s", 0), 2),
        "clips_per_s": round(m.get("test/time/videos", 0) / max(m.get("test/time/embed_s", 1e-9), 1e-9), 2),
        "t2v_R@1_ncl": m.get("test/ncl/t2v_R@1"), "t2v_R@1_none": m.get("test/none/t2v_R@1")}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"rehearsal report ({args.config}, {args.videos} videos; logs and report.json in {out})")
    for stage, values in report.items():
        print(f"\n[{stage}]")
        for k, v in values.items():
            print(f"  {k:24s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
