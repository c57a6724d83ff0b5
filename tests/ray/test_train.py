"""Ray Train end to end on a real local Ray instance: data-parallel equivalence, the main job with an
injected worker failure, TensorBoard event files, resume."""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch
from sockets import Watch
from tiny import tiny

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _one_worker_loop(config):
    """Two steps of the project's train_step on a fixed global batch, sliced by rank."""
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    from ncl_ray.config.schema import from_dict
    from ncl_ray.model.clip import build_model_from_config
    from ncl_ray.train.loop import build_loss, build_optimizer, build_scheduler, train_step, unwrap

    cfg = from_dict(config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(0)
    model = build_model_from_config(cfg)
    loss_fn = build_loss(cfg, model.embed_dim)
    model = ray.train.torch.prepare_model(model)
    opt = build_optimizer(unwrap(model), 1e-3, 1e-3, 0.1)
    sched = build_scheduler(opt, 10, 0.0)
    g = torch.Generator().manual_seed(1)
    N, T, S, L = config["global_batch"], cfg.data.num_frames, cfg.data.frame_size, cfg.data.max_words
    B = N // world
    losses, weights = [], []
    for _ in range(2):
        batch = {"frames": torch.randint(0, 255, (N, T, S, S, 3), generator=g, dtype=torch.uint8),
                 "tokens": torch.randint(1, 49000, (N, 1, L), generator=g, dtype=torch.int32),
                 "n_captions": torch.ones(N, dtype=torch.long)}
        batch = {k: v[rank * B:(rank + 1) * B] for k, v in batch.items()}
        m = train_step(model, loss_fn, batch, opt, sched, torch.Generator(), torch.device("cpu"))
        loss = torch.tensor(m["train/contrastive_loss"])
        if dist.is_initialized():
            dist.all_reduce(loss)
            loss /= world
        losses.append(float(loss))
        weights.append([p.detach().clone() for p in unwrap(model).parameters()])
    if rank == 0:
        torch.save({"losses": losses, "weights": weights, "queue": loss_fn.text_queue.embeddings}, config["out"])
    ray.train.report({"loss": losses[-1]})


def test_two_workers_equal_one_worker_with_double_batch(ray_local, tmp_path):
    import ray.cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ncl_ray.config.schema import load_config, to_dict

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = load_config(None, ["data.num_frames=2", "data.frame_size=16", "data.max_words=8", "ncl.queue_size=16",
                             "ncl.n_iters=3", f"run.storage_path={tmp_path}"])
    results = {}
    for workers in (1, 2):
        out = str(tmp_path / f"w{workers}.pt")
        TorchTrainer(_one_worker_loop, train_loop_config={"cfg": to_dict(cfg), "global_batch": 8, "out": out},
                     scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 0.5}),
                     run_config=RunConfig(name=f"eq{workers}", storage_path=str(tmp_path))).fit()
        results[workers] = torch.load(out)
    one, two = results[1], results[2]
    assert one["losses"] == pytest.approx(two["losses"], abs=1e-5)
    assert one["losses"][0] != pytest.approx(one["losses"][1], abs=1e-4)  # the step changed something
    # AdamW's first steps are about +-lr per weight whatever the gradient's size, so float noise in tiny
    # gradients shows up at ~1e-6; a wrong gather or averaging would differ by ~lr = 1e-3
    for step in range(2):
        for a, b in zip(one["weights"][step], two["weights"][step]):
            assert torch.allclose(a, b, atol=2e-5)
    moved = max(float((a - b).abs().max()) for a, b in zip(one["weights"][0], one["weights"][1]))
    assert moved > 5e-4
    assert torch.allclose(one["queue"], two["queue"], atol=1e-6) and len(one["queue"]) == 16


SMALL = ["train.epochs=3", "train.eval_every_epochs=1", "train.log_every_steps=1"]


@pytest.fixture
def data_root(builtin_data):
    return builtin_data


def small_config(tmp_path, data_root, *extra):
    from ncl_ray.config.schema import load_config

    return load_config("conf/default.yaml", tiny(data_root, tmp_path / "runs", *SMALL, *extra))


