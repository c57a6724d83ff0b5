"""The method registry is the one place a method is described: a method's name appears in few modules, and every
list of methods (config, rerank flags, legends, served methods, the page) comes from it."""

import ast
import re
from pathlib import Path

import pytest

from ncl_ray.ncl.methods import METHODS, REGISTRY, SERVED_METHODS, SETTINGS

PKG = Path(__file__).resolve().parents[3] / "ncl_ray"


def _strings(path: Path):
    """The string constants of a module, less its docstrings."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs]


@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("none", "ncl")])  # the project's own two
def test_a_methods_name_is_spelled_in_at_most_four_modules(method):
    pattern = re.compile(rf"^{method}$|(^|[^a-z]){method}_(k|beta|alpha|lambda|reg|iters|variant)\b")
    where = sorted(str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if any(pattern.search(s)
                                                                            for s in _strings(p)))
    assert len(where) <= 4, where


def test_every_setting_is_a_config_key_a_rerank_flag_and_shown_with_its_source():
    from ncl_ray.cli import build_parser
    from ncl_ray.config.schema import EvalConfig
    from ncl_ray.config.show import key_comments

    rerank = next(a for a in build_parser()._subparsers._group_actions[0].choices["rerank"]._actions
                  if a.dest == "method")
    assert set(rerank.choices) == {*METHODS, "all"}
    flags = {o for a in build_parser()._subparsers._group_actions[0].choices["rerank"]._actions
             for o in a.option_strings}
    comments = key_comments()
    for s in SETTINGS:
        assert getattr(EvalConfig(), s.key) == s.default
        assert s.flag in flags
        assert s.source in comments[f"eval.{s.key}"]


def test_legends_and_the_page_come_from_the_records():
    from ncl_ray.serve.page import PAGE
    from ncl_ray.ui.summary import legend

    words = legend(list(METHODS), "train")[0]
    assert all(m.title.format(bank="training-query bank") in words for m in REGISTRY)
    assert "dsl = dual softmax over the test queries (uses the test queries: transductive)" in words
    assert all(m.page and m.page in PAGE for m in REGISTRY if m.name in SERVED_METHODS)


def test_the_readmes_method_table_is_the_registrys():
    from ncl_ray.ncl.methods import markdown_table

    text = (PKG.parent / "README.md").read_text()
    start = text.index("<!-- methods-table")
    table = text[text.index("\n", start) + 1: text.index("<!-- /methods-table -->")].strip()
    assert table == markdown_table()
