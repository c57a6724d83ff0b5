"""`ncl-ray train conf/default.yaml [key=value ...]`: the main job, from inputs to the printed report.

Order matters for the user: inputs are checked before Ray starts and before the run folder exists; progress
(decode, training, evaluation) is one line per phase; Ray's own logs end up in runs/<name>/logs/.
"""

import json
import logging
import time

from ncl_ray.runtime import storage
from ncl_ray.runtime.runs import BEST, best_info, publish, pull_best, remove_orphan_checkpoints, run_uri_of
from ncl_ray.train.inputs import open_run, prepare_data

log = logging.getLogger("ncl_ray.train.job")


def run_job(cfg) -> int:
    """The main job: data, distributed training, final test evaluation, summary."""
    started = time.time()  # Ray's logs written from here on are this run's
    run_dir, entries = open_run(cfg)  # inputs checked before Ray starts and before the run folder exists
    run_uri = run_uri_of(cfg)  # object storage: run_dir is a local scratch folder, mirrored there and removed
    try:
        return _run(cfg, run_dir, run_uri, entries, started)
    finally:
        if run_uri:
            import shutil

            publish(run_dir, run_uri)
            shutil.rmtree(run_dir, ignore_errors=True)


def _run(cfg, run_dir, run_uri: str, entries, started: float) -> int:
    from ncl_ray.runtime.cluster import check_training_resources, copy_session_logs
    from ncl_ray.ui.progress import board_report, new_board, train_progress, watch, with_store_peak
    from ncl_ray.ui.summary import Tested, report

    t = cfg.train  # workers the cluster can never place: refused as soon as Ray is up, before any decoding
    check_training_resources(t.num_workers, t.cpus_per_worker, t.use_gpu)
    from ncl_ray.train.fit import fit  # the model and its libraries load after the inputs passed
    try:
        datasets, meta, cache = prepare_data(cfg, run_dir, entries)
        log.info("training: %d train videos%s, %d steps/epoch x %d epochs, %d workers x batch %d",
                 meta["train_videos"], f" ({meta['train_pairs']} pairs)" if "train_pairs" in meta else "",
                 meta["steps_per_epoch"], cfg.train.epochs, cfg.train.num_workers, cfg.train.batch_size)
        meta["board"] = new_board()
        bar: list = []
        render, store_peak = with_store_peak(train_progress(bar))
        with watch(meta["board"], render):
            result = fit(cfg, datasets, meta)
        if bar:
            bar[0].close()
        workers, profile = board_report(meta["board"], cfg.train.num_workers)
        profile["object_store_peak_bytes"] = store_peak[0]
    finally:
        if copy_session_logs(str(run_dir / "logs" / "ray"), since=started):
            log.info("Ray's own logs: %s", run_dir / "logs" / "ray")
    if not run_uri:
        remove_orphan_checkpoints(run_dir)
    pull_best(run_dir, run_uri)  # rank 0 may have run on another node: its best epoch is in the run's URI
    metrics = dict(result.metrics or {})
    last = result.checkpoint.path if result.checkpoint else None
    if last and run_uri and not storage.is_uri(last):
        last = storage.join(run_uri, last.rstrip("/").rsplit("/", 1)[-1])  # Ray's path inside the bucket
    best = best_info(run_dir) if cfg.train.keep_best else None
    from ncl_ray.data.pipeline import split_videos

    n_test = len(split_videos(cache, entries, cfg.data.test_split))
    n_val = len(split_videos(cache, entries, cfg.data.val_split))
    home = run_uri or str(run_dir)  # where the run is, for the user
    if best is not None:  # the validation gallery differs from the test one: its R@1 is on another scale
        tested = storage.join(home, BEST)
        why = (f"best validation epoch {best['epoch'] + 1} of {cfg.train.epochs}: {best['metric']} = "
               f"{best['score']:.2f} on the '{cfg.data.val_split}' gallery of {n_val} videos")
    else:
        tested, why = last, f"last epoch ({'train.keep_best=false' if not cfg.train.keep_best else 'no validation'})"
    summary = {"run": cfg.run.name, "protocol": cfg.train.protocol, "checkpoint": tested, "last_checkpoint": last,
               "selected": best,
               "workers": workers, "placement_strategy": cfg.train.placement_strategy, "profile": profile,
               "cache": {"path": cache.path, "encoding": cache.encoding, "bytes_per_clip": cache.bytes_per_clip,
                         "build_s": cache.seconds, "in_memory": meta.get("in_memory", "streaming")},
               "skipped_videos": cache.skipped, "skipped_count": len(cache.skipped),
               "decoded_videos": cache.decoded, "metrics": metrics}
    results = run_dir / "results.json"
    results.write_text(json.dumps(summary, indent=2))
    shown = storage.join(home, "results.json")
    print()
    print(report(cfg.run.name, metrics, list(cfg.eval.methods), Tested(
        split=cfg.data.test_split, bank=cfg.eval.bank, n_iters=cfg.ncl.n_iters, queue=cfg.ncl.queue_size,
        n_videos=n_test, tested=tested, why=why, decoded=cache.decoded, skipped=len(cache.skipped), results=shown,
        run_dir=home, protocol=cfg.train.protocol)))
    return 0
