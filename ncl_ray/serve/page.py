"""The search page served at `/`: a search box, a switch between plain and NCL ranking, a results grid."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ncl-ray search</title>
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
const $ = (id) => document.getElementById(id);
fetch('/healthz').then(r => r.json()).then(h => {
  $('info').textContent = `${h.videos} videos, index ${h.version} (${h.kind}), biases from the ${h.bank} bank`;
});
function esc(s) { const d = document.createElement('div'); d.textContent = s; return d.innerHTML; }
async function search(ev) {
  if (ev) ev.preventDefault();
  const method = document.querySelector('input[name=method]:checked').value;
  const url = `/search?q=${encodeURIComponent($('q').value)}&k=${$('k').value}&method=${method}`;
  $('status').textContent = 'searching...';
  const r = await fetch(url);
  const body = await r.json();
  if (!r.ok) { $('status').innerHTML = `<span class="err">${esc(body.field)}: ${esc(body.error)}</span>`;
               $('grid').innerHTML = ''; return; }
  $('status').textContent = `${body.length} results, ${method === 'ncl' ? 'NCL' : 'plain'} ranking`;
  $('grid').innerHTML = body.map((h, i) => `<div class="hit" data-video="${esc(h.video_id)}">
     <img src="${h.thumbnail_url}" alt="${esc(h.video_id)}">
     <div><b>${i + 1}. ${esc(h.video_id)}</b> <span class="meta">score ${h.score.toFixed(4)}</span></div>
     <div class="meta">${h.captions.map(esc).join('<br>')}</div></div>`).join('');
}
$('form').addEventListener('submit', search);
document.querySelectorAll('input[name=method]').forEach(el => el.addEventListener('change', () => {
  if ($('q').value.trim()) search(); }));
</script>
</body></html>
"""
