"""The login page and the review queue page (plain HTML + fetch; keyboard-driven triage)."""

STYLE = """<style>body{font-family:system-ui,sans-serif;margin:1.5rem;background:#111;color:#eee}
a{color:#8cf}button{margin:.2rem;padding:.3rem .8rem}input{padding:.3rem;margin:.2rem}
.item{display:grid;grid-template-columns:340px 340px 1fr;gap:.8rem;border:1px solid #333;padding:.5rem;
margin:.5rem 0}.item.current{border-color:#8cf}.item img{width:340px;border:1px solid #444}
.confirmed{color:#f55}.rejected{color:#4c4}.unreviewed{color:#fc4}.muted{color:#999;font-size:.85rem}
kbd{background:#333;padding:0 .3rem;border-radius:3px}</style>"""

LOGIN_PAGE = (
    """<!doctype html><html><head><meta charset=utf-8><title>linewatch · log in</title>"""
    + STYLE
    + """</head><body><h1>linewatch</h1><form id=login>
<label>user <input name=username autocomplete=username required></label>
<label>password <input name=password type=password autocomplete=current-password required></label>
<button type=submit>log in</button></form><p id=error class=confirmed></p>
<script>
document.getElementById('login').addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const resp = await fetch('/api/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({username: f.get('username'), password: f.get('password')})});
  if (resp.ok) {
    const next = new URLSearchParams(location.search).get('next') || '/';
    // only a page of this site: browsers read a backslash or a tab after the first slash as '//'
    const target = new URL(next, location.origin);
    location.href = target.origin === location.origin ? target.pathname + target.search + target.hash : '/';
  } else {
    document.getElementById('error').textContent = (await resp.json()).detail || resp.statusText;
  }
});
</script></body></html>"""
)

REVIEW_PAGE = (
    """<!doctype html><html><head><meta charset=utf-8><title>linewatch · review</title>
<meta name=csrf content="{csrf}">"""
    + STYLE
    + """</head><body><h1>Review queue</h1>
<p class=muted>{user} ({role}) · <a href="/">live view</a> · <a href="/history">history</a> ·
<kbd>j</kbd>/<kbd>k</kbd> next/previous · <kbd>c</kbd> confirm · <kbd>r</kbd> reject ·
<kbd>t</kbd> defect type · <kbd>x</kbd> select · <kbd>C</kbd>/<kbd>R</kbd> confirm/reject selected</p>
<p><label>show <select id=state><option value=unreviewed>unreviewed</option>
<option value=confirmed>confirmed</option><option value=rejected>rejected</option>
<option value="">all</option></select></label> <span id=total class=muted></span>
<span id=message class=muted></span></p><section id=queue></section>
<script>
const csrf = document.querySelector('meta[name=csrf]').content;
const canReview = '{role}' !== 'viewer';
let items = [], current = 0, selected = new Set();
const buttons = '<button data-act=confirmed>confirm</button><button data-act=rejected>reject</button>';
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => '&#' + c.charCodeAt(0) + ';');
async function load() {
  const state = document.getElementById('state').value;
  const resp = await fetch('/api/defects?limit=50' + (state ? '&state=' + state : ''));
  const data = await resp.json();
  items = data.items; current = Math.min(current, Math.max(0, items.length - 1));
  document.getElementById('total').textContent = data.total + ' defect(s)';
  render();
}
function verdict(v) {
  if (!v || !v.status || v.status === 'none' || v.status === 'pending') return 'no LLM verdict';
  if (v.anomaly === null || v.anomaly === undefined) return 'LLM: ' + esc(v.status);
  return 'LLM: ' + (v.anomaly ? 'anomaly' : 'no anomaly') + ' at ' + esc(v.location) + ' (' +
    esc(v.defect_type) + ', ' + Number(v.confidence || 0).toFixed(2) + ') — ' +
    (v.agrees_with_detector ? 'agrees' : 'disagrees') + ' with the detector';
}
function render() {
  document.getElementById('queue').innerHTML = items.map((d, i) => `
   <article class="item ${i === current ? 'current' : ''}" data-id="${d.id}">
    <img src="/evidence/${esc(d.evidence)}" alt="frame ${d.seq}">
    <img src="/evidence/${esc(d.overlay)}" alt="overlay ${d.seq}">
    <div><h3>${esc(d.station)} #${d.seq} ${selected.has(d.id) ? '☑' : ''}</h3>
     <p>detector: score ${d.score.toFixed(2)} at ${esc(d.position)}</p><p>${verdict(d.verdict)}</p>
     <p class="${esc(d.review_state)}">${esc(d.review_state)}
      ${d.defect_type ? '· ' + esc(d.defect_type) : ''}
      ${d.reviewed_by ? '· by ' + esc(d.reviewed_by) : ''}</p>
     ${canReview ? buttons : ''}
    </div></article>`).join('') || '<p>Nothing to review.</p>';
}
async function decide(ids, decision, extra = {}) {
  const one = ids.length === 1;
  const resp = await fetch(one ? `/api/defects/${ids[0]}/review` : '/api/defects/review', {
    method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
    body: JSON.stringify(one ? {decision, ...extra} : {ids, decision, ...extra})});
  document.getElementById('message').textContent = resp.ok ? '' : (await resp.json()).detail;
  selected.clear(); await load();
}
document.getElementById('queue').addEventListener('click', (e) => {
  const act = e.target.dataset.act, card = e.target.closest('.item');
  if (act && card) decide([Number(card.dataset.id)], act);
});
document.getElementById('state').addEventListener('change', () => { current = 0; load(); });
document.addEventListener('keydown', (e) => {
  if (e.target.tagName === 'INPUT' || e.target.tagName === 'SELECT' || !items.length) return;
  const d = items[current];
  if (e.key === 'j') current = Math.min(items.length - 1, current + 1);
  else if (e.key === 'k') current = Math.max(0, current - 1);
  else if (e.key === 'x') selected.has(d.id) ? selected.delete(d.id) : selected.add(d.id);
  else if (canReview && e.key === 'c') return decide([d.id], 'confirmed');
  else if (canReview && e.key === 'r') return decide([d.id], 'rejected');
  else if (canReview && e.key === 't') {
    const type = prompt('defect type', d.defect_type || '');
    if (type !== null) decide([d.id], 'confirmed', {defect_type: type});
    return;
  } else if (canReview && (e.key === 'C' || e.key === 'R') && selected.size)
    return decide([...selected], e.key === 'C' ? 'confirmed' : 'rejected');
  else return;
  render();
});
load(); setInterval(load, 5000);
</script></body></html>"""
)

