"""The driver side of a Ray Train run: `fit` builds the TorchTrainer around `worker.train_loop_per_worker`.

Workers that cannot be placed fail fast (`train.startup_timeout_s`); a private instance keeps PyTorch's rendezvous
on loopback (`torch_backend.py`); failures restore from the last checkpoint, queues included.
"""

import os

from ncl_ray.config.schema import to_dict
from ncl_ray.train.worker import train_loop_per_worker


def fit(cfg, datasets, meta, callbacks=None):
    """Build and run the TorchTrainer; returns the Ray Train Result."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ncl_ray.runtime.cluster import check_training_resources
    from ncl_ray.train.torch_backend import LoopbackTorchConfig

    t = cfg.train
    check_training_resources(t.num_workers, t.cpus_per_worker, t.use_gpu)
    # workers that cannot be placed fail after this long, and the start is retried only twice (Ray's default
    # retries forever); the variable reaches Ray Train's controller from the driver's environment
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(t.startup_timeout_s)
    resources = {"CPU": t.cpus_per_worker}
    if t.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        torch_config=LoopbackTorchConfig(),
        train_loop_config={"cfg": to_dict(cfg), "meta": meta},
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker=resources,
                                     placement_strategy=t.placement_strategy),
        run_config=RunConfig(name=cfg.run.name, storage_path=cfg.run.storage_path,
                             failure_config=FailureConfig(max_failures=t.max_failures, controller_failure_limit=2),
                             checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints),
                             callbacks=callbacks or []),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"] if "train" in datasets else []),
    )
    return trainer.fit()
