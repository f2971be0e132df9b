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
    location.href = next.startsWith('/') && !next.startsWith('//') ? next : '/';
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
<p class=muted>{user} ({role}) · <a href="/">live view</a> ·
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