HISTORY_PAGE = (
    """<!doctype html><html><head><meta charset=utf-8><title>linewatch · history</title>"""
    + STYLE
    + """<style>table{border-collapse:collapse;margin-top:.8rem}td,th{padding:.25rem .6rem;
border-bottom:1px solid #333;text-align:left;font-size:.9rem}</style></head><body><h1>History</h1>
<p class=muted>{user} · <a href="/">live view</a> · <a href="/review">review queue</a></p>
<form id=filters><label>station <input name=station size=12></label>
<label>state <select name=state><option value="">any</option><option>unreviewed</option>
<option>confirmed</option><option>rejected</option></select></label>
<label>from <input name=since type=datetime-local></label>
<label>to <input name=until type=datetime-local></label>
<label>score ≥ <input name=min_score type=number min=0 max=1 step=0.05 size=5></label>
<label>type <input name=defect_type size=10></label>
<button type=submit>filter</button> <a id=csv href="/api/defects.csv">download CSV</a></form>
<p><button id=prev>← newer</button><span id=range class=muted></span><button id=next>older →</button></p>
<table><thead><tr><th>captured</th><th>station</th><th>frame</th><th>score</th><th>where</th>
<th>review</th><th>type</th><th>by</th><th>LLM</th><th>evidence</th></tr></thead>
<tbody id=rows></tbody></table>
<p id=error class=confirmed></p>
<script>
const PAGE = 50; let offset = 0;
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => '&#' + c.charCodeAt(0) + ';');
function query() {
  const q = new URLSearchParams();
  for (const [k, v] of new FormData(document.getElementById('filters'))) {
    if (!v) continue;
    q.set(k, (k === 'since' || k === 'until') ? new Date(v).toISOString() : v);
  }
  return q;
}
async function load() {
  const q = query();
  document.getElementById('csv').href = '/api/defects.csv?' + q;
  q.set('limit', PAGE); q.set('offset', offset);
  const resp = await fetch('/api/defects?' + q);
  const data = await resp.json();
  if (!resp.ok) { document.getElementById('error').textContent = JSON.stringify(data.detail); return; }
  document.getElementById('error').textContent = '';
  document.getElementById('range').textContent =
    ` ${data.total ? offset + 1 : 0}–${Math.min(offset + PAGE, data.total)} of ${data.total} `;
  document.getElementById('rows').innerHTML = data.items.map((d) => `<tr>
    <td>${esc((d.captured_at || '').replace('T', ' ').slice(0, 19))}</td><td>${esc(d.station)}</td>
    <td>${d.seq}</td><td>${d.score.toFixed(2)}</td><td>${esc(d.position)}</td>
    <td class="${esc(d.review_state)}">${esc(d.review_state)}</td><td>${esc(d.defect_type)}</td>
    <td>${esc(d.reviewed_by)}</td><td>${esc(d.verdict.status)}</td>
    <td>${d.overlay ? `<a href="/evidence/${esc(d.overlay)}">overlay</a>` : ''}</td></tr>`).join('');
  document.getElementById('prev').disabled = offset === 0;
  document.getElementById('next').disabled = offset + PAGE >= data.total;
}
document.getElementById('filters').addEventListener('submit', (e) => {
  e.preventDefault(); offset = 0; load();
});
document.getElementById('prev').addEventListener('click', () => {
  offset = Math.max(0, offset - PAGE); load();
});
document.getElementById('next').addEventListener('click', () => { offset += PAGE; load(); });
load();
</script></body></html>"""
)

