import json
import pickle

import pytest

from ncl_ray.data.manifest import ManifestError, read_activitynet, read_manifest, read_msrvtt, read_msvd
from ncl_ray.data.synthetic import make_dataset


def test_csv_and_jsonl_group_captions(tmp_path):
    (tmp_path / "m.csv").write_text("video_id,path,caption,split\nv1,a.mp4,first,train\nv1,a.mp4,second,train\n"
                                    "v2,/abs/b.mp4,third,test\n")
    entries = read_manifest(str(tmp_path / "m.csv"))
    assert [(e.video_id, e.captions, e.split) for e in entries] == [("v1", ["first", "second"], "train"),
                                                                     ("v2", ["third"], "test")]
    assert entries[0].path == str(tmp_path / "a.mp4") and entries[1].path == "/abs/b.mp4"
    rows = [{"video_id": "v", "path": "x.mp4", "caption": c, "split": "val"} for c in ("a", "b")]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert read_manifest(str(tmp_path / "m.jsonl"))[0].captions == ["a", "b"]


@pytest.mark.parametrize("content,message", [
    ("video_id,path,caption\nv,a.mp4,x\n", "header lacks column(s) split"),
    ("video_id,path,caption,split\nv,a.mp4,,train\n", "m.csv:2: missing or empty column(s) caption"),
    ("video_id,path,caption,split\nv,a.mp4,x,train\nv,b.mp4,y,train\n", "m.csv:3: video v has another path"),
])
def test_bad_manifests_name_file_and_line(tmp_path, content, message):
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_manifest(str(tmp_path / "m.csv"))
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(str(tmp_path / "nope.csv"))


def test_msrvtt_reader(tmp_path):
    sentences = [{"video_id": f"video{i}", "caption": f"cap {i} {k}"} for i in range(25) for k in range(3)]
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps({"sentences": sentences}))
    (tmp_path / "MSRVTT_train.9k.csv").write_text("video_id\n" + "\n".join(f"video{i}" for i in range(20)))
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\n" + "\n".join(f"k,v,video{i},test cap {i}" for i in range(20, 25)))
    entries = read_msrvtt(str(tmp_path))
    splits = [e.split for e in entries]
    assert splits.count("test") == 5 and splits.count("val") >= 1 and splits.count("train") >= 15
    assert all(len(e.captions) == 3 for e in entries if e.split != "test")
    assert entries[-1].captions == ["test cap 24"] and entries[-1].path.endswith("videos/video24.mp4")
    # the published protocol (CLIP4Clip's): every training video trains, the epoch is selected on test
    published = [e.split for e in read_msrvtt(str(tmp_path), holdout=False)]
    assert published.count("train") == 20 and "val" not in published
    from ncl_ray.config.schema import load_config

    cfg = load_config("conf/msrvtt.yaml", ["train.protocol=published"])
    assert cfg.data.val_split == cfg.data.test_split == "test"
    assert load_config("conf/msrvtt.yaml").data.val_split == "val"


def test_msvd_and_activitynet_readers(tmp_path):
    with open(tmp_path / "raw-captions.pkl", "wb") as f:
        pickle.dump({"a": [["a", "dog"], ["the", "dog"]], "b": [["cat"]], "c": [["x"]]}, f)
    for split, vids in (("train", "a"), ("val", "b"), ("test", "c")):
        (tmp_path / f"{split}_list.txt").write_text(vids + "\n")
    m = read_msvd(str(tmp_path))
    assert [(e.video_id, e.split, e.captions) for e in m][0] == ("a", "train", ["a dog", "the dog"])
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "v_1.mkv").write_bytes(b"")
    (tmp_path / "train.json").write_text(json.dumps({"v_1": {"sentences": ["One.", " Two."]}}))
    (tmp_path / "val_1.json").write_text(json.dumps({"v_2": {"sentences": ["Three."]}}))
    a = read_activitynet(str(tmp_path))
    assert a[0].captions == ["One. Two."] and a[0].path.endswith("v_1.mkv") and a[1].split == "test"
    with pytest.raises(ManifestError, match="MSRVTT_data.json"):
        read_msrvtt(str(tmp_path))


def test_builtin_dataset(tmp_path):
    manifest = make_dataset(str(tmp_path), 20, seed=1)
    entries = read_manifest(manifest)
    assert len(entries) == 20 and all(len(e.captions) == 3 for e in entries)
    assert {e.split for e in entries} == {"train", "val", "test"}
    assert len({e.captions[0] for e in entries}) > 15  # descriptions are mostly distinct


def test_paths_resolve_against_a_manifest_on_object_storage():
    from ncl_ray.data.manifest import parse_manifest

    text = ('{"video_id": "a", "path": "videos/a.mp4", "caption": "x", "split": "train"}\n'
            '{"video_id": "b", "path": "s3://other/b.mp4", "caption": "y", "split": "test"}\n'
            '{"video_id": "c", "path": "/mnt/c.mp4", "caption": "z", "split": "test"}\n')
    got = {e.video_id: e.path for e in parse_manifest(text, "s3://bkt/data/m.jsonl", "s3://bkt/data")}
    assert got == {"a": "s3://bkt/data/videos/a.mp4", "b": "s3://other/b.mp4", "c": "/mnt/c.mp4"}
    local = {e.video_id: e.path for e in parse_manifest(text, "/data/m.jsonl", "/data")}
    assert local == {"a": "/data/videos/a.mp4", "b": "s3://other/b.mp4", "c": "/mnt/c.mp4"}  # a URI stays one


def test_a_named_dataset_becomes_a_manifest_of_bucket_paths(tmp_path):
    """`ncl-ray manifest msrvtt ROOT --out F --prefix s3://...`: the reader's videos, splits and captions, with
    paths moved under the prefix; read back through the manifest reader, the same entries."""
    from ncl_ray.cli import main as cli_main
    from ncl_ray.data.manifest import parse_manifest

    root = tmp_path / "msrvtt"
    root.mkdir()
    sentences = [{"video_id": f"video{i}", "caption": f"cap {i} {k}"} for i in range(25) for k in range(3)]
    (root / "MSRVTT_data.json").write_text(json.dumps({"sentences": sentences}))
    (root / "MSRVTT_train.9k.csv").write_text("video_id\n" + "\n".join(f"video{i}" for i in range(20)))
    (root / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\n" + "\n".join(f"k,v,video{i},test cap {i}" for i in range(20, 25)))
    out = tmp_path / "m.jsonl"
    assert cli_main(["manifest", "msrvtt", str(root), "--out", str(out), "--prefix", "s3://bkt/msrvtt/"]) == 0
    direct = read_msrvtt(str(root))
    back = parse_manifest(out.read_text(), str(out), str(tmp_path))
    assert [(e.video_id, e.split, e.captions) for e in back] == [(e.video_id, e.split, e.captions) for e in direct]
    assert back[0].path == f"s3://bkt/msrvtt/videos/{back[0].video_id}.mp4"
    assert cli_main(["manifest", "msrvtt", str(root), "--out", str(out)]) == 2  # never overwritten
