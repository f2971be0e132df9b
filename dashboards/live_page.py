"""The live page: one WebRTC video per station (click to focus), events, and the summary below."""

LIVE_PAGE = """<!doctype html><html><head><meta charset=utf-8><title>linewatch</title>
<meta name=csrf content="{csrf}">
<style>body{font-family:system-ui,sans-serif;margin:1.5rem;background:#111;color:#eee}
.problem{background:#5a1d1d;border:1px solid #c33;padding:.5rem .8rem;margin:.5rem 0}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:1rem}
.station{background:#1b1b1b;border:1px solid #333;padding:.5rem;cursor:pointer}
.station.focused{grid-column:1/-1}.station h3{margin:.2rem 0 .5rem;font-size:1rem}
video{width:100%;background:#000;aspect-ratio:16/9}.last{font-size:.85rem;color:#bbb;margin:.3rem 0}
.ng{color:#f55}.ok{color:#4c4}
table{border-collapse:collapse}td,th{padding:.3rem .8rem;border-bottom:1px solid #333;text-align:left}
a{color:#8cf}.online{color:#4c4}.reconnecting{color:#fc4}.offline,.finished{color:#f55}
figure{display:inline-block;margin:.4rem;width:300px}img{width:300px;border:1px solid #444}
figcaption{font-size:.8rem;color:#bbb}</style></head><body>
<h1>linewatch</h1><p class=last>{user} · <a href="/review" style="color:#8cf">review queue</a> ·
<a href="/history" style="color:#8cf">history</a> ·
<a href="/admin" style="color:#8cf">users and tokens</a> ·
<a href="#" id=logout style="color:#8cf">log out</a></p>
<section id=grid>{cards}</section><section id=summary>{summary}</section>
<script>
const csrf = document.querySelector('meta[name=csrf]').content;
document.getElementById('logout').addEventListener('click', async (e) => {
  e.preventDefault();
  await fetch('/api/logout', {method: 'POST', headers: {'X-CSRF-Token': csrf}});
  location.href = '/login';
});
async function watch(card) {
  const station = card.dataset.station, video = card.querySelector('video');
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', {direction: 'recvonly'});
  const events = pc.createDataChannel('events');
  events.onmessage = (e) => show(card, JSON.parse(e.data));
  pc.ontrack = (e) => { video.srcObject = new MediaStream([e.track]); };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'failed') { pc.close(); setTimeout(() => watch(card), 3000); }
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === 'complete') return done();
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && done());
  });
  const resp = await fetch(`/api/stations/${encodeURIComponent(station)}/webrtc/offer`, {
    method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
    body: JSON.stringify({sdp: pc.localDescription.sdp, type: pc.localDescription.type})});
  if (!resp.ok) { card.querySelector('.last').textContent = 'live view refused: ' + resp.status; return; }
  await pc.setRemoteDescription(await resp.json());
}
function show(card, ev) {
  if (ev.type === 'state') {
    const s = card.querySelector('.state');
    s.textContent = `${ev.state || 'offline'} · ${(ev.fps || 0).toFixed(1)} fps`;
    s.className = 'state ' + (ev.state || 'offline');
  } else {
    const last = card.querySelector('.last');
    last.className = 'last ' + (ev.flagged ? 'ng' : 'ok');
    last.textContent = `#${ev.seq} score ${ev.score.toFixed(2)} ${ev.flagged ? 'NG ' + ev.position : 'OK'}`;
  }
}
document.querySelectorAll('.station').forEach((card) => {
  card.addEventListener('click', () => card.classList.toggle('focused'));
  watch(card);
});
setInterval(async () => {
  const resp = await fetch('/parts/summary');
  if (resp.ok) document.getElementById('summary').innerHTML = await resp.text();
}, 3000);
</script></body></html>"""
