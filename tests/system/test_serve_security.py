"""Every security promise of the search service, tried as an attacker would: against the running `ncl-ray serve`
(its token from a --token-file, Host names, duplicate headers), and through the real `ncl-ray index add`
(links out of an added folder, a file swapped for a link after indexing, a container that lies about its
duration, two writers at once, a crafted version on reload)."""

import http.client
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from raynodes import free_port, processes_of
from serving import HOST, ROOT, TOKEN, get, raw

pytestmark = [pytest.mark.ray, pytest.mark.slow]
SECRET = "root:x:0:0:the secret line no search may return"


def index_add(served, *args, timeout=300):
    return subprocess.Popen([sys.executable, "-m", "ncl_ray", "index", "add", str(served["run"]), *map(str, args)],
                            cwd=ROOT, env=served["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def video(path, color, seed=0, frames=16):
    from ncl_ray.data.synthetic import render, write_video

    return write_video(str(path), render(color, "square", "large", "up", "gray", num_frames=frames, side=64,
                                         rng=np.random.default_rng(seed)))


def record(probe, value):
    """Figures for bench/RESULTS.md's security table, kept in bench/out/ when that folder exists."""
    out = ROOT / "bench" / "out"
    if out.is_dir():
        f = out / "security_probes.json"
        data = json.loads(f.read_text()) if f.is_file() else {}
        f.write_text(json.dumps({**data, probe: value}, indent=1))


def rss_mb(pids):
    """{pid: resident MB} of those processes still alive."""
    out = {}
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    out[pid] = int(line.split()[1]) / 1024
        except OSError:
            pass
    return out


def test_the_token_guards_every_route_of_the_running_server(served):
    base = served["base"]
    for path in ("/search?q=red", "/healthz", "/videos/video00001", "/thumbnails/video00001.jpg", "/nothing",
                 "/docs"):
        status, body, _ = raw(base + path, auth=False)
        assert status == 401 and json.loads(body)["field"] == "authorization", (path, status, body[:200])
        assert raw(base + path, auth=False, Authorization="Bearer " + "x" * len(TOKEN))[0] == 401
    status, body, _ = raw(base + "/reload", "POST", b"{}", auth=False, Content_Type="application/json")
    assert status == 401
    status, page, _ = raw(base + "/", auth=False)  # the page holds no data; it reads the token from #token=
    assert status == 200 and b"<html" in page.lower() and TOKEN.encode() not in page
    status, body, _ = raw(base + "/-/healthz", auth=False)  # Ray's proxy's liveness probe: reveals nothing
    assert status == 200 and b"video" not in body and len(body) < 100
    status, body, _ = raw(base + "/-/routes", auth=False)  # on loopback Ray's route table answers: name, prefix
    assert status == 200 and json.loads(body) == {"/": "ncl-ray"}  # (beyond loopback front.py hides it: test_front)
    # --allow-host: a name the operator allowed, with the token; any other name is refused
    assert raw(base + "/healthz", Host="search.example")[0] == 200
    assert raw(base + "/healthz", Host="evil.example")[0] == 421
    # two Host headers: ambiguous, refused (the guard used to check only the last one)
    conn = http.client.HTTPConnection(HOST, int(base.rsplit(":", 1)[1]), timeout=30)
    conn.putrequest("GET", "/healthz", skip_host=True)
    conn.putheader("Host", "evil.example")
    conn.putheader("Host", "127.0.0.1")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()  # the front's HTTP parser refuses it before any handler (plain text), the guard with JSON
    assert r.status == 400 and (b"Host" in body or json.loads(body)["field"] == "host"), body[:200]
    conn.close()


def test_links_forged_durations_and_swapped_files_never_reach_a_response(served, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text(SECRET + "\n")
    video(outside / "other.mp4", "yellow", 5)
    folder = tmp_path / "added"
    folder.mkdir()
    video(folder / "good.mp4", "green", 1)
    video(folder / "clip.mp4", "white", 2)
    (folder / "clip.txt").symlink_to(outside / "passwd")  # captions from a link: not read
    (folder / "outlink.mp4").symlink_to(outside / "other.mp4")  # a video out of the folder: refused
    from videos import forged_duration_mkv

    forged_duration_mkv(folder / "forged.mkv")  # declares 1e10 ms: 16 million windows if believed
    add = index_add(served, folder)
    peaks: dict = {}
    while add.poll() is None:  # the largest process of the add (its driver, Ray's workers and decoders)
        for pid, mb in rss_mb(processes_of(str(add.pid)) | {add.pid} | _descendants(add.pid)).items():
            peaks[pid] = max(peaks.get(pid, 0), mb)
        time.sleep(0.2)
    out, err = add.communicate()
    assert add.returncode == 0, err[-3000:]
    assert "added 2 video(s)" in out, out
    assert "outlink: " in err and "symbolic link" in err and "forged" in err and "captions not read" in err
    assert max(peaks.values()) < 1500, peaks
    record("index add beside a forged-duration MKV: largest process (MB)", round(max(peaks.values())))
    record("index add beside a forged-duration MKV: all its processes at once (MB, upper bound)",
           round(sum(peaks.values())))
    assert get(served["base"] + "/reload", {})[0] == 200
    status, body, _ = get(f"{served['base']}/search?q={urllib.parse.quote('root x passwd')}&k=100")
    assert status == 200 and b"root:x" not in body and b"secret line" not in body
    ids = {h["video_id"] for h in json.loads(body)}
    assert {"good", "clip"} <= ids and "outlink" not in ids and "forged" not in ids
    assert get(served["base"] + "/videos/outlink")[0] == 404
    status, part, _ = raw(served["base"] + "/videos/good", Range="bytes=0-9")
    assert status == 206 and len(part) == 10
    # after indexing: the file swapped for a link to a secret, then for another regular file
    good = folder / "good.mp4"
    good.unlink()
    good.symlink_to(outside / "passwd")
    for path, headers in (("/videos/good", {}), ("/videos/good", {"Range": "bytes=0-99"}),
                          ("/thumbnails/good.jpg", {})):
        status, body, _ = raw(served["base"] + path, **headers)
        assert status == 409 and b"root:" not in body and str(outside).encode() not in body, (path, status, body)
    good.unlink()
    shutil.copy(outside / "other.mp4", good)
    assert raw(served["base"] + "/videos/good")[0] == 409
    good.unlink()
    assert raw(served["base"] + "/videos/good")[0] == 404


def _descendants(pid):
    """Every process below `pid` (Ray's processes of a CLI run are its children and theirs)."""
    children, frontier = set(), {pid}
    procs = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                procs[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    while frontier:
        frontier = {p for p, pp in procs.items() if pp in frontier and p not in children}
        children |= frontier
    return children


def test_two_concurrent_adds_both_land(served, tmp_path):
    firsts, seconds = tmp_path / "a", tmp_path / "b"
    for folder, color, seed in ((firsts, "red", 11), (seconds, "blue", 12)):
        folder.mkdir()
        video(folder / f"{folder.name}_one.mp4", color, seed)
        video(folder / f"{folder.name}_two.mp4", color, seed + 10, frames=20)
    started = time.time()
    a, b = index_add(served, firsts), index_add(served, seconds)  # both reach the lock within a moment
    (out_a, err_a), (out_b, err_b) = a.communicate(timeout=400), b.communicate(timeout=400)
    record("two concurrent index add runs: seconds until both ended", round(time.time() - started))
    assert a.returncode == 0 and b.returncode == 0, (err_a[-2000:], err_b[-2000:])
    assert "added 2 video(s)" in out_a and "added 2 video(s)" in out_b
    assert "waiting for the index lock" in out_a + out_b  # one of them waited for the other, saying so
    info = json.loads(get(served["base"] + "/reload", {})[1])
    status, body, _ = get(f"{served['base']}/search?q=square&k=100")
    ids = {h["video_id"] for h in json.loads(body)}
    assert {"a_one", "a_two", "b_one", "b_two"} <= ids, (info, sorted(ids))


def test_a_crafted_version_is_refused_and_the_old_one_keeps_serving(served):
    from ncl_ray.runtime.checkpoint import resolve_checkpoint

    home = Path(resolve_checkpoint(str(served["run"]))) / "index"
    live = (home / "CURRENT").read_text().strip()
    before = get(f"{served['base']}/search?q=square&k=5")[1]
    crafted = {
        "temperature": lambda d: (d / "index.json").write_text(
            json.dumps({**json.loads((d / "index.json").read_text()), "temperature": 1e999})),
        "ncl biases": lambda d: _edit(d, "ncl_bias", lambda b: np.where(np.arange(len(b)) == 0, np.inf, b)),
        "embedding": lambda d: _edit(d, "embedding", lambda e: [np.full_like(np.asarray(e[0]), np.nan)] + e[1:]),
    }
    try:
        for i, (what, craft) in enumerate(crafted.items()):
            bad = home / f"v{9000 + i}"
            shutil.copytree(home / live, bad)
            craft(bad)
            (home / "CURRENT").write_text(bad.name)
            status, body, _ = get(served["base"] + "/reload", {})
            problem = json.loads(body)
            assert status == 422 and problem["field"] == "index" and live in problem["error"], (what, problem)
            status, now, _ = get(f"{served['base']}/search?q=square&k=5")
            assert status == 200 and json.loads(now) == json.loads(before)  # the old version answers as before
            r = subprocess.run([sys.executable, "-m", "ncl_ray", "serve", str(served["run"]), "--port",
                                str(free_port())], cwd=ROOT, env=served["env"], capture_output=True, text=True,
                               timeout=120)
            assert r.returncode == 2 and bad.name in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    finally:
        (home / "CURRENT").write_text(live)
    assert json.loads(get(served["base"] + "/reload", {})[1])["version"] == live


def _edit(folder, column, change):
    import pyarrow as pa

    table = pq.read_table(folder / "videos.parquet")
    values = table.column(column).to_pylist()
    new = change(values if column == "embedding" else np.asarray(values, np.float32))
    arr = pa.array([list(map(float, x)) for x in new]) if column == "embedding" else pa.array(new, pa.float32())
    pq.write_table(table.set_column(table.column_names.index(column), column, arr), folder / "videos.parquet")


def test_nothing_of_the_server_listens_beyond_loopback_but_ray_internals(served):
    """On loopback the HTTP port is Ray Serve's proxy, on 127.0.0.1; what else Ray opens on all interfaces is its
    internal gRPC (the replicas'), which refuses calls without the cluster token (README: "Ray underneath")."""
    from sockets import descendants, listening

    port = int(served["base"].rsplit(":", 1)[1])
    found = [(addr, p) for _, addr, p in listening(descendants(served["pid"]))]
    assert [a for a, p in found if p == port] == [HOST], found
    specific = [(addr, p) for addr, p in found if addr not in ("0.0.0.0", "::")]
    assert all(addr in ("127.0.0.1", "::1", "::ffff:127.0.0.1") for addr, _ in specific), found
