"""`ncl-ray compare` for real: a 2-arm x 2-seed Ray Tune miniature whose home is an S3 bucket (the session's
server, tests/s3.py): its CSV, text, plot and collapse statistics, Tune's own state and every trial's checkpoints
and TensorBoard events in the bucket, the curves read back from there, nothing in the working directory. A
comparison's trials are Tune trials: `ncl-ray tune` on a local folder is tests/ray/test_tune.py."""

import io
import json
import os

import pandas as pd
import pytest

from tiny import tiny

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_two_arm_two_seed_miniature_in_a_bucket(ray_local, s3, tmp_path, builtin_data, capsys, monkeypatch):
    from ncl_ray.config.schema import load_config
    from ncl_ray.train.compare import run_comparison as main

    bucket = s3.bucket("ncl-compare")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    # one worker per trial, two trials at a time: the 2 x 2 grid's start-up waits overlap
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "..", "conf", "compare.yaml"), tiny(
        builtin_data, tmp_path / "unused", "train.epochs=1", "train.eval_every_epochs=2", "ncl.queue_size=16",
        "run.name=cmp", "train.num_workers=1", "train.cpus_per_worker=1", "tune.max_concurrent=2",
        f"run.storage_path=s3://{bucket}/runs"))
    assert main(cfg, 2, ["plain"], {"ncl": {"ncl.n_iters": "2", "ncl.plain_loss_weight": "0.5"}}) == 0

    def read(key: str) -> bytes:
        return s3.client().get_object(Bucket=bucket, Key=f"runs/cmp/{key}")["Body"].read()

    keys = [k[len("runs/cmp/"):] for k in s3.keys(bucket, "runs/cmp/")]
    assert {"compare.csv", "compare.txt", "compare_summary.csv", "compare.png"} <= set(keys), sorted(keys)[:20]
    assert any(k.startswith("tuner/") for k in keys)  # Tune's own experiment state, through Ray's storage
    trials = {k.split("/")[1] for k in keys if k.startswith("trials/train-")}
    assert len(trials) == 4, sorted(keys)[:20]
    for t in trials:
        assert any(k.startswith(f"trials/{t}/checkpoint_") and k.endswith("/state.pt") for k in keys)
        assert any(k.startswith(f"trials/{t}/tensorboard/events.out.tfevents") for k in keys)
    table = pd.read_csv(io.BytesIO(read("compare.csv")))
    assert sorted(zip(table["arm"], table["seed"])) == [("ncl", 0), ("ncl", 1), ("plain", 0), ("plain", 1)]
    # the collapse statistics come from each run's TensorBoard, read back from the bucket: biases spread only
    # where Sinkhorn ran
    assert (table[table["arm"] == "ncl"]["train/text_bias_std"] > 0).all()
    assert (table[table["arm"] == "plain"]["train/text_bias_std"] == 0).all()
    assert {"test/ncl/t2v_R@1", "test/none/v2t_R@1", "test/qbnorm/t2v_R@5"} <= set(table.columns)
    # seeds change the outcome (initialisation, order, sampling): the two plain runs differ
    plain = table[table["arm"] == "plain"]
    assert plain[[c for c in table.columns if c.startswith("test/")]].nunique().max() > 1
    text = read("compare.txt").decode()
    assert "paired per-seed difference" in text and "caption ceiling" in text
    assert read("compare.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert "comparison cmp in" in read("logs/driver.log").decode()  # the start train and tune share
    summary = pd.read_csv(io.BytesIO(read("compare_summary.csv")))
    out = capsys.readouterr().out
    assert json.dumps(summary.to_dict()) and "95% CI" in out and f"s3://{bucket}/runs/cmp" in out
    assert list(work.iterdir()) == [] and not (tmp_path / "unused").exists()  # nothing of it on local disk
