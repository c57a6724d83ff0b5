"""What the search service may open and load, without Ray: inputs reached through links, files checked against
their identity when indexed, byte ranges, bounded captions, crafted index versions, the serve token file, and
the window plan of a container that lies about its duration."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ncl_ray.evaluation.export import IndexFiles, read_index, write_index
from ncl_ray.serve.files import FileChanged, FileGone, UNKNOWN, identity_of, open_indexed, parse_range, read_span

ROOT = Path(__file__).resolve().parents[3]


def test_byte_ranges_follow_rfc_9110_for_one_range():
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-9", 100) == (0, 9)
    assert parse_range("bytes=90-", 100) == (90, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=50-1000", 100) == (50, 99)
    for bad in ("bytes=100-", "bytes=5-2", "bytes=0-1,4-5", "items=0-1", "bytes=a-b", "bytes=-", "bytes=-0"):
        with pytest.raises(ValueError):
            parse_range(bad, 100)


def test_a_file_is_opened_only_while_it_is_the_one_indexed(tmp_path):
    f = tmp_path / "v.mp4"
    f.write_bytes(b"0123456789")
    ident = identity_of(os.stat(f))
    fd = open_indexed(str(f), ident)
    assert b"".join(read_span(fd, 2, 5)) == b"2345"  # and the descriptor is closed after
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(FileChanged):
        open_indexed(str(f), UNKNOWN)  # a version that recorded no identity serves no file
    secret = tmp_path / "secret"
    secret.write_text("root:x:0:0")
    f.unlink()
    f.symlink_to(secret)
    with pytest.raises(FileChanged):
        open_indexed(str(f), ident)  # a link now: not followed
    f.unlink()
    f.write_bytes(b"0123456789")  # same name, same size, another file
    with pytest.raises(FileChanged):
        open_indexed(str(f), ident)
    f.unlink()
    with pytest.raises(FileGone):
        open_indexed(str(f), ident)


def test_index_add_refuses_links_unless_followed_inside_the_folder(tmp_path, caplog):
    from ncl_ray.serve.add import read_inputs

    outside, folder = tmp_path / "outside", tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0\n")
    (outside / "far.mp4").write_bytes(b"FAR")
    (folder / "a.mp4").write_bytes(b"A")
    (folder / "a.txt").symlink_to(outside / "passwd")
    (folder / "sub" / "real.mp4").write_bytes(b"R")
    (folder / "inner.mp4").symlink_to(folder / "sub" / "real.mp4")
    (folder / "outer.mp4").symlink_to(outside / "far.mp4")
    entries, refused = read_inputs(str(folder))
    assert [e.video_id for e in entries] == ["a"] and entries[0].captions == []
    assert entries[0].path == os.path.realpath(folder / "a.mp4")
    assert len(refused) == 2 and all("symbolic link" in r for r in refused)
    assert "captions not read" in caplog.text and "a.txt" in caplog.text
    entries, refused = read_inputs(str(folder), follow_links=True)
    assert {e.video_id: e.path for e in entries} == {"a": os.path.realpath(folder / "a.mp4"),
                                                     "inner": os.path.realpath(folder / "sub" / "real.mp4")}
    assert refused == [f"outer: {folder / 'outer.mp4'}: a symbolic link to a file outside "
                       f"{os.path.realpath(folder)}"]
    assert entries[0].captions == []  # a.txt resolves outside the folder: not read even when following links
    manifest = tmp_path / "m.jsonl"  # a manifest's paths: the same rule
    manifest.write_text(json.dumps({"video_id": "m", "path": str(folder / "outer.mp4"), "caption": "c",
                                    "split": "added"}) + "\n")
    entries, refused = read_inputs(str(manifest))
    assert entries == [] and "symbolic link" in refused[0]


def test_captions_are_bounded_from_a_manifest_as_from_a_sidecar(tmp_path):
    from ncl_ray.serve.add import read_inputs
    from ncl_ray.serve.versions import MAX_CAPTION_CHARS, MAX_CAPTIONS, bound_captions

    (tmp_path / "v.mp4").write_bytes(b"V")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"video_id": "v", "path": "v.mp4", "caption": f"{i}" + "x" * 100_007,
                                            "split": "added"}) + "\n" for i in range(30)))
    (entry,), _ = read_inputs(str(manifest))
    assert len(entry.captions) == MAX_CAPTIONS and {len(c) for c in entry.captions} == {MAX_CAPTION_CHARS}
    assert bound_captions(["y" * 10_000] * 50) == ["y" * MAX_CAPTION_CHARS] * MAX_CAPTIONS


def _version(folder, n=4, dim=8, **kw):
    g = np.random.default_rng(0)
    emb = g.normal(size=(n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    args = dict(embeddings=emb, bias=np.zeros(n, np.float32), temperature=0.05)
    args.update(kw)
    return write_index(folder, IndexFiles.gallery([f"v{i}" for i in range(n)], [f"/v{i}.mp4" for i in range(n)],
                                                  args["embeddings"], args["bias"], args["temperature"]))


@pytest.mark.parametrize("craft, message", [
    (dict(temperature=float("inf")), "temperature inf in index.json is not a finite positive number"),
    (dict(temperature=0.0), "temperature 0.0"),
    (dict(bias=np.array([0, np.inf, 0, 0], np.float32)), "the ncl biases hold NaN or infinity"),
    (dict(embeddings=np.full((4, 8), np.nan, np.float32)), "4 embedding(s) hold NaN or infinity"),
    (dict(embeddings=np.ones((4, 8), np.float32)), "embeddings must have unit norm"),
])
def test_a_crafted_version_is_refused_naming_the_problem(tmp_path, craft, message):
    _version(tmp_path / "v", **craft)
    with pytest.raises(ValueError) as e:
        read_index(tmp_path / "v")
    assert message in str(e.value) and str(tmp_path / "v") in str(e.value)


def test_unknown_columns_and_disagreeing_counts_are_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = _version(tmp_path / "v")
    read_index(d)  # the untouched version loads
    table = pq.read_table(d / "videos.parquet")
    pq.write_table(table.append_column("payload", pa.array(["x"] * 4)), d / "videos.parquet")
    with pytest.raises(ValueError, match="unknown columns payload"):
        read_index(d)
    meta = json.loads((d / "index.json").read_text())
    pq.write_table(table, d / "videos.parquet")
    (d / "index.json").write_text(json.dumps({**meta, "dim": 9}))
    with pytest.raises(ValueError, match="8 dimensions, index.json says 9"):
        read_index(d)


def test_the_serve_token_file_must_be_private(tmp_path):
    from ncl_ray.serve.launch import read_token_file, resolve_token

    f = tmp_path / "token"
    f.write_text("  s3cret-token-of-24-chars\n")
    f.chmod(0o644)
    with pytest.raises(ValueError, match=r"other users can access it \(mode 0644\); chmod 600"):
        read_token_file(str(f))
    f.chmod(0o600)
    assert resolve_token("", str(f)) == "s3cret-token-of-24-chars"
    f.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if k != "NCL_RAY_SERVE_TOKEN"}
    r = subprocess.run([sys.executable, "-m", "ncl_ray", "serve", str(tmp_path / "no-run"), "--token-file", str(f)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "mode 0644" in r.stderr and "Traceback" not in r.stderr


def test_a_forged_duration_plans_windows_from_the_packets(tmp_path):
    from ncl_ray.data.windows import plan_windows, video_duration
    from videos import forged_duration_mkv

    path = forged_duration_mkv(tmp_path / "forged.mkv")  # 8 frames at 25 fps, declaring 1e10 ms
    assert video_duration(path) == pytest.approx(0.32, abs=0.05)
    assert plan_windows(video_duration(path), 10, 5) == [(0.0, pytest.approx(0.32, abs=0.05))]


def test_stale_temporary_folders_go_at_the_next_write(tmp_path):
    from ncl_ray.serve.versions import current, write_version, writer

    home = tmp_path / "index"
    (home / ".v0007.tmp-99999").mkdir(parents=True)  # a writer killed half-way
    (home / ".CURRENT.tmp-99999").write_text("v0007")
    emb = np.eye(2, 4, dtype=np.float32)
    with writer(home, "a test"):
        write_version(home, IndexFiles.gallery(["a", "b"], ["/a", "/b"], emb, np.zeros(2), 0.05), "first")
    assert current(home).name == "v0001" and sorted(p.name for p in home.iterdir() if p.name.startswith(".")) \
        == [".lock"]
    shutil.rmtree(home)
