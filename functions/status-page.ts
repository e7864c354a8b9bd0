// The status page at `/`: server-rendered HTML (hono/html templates escape every value),
// no script, no build step. Numbers carry `data-stat` attributes so a test can read them.
import { html, raw } from 'hono/html';
import type { HtmlEscapedString } from 'hono/utils/html';
import type { Status, Window } from '../core/registry/status.ts';
import { formatBytes } from './wire.ts';

type Html = HtmlEscapedString | Promise<HtmlEscapedString>;

const percent = (ratio: number | null) => (ratio === null ? '–' : `${(ratio * 100).toFixed(1)}%`);
const when = (at: number | null, now: number) => {
  if (at === null) return 'never';
  const s = Math.max(0, Math.round((now - at) / 1000));
  const ago = s < 90 ? `${s} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : s < 172800 ? `${Math.round(s / 3600)} h ago` : `${Math.round(s / 86400)} days ago`;
  return html`<time datetime="${new Date(at).toISOString()}" title="${new Date(at).toISOString()}">${ago}</time>`;
};

/** Stacked bars, an hour each: hits (green) over misses (amber). */
function chart(series: Status['series']): Html {
  const width = 720;
  const height = 160;
  const barGap = 4;
  const barWidth = width / series.length - barGap;
  const top = Math.max(1, ...series.map((p) => p.hits + p.misses));
  const y = (n: number) => (n / top) * (height - 20);
  const bars = series.map((p, i) => {
    const x = i * (barWidth + barGap);
    const hits = y(p.hits);
    const misses = y(p.misses);
    const label = `${new Date(p.at).toISOString().slice(11, 16)} UTC: ${p.hits} hits, ${p.misses} misses`;
    return html`<g><title>${label}</title>
      <rect x="${x.toFixed(1)}" y="${(height - misses).toFixed(1)}" width="${barWidth.toFixed(1)}" height="${misses.toFixed(1)}" class="miss"/>
      <rect x="${x.toFixed(1)}" y="${(height - misses - hits).toFixed(1)}" width="${barWidth.toFixed(1)}" height="${hits.toFixed(1)}" class="hit"/>
      ${i % 6 === 0 ? html`<text x="${x.toFixed(1)}" y="${height + 14}">${new Date(p.at).toISOString().slice(11, 16)}</text>` : ''}</g>`;
  });
  return html`<svg viewBox="0 0 ${width} ${height + 18}" role="img" aria-label="Hits and misses per hour, the last 24 hours" class="chart">
    <line x1="0" y1="${height}" x2="${width}" y2="${height}" class="axis"/>
    <text x="${width}" y="10" text-anchor="end" class="scale">${top} requests</text>
    ${bars}
  </svg>`;
}

function windowCard(title: string, name: 'hour' | 'day', w: Window): Html {
  return html`<section class="card">
    <h2>${title}</h2>
    <p class="big"><span data-stat="${name}-hit-ratio">${percent(w.hitRatio)}</span> <small>hit ratio</small></p>
    <dl>
      <dt>hits / misses</dt><dd><span data-stat="${name}-hits">${w.hits}</span> / <span data-stat="${name}-misses">${w.misses}</span></dd>
      <dt>saved (from the cache)</dt><dd data-stat="${name}-bytes-saved" data-bytes="${w.bytesSaved}">${formatBytes(w.bytesSaved)}</dd>
      <dt>from upstreams</dt><dd data-stat="${name}-bytes-upstream" data-bytes="${w.bytesFromUpstream}">${formatBytes(w.bytesFromUpstream)}</dd>
      <dt>upstream 429s</dt><dd data-stat="${name}-429">${w.tooManyRequests}</dd>
    </dl>
  </section>`;
}

function storedCard(s: Status['stored']): Html {
  const share = s.capBytes > 0 ? Math.min(1, s.bytes / s.capBytes) : undefined;
  return html`<section class="card">
    <h2>Stored</h2>
    <p class="big"><span data-stat="stored-bytes" data-bytes="${s.bytes}">${formatBytes(s.bytes)}</span>
      <small>${s.capBytes > 0 ? html`of <span data-stat="cap-bytes" data-bytes="${s.capBytes}">${formatBytes(s.capBytes)}</span>` : 'no cap'}</small></p>
    ${share !== undefined
      ? html`<div class="meter" role="meter" aria-valuenow="${(share * 100).toFixed(0)}" aria-valuemin="0" aria-valuemax="100"><div style="width:${(share * 100).toFixed(1)}%"></div>
          <span class="mark" style="left:${((s.lowWaterBytes / s.capBytes) * 100).toFixed(1)}%" title="low-water mark"></span></div>`
      : ''}
    <dl>
      <dt>blobs</dt><dd><span data-stat="blobs">${s.blobs}</span>, ${formatBytes(s.blobBytes)}</dd>
      <dt>extracted layers</dt><dd><span data-stat="layers">${s.layers}</span>, ${formatBytes(s.layerBytes)}</dd>
    </dl>
  </section>`;
}

function details(s: Status): Html {
  const now = s.generatedAt;
  return html`<section class="wide">
      <h2>Upstreams</h2>
      <table data-table="upstreams">
        <thead><tr><th>host</th><th>last success</th><th>last error</th><th class="n">requests (1 h / 24 h)</th><th class="n">errors (1 h / 24 h)</th><th class="n">429s (1 h / 24 h)</th></tr></thead>
        <tbody>${(s.upstreams ?? []).map(
          (u) => html`<tr data-host="${u.host}">
            <td>${u.host}</td><td>${when(u.lastSuccessAt, now)}</td>
            <td>${u.lastErrorAt === null ? 'none' : html`${u.lastError} ${when(u.lastErrorAt, now)}`}</td>
            <td class="n">${u.hour.requests} / ${u.day.requests}</td><td class="n">${u.hour.errors} / ${u.day.errors}</td>
            <td class="n" data-stat="429-${u.host}">${u.hour.tooManyRequests} / ${u.day.tooManyRequests}</td></tr>`,
        )}</tbody>
      </table>
    </section>
    <section class="wide">
      <h2>Most pulled repositories</h2>
      ${(s.repositories ?? []).length === 0
        ? html`<p class="quiet">Nothing pulled yet.</p>`
        : html`<table data-table="repositories">
        <thead><tr><th>repository</th><th class="n">manifest pulls</th><th class="n">stored</th><th>last pulled</th></tr></thead>
        <tbody>${(s.repositories ?? []).map(
          (r) => html`<tr data-repository="${r.upstream}/${r.name}"><td>${r.upstream}/${r.name}</td><td class="n" data-stat="pulls">${r.pulls}</td>
            <td class="n" data-bytes="${r.bytes}">${formatBytes(r.bytes)}</td><td>${when(r.lastPulledAt, now)}</td></tr>`,
        )}</tbody>
      </table>`}
    </section>
    <section class="wide">
      <h2>Recent failures</h2>
      ${(s.failures ?? []).length === 0
        ? html`<p class="quiet" data-stat="failures">None.</p>`
        : html`<table data-table="failures">
        <thead><tr><th>what</th><th>through</th><th>error</th><th class="n">attempts</th><th>when</th></tr></thead>
        <tbody>${(s.failures ?? []).map(
          (f) => html`<tr><td><code>${f.kind} ${f.id.slice(0, 19)}…</code></td><td>${f.source}</td><td class="error">${f.error}${f.retryable ? ' (retryable)' : ''}</td>
            <td class="n">${f.attempts}</td><td>${when(f.at, now)}</td></tr>`,
        )}</tbody>
      </table>`}
    </section>`;
}

const STYLE = raw(`
  :root { color-scheme: light dark; --fg:#1b1f24; --muted:#5b6570; --card:#f5f7f9; --line:#d8dde3; --hit:#2f9e44; --miss:#f08c00; --accent:#1971c2; }
  @media (prefers-color-scheme: dark) { :root { --fg:#e6e8eb; --muted:#9aa4ae; --card:#1e2329; --line:#353c44; } body { background:#14181c; } }
  body { font: 15px/1.45 system-ui, sans-serif; color: var(--fg); margin: 0 auto; max-width: 1040px; padding: 24px; }
  header { display:flex; align-items:baseline; justify-content:space-between; border-bottom:1px solid var(--line); margin-bottom:16px; }
  h1 { font-size: 22px; margin: 0 0 8px; } h2 { font-size: 15px; margin: 0 0 8px; color: var(--muted); font-weight: 600; }
  .grid { display:grid; grid-template-columns: repeat(auto-fit, minmax(230px, 1fr)); gap: 12px; }
  .card, .wide { background: var(--card); border:1px solid var(--line); border-radius: 8px; padding: 14px 16px; }
  .wide { margin-top: 12px; overflow-x:auto; }
  .big { font-size: 28px; margin: 0 0 8px; font-variant-numeric: tabular-nums; } .big small { font-size: 14px; color: var(--muted); }
  dl { display:grid; grid-template-columns: auto 1fr; gap: 2px 12px; margin: 0; } dt { color: var(--muted); } dd { margin:0; text-align:right; white-space: nowrap; font-variant-numeric: tabular-nums; }
  .meter { position:relative; height: 10px; background: var(--line); border-radius: 5px; margin-bottom: 10px; }
  .meter div { height:100%; background: var(--accent); border-radius: 5px; } .meter .mark { position:absolute; top:-3px; width:2px; height:16px; background: var(--fg); }
  .chart { width:100%; height:auto; } .chart .hit { fill: var(--hit); } .chart .miss { fill: var(--miss); } .chart text { font-size: 11px; fill: var(--muted); } .chart .axis { stroke: var(--line); }
  .legend span { display:inline-block; width:10px; height:10px; border-radius:2px; margin: 0 4px 0 12px; }
  table { border-collapse: collapse; width: 100%; } th, td { text-align:left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
  th { color: var(--muted); font-weight: 600; } .n { text-align:right; font-variant-numeric: tabular-nums; } .quiet { color: var(--muted); margin: 0; }
  code { font-size: 13px; white-space: nowrap; } td.error { overflow-wrap: anywhere; font-size: 13px; } a { color: var(--accent); }
`);

/** The whole page. `signIn`: details are hidden from this caller, who may sign in for them. */
export function statusPage(s: Status, options: { signIn: boolean }): Html {
  const inFlight = s.inFlight;
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>pullthrough status</title><style>${STYLE}</style></head>
<body>
  <header><h1>pullthrough</h1><span class="quiet">as of ${new Date(s.generatedAt).toISOString().replace('T', ' ').slice(0, 19)} UTC · <a href="/metrics">metrics</a></span></header>
  <div class="grid">
    ${storedCard(s.stored)}
    ${windowCard('Last hour', 'hour', s.hour)}
    ${windowCard('Last 24 hours', 'day', s.day)}
    <section class="card">
      <h2>In flight</h2>
      <p class="big"><span data-stat="transfers">${inFlight.transfers}</span> <small>transfers</small></p>
      <dl>
        <dt>extractions</dt><dd data-stat="extractions">${inFlight.extractions}</dd>
        ${inFlight.localClients !== undefined ? html`<dt>clients attached here</dt><dd data-stat="clients">${inFlight.localClients}</dd>` : ''}
      </dl>
    </section>
  </div>
  <section class="wide">
    <h2>Hits and misses per hour <span class="legend"><span style="background:var(--hit)"></span>hits<span style="background:var(--miss)"></span>misses</span></h2>
    ${chart(s.series)}
  </section>
  ${options.signIn ? html`<p class="quiet" style="margin-top:12px">Upstreams, repositories and failures are shown to administrators: <a href="/?details=1" data-sign-in>sign in</a>.</p>` : details(s)}
</body></html>`;
}
