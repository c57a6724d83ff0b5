"""`ncl-ray serve` for real: a trained run served by Ray Serve over HTTP on loopback, its NCL ranking against
`ncl-ray eval`'s scorer, bad inputs, thumbnails, `index add` of unseen videos with POST /reload, and the web
page driven by headless Chromium (Playwright)."""

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from serving import TOKEN, get, png_header_only, post_bytes, raw

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_search_returns_sorted_results_with_captions(served):
    q = urllib.parse.quote("a large red circle moving left")
    status, body, ctype = get(f"{served['base']}/search?q={q}&k=5")
    hits = json.loads(body)
    assert status == 200 and "json" in ctype and len(hits) == 5
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert all(h["captions"] and h["thumbnail_url"] == f"/thumbnails/{h['video_id']}.jpg" for h in hits)
    status, img, ctype = get(served["base"] + hits[0]["thumbnail_url"])
    assert status == 200 and ctype == "image/jpeg" and img[:2] == b"\xff\xd8"
    status, body, _ = get(served["base"] + "/search", {"queries": ["red circle", "blue bar"], "k": 3})
    assert status == 200 and [len(x) for x in json.loads(body)] == [3, 3]
    # without explanations: the same hits, none of the explainer's numbers
    status, lean, _ = get(f"{served['base']}/search?q={q}&k=5&explain=0")
    assert status == 200 and [h["video_id"] for h in json.loads(lean)] == [h["video_id"] for h in hits]
    assert not {"plain_score", "plain_rank", "confidence"} & set(json.loads(lean)[0])
    assert "plain_rank_exact" in hits[0]
    status, lean, _ = get(served["base"] + "/search", {"queries": ["red circle"], "k": 3, "explain": False})
    assert status == 200 and "plain_score" not in json.loads(lean)[0][0]


@pytest.mark.parametrize("query, field", [
    ("q=&k=5", "q"), ("q=" + "x" * 600, "q"), ("q=red&k=0", "k"), ("q=red&k=1000", "k"), ("q=red&k=ten", "k"),
    ("q=red&method=dsl", "method"), ("q=red&explain=yes", "explain"), ("q=red&not=", "not"),
])
def test_bad_inputs_are_4xx_naming_the_field(served, query, field):
    status, body, _ = get(f"{served['base']}/search?{query}")
    assert 400 <= status < 500 and json.loads(body)["field"] == field


def test_a_method_the_index_does_not_hold_is_refused_by_the_gallery_as_a_400(served):
    """The refusal is raised in the Gallery deployment and becomes the JSON error at the ingress, in one place."""
    info = json.loads(get(served["base"] + "/healthz")[1])
    missing = [m for m in ("nnn", "is", "csls") if m not in info["methods"]]
    assert missing, info  # the served export was evaluated with none and ncl
    status, body, _ = get(f"{served['base']}/search?q=red&method={missing[0]}")
    problem = json.loads(body)
    assert status == 400 and problem["field"] == "method" and "this index serves" in problem["error"], problem


def test_unknown_thumbnail_and_paths_are_refused(served):
    for path in ("/thumbnails/nope.jpg", "/thumbnails/..%2F..%2Fetc%2Fpasswd.jpg", "/thumbnails/video00001.png",
                 "/thumbnails/%2Fetc%2Fpasswd"):
        status, body, _ = get(served["base"] + path)
        assert status == 404 and json.loads(body)["field"] in ("video_id", "path") and b"root:" not in body
    status, _, _ = get(served["base"] + "/search", {"queries": "not a list"})
    assert status == 400


