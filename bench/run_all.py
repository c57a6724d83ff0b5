"""`make bench`: every benchmark in turn; tables on stdout, JSON under bench/out/."""

import subprocess
import sys
import time

BENCHES = ["bench.hubs", "bench.decode", "bench.frames", "bench.loss", "bench.eval_scale", "bench.e2e",
           "bench.hotpaths"]


def main():
    import torch

    benches = list(BENCHES)
    if torch.cuda.is_available():
        benches.append("bench.gpu")
    else:
        print("bench.gpu skipped: no CUDA device on this machine", flush=True)
    for name in benches:
        print(f"\n=== {name} ===", flush=True)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", name], check=True)
        print(f"({time.perf_counter() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
