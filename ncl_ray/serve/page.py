"""The search page served at `/`: a search box, the index's ranking methods with a one-line legend, a results
grid where each hit says why it ranks there (plain score, bias, plain rank, a confidence) and plays from its
moment; a single column on narrow screens.

Served with a Content-Security-Policy that allows only this page's own inline script and same-origin requests
(guard.py): no script from anywhere else runs, even if some text were ever placed as HTML. The legend's sentences
come from the served methods' records (ncl/methods.py)."""

import json

from ncl_ray.ncl.methods import REGISTRY

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ncl-ray search</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font-family:system-ui,sans-serif;margin:2rem;background:#fafafa;color:#222}
 form{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin-bottom:.5rem}
 input[type=text]{flex:1 1 20rem;min-width:0;font-size:1.1rem;padding:.4rem}
 #methods label{margin-right:.6rem;white-space:nowrap}
 #grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,360px),1fr));gap:1rem}
 .hit{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5rem;min-width:0;overflow-wrap:anywhere}
 .hit img,.hit video{width:100%;display:block}
 .hit img{image-rendering:pixelated}
 .meta{font-size:.85rem;color:#555} .err{color:#b00}
 .badge{display:inline-block;font-size:.75rem;padding:0 .35rem;border-radius:3px;margin-left:.3rem}
 .strong{background:#d7f5dd} .fair{background:#fff1c2} .weak{background:#f7d6d6} .ood{background:#e4e4f7}
 .up{color:#176d2c} .down{color:#a33}
 #warning{background:#fff1c2;border:1px solid #e5c65a;padding:.4rem;border-radius:4px;display:none}
 button.play{margin-top:.3rem} button.goto{margin:0 .2rem .2rem 0}
 @media (max-width:600px){body{margin:.75rem} h1{font-size:1.4rem}}
</style></head>
<body>
<h1>ncl-ray search</h1>
<p class="meta" id="info"></p>
<form id="form">
 <input type="text" id="q" placeholder="a large red circle moving left" autofocus>
 <input type="text" id="not" placeholder="but not..." style="width:8rem" aria-label="but not">
 <input type="number" id="k" value="10" min="1" max="100" style="width:4rem" aria-label="results">
 <button type="submit" id="go">Search</button>
 <span id="methods"></span>
 <label class="meta">or an image: <input type="file" id="image" accept="image/jpeg,image/png"></label>
</form>
<p class="meta" id="legend"></p>
<p id="warning"></p>
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
const WORDS = __WORDS__;
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
const clock = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
const method = () => (document.querySelector('input[name=method]:checked') || {value: 'ncl'}).value;
function legend() { $('legend').textContent = WORDS[method()] || ''; }
get('/healthz').then(r => r.json()).then(h => {
  $('info').textContent = `${h.videos} videos, ${h.moments} moments, index ${h.version} (${h.kind}), biases from ` +
                          `the ${h.bank} bank`;
  (h.methods || ['ncl', 'none']).forEach((m, i) => {
    const label = el('label'), input = el('input');
    input.type = 'radio'; input.name = 'method'; input.value = m; input.checked = i === 0;
    input.addEventListener('change', () => { legend(); if ($('q').value.trim() || lastLike) search(); });
    label.append(input, ' ' + (m === 'none' ? 'plain' : m));
    $('methods').append(label);
  });
  legend();
});
async function thumbnail(img, url) {  // fetched with the token, shown from a blob URL
  const r = await get(url);
  if (r.ok) img.src = URL.createObjectURL(await r.blob());
}
async function play(box, h, m) {  // the source video from moment m's start; a later moment seeks the same player
  const start = m.start_s || 0;
  const open = box.querySelector('video');
  if (open) { open.currentTime = start; open.play().catch(() => {}); return; }
  const video = el('video');
  video.controls = true;
  if (token) {  // a player cannot send the token: fetch the file with it
    const r = await get(h.video_url);
    if (!r.ok) return;
    video.src = URL.createObjectURL(await r.blob());
  } else {
    video.src = h.video_url + (start ? `#t=${start}` : '');
  }
  video.addEventListener('loadedmetadata', () => { video.currentTime = start; video.play().catch(() => {}); });
  box.querySelector('img').replaceWith(video);
}
function hit(h, i) {
  const box = el('div', 'hit');
  box.dataset.video = h.video_id;
  const img = el('img');
  img.alt = h.video_id;
  thumbnail(img, h.thumbnail_url);
  const title = el('div');
  title.append(el('b', '', `${i + 1}. ${h.video_id}`));
  if (h.end_s) title.append(' ', el('span', 'meta moment', `${clock(h.start_s)}-${clock(h.end_s)}`));
  const basis = h.label_right !== undefined
    ? (h.label_right === null ? 'below every held-out first hit'
       : `${Math.round(100 * h.label_right)} % of such first hits right on ${h.label_captions} held-out captions`)
    : h.match_percentile === undefined ? `z ${h.confidence}`
    : `closer than ${h.match_percentile} % of training pairs`;
  title.append(el('span', 'badge ' + h.confidence_label, `${h.confidence_label} (${basis})`));
  if (h.outside_training) title.append(el('span', 'badge ood', 'unlike the training videos'));
  const why = el('div', 'meta why');
  const sign = h.bias >= 0 ? '+' : '-';
  why.append(`score ${h.score.toFixed(4)} = plain ${h.plain_score.toFixed(4)} ${sign} bias ` +
             `${Math.abs(h.bias).toFixed(4)}; plain rank ${h.plain_rank_exact ? '' : 'about '}${h.plain_rank}`);
  const moved = h.plain_rank - (i + 1);
  if (moved) why.append(' ', el('span', moved > 0 ? 'up' : 'down', moved > 0 ? `up ${moved}` : `down ${-moved}`));
  const caps = el('div', 'meta');
  h.captions.forEach((c, j) => { if (j) caps.append(el('br')); caps.append(c); });
  const button = el('button', 'play', h.end_s ? `play from ${clock(h.start_s)}` : 'play');
  button.type = 'button';
  button.addEventListener('click', async () => {  // disabled while the file loads, then usable again
    button.disabled = true;
    try { await play(box, h, h); } finally { button.disabled = false; }
  });
  box.append(img, title, why, caps);
  if (h.also_in) box.append(el('div', 'meta also', 'also in: ' + h.also_in.join(', ')));
  if (h.moments && h.moments.length > 1) {  // each one plays from its start
    const other = el('div', 'meta', 'other moments: ');
    h.moments.slice(1).forEach(m => {
      const go = el('button', 'goto', `${clock(m.start_s)}-${clock(m.end_s)}`);
      go.type = 'button';
      go.addEventListener('click', () => play(box, h, m));
      other.append(go, ' ');
    });
    box.append(other);
  }
  const like = el('button', 'like', 'more like this');
  like.type = 'button';
  like.addEventListener('click', () => search(null, {id: h.video_id, start: h.end_s ? h.start_s : null}));
  box.append(button, ' ', like);
  return box;
}
let latest = 0;  // a search answered after a newer one was started is dropped, not drawn over it
let lastLike = null;  // the video a "more like this" search started from (a method change repeats it)
async function search(ev, like) {
  if (ev) { ev.preventDefault(); lastLike = null; }
  if (like !== undefined) lastLike = like;
  const mine = ++latest;
  const m = method();
  const q = lastLike ? 'like:' + lastLike.id : $('q').value;
  const what = lastLike ? `like=${encodeURIComponent(lastLike.id)}` +
                          (lastLike.start !== null ? `&start=${lastLike.start}` : '')
                        : `q=${encodeURIComponent(q)}&collapse=1` +
                          ($('not').value.trim() ? `&not=${encodeURIComponent($('not').value)}` : '');
  const url = `/search?${what}&k=${encodeURIComponent($('k').value)}&method=${encodeURIComponent(m)}`;
  $('status').textContent = 'searching...';
  const r = await get(url);
  const body = await r.json();
  if (mine !== latest) return;
  if (!r.ok) { $('status').replaceChildren(el('span', 'err', `${body.field}: ${body.error}`));
               $('grid').replaceChildren(); return; }
  const outside = body.length && body[0].query_outside;
  $('warning').style.display = outside ? 'block' : 'none';
  $('warning').textContent = outside ? 'This query is unlike the captions the model was trained on: its ' +
    'scores say little. Try words from its domain.' : '';
  $('status').textContent = `${body.length} results, ${m === 'none' ? 'plain' : m} ranking` +
    (lastLike ? `, like ${lastLike.id} (first: itself)` : '');
  $('grid').replaceChildren(...body.map(hit));
  $('grid').dataset.query = q;  // which search the grid shows (a redraw drops players opened on the old one)
}
async function searchImage() {  // the chosen image itself is the query (the frame tower embeds it)
  const file = $('image').files[0];
  if (!file) return;
  const mine = ++latest;
  lastLike = null;
  const m = method();
  $('status').textContent = 'searching...';
  const r = await fetch(`/search/image?k=${encodeURIComponent($('k').value)}&method=${encodeURIComponent(m)}`,
                        {method: 'POST', headers: {...headers, 'Content-Type': file.type}, body: file});
  const body = await r.json();
  if (mine !== latest) return;
  if (!r.ok) { $('status').replaceChildren(el('span', 'err', `${body.field}: ${body.error}`));
               $('grid').replaceChildren(); return; }
  $('warning').style.display = 'none';
  $('status').textContent = `${body.length} results for the image ${file.name}, ${m === 'none' ? 'plain' : m} ranking`;
  $('grid').replaceChildren(...body.map(hit));
  $('grid').dataset.query = 'image:' + file.name;
}
$('image').addEventListener('change', searchImage);
$('form').addEventListener('submit', search);
</script>
</body></html>
""".replace("__WORDS__", json.dumps({m.name: m.page for m in REGISTRY if m.served}, indent=1))


def _script_hash(page: str) -> str:
    import base64
    import hashlib

    script = page[page.index("<script>") + len("<script>"): page.index("</script>")]
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


# Only this page's own script (by hash), its inline style, same-origin requests and blob thumbnails
CSP = (f"default-src 'none'; script-src '{_script_hash(PAGE)}'; style-src 'unsafe-inline'; connect-src 'self'; "
       f"img-src 'self' blob:; media-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
