"""The search service's request guard, video ids, the page's escaping, and bounded caption tokenisation."""

import re
import time

import pytest

from ncl_ray.serve.guard import MAX_BODY_BYTES, allowed_hosts, check_request, host_of, needs_token, valid_video_id

HOSTS = allowed_hosts("127.0.0.1")


def headers(**kw):
    base = {"host": "127.0.0.1:8000"}
    base.update({k.replace("_", "-"): v for k, v in kw.items()})
    return base


def test_host_allow_list_refuses_rebinding_names():
    assert check_request("GET", "/search", headers(), HOSTS) is None
    assert check_request("GET", "/search", headers(host="localhost:8000"), HOSTS) is None
    assert check_request("GET", "/search", headers(host="[::1]:8000"), HOSTS) is None
    status, field, _ = check_request("GET", "/search", headers(host="evil.example:8000"), HOSTS)
    assert (status, field) == (421, "host")
    assert check_request("GET", "/", headers(host=""), HOSTS)[0] == 421
    assert host_of("Example.ORG:80") == "example.org" and host_of("[::1]:9") == "[::1]"
    assert "search.lan" in allowed_hosts("0.0.0.0", ["search.lan:443"])
    assert "0.0.0.0" not in allowed_hosts("0.0.0.0")


def test_posts_must_be_json_with_a_bounded_declared_length():
    json_ok = headers(content_type="application/json; charset=utf-8", content_length="20")
    assert check_request("POST", "/reload", json_ok, HOSTS) is None
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""):
        assert check_request("POST", "/reload", headers(content_type=ctype, content_length="2"), HOSTS)[0] == 415
    assert check_request("POST", "/search", headers(content_type="application/json"), HOSTS)[0] == 411
    big = headers(content_type="application/json", content_length=str(MAX_BODY_BYTES + 1))
    assert check_request("POST", "/search", big, HOSTS)[:2] == (413, "body")


def test_token_on_everything_but_the_page():
    token = "s3cret-token-0123456789"
    assert check_request("GET", "/", headers(), HOSTS, token) is None  # the page holds no data
    assert check_request("GET", "/healthz", headers(), HOSTS, token)[:2] == (401, "authorization")
    assert check_request("GET", "/search", headers(authorization="Bearer wrong"), HOSTS, token)[0] == 401
    assert check_request("GET", "/search", headers(authorization=f"Bearer {token}"), HOSTS, token) is None
    assert needs_token("0.0.0.0") and needs_token("192.168.1.5") and not needs_token("127.0.0.1")


def test_video_ids_are_a_safe_character_set():
    for ok in ("video00001", "my holiday (2).part-1", "été_2024", "a+b,c"):
        assert valid_video_id(ok), ok
    for bad in ('x" onerror="alert(1)', "<script>", "a/b", "..\\x", "", "x" * 129, "'quote", "a&b", " lead"):
        assert not valid_video_id(bad), bad


def test_the_page_places_text_through_the_dom_and_allows_only_its_own_script():
    import base64
    import hashlib

    from ncl_ray.serve.page import CSP, PAGE

    script = PAGE[PAGE.index("<script>") + 8: PAGE.index("</script>")]
    assert "innerHTML" not in script and "outerHTML" not in script and "insertAdjacentHTML" not in script
    assert "document.write" not in script and "eval(" not in script
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in CSP and "default-src 'none'" in CSP
    assert 'name="viewport"' in PAGE


def test_captions_are_cut_to_what_the_tokenizer_uses_before_tokenising():
    from ncl_ray.data.captions import _tokenizer, clip_caption, tokenize

    normal = ["a large red circle moving left on a black background", "Hello,   world! it's  <b>fine</b> &amp; ok",
              " ".join(f"w{i}" for i in range(100))]
    assert (tokenize(normal, 32) == _tokenizer(32)(normal).numpy()).all()  # nothing usable is lost
    t = time.perf_counter()
    out = tokenize(["x" * 32_000, "word " * 250_000], 32)  # took 37 s (one long word) before
    assert time.perf_counter() - t < 2.0 and out.shape == (2, 32)
    assert len(clip_caption("word " * 250_000, 32)) < 32 * 5
    assert re.fullmatch(r"x{64}", clip_caption("x" * 32_000, 32))


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5"])
def test_serving_beyond_loopback_without_a_token_is_refused_before_ray_starts(host, capsys, tmp_path):
    from ncl_ray.cli import main

    assert main(["serve", str(tmp_path), "--host", host]) == 2
    assert "--token" in capsys.readouterr().err


def test_configs_hold_plain_values_only(tmp_path, monkeypatch):
    from ncl_ray.config.schema import ConfigError, from_dict, load_config, to_dict

    monkeypatch.setenv("NCL_SECRET", "hunter2")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  name: ${oc.env:NCL_SECRET}\n")
    with pytest.raises(ConfigError, match="bad.yaml: 'run.name' holds an interpolation"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="command line: 'run.name' holds an interpolation"):
        load_config(None, ["run.name=${oc.env:NCL_SECRET}"])
    stored = to_dict(load_config(None))
    stored["eval"]["out_dir"] = "${oc.env:NCL_SECRET}"  # a crafted checkpoint's stored config
    with pytest.raises(ConfigError, match="stored config: 'eval.out_dir'"):
        from_dict(stored)


def test_token_file_is_made_private(tmp_path):
    import os
    import stat

    from ncl_ray.runtime.cluster import secure_token_file

    token = tmp_path / "auth_token"
    token.write_text("t" * 32)
    token.chmod(0o644)
    assert secure_token_file(str(token)) is True
    assert stat.S_IMODE(os.stat(token).st_mode) == 0o600
    assert secure_token_file(str(token)) is False and secure_token_file(str(tmp_path / "none")) is False


def test_folders_fifos_and_missing_files_are_named_for_what_they_are(tmp_path):
    import os

    from ncl_ray.data.decode import DecodeError, decode_frames

    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    (tmp_path / "dir.mp4").mkdir()
    for path, reason in ((fifo, "a FIFO, not a regular file"), (tmp_path / "dir.mp4", "a folder, not a video"),
                         (tmp_path / "none.mp4", "file not found")):
        with pytest.raises(DecodeError, match=reason):
            decode_frames(str(path), 4, 32)


def test_a_header_that_must_be_single_is_named_when_repeated():
    from ncl_ray.serve.guard import repeated_header

    assert repeated_header(["Host", "Accept", "accept"]) is None
    assert repeated_header(["Host", "Authorization", "HOST"]) == "host"
    assert repeated_header(["content-length", "Content-Length"]) == "content-length"
