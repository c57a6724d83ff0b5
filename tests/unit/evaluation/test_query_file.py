"""A bank from the user's own queries (eval.bank_source=file): read with clear errors, embedded with the text
tower exactly as eval embeds captions."""

import pytest
import torch

from ncl_ray.config.schema import ConfigError, load_config
from ncl_ray.data.captions import tokenize
from ncl_ray.evaluation.query_file import embed_queries, read_queries
from ncl_ray.model.clip import ModelSpec, build_model


def test_the_file_is_read_line_by_line_with_errors_naming_the_line(tmp_path):
    f = tmp_path / "q.txt"
    f.write_text("a red circle\n\n  a blue square  \nthird\n")
    assert read_queries(str(f), 10) == ["a red circle", "a blue square", "third"]
    assert read_queries(str(f), 2) == ["a red circle", "a blue square"]
    f.write_bytes(b"fine\nalso fine\n\xff\xfe broken\n")
    with pytest.raises(ValueError, match=r"q.txt:3: not UTF-8"):
        read_queries(str(f), 10)
    f.write_text("ok\n" + "x" * 5000 + "\n")
    with pytest.raises(ValueError, match=r"q.txt:2: a line of 5000 characters"):
        read_queries(str(f), 10)
    f.write_text("\n  \n")
    with pytest.raises(ValueError, match="no queries"):
        read_queries(str(f), 10)
    with pytest.raises(ValueError, match="no such file"):
        read_queries(str(tmp_path / "missing.txt"), 10)
    with pytest.raises(ConfigError, match="command line: 'eval.bank_source' is file: it needs eval.bank_file"):
        load_config("conf/default.yaml", ["eval.bank_source=file"])


def test_queries_are_embedded_by_the_text_tower():
    torch.manual_seed(0)
    model = build_model(ModelSpec("tiny", "", "meanP", 16, 16, embed_dim=8)).eval()
    queries = [f"query number {i}" for i in range(5)]
    got = embed_queries(model, queries, 16, batch=2)
    with torch.no_grad():
        want = model.encode_text(torch.from_numpy(tokenize(queries, 16))).float()
    assert got.shape == (5, 8) and torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(got.norm(dim=1), torch.ones(5), atol=1e-5)
