"""The torch thread count a training worker picks (ncl_ray/train/threads.py); the count inside a real Ray Train worker
is checked by tests/ray/test_train.py."""

import os

from ncl_ray.train.threads import auto_threads

CORES = len(os.sched_getaffinity(0))


def test_explicit_count_wins():
    assert auto_threads(3, 0.5, False, False, 2, 1) == 3


def test_cpu_training_in_memory_uses_the_node_cores_shared_by_its_workers():
    assert auto_threads(0, 0.5, False, False, CORES, 1) == CORES  # not 1 because 0.5 CPUs were reserved
    assert auto_threads(0, 0.5, False, False, CORES, CORES) == 1
    assert auto_threads(0, 0.5, False, False, 4 * CORES, 1) == CORES  # never more than the cores


def test_gpu_or_decoding_while_training_uses_the_reserved_cpus():
    assert auto_threads(0, 0.5, True, False, 64, 1) == 1
    assert auto_threads(0, min(2, CORES), False, True, 64, 1) == min(2, CORES)
    assert auto_threads(0, 1.5, True, False, 64, 1) == min(2, CORES)  # rounded up


def test_auto_in_memory_picks_by_size(monkeypatch):
    import ray

    from ncl_ray.config.schema import load_config
    from ncl_ray.data.pipeline import ClipCache
    from ncl_ray.train.inputs import data_mode

    cfg = load_config(None, ["data.num_frames=12", "data.frame_size=224"])  # 1.8 MB a clip decoded
    cache = ClipCache("c", 12, 224, 1000, [], "jpeg", 16_000.0)  # 1000 clips: 1.8 GB decoded, 16 MB encoded
    for store_gb, expected in ((30, "true"), (3, "encoded"), (0.01, "false")):
        monkeypatch.setattr(ray, "cluster_resources", lambda g=store_gb: {"object_store_memory": g * 1e9})
        assert data_mode(cfg, cache) == expected, store_gb
    assert data_mode(load_config(None, ["data.in_memory=false"]), cache) == "false"  # a choice is kept
