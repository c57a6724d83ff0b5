"""Tensors out of OpenAI's TorchScript CLIP files (`ViT-B-32.pt`, ...) without running the archive's code.

    if is_openai_file(path):
        state = read_openai_file(path)   # {"visual.conv1.weight": tensor, ...}, OpenAI's (= open_clip's) names

OpenAI publishes CLIP as TorchScript archives. `torch.jit.load` compiles and runs the code stored inside, and
`torch.load(weights_only=True)` refuses them, so an offline cluster had no safe way to use the file. A
TorchScript archive is a zip: `data.pkl` pickles the module tree (objects of `__torch__.*` classes whose state
is a dict of attributes), tensors point to raw storages under `data/`. This reader unpickles `data.pkl` with an
allow-list: `__torch__.*` classes become plain attribute holders (their code is never imported or run), tensors
are rebuilt from the storages, and every other global (a function, a class from any other module) is refused
naming the file and the global. The result is the flat name -> tensor map of every tensor attribute.
"""

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict

import torch

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class WeightsFileError(ValueError):
    """A weights file that cannot be read as tensors; the message names the file."""


class _Attrs:
    """Stands in for a `__torch__.*` object: keeps the attribute dict it is built with, runs nothing."""

    def __init__(self, *args: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, *rest: Any) -> torch.Tensor:
    return storage.as_strided(tuple(size), tuple(stride), offset)  # a view of the flat storage


class _Reader(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.path = archive, prefix, path
        self.storages: Dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__"):
            return type(name, (_Attrs,), {})
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        raise WeightsFileError(f"{self.path}: refused: holds {module}.{name}, which is not a tensor or a module "
                               f"attribute; nothing in the file was run")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise WeightsFileError(f"{self.path}: refused: unknown persistent id {str(pid)[:80]}")
        dtype, key = pid[1], str(pid[2])
        if not isinstance(dtype, torch.dtype):
            raise WeightsFileError(f"{self.path}: refused: storage of unknown type {dtype!r}")
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            self.storages[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return self.storages[key]


def _archive_prefix(archive: zipfile.ZipFile) -> str:
    for name in archive.namelist():
        if name.endswith("constants.pkl"):
            return name[: -len("constants.pkl")]
    return ""


def is_openai_file(path: str) -> bool:
    """True for a TorchScript archive (a zip with `constants.pkl` and `code/`), as OpenAI's CLIP files are."""
    p = Path(path)
    if not p.is_file() or not zipfile.is_zipfile(p):
        return False
    with zipfile.ZipFile(p) as z:
        names = z.namelist()
    return any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names)


def _walk(obj: Any, prefix: str, out: Dict[str, torch.Tensor]) -> None:
    if isinstance(obj, _Attrs):
        obj = obj.state
    if isinstance(obj, torch.Tensor):
        out[prefix.rstrip(".")] = obj.clone()  # own its memory (the storage buffer is shared)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str) and k != "training":
                _walk(v, f"{prefix}{k}.", out)


def read_openai_file(path: str) -> Dict[str, torch.Tensor]:
    """Every tensor attribute of a TorchScript module archive, by its dotted name (see the module docstring).

    Raises:
        WeightsFileError: not a TorchScript archive, or holding anything but modules and tensors.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsFileError(f"weights file not found: {path}")
    try:
        with zipfile.ZipFile(p) as z:
            prefix = _archive_prefix(z)
            if not prefix and "constants.pkl" not in z.namelist():
                raise WeightsFileError(f"{path}: not a TorchScript archive (no constants.pkl)")
            reader = _Reader(z.read(f"{prefix}data.pkl"), z, prefix, str(path))
            root = reader.load()
    except WeightsFileError:
        raise
    except (zipfile.BadZipFile, KeyError, pickle.UnpicklingError, EOFError, ValueError, RuntimeError) as e:
        raise WeightsFileError(f"{path}: cannot be read as a TorchScript archive ({type(e).__name__}: "
                               f"{str(e)[:200]})") from None
    out: Dict[str, torch.Tensor] = {}
    _walk(root, "", out)
    if not out:
        raise WeightsFileError(f"{path}: holds no tensors")
    return out
