"""Bank shift on the built-in corpus: every test-time method's t2v R@1 with a bank of in-domain queries and with
a bank from another distribution, on a plain-trained and an NCL-trained checkpoint; and the league (t2v and v2t
R@1 and cost of every method) from the in-domain evaluations.

Both models train on the built-in corpus's uniform profile (`ncl-ray train conf/default.yaml`, plain with
ncl.n_iters=0). The banks are query files (`eval.bank_source=file`): the uniform profile's training captions
(in-domain) and the long-tail profile's (shifted: Zipf over the combinations and generic captions, as a bank
from another corpus would be). Every step through the real CLI; each evaluation with `eval.methods=[all]`.

    python -m bench.bank_shift [--videos 160] [--epochs 8]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.report import write
from ncl_ray.data.synthetic import make_dataset
from ncl_ray.ncl.methods import BY_NAME, METHODS


def captions(manifest: str, split: str = "train"):
    rows = [json.loads(line) for line in Path(manifest).read_text().splitlines() if line.strip()]
    return [r["caption"] for r in rows if r.get("split") == split]


def cli(*args):
    done = subprocess.run([sys.executable, "-m", "ncl_ray", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"ncl-ray {' '.join(args[:2])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=0, help="0 = conf/default.yaml's")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ncl-ray-bank-shift-"))
    banks = {}
    for profile, name in (("uniform", "in-domain"), ("longtail", "shifted")):
        manifest = make_dataset(str(work / profile), args.videos, seed=1, profile=profile)
        banks[name] = work / f"{profile}.txt"
        banks[name].write_text("\n".join(captions(manifest)) + "\n")
    common = [f"data.synthetic_videos={args.videos}", f"run.storage_path={work / 'runs'}"]
    common += [f"train.epochs={args.epochs}"] if args.epochs else []
    results = {}
    for arm, n_iters in (("plain", "0"), ("ncl", "10")):
        cli("train", "conf/default.yaml", f"run.name=shift-{arm}", f"ncl.n_iters={n_iters}", *common)
        for bank, path in banks.items():
            out = work / f"eval-{arm}-{bank}"
            cli("eval", str(work / "runs" / f"shift-{arm}"), "eval.methods=[all]", "eval.bank_source=file",
                f"eval.bank_file={path}", f"eval.out_dir={out}", "eval.nnn_k=64")
            results[(arm, bank)] = json.loads((out / "metrics.json").read_text())
    rows = []
    for method in METHODS:
        row = {"method": method}
        for arm in ("plain", "ncl"):
            for bank in banks:
                row[f"{arm}-trained, {bank} bank"] = results[(arm, bank)][f"{method}/t2v_R@1"]
        rows.append(row)
    league = [{"method": m, "reads test queries": "yes" if BY_NAME[m].transductive else "no",
               **{f"{arm} {d} R@1": results[(arm, "in-domain")][f"{m}/{d}_R@1"] for arm in ("plain", "ncl")
                  for d in ("t2v", "v2t")},
               **{f"{arm} cost s": results[(arm, "in-domain")][f"{m}/time_s"] for arm in ("plain", "ncl")}}
              for m in METHODS]
    write("builtin_league", league, {"setup": "the in-domain evaluations above: every method on both checkpoints"})
    n_bank = {k: len(v.read_text().splitlines()) for k, v in banks.items()}
    write("bank_shift", rows, {"setup": f"built-in corpus, uniform profile, {args.videos} videos; banks: "
                                        f"{n_bank['in-domain']} uniform training captions (in-domain), "
                                        f"{n_bank['shifted']} long-tail training captions (shifted); "
                                        f"eval.nnn_k=64 (the banks are small)", "work": str(work)})


if __name__ == "__main__":
    main()
