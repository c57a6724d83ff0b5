"""CPU threads of a Ray Train worker.

Ray sets `OMP_NUM_THREADS` to a task's CPU count, rounded down to at least 1, so a worker that reserves
`train.cpus_per_worker=0.5` (the default, which leaves CPUs to Ray Data) runs torch on one thread even when the
node's other cores sit idle. The worker sets its thread count explicitly instead:

- `train.threads_per_worker > 0`: that many.
- 0 (auto), CPU training on in-memory data: the node's CPUs shared among the training workers on that node
  (decoding is finished before training starts, so the cores are the workers'); at least the reserved CPUs.
- 0 (auto), GPU training or data decoded while training (`data.streaming`, `data.in_memory` encoded or false): the CPUs
  the worker reserved (rounded up), so torch's threads do not compete with Ray Data's tasks for the cores.
Never more than the cores this process may run on (a node's logical CPUs may exceed them).
"""

import math
import os

import torch


def auto_threads(threads_per_worker: int, cpus_per_worker: float, use_gpu: bool, decodes_while_training: bool,
                 node_cpus: float, workers_on_node: int) -> int:
    """The torch thread count for one worker (see the module docstring)."""
    if threads_per_worker > 0:
        return threads_per_worker
    cores = len(os.sched_getaffinity(0))  # a node may claim more logical CPUs than it has cores
    reserved = max(1, math.ceil(cpus_per_worker))
    if use_gpu or decodes_while_training:
        n = reserved
    else:
        n = max(reserved, min(int(node_cpus), cores) // max(1, workers_on_node))
    return max(1, min(n, cores))


def set_worker_threads(cfg, local_world_size: int, data_mode: str = "true") -> int:
    """Set torch's intra-op threads in this Ray Train worker from the config, its node and where epochs read the
    clips from (`data_mode`: data.in_memory as resolved); returns the count."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    node_cpus = next((n["Resources"].get("CPU", 1) for n in ray.nodes() if n["NodeID"] == node_id), 1)
    d, t = cfg.data, cfg.train
    n = auto_threads(t.threads_per_worker, t.cpus_per_worker, t.use_gpu, d.streaming or data_mode != "true",
                     node_cpus, local_world_size)
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)  # for libraries that read it later (e.g. in child processes)
    return n