def test_a_negative_phrase_lowers_its_matches_inside_the_served_search(served):
    """GET /search?q=...&not=... scores every row as s(q) - 0.5 s(phrase) (+ the bias), in the index search: with
    the query itself as the phrase each plain score halves and the order stays; with another phrase the scores are
    the in-process search's (`ncl-ray search --not`'s path)."""
    from ncl_ray.runtime.checkpoint import resolve_checkpoint
    from ncl_ray.serve.index import GalleryIndex, search_texts
    from ncl_ray.serve.versions import home_of

    q, neg = urllib.parse.quote("a large red circle moving left"), urllib.parse.quote("red")
    plain = json.loads(get(f"{served['base']}/search?q={q}&k=8&method=none")[1])
    status, body, _ = get(f"{served['base']}/search?q={q}&not={q}&k=8&method=none")
    halved = json.loads(body)
    assert status == 200 and [h["video_id"] for h in halved] == [h["video_id"] for h in plain]
    assert [h["score"] for h in halved] == pytest.approx([h["score"] / 2 for h in plain], abs=1e-4)
    got = json.loads(get(f"{served['base']}/search?q={q}&not={neg}&k=8&method=ncl")[1])
    index = GalleryIndex.load(str(home_of(resolve_checkpoint(str(served["run"])))))
    local = {h["video_id"]: h["score"] for h in search_texts(index, ["a large red circle moving left"],
                                                             index.n_videos, "ncl", negative="red")[0]}
    # (the fp16 text tower batches in the server: scores agree to 1e-3, not to the last digit)
    assert [h["score"] for h in got] == pytest.approx([local[h["video_id"]] for h in got], abs=1e-3)
    assert got[0]["score"] == pytest.approx(max(local.values()), abs=1e-3)
    assert [h["video_id"] for h in got] != [h["video_id"] for h in plain]