def test_main_job_survives_a_killed_worker_logs_tensorboard_and_resumes(ray_local, tmp_path, data_root, capsys,
                                                                 monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ncl_ray.runtime.checkpoint import load_checkpoint
    from ncl_ray.train.job import run_job as main

    # Ray Train's production poll interval (2 s): it registers a reported checkpoint only when it polls, so a
    # worker that dies right after writing one used to be restored from the one before
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")
    # 28 train videos / (4 x 2) = 3 steps per epoch; rank 0 dies at step 6, the first step after the epoch-1
    # checkpoint was written
    cfg = small_config(tmp_path, data_root, "run.name=fault", "train.fail_at_step=6", "train.max_failures=1",
                       "train.keep_checkpoints=2")
    with Watch() as sockets:  # PyTorch's rendezvous store and Gloo's sockets included (torch_backend.py)
        assert main(cfg) == 0
    assert sockets.outside == set()
    assert any(name.startswith("ray::RayTrainW") for name, _, _ in sockets.seen), sockets.seen  # not blind
    from ray.util.state import list_actors

    classes = {a.class_name for a in list_actors(limit=1000)}
    # a private instance is one machine, which nothing drains: no preemption watcher (runtime.cluster)
    assert "TrainController" in classes and "PreemptionWatcher" not in classes, classes
    run = Path(cfg.run.storage_path) / "fault"
    assert (run / "fault_injected").exists()
    restores = [json.loads(x) for x in (run / "restores.jsonl").read_text().splitlines()]
    assert len(restores) == 1 and restores[0]["epoch"] == 2 and restores[0]["step"] == 6  # no step redone
    assert restores[0]["queue_filled"] == 24  # the queue of 3 steps x 8 clips, restored with the checkpoint
    # no folder outside Ray's bookkeeping survives (an unregistered checkpoint is removed after the run)
    assert len([d for d in run.glob("checkpoint_*") if d.is_dir()]) <= 2

    results = json.loads((run / "results.json").read_text())
    assert results["metrics"]["step"] == 9 and results["metrics"]["epoch"] == 3  # nothing lost, run finished
    assert results["skipped_count"] == 0
    # torch threads inside the workers: the node's cores shared by its 2 training workers (threads.py)
    cores = min(4, len(os.sched_getaffinity(0)))  # ray_local claims 4 logical CPUs
    assert [w["torch_threads"] for w in results["workers"]] == [max(1, cores // 2)] * 2
    assert len(results["profile"]["epoch_start_s"]) == 1  # the restarted worker's one epoch (epoch 2)
    final = load_checkpoint(results["last_checkpoint"])  # "checkpoint" is the best validation epoch
    assert final["step"] == 9 and int(final["loss"]["text_queue.filled"]) == 24
    assert final["config"]["run"]["name"] == "fault"
    out = capsys.readouterr().out
    assert "ncl " in out and "t2v R@1" in out and "tensorboard --logdir" in out
    assert "on the 'val' gallery of" in out and "== fault: test split 'test' (" in out  # two galleries, two sizes

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("train/contrastive_loss", "train/lr", "train/temperature", "train/norm_error_before",
                "train/norm_error_after", "train/clips_per_s", "val/none/t2v_R@1", "val/ncl/t2v_R@1",
                "hparams/t2v_R@1", "hparams/v2t_MdR"):
        assert tag in tags, tag
    assert not [t for t in tags if t.startswith("test/")]  # the test results: one table, one HParams row
    table = events.Tensors("test/results/text_summary")[0].tensor_proto.string_val[0].decode()
    assert all(m in table for m in ("none", "ncl", "dsl", "qbnorm")) and "t2v normalisation error" in table
    steps = [e.step for e in events.Scalars("train/contrastive_loss")]
    assert max(steps) == 9

    # the finished run is protected; resumed by name for one more epoch, with settings that do not change the
    # model: threads and in-memory rows, and the training clips' JPEG frames decoded by the workers instead of
    # Ray Data's tasks
    from ncl_ray.config.schema import ConfigError

    with pytest.raises(ConfigError, match="already exists"):
        main(small_config(tmp_path, data_root, "run.name=fault", "train.epochs=4"))
    assert main(small_config(tmp_path, data_root, "run.name=fault", "train.epochs=4", "train.resume=true",
                             "train.threads_per_worker=3", "data.in_memory=encoded", "data.decode_on=worker")) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["metrics"]["epoch"] == 4 and results["metrics"]["step"] == 12  # 3 steps per epoch, none redone
    assert [w["torch_threads"] for w in results["workers"]] == [3, 3]  # set explicitly, read back in the workers
    assert [w["frame_decode"] for w in results["workers"]] == ["worker, CPU"] * 2  # no GPU here: PIL in the worker
    # the cache's encoded rows kept in the object store, decoded each epoch; the epoch's waits recorded
    assert results["cache"]["in_memory"] == "encoded"
    assert len(results["profile"]["epoch_start_s"]) == 1 == len(results["profile"]["epoch_pipeline_start_s"])
    restores = [json.loads(x) for x in (run / "restores.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in restores] == [2, 3] and restores[1]["step"] == 9


def test_more_workers_than_the_cluster_fails_at_once(ray_local, tmp_path, data_root):
    from ncl_ray.runtime.cluster import ResourceError
    from ncl_ray.train.job import run_job as main

    cfg = small_config(tmp_path, data_root, "run.name=big", "train.num_workers=5", "train.cpus_per_worker=1")
    start = time.time()
    with pytest.raises(ResourceError, match=r"train.num_workers=5 x train.cpus_per_worker=1.0 needs 5 CPUs"):
        main(cfg)
    assert time.time() - start < 60


def test_cache_refuses_videos_that_change_while_it_is_built(ray_local, tmp_path, monkeypatch):
    from ncl_ray.data import cache, pipeline
    from ncl_ray.data.synthetic import make_dataset

    entries = pipeline.read_manifest(make_dataset(str(tmp_path / "d"), 6, seed=2))
    real, calls = cache.video_stats, []

    def stats_then_rewrite(es):
        calls.append(1)
        if len(calls) == 2:  # after the decode, before the check: another process rewrites a video
            with open(es[0].path, "ab") as f:
                f.write(b"\0" * 100)
        return real(es)

    monkeypatch.setattr(cache, "video_stats", stats_then_rewrite)
    with pytest.raises(RuntimeError, match=r"changed while the clip cache was built.*video00000.mp4"):
        pipeline.build_clip_cache(entries, pipeline.ClipSpec(2, 16), str(tmp_path / "cache"))
    assert not list((tmp_path / "cache").glob("clips-*"))  # neither a cache nor a temp folder is left


def test_eval_command_writes_json_plots_events_and_a_searchable_export(ray_local, tmp_path, tiny_run, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ncl_ray.runtime.checkpoint import load_checkpoint
    from ncl_ray.cli import main as cli
    from ncl_ray.serve.index import search_texts as search
    from ncl_ray.runtime.checkpoint import resolve_checkpoint

    # the session's run, trained with the CLIP4Clip parity switch (fp16 backbone through DDP, checkpoint, eval)
    run = Path(tmp_path) / "runs" / "ev"
    shutil.copytree(tiny_run, run)
    capsys.readouterr()
    assert cli(["eval", str(run), "eval.bank_source=captions", "eval.bank_size=8"]) == 0
    out = capsys.readouterr().out  # the report train prints, with the gallery's size
    assert "== tiny: test split 'test' (" in out and " captions), NCL n_iters=" in out and "tested: " in out
    # the leak check ran on this checkpoint's own embeddings: one line, and a field of metrics.json below
    assert "leak check: passed (3 methods score a query alone" in out and "transductive, not held to it: dsl" in out
    results = json.loads((run / "results.json").read_text())
    ckpt = Path(resolve_checkpoint(str(run)))  # the copy's own, not the session run's
    assert ckpt == run / "best" and results["selected"]["metric"] == "val/ncl/t2v_R@1"  # keep_best by default
    assert load_checkpoint(ckpt)["model"]["clip.visual.conv1.weight"].dtype == torch.float16
    out = ckpt / "eval" / "test-bank-train-captions"
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"none/t2v_R@1", "ncl/v2t_R@1", "qbnorm/t2v_MdR", "dsl/v2t_lenient_R@1"} <= set(metrics)
    assert metrics["bank_is_test"] == 0.0 and metrics["leak_check"] == 1.0
    for png in ("retrieval_mass.png", "recall.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert "test_bank-train-captions/ncl/t2v_R@1" in events.Tags()["scalars"]
    assert "test_bank-train-captions/t2v_retrieval_mass_ncl" in events.Tags()["histograms"]
    assert list((out / "tensorboard").rglob("projector_config.pbtxt"))
    hits = search(str(out / "export"), ["a small red square moving left on a black background"], top_k=3)[0]
    assert len(hits) == 3 and all(Path(h["path"]).is_file() for h in hits)
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    # the search page's labels, calibrated on the split's held-out captions: every caption in one label
    confidence = json.loads((out / "export" / "index.json").read_text())["confidence"]
    import pyarrow.parquet as pq

    captions = pq.read_table(out / "export" / "texts.parquet").num_rows
    assert sum(v["captions"] for v in confidence.values()) == captions and "weak" in confidence
    assert all(v["right"] is None or 0 <= v["right"] <= 1 for v in confidence.values())
    assert cli(["eval", str(tmp_path / "nothing-here")]) == 2
    assert "no ncl-ray checkpoint" in capsys.readouterr().err

    # the same weights saved as a CLIP4Clip checkpoint, imported, are evaluated like any run (here transductively:
    # each (split, bank) has its own folder, so evaluations with other banks never overwrite each other)
    state = load_checkpoint(ckpt)["model"]
    c4c = {k: v for k, v in state.items() if k.startswith("clip.") and not k.endswith("attn_mask")}
    c4c["clip.logit_scale"] = state["logit_scale"].clone()
    torch.save(c4c, tmp_path / "pytorch_model.bin.0")
    imported = tmp_path / "imported"
    assert cli(["import", "clip4clip", str(tmp_path / "pytorch_model.bin.0"), "--out", str(imported),
                "--config", str(run / "config.yaml")]) == 0
    assert cli(["eval", str(imported), "eval.bank=test"]) == 0
    transductive = imported / "eval" / "test-bank-test"
    c4c_metrics = json.loads((transductive / "metrics.json").read_text())
    assert {"none/t2v_R@1", "ncl/t2v_R@1"} <= set(c4c_metrics) and c4c_metrics["bank_is_test"] == 1.0
    events = EventAccumulator(str(transductive / "tensorboard"))
    events.Reload()
    assert "test_bank-test/ncl/t2v_R@1" in events.Tags()["scalars"]


def test_pairs_epochs_with_clip4clip_head_and_optimizer(ray_local, tmp_path, data_root):
    """data.samples=pairs on the built-in corpus: every (video, caption) pair once per epoch; seqTransf,
    BertAdam and CLIP4Clip's frames with their mask: CLIP4Clip's recipe in small."""
    from ncl_ray.data.pipeline import load_entries
    from ncl_ray.train.job import run_job as main

    cfg = small_config(tmp_path, data_root, "run.name=pairs", "train.epochs=2", "data.samples=pairs",
                       "optim.name=bertadam", "model.pooling=seqTransf", "train.eval_every_epochs=2",
                       "data.sampler=clip4clip", "data.resize=clip4clip")
    assert main(cfg) == 0
    # CLIP4Clip's frames: 2 s videos give 2 per-second frames of 4, so every clip is padded and masked
    summaries = [json.loads(p.read_text()) for p in Path(cfg.data.cache_dir).glob("*/summary.json")]
    assert [s["sampler"] for s in summaries].count("clip4clip") == 1
    import pyarrow.parquet as pq

    cache = next(s["path"] for s in summaries if s["sampler"] == "clip4clip")
    counts = {n for f in Path(cache).rglob("*.parquet") for n in pq.read_table(f, columns=["n_frames"])
              .column("n_frames").to_pylist()}
    assert counts == {2}
    d = cfg.data
    entries = load_entries(d.dataset, d.root, d.manifest, d.synthetic_videos, d.synthetic_profile)
    pairs = sum(min(len(e.captions), d.max_captions) for e in entries if e.split == d.train_split)
    videos = sum(1 for e in entries if e.split == d.train_split)
    assert pairs > videos
    results = json.loads((Path(cfg.run.storage_path) / "pairs" / "results.json").read_text())
    assert results["metrics"]["step"] == 2 * (pairs // (cfg.train.batch_size * cfg.train.num_workers))
    assert results["metrics"]["test/ncl/t2v_R@1"] >= 0
    # the same run with the pairs' JPEG blobs decoded by the trainer (nvJPEG on a GPU, the CPU decoder here):
    # the same pixels, so the same steps, weights and test numbers
    worker = small_config(tmp_path, data_root, "run.name=pairs-worker", "train.epochs=2", "data.samples=pairs",
                          "optim.name=bertadam", "model.pooling=seqTransf", "train.eval_every_epochs=2",
                          "data.sampler=clip4clip", "data.resize=clip4clip", "data.decode_on=worker")
    assert main(worker) == 0
    again = json.loads((Path(cfg.run.storage_path) / "pairs-worker" / "results.json").read_text())
    assert [w["frame_decode"] for w in again["workers"]] == ["worker, CPU"] * 2
    assert [w["frame_decode"] for w in results["workers"]] == ["the pair feeder's thread, CPU"] * 2
    same = ("step", "test/ncl/t2v_R@1", "test/none/t2v_R@1", "test/ncl/v2t_R@1")
    assert {k: again["metrics"][k] for k in same} == {k: results["metrics"][k] for k in same}