STATION_PAGE = (
    """<!doctype html><html><head><meta charset=utf-8><title>linewatch · station</title>"""
    + STYLE
    + """<style>pre{background:#1b1b1b;border:1px solid #333;padding:.6rem;overflow:auto;max-height:24rem}
.refs img{height:110px;margin:.2rem;border:1px solid #444}.refs img.unused{opacity:.35}
.refs img.suspect{border:3px solid #e44}
dl{display:grid;grid-template-columns:12rem 1fr;gap:.2rem .8rem}dt{color:#999}</style></head><body>
<h1 id=title>{station}</h1><p class=muted><a href="/">live view</a> · <a href="/review">review queue</a> ·
<a href="/history">history</a></p>
<h2>Counts</h2><dl id=counts></dl>
<h2>Defect rate, last 24 hours</h2><svg id=chart width=760 height=170></svg>
<p class=muted>bars: inspected frames per hour (grey) and flagged ones (red); the line: flagged share</p>
<h2>Model and threshold</h2><dl id=model></dl>
<h2>Reference images</h2><div class=refs id=refs></div>
<h2>Configuration</h2><pre id=config></pre>
<script>
const station = document.getElementById('title').textContent;
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => '&#' + c.charCodeAt(0) + ';');
const dl = (pairs) => pairs.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('');
function chart(hours) {
  const w = 760, h = 150, bw = w / hours.length, top = Math.max(1, ...hours.map((x) => x.inspected));
  let bars = '', line = '';
  hours.forEach((x, i) => {
    const hi = h * x.inspected / top, hf = h * x.flagged / top;
    const share = x.inspected ? x.flagged / x.inspected : 0;
    bars += `<rect x=${i * bw + 1} y=${h - hi} width=${bw - 2} height=${hi} fill=#555></rect>`;
    bars += `<rect class=flagged x=${i * bw + 1} y=${h - hf} width=${bw - 2} height=${hf} fill=#e44></rect>`;
    line += `${i ? 'L' : 'M'}${i * bw + bw / 2},${h - h * share} `;
    if (i % 4 === 0) bars += `<text x=${i * bw} y=165 fill=#999 font-size=10>${x.hour.slice(11, 16)}</text>`;
  });
  document.getElementById('chart').innerHTML = bars + `<path d="${line}" stroke=#fc4 fill=none></path>`;
}
async function load() {
  const resp = await fetch('/api/stations/' + encodeURIComponent(station));
  if (!resp.ok) { document.getElementById('counts').innerHTML = dl([['error', resp.status]]); return; }
  const d = await resp.json(), s = d.summary || {}, m = d.model;
  const suspects = (m && m.suspect_references) || [];
  document.getElementById('counts').innerHTML = dl([['product', s.product], ['inspected', s.inspections],
    ['flagged', s.flagged], ['awaiting review', s.unreviewed], ['last frame', s.last_captured_at]]);
  document.getElementById('model').innerHTML = m ? dl([['backbone', m.backbone], ['device', m.device],
    ['inspection size', m.image_size + ' px'], ['memory bank (per level)', m.bank.join(' / ') || 'none'],
    ['zero-shot decoder', m.decoder ? 'yes' : 'no'], ['threshold (raw)', m.threshold.toFixed(4)],
    ['normal level (raw)', m.normal_level.toFixed(4)],
    ['references held out (raw scores)', m.normal_scores.map((x) => x.toFixed(4)).join(', ')],
    ['references that score like defects', suspects.map((i) => d.references[i]?.name ?? '#' + (i + 1))
      .join(', ') || 'none']])
    : dl([['model', 'no worker has loaded this station yet']]);
  // held-out scores are in file-name order, as the references are listed
  document.getElementById('refs').innerHTML = d.references.map((r, i) => {
    const odd = r.used && suspects.includes(i);
    const note = r.used ? (odd ? ' (scores at or above the threshold against the others: check it)' : '')
      : ' (beyond k)';
    return `<img class="${r.used ? (odd ? 'suspect' : '') : 'unused'}" title="${esc(r.name + note)}"
      src="/stations/${encodeURIComponent(station)}/references/${encodeURIComponent(r.name)}">`;
  }).join('') || '<p class=muted>none (zero-shot)</p>';
  document.getElementById('config').textContent = d.config_yaml;
  chart(d.hourly);
}
load(); setInterval(load, 10000);
</script></body></html>"""
)