def test_served_ncl_ranking_equals_the_eval_scorer(served):
    from ncl_ray.runtime.checkpoint import load_checkpoint
    from ncl_ray.config.schema import from_dict
    from ncl_ray.data.captions import tokenize
    from ncl_ray.runtime.checkpoint import resolve_checkpoint
    from ncl_ray.model.clip import build_model_from_config
    from ncl_ray.ncl.normalize import Sims, make_scorer
    from ncl_ray.serve.index import GalleryIndex

    ckpt = resolve_checkpoint(str(served["run"]))
    state = load_checkpoint(ckpt)
    cfg = from_dict(state["config"])
    model = build_model_from_config(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    index = GalleryIndex.load(str(Path(ckpt) / "index"))
    queries = ["a small green square moving up", "white bar going right", "a large blue circle moving down"]
    with torch.no_grad():
        text = model.encode_text(torch.from_numpy(tokenize(queries, cfg.data.max_words))).float()
    gallery = torch.from_numpy(index.plain)
    loss = state["loss"]
    bank = loss["text_queue.queue"][: int(loss["text_queue.filled"])].float()
    tau = index.temperature
    scorer = make_scorer("ncl", Sims.embeddings(text, gallery), tau, Sims.embeddings(bank, gallery),
                         n_iters=cfg.eval.n_iters)
    scores = scorer(slice(0, len(queries)), text @ gallery.T)  # (3, V)
    position = {v: j for j, v in enumerate(index.video_ids)}
    for i, q in enumerate(queries):
        status, body, _ = get(f"{served['base']}/search?q={urllib.parse.quote(q)}&k=10&method=ncl")
        got = [position[h["video_id"]] for h in json.loads(body)]
        # the served top 10 is the scorer's top 10: equal ids, except that two videos whose scores differ by
        # float rounding (the folded inner product vs the scorer's sum) may come in either order
        best = scores[i].sort(descending=True).values[:len(got)]
        assert torch.allclose(scores[i, got], best, atol=1e-5), (scores[i, got], best)
        assert len(set(got)) == len(got) == min(10, len(index.video_ids))
    status, body, _ = get(f"{served['base']}/search?q={urllib.parse.quote(queries[0])}&k=10&method=none")
    plain = (text[0] @ gallery.T)  # (V,)
    got = [position[h["video_id"]] for h in json.loads(body)]
    assert torch.allclose(plain[got], plain.sort(descending=True).values[:len(got)], atol=1e-5)


def test_rebinding_csrf_big_bodies_and_docs_are_refused(served):
    base = served["base"]
    status, body, _ = raw(base + "/healthz", Host="evil.example")  # DNS rebinding: a foreign Host header
    assert status == 421 and json.loads(body)["field"] == "host"
    status, _, _ = raw(base + "/healthz", Host=f"localhost:{base.rsplit(':', 1)[1]}")
    assert status == 200
    # a cross-site form or no-preflight fetch can only send text/plain or form bodies
    for ctype in ("text/plain", "application/x-www-form-urlencoded"):
        status, body, _ = raw(base + "/reload", "POST", b'{"x": 1}', Content_Type=ctype)
        assert status == 415 and json.loads(body)["field"] == "content-type"
    big = json.dumps({"queries": ["a" * 400] * 200}).encode()
    status, body, _ = raw(base + "/search", "POST", big, Content_Type="application/json")
    assert status == 413 and json.loads(body)["field"] == "body"
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert raw(base + path)[0] == 404
    status, page, hdrs = raw(base + "/")
    assert status == 200 and "script-src 'sha256-" in hdrs["content-security-policy"]
    assert hdrs["x-frame-options"] == "DENY" and hdrs["x-content-type-options"] == "nosniff"


def test_index_add_makes_unseen_videos_searchable(served):
    from ncl_ray.data.synthetic import render, write_video

    folder = served["tmp"] / "mine"
    for i, color in enumerate(("magenta", "yellow")):  # the magenta ball stands still: a frame is the video
        frames = render(color, "circle", "large", "nowhere" if color == "magenta" else "right", "navy",
                        num_frames=16, side=64, rng=np.random.default_rng(i))
        write_video(str(folder / f"my{color}.mp4"), frames)
    # an id that would be markup on the page is refused at the door, naming it
    hostile = served["tmp"] / "hostile.jsonl"
    hostile.write_text(json.dumps({"video_id": 'x" onerror="alert(1)', "path": str(folder / "mymagenta.mp4"),
                                   "caption": "c", "split": "added"}) + "\n")
    r = subprocess.run([sys.executable, "-m", "ncl_ray", "index", "add", str(served["run"]), str(hostile)],
                       cwd=ROOT, env=served["env"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "is not allowed" in r.stderr and "onerror" in r.stderr
    (folder / "broken.mp4").write_bytes(b"\0" * 500)
    scenes = [render(c, "circle", "large", "right", "navy", num_frames=30, side=64, rng=np.random.default_rng(9))
              for c in ("white", "green")]
    write_video(str(folder / "mylong.mp4"), np.concatenate(scenes), fps=2)  # 30 s: five 10 s windows
    (folder / "mymagenta.txt").write_text("my magenta ball rolling right\n")  # the sidecar's captions
    (folder / "yellow again.mp4").write_bytes((folder / "myyellow.mp4").read_bytes())  # the same file twice
    before = json.loads(get(served["base"] + "/healthz")[1])
    started = time.time()
    r = subprocess.run([sys.executable, "-m", "ncl_ray", "index", "add", str(served["run"]), str(folder)],
                       cwd=ROOT, env=served["env"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "added 3 video(s), replaced 0 as 7 windows, skipped 2" in r.stdout and "broken" in r.stderr
    assert "yellow again: same file as myyellow" in r.stderr
    status, body, _ = get(served["base"] + "/reload", {})
    info = json.loads(body)
    assert status == 200 and info["version"] == "v0002" and info["videos"] == before["videos"] + 3
    assert info["moments"] == before["moments"] + 7  # mylong's five windows are five moments of one video
    q = urllib.parse.quote("a large magenta circle moving right on a navy background")
    status, body, _ = get(f"{served['base']}/search?q={q}&k={info['videos']}")
    hits = {h["video_id"]: h for h in json.loads(body)}
    assert {"mymagenta", "myyellow", "mylong"} <= set(hits) and "yellow again" not in hits
    assert hits["mymagenta"]["captions"] == ["my magenta ball rolling right"]
    assert len(hits) == len(set(hits))  # one hit per video, windows grouped
    # the long video comes back as its best moment, with the others, a thumbnail of it and the file by id
    long = hits["mylong"]
    assert 0 <= long["start_s"] < long["end_s"] <= 30.5 and len(long["moments"]) == 3
    assert long["moments"][0]["start_s"] == long["start_s"] and "start_s" not in hits["mymagenta"]
    # filters, inside the index search: added after the first version (the test videos have no added time),
    # this folder, and duration bounds (mylong is 30 s, the other two 2 s; the test videos' durations are unknown)
    stamp = urllib.parse.quote(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started - 1)))
    for filt, expected in ((f"added_after={stamp}", {"mymagenta", "myyellow", "mylong"}),
                           (f"path={urllib.parse.quote(str(folder))}", {"mymagenta", "myyellow", "mylong"}),
                           ("min_s=20", {"mylong"}), ("max_s=5&min_s=0", {"mymagenta", "myyellow"})):
        status, found, _ = get(f"{served['base']}/search?q={q}&k=10&{filt}")
        assert status == 200 and {h["video_id"] for h in json.loads(found)} == expected, (filt, found[:300])
    status, found, _ = get(f"{served['base']}/search?q={q}&k=10&path={urllib.parse.quote(str(folder) + 'x')}")
    assert status == 200 and json.loads(found) == []  # a sibling folder's prefix is not this folder
    status, found, _ = get(f"{served['base']}/search?q={q}&added_after=last+week")
    assert status == 400 and json.loads(found)["field"] == "added_after"
    status, img, _ = get(served["base"] + long["thumbnail_url"])
    assert status == 200 and img[:2] == b"\xff\xd8"
    assert get(served["base"] + "/thumbnails/mylong.jpg?start=1&end=2")[0] == 404  # only indexed moments
    status, part, headers = raw(served["base"] + long["video_url"], Range="bytes=0-99")
    assert status == 206 and len(part) == 100 and "video/mp4" in {v for k, v in headers.items()}
    assert raw(served["base"] + "/videos/nothing")[0] == 404
    for h in hits.values():  # why each hit is there
        assert h["score"] == pytest.approx(h["plain_score"] + h["bias"], abs=1e-4) and h["plain_rank"] >= 1
        assert h["confidence_label"] in ("strong", "fair", "weak")
    # more like this: an indexed video (here the long one's second moment) is the query, itself first
    second = long["moments"][1]
    status, body_like, _ = get(f"{served['base']}/search?like=mylong&start={second['start_s'] + 0.5}&k=5")
    like = json.loads(body_like)
    assert status == 200 and like[0]["video_id"] == "mylong" and len(like) == 5
    assert get(f"{served['base']}/search?like=nothing")[0] == 404
    status, refused, _ = get(f"{served['base']}/search?like=mylong&start=999")
    assert status == 404 and json.loads(refused)["field"] == "start"
    # an image as the query: a frame of the indexed magenta video, as a JPEG body, finds that video
    import io

    from PIL import Image

    from ncl_ray.data.decode import decode_frames

    frame = decode_frames(str(folder / "mymagenta.mp4"), 1, 64)[0]  # (64, 64, 3) from the middle of the file
    jpeg = io.BytesIO()
    Image.fromarray(frame).save(jpeg, format="JPEG")
    status, found, _ = post_bytes(served["base"] + "/search/image?k=5", jpeg.getvalue(), "image/jpeg")
    assert status == 200 and len(json.loads(found)) == 5 and "plain_rank" in json.loads(found)[0]
    status, found, _ = post_bytes(served["base"] + "/search/image?k=5&method=none", jpeg.getvalue(), "image/jpeg")
    found = json.loads(found)
    assert "mymagenta" in [h["video_id"] for h in found[:3]], [(h["video_id"], h["plain_score"]) for h in found]
    # hostile bodies, through the running server: not an image, a decompression bomb, too large, wrong type
    status, refused, _ = post_bytes(served["base"] + "/search/image", b"GIF89a....", "image/png")
    assert status == 400 and json.loads(refused)["field"] == "image"
    status, refused, _ = post_bytes(served["base"] + "/search/image", png_header_only(16000, 16000), "image/png")
    assert status == 400 and "pixels" in json.loads(refused)["error"]
    # a 9 MB body is refused on its declared length, before it is read (sending it all would race the reply)
    import http.client

    conn = http.client.HTTPConnection(served["base"].split("//")[1], timeout=60)
    conn.putrequest("POST", "/search/image")
    for name, value in (("Authorization", f"Bearer {TOKEN}"), ("Content-Type", "image/jpeg"),
                        ("Content-Length", str(9 * 2 ** 20))):
        conn.putheader(name, value)
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
    assert post_bytes(served["base"] + "/search/image", jpeg.getvalue(), "text/plain")[0] == 415
    # `ncl-ray search` takes the same path: one line per video, the long one with its moments, in the same order
    from ncl_ray.runtime.checkpoint import resolve_checkpoint

    home = Path(resolve_checkpoint(str(served["run"]))) / "index"
    r = subprocess.run([sys.executable, "-m", "ncl_ray", "search", "--index", str(home), "--top-k", "100",
                        "a large magenta circle moving right on a navy background"], cwd=ROOT, env=served["env"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ranked = [line.split()[2] for line in r.stdout.splitlines() if line[:4].strip().isdigit()]
    assert ranked == [h["video_id"] for h in json.loads(body)], (ranked, r.stdout)
    at = [line.strip() for line in r.stdout.splitlines() if line.strip().startswith("at ")]
    assert len(at) == 1 and at[0].count("-") == 3, r.stdout  # mylong's three moments: m:ss-m:ss, ...
    # the NCL biases depend on the whole gallery: recomputed for the old videos too
    import pyarrow.parquet as pq

    v1 = pq.read_table(home / "v0001" / "videos.parquet").to_pydict()
    v2 = pq.read_table(home / "v0002" / "videos.parquet").to_pydict()
    assert v2["video_id"][: len(v1["video_id"])] == v1["video_id"]
    assert not np.allclose(v1["ncl_bias"], v2["ncl_bias"][: len(v1["video_id"])])
    status, img, _ = get(served["base"] + "/thumbnails/mymagenta.jpg")
    assert status == 200 and img[:2] == b"\xff\xd8"


def _searched(browser, base: str, width: int, height: int, query: str):
    """A page of that size, with the search done and its hits shown."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(base + "/#token=" + TOKEN)  # the page sends it with every request
    page.wait_for_selector("input[name=method]")
    page.fill("#q", query)
    page.click("#go")
    page.wait_for_selector(".hit")
    return page


def test_search_page_in_a_real_browser(served, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on this machine (make browser installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = _searched(browser, served["base"], 1280, 900, "a large red circle moving left")
        asked = "/search?q=" + urllib.parse.quote("a large red circle moving left") + "&k=10&collapse=1&method="
        answer = lambda m: [h["video_id"] for h in json.loads(get(served["base"] + asked + m)[1])]  # noqa: E731
        ncl = page.eval_on_selector_all(".hit", "els => els.map(e => e.dataset.video)")
        n = len(ncl)  # ten videos, fewer when near-copies were folded into a hit (the page asks collapse=1)
        assert ncl == answer("ncl") and n >= 5 and "ncl ranking" in page.inner_text("#status")
        assert "videos" in page.inner_text("#info") and "moments" in page.inner_text("#info")
        assert "Sinkhorn" in page.inner_text("#legend")
        # every hit says why it is there: its score as plain + bias, its plain rank, a confidence badge
        why = page.eval_on_selector_all(".hit .why", "els => els.map(e => e.textContent)")
        assert len(why) == n and all("= plain" in w and "plain rank" in w for w in why)
        assert page.eval_on_selector_all(".badge.strong, .badge.fair, .badge.weak", "els => els.length") == n
        page.check("input[value=none]")
        # predicates as functions: the page's CSP forbids evaluating strings (Playwright would eval a bare one)
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('plain')")
        plain = page.eval_on_selector_all(".hit", "els => els.map(e => e.dataset.video)")
        assert plain == answer("none") and "cosine" in page.inner_text("#legend")
        page.wait_for_function("() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        shot = tmp_path / "search.png"
        page.screenshot(path=str(shot), full_page=True)
        # a moment of the long video added by the index test: its time range, and a player from its start
        # (checking ncl searches the old query again: wait for the grid of the new one, or a player opened on
        # the old grid is dropped by the redraw)
        page.check("input[value=ncl]")
        page.fill("#k", "100")
        query = "a large white circle moving right on a navy background"
        page.fill("#q", query)
        page.click("#go")
        mine = f'#grid[data-query="{query}"] .hit[data-video=mylong]'
        page.wait_for_selector(f"{mine} .moment")
        moment = page.inner_text(f"{mine} .moment")
        assert moment.count(":") == 2 and "-" in moment
        page.click(f"{mine} button.play")
        # the player fetches the file by id with the token (a <video> cannot send one), then starts at the moment
        page.wait_for_selector(f"{mine} video", timeout=120_000)
        minutes, seconds = moment.split("-")[0].strip().split(":")
        start = int(minutes) * 60 + float(seconds)
        page.wait_for_function("s => { const v = document.querySelector('.hit[data-video=mylong] video');"
                               " return v && v.readyState >= 1 && Math.abs(v.currentTime - s) < 1.5; }", arg=start,
                               timeout=120_000)
        # the play button is usable again, and another moment is a button that moves the same player there
        assert page.is_enabled(f"{mine} button.play")
        other = page.inner_text(f"{mine} button.goto")
        page.click(f"{mine} button.goto")
        minutes, seconds = other.split("-")[0].strip().split(":")
        page.wait_for_function("s => { const v = document.querySelector('.hit[data-video=mylong] video');"
                               " return Math.abs(v.currentTime - s) < 1.5; }", arg=int(minutes) * 60 + float(seconds),
                               timeout=60_000)
        assert page.eval_on_selector_all(f"{mine} video", "els => els.length") == 1
        # "more like this" on the long video: a new grid led by it
        page.click(f"{mine} button.like")
        page.wait_for_selector('#grid[data-query="like:mylong"] .hit')
        assert page.eval_on_selector_all(".hit", "els => els[0].dataset.video") == "mylong"
        assert "like mylong" in page.inner_text("#status")
        # an image chosen on the page is the query
        from PIL import Image

        from ncl_ray.data.synthetic import render

        still = tmp_path / "query.png"
        Image.fromarray(render("white", "circle", "large", "right", "navy", num_frames=1, side=64,
                               rng=np.random.default_rng(3))[0]).save(still)
        page.set_input_files("#image", str(still))
        page.wait_for_selector('#grid[data-query="image:query.png"] .hit')
        assert "for the image query.png" in page.inner_text("#status")
        # "but not": the page sends the phrase with its query (near-copies folded) and draws what the API answers
        page.fill("#q", query)
        page.fill("#not", "white")
        page.click("#go")
        page.wait_for_selector(f'#grid[data-query="{query}"] .hit')
        shown = page.eval_on_selector_all(".hit", "els => els.map(e => e.dataset.video)")
        answer = get(f"{served['base']}/search?q={urllib.parse.quote(query)}&not=white&k=100&method=ncl&collapse=1")
        assert shown == [h["video_id"] for h in json.loads(answer[1])]
        page.fill("#not", "")
        # a phone's width: one column, nothing wider than the screen
        phone = _searched(browser, served["base"], 375, 800, "a large red circle moving left")
        phone.wait_for_function("() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        assert phone.evaluate("() => document.documentElement.scrollWidth") <= 375
        lefts = phone.eval_on_selector_all(".hit", "els => els.map(e => e.getBoundingClientRect().left)")
        assert len(set(lefts)) == 1  # a single column
        narrow = tmp_path / "search-375.png"
        phone.screenshot(path=str(narrow), full_page=True)
        phone.close()
        page.fill("#q", "")
        page.click("#go")
        page.wait_for_selector(".err")
        assert "q:" in page.inner_text("#status")

        # stored XSS: a caption that is markup, added with `index add`, shows as text and runs nothing
        from ncl_ray.data.synthetic import render, write_video

        hostile = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
        video = write_video(str(tmp_path / "xss.mp4"), render("green", "square", "large", "up", "gray",
                                                              num_frames=16, side=64, rng=np.random.default_rng(7)))
        manifest = tmp_path / "xss.jsonl"
        manifest.write_text("".join(json.dumps({"video_id": "xss-check", "path": video, "caption": c,
                                                "split": "added"}) + "\n" for c in (hostile, "w" * 500)))
        r = subprocess.run([sys.executable, "-m", "ncl_ray", "index", "add", str(served["run"]), str(manifest)],
                           cwd=ROOT, env=served["env"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert get(served["base"] + "/reload", {})[0] == 200
        videos = json.loads(get(served["base"] + "/healthz")[1])["videos"]
        page.fill("#k", str(min(100, videos)))
        page.fill("#q", "a large green square moving up on a gray background")
        page.click("#go")
        page.wait_for_selector(".hit[data-video=xss-check]")
        shown = page.inner_text(".hit[data-video=xss-check]")
        assert "<img src=x" in shown and "<script>" in shown  # the markup is text
        assert page.title() == "ncl-ray search"  # nothing ran
        assert page.eval_on_selector_all(".hit img[src=x], .hit script", "els => els.length") == 0
        # a 500-character word wraps inside its card instead of overflowing it
        assert page.eval_on_selector(".hit[data-video=xss-check]", "e => e.scrollWidth <= e.clientWidth")
        browser.close()
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert narrow.stat().st_size > 10_000
    if (ROOT / "bench" / "out").is_dir():
        shutil.copy(shot, ROOT / "bench" / "out" / "serve_page.png")
        shutil.copy(narrow, ROOT / "bench" / "out" / "serve_page_375.png")


def test_a_watched_folder_indexes_itself_and_the_server_follows(served, tmp_path):
    """`ncl-ray index watch RUN FOLDER`: a video dropped into the folder is added (its copy is not), and the
    running server serves the new version on its own, without POST /reload."""
    import time

    from ncl_ray.data.synthetic import render, write_video

    folder = tmp_path / "library"
    folder.mkdir()
    write_video(str(folder / "dropped.mp4"), render("yellow", "square", "small", "down", "gray", num_frames=16,
                                                    side=64, rng=np.random.default_rng(11)))
    (folder / "dropped.txt").write_text("a small yellow square falling\n")
    (folder / "dropped again.mp4").write_bytes((folder / "dropped.mp4").read_bytes())
    before = json.loads(get(served["base"] + "/healthz")[1])
    r = subprocess.run([sys.executable, "-m", "ncl_ray", "index", "watch", str(served["run"]), str(folder),
                        "--passes", "2", "--every", "1"], cwd=ROOT, env=served["env"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("new video(s)") == 1 and "dropped" in r.stdout  # the second pass finds nothing new
    deadline = time.time() + 60
    while time.time() < deadline:  # the server looks for a new CURRENT at most every 5 s
        info = json.loads(get(served["base"] + "/healthz")[1])
        if info["version"] != before["version"]:
            break
        time.sleep(1)
    assert info["version"] != before["version"] and info["videos"] == before["videos"] + 1
    q = urllib.parse.quote("a small yellow square moving down on a gray background")
    hits = {h["video_id"]: h for h in json.loads(get(f"{served['base']}/search?q={q}&k=100")[1])}
    assert hits["dropped"]["captions"] == ["a small yellow square falling"] and "dropped again" not in hits
    # deleting the files takes the video out again
    (folder / "dropped.mp4").unlink()
    (folder / "dropped again.mp4").unlink()
    r = subprocess.run([sys.executable, "-m", "ncl_ray", "index", "watch", str(served["run"]), str(folder),
                        "--passes", "1"], cwd=ROOT, env=served["env"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "1 video(s) gone" in r.stdout, r.stderr[-2000:]
    added = info["version"]
    deadline = time.time() + 60
    while time.time() < deadline:
        info = json.loads(get(served["base"] + "/healthz")[1])
        if info["version"] != added:
            break
        time.sleep(1)
    assert info["videos"] == before["videos"]
    hits = {h["video_id"] for h in json.loads(get(f"{served['base']}/search?q={q}&k=100")[1])}
    assert "dropped" not in hits


def test_near_copies_of_a_video_fold_into_one_hit_also_in_the_other(served):
    """Two files of the same clip (an MP4 and its remux into Matroska: not byte-identical, so both are indexed,
    and the same frames): with collapse=1
    (what the page asks for) one hit names the other in `also_in`; without it, the API ranks both as eval does."""
    from ncl_ray.data.synthetic import render, write_video

    folder = served["tmp"] / "copies"
    folder.mkdir()
    frames = render("white", "square", "small", "up", "gray", num_frames=16, side=64, rng=np.random.default_rng(3))
    write_video(str(folder / "walk.mp4"), frames)
    _remux(folder / "walk.mp4", folder / "walk phone copy.mkv")  # the same clip in another container
    assert (folder / "walk.mp4").read_bytes() != (folder / "walk phone copy.mkv").read_bytes()
    r = subprocess.run([sys.executable, "-m", "ncl_ray", "index", "add", str(served["run"]), str(folder),
                        "--window", "0"], cwd=ROOT, env=served["env"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(get(served["base"] + "/reload", {})[1])
    q = urllib.parse.quote("a small white square moving up on a gray background")
    every = json.loads(get(f"{served['base']}/search?q={q}&k={min(info['videos'], 100)}")[1])
    assert {"walk", "walk phone copy"} <= {h["video_id"] for h in every} and not any("also_in" in h for h in every)
    folded = json.loads(get(f"{served['base']}/search?q={q}&k={min(info['videos'], 100)}&collapse=1")[1])
    groups = [{h["video_id"], *h.get("also_in", [])} for h in folded]
    assert sum(len(g) for g in groups) == len(every)  # every video shown once, or named under the hit it copies
    assert any({"walk", "walk phone copy"} <= g for g in groups), groups  # the two files: one hit


def _remux(src: Path, dst: Path) -> None:
    """The packets of `src`'s video stream, unchanged, in a Matroska file (what a phone's export or a copy tool
    makes of a clip)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", format="matroska") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
