"""TensorBoard files read back: curves as scalars; the final test results as one text table and one HParams row,
not one single-point chart per number."""

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ncl_ray.config.schema import load_config
from ncl_ray.ui.tracking import MetricLogger


def test_final_results_are_a_table_and_an_hparams_row(tmp_path):
    cfg = load_config("conf/default.yaml", ["ncl.n_iters=5"])
    methods = ["none", "ncl", "dsl", "qbnorm"]
    test = {f"test/{m}/{d}_{k}": 10.0 + i for i, m in enumerate(methods) for d in ("t2v", "v2t")
            for k in ("R@1", "R@5", "R@10", "MdR", "MnR")}
    tb = MetricLogger(str(tmp_path))
    tb.log_dict({"train/contrastive_loss": 1.5, "val/ncl/t2v_R@1": 3.0}, 7)
    tb.log_final({**test, "test/t2v_norm_error_before": 0.4}, cfg, methods, "ncl", 7)
    tb.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/contrastive_loss", "val/ncl/t2v_R@1"} <= scalars
    assert not [t for t in scalars if t.startswith("test/")]
    assert {t for t in scalars if t.startswith("hparams/")} == {f"hparams/{d}_{k}" for d in ("t2v", "v2t")
                                                                for k in ("R@1", "R@5", "MdR")}
    assert events.Scalars("hparams/t2v_R@1")[0].value == 11.0  # the served method's (ncl) number
    text = events.Tensors("test/results/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "qbnorm" in text and "13.00" in text and "t2v normalisation error: before 0.400" in text
    plugins = events.PluginTagToContent("hparams")
    assert plugins  # the HParams session: settings with the headline metrics
    assert any(b"ncl.n_iters" in content for content in plugins.values())