ADMIN_PAGE = (
    """<!doctype html><html><head><meta charset=utf-8><title>linewatch · users and tokens</title>
<meta name=csrf content="{csrf}">"""
    + STYLE
    + """<style>table{border-collapse:collapse}td,th{padding:.25rem .6rem;border-bottom:1px solid #333;
text-align:left}</style></head><body><h1>Users and tokens</h1>
<p class=muted>{user} ({role}) · <a href="/">live view</a> · <a href="/review">review queue</a></p>
<section id=users-section><h2>Users</h2><table id=users></table>
<form id=add><input name=username placeholder="user name" required>
<input name=password type=password placeholder="password (10+ characters)" required>
<select name=role><option>viewer</option><option>operator</option><option>admin</option></select>
<button type=submit>add user</button></form></section>
<h2>API tokens</h2><p class=muted>A token acts with its user's role: send it as
<code>Authorization: Bearer …</code>. Its value is shown once, when it is created.</p>
<table id=tokens></table><form id=token><input name=name placeholder="what uses it" required>
<button type=submit>create token</button></form><p id=made></p><p id=message class=confirmed></p>
<script>
const csrf = document.querySelector('meta[name=csrf]').content, admin = '{role}' === 'admin';
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => '&#' + c.charCodeAt(0) + ';');
async function send(url, body) {
  const resp = await fetch(url, {method: 'POST', body: JSON.stringify(body ?? {}),
    headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}});
  document.getElementById('message').textContent = resp.ok ? '' : (await resp.json()).detail;
  return resp;
}
async function load() {
  if (admin) {
    const list = await (await fetch('/api/users')).json();
    document.getElementById('users').innerHTML = '<tr><th>user</th><th>role</th><th>state</th></tr>' +
      list.map((u) => `<tr data-user="${esc(u.username)}"><td>${esc(u.username)}</td><td><select class=role>
      ${['viewer', 'operator', 'admin'].map((r) => `<option ${r === u.role ? 'selected' : ''}>${r}</option>`)}
      </select></td><td><button class=toggle>${u.disabled ? 'enable' : 'disable'}</button>
      ${u.disabled ? '(disabled)' : ''}</td></tr>`).join('');
  } else document.getElementById('users-section').hidden = true;
  const tokens = await (await fetch('/api/tokens')).json();
  document.getElementById('tokens').innerHTML = '<tr><th>name</th><th>user</th><th>created</th>' +
    '<th>last used</th><th></th></tr>' + tokens.map((t) => `<tr><td>${esc(t.name)}</td><td>${esc(t.user)}</td>
    <td>${esc(t.created_at.slice(0, 16))}</td><td>${esc((t.last_used_at || '').slice(0, 16))}</td>
    <td>${t.revoked ? 'revoked' : `<button data-revoke="${t.id}">revoke</button>`}</td></tr>`).join('');
}
document.getElementById('users').addEventListener('change', async (e) => {
  const row = e.target.closest('tr');
  await send('/api/users/' + encodeURIComponent(row.dataset.user), {role: e.target.value}); load();
});
document.getElementById('users').addEventListener('click', async (e) => {
  if (!e.target.classList.contains('toggle')) return;
  const row = e.target.closest('tr');
  const disabled = e.target.textContent === 'disable';
  await send('/api/users/' + encodeURIComponent(row.dataset.user), {disabled});
  load();
});
document.getElementById('tokens').addEventListener('click', async (e) => {
  if (e.target.dataset.revoke) { await send(`/api/tokens/${e.target.dataset.revoke}/revoke`); load(); }
});
document.getElementById('add').addEventListener('submit', async (e) => {
  e.preventDefault(); const f = new FormData(e.target);
  if ((await send('/api/users', Object.fromEntries(f))).ok) e.target.reset();
  load();
});
document.getElementById('token').addEventListener('submit', async (e) => {
  e.preventDefault(); const f = new FormData(e.target);
  const resp = await send('/api/tokens', Object.fromEntries(f));
  const made = document.getElementById('made');
  if (resp.ok) made.textContent = 'new token (copy it now): ' + (await resp.json()).token;
  e.target.reset(); load();
});
load();
</script></body></html>"""
)
