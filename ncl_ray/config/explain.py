"""What a config key holds, in words, for error messages: 'an integer, e.g. train.epochs=20'. No Ray, no OmegaConf."""

import dataclasses
import typing

WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list"}


def expected(config_cls, key: str) -> str:
    """`section.name` of the dataclass schema `config_cls` as words plus an example from its default ('' if unknown)."""
    section, _, name = key.partition(".")
    root = config_cls()
    if not dataclasses.is_dataclass(getattr(root, section, None)):
        return ""
    fields = {f.name: f for f in dataclasses.fields(getattr(root, section))}
    if name not in fields:
        return ""
    default, kind = getattr(getattr(root, section), name), fields[name].type
    kind = typing.get_origin(kind) or kind
    if isinstance(default, list):
        shown = "[" + ",".join(map(str, default)) + "]"
    elif isinstance(default, bool):
        shown = str(default).lower()
    else:
        shown = str(default)
    return f"{WORDS.get(kind, getattr(kind, '__name__', str(kind)))}, e.g. {key}={shown}"
