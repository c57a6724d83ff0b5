"""The search page served at `/`: a search box, a switch between plain and NCL ranking, a results grid.

Served with a Content-Security-Policy that allows only this page's own inline script and same-origin requests
(guard.py): no script from anywhere else runs, even if some text were ever placed as HTML."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ncl-ray search</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font-family:system-ui,sans-serif;margin:2rem;background:#fafafa;color:#222}
 form{display:flex;gap:.5rem;align-items:center;margin-bottom:1rem}
 input[type=text]{flex:1;font-size:1.1rem;padding:.4rem}
 #grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(400px,1fr));gap:1rem}
 .hit{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5rem}
 .hit img{width:100%;image-rendering:pixelated}
 .meta{font-size:.85rem;color:#555} .err{color:#b00}
</style></head>
<body>
<h1>ncl-ray search</h1>
<p class="meta" id="info"></p>
<form id="form">
 <input type="text" id="q" placeholder="a large red circle moving left" autofocus>
 <label><input type="radio" name="method" value="ncl" checked> NCL ranking</label>
 <label><input type="radio" name="method" value="none"> plain ranking</label>
 <input type="number" id="k" value="10" min="1" max="100" style="width:4rem">
 <button type="submit" id="go">Search</button>
</form>
<p class="meta">NCL ranking adds each video's normalisation bias, so videos that match every query (hubs) stop
crowding the results; switch to plain ranking to see what it changes.</p>
<div id="status" class="meta"></div>
<div id="grid"></div>
<script>
// Everything from the server is placed with textContent and attributes set through the DOM, never parsed as
// HTML: a video id or caption holding quotes or tags stays text. A token given as /#token=... is sent as a
// bearer token with every request (required when the server listens beyond loopback).
const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.hash.slice(1)).get('token');
const headers = token ? {'Authorization': 'Bearer ' + token} : {};
const get = (url) => fetch(url, {headers});
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
get('/healthz').then(r => r.json()).then(h => {
  $('info').textContent = `${h.videos} videos, index ${h.version} (${h.kind}), biases from the ${h.bank} bank`;
});
async function thumbnail(img, videoId) {  // fetched with the token, shown from a blob URL
  const r = await get('/thumbnails/' + encodeURIComponent(videoId) + '.jpg');
  if (r.ok) img.src = URL.createObjectURL(await r.blob());
}
function hit(h, i) {
  const box = el('div', 'hit');
  box.dataset.video = h.video_id;
  const img = el('img');
  img.alt = h.video_id;
  thumbnail(img, h.video_id);
  const title = el('div');
  title.append(el('b', '', `${i + 1}. ${h.video_id}`), ' ', el('span', 'meta', `score ${h.score.toFixed(4)}`));
  const caps = el('div', 'meta');
  h.captions.forEach((c, j) => { if (j) caps.append(el('br')); caps.append(c); });
  box.append(img, title, caps);
  return box;
}
async function search(ev) {
  if (ev) ev.preventDefault();
  const method = document.querySelector('input[name=method]:checked').value;
  const url = `/search?q=${encodeURIComponent($('q').value)}&k=${encodeURIComponent($('k').value)}` +
              `&method=${method}`;
  $('status').textContent = 'searching...';
  const r = await get(url);
  const body = await r.json();
  if (!r.ok) { $('status').replaceChildren(el('span', 'err', `${body.field}: ${body.error}`));
               $('grid').replaceChildren(); return; }
  $('status').textContent = `${body.length} results, ${method === 'ncl' ? 'NCL' : 'plain'} ranking`;
  $('grid').replaceChildren(...body.map(hit));
}
$('form').addEventListener('submit', search);
document.querySelectorAll('input[name=method]').forEach(e => e.addEventListener('change', () => {
  if ($('q').value.trim()) search(); }));
</script>
</body></html>
"""


def _script_hash(page: str) -> str:
    import base64
    import hashlib

    script = page[page.index("<script>") + len("<script>"): page.index("</script>")]
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


# Only this page's own script (by hash), its inline style, same-origin requests and blob thumbnails
CSP = (f"default-src 'none'; script-src '{_script_hash(PAGE)}'; style-src 'unsafe-inline'; connect-src 'self'; "
       f"img-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
