// The Tollgate finance dashboard: a client of the authority's HTTP/JSON admin API
// (POST /v1/admin/<Method>, see /openapi.json). No framework, no build step, nothing
// fetched from elsewhere. Every value from the server is written with textContent.
'use strict';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'tollgate.token';
const TENANT_KEY = 'tollgate.tenant';
const POLL_MS = 1000;
const AUDIT_EVERY = 10; // polls between audit verifications (a whole-chain check)
const TOP_LINES = 12; // lines per spend table
const DAILY_EVERY = 5; // polls between refreshes of the per-day chart (14 statements)
const DAYS = 14;
const DAY_MS = 86400000;

let token = sessionStorage.getItem(TOKEN_KEY) || '';
let tenant = sessionStorage.getItem(TENANT_KEY) || '';
let pollTimer = null;
let ticks = 0;
let samples = []; // [unix ms, consumed micro-credits]
let plan = null;

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, body) {
  const r = await fetch('/v1/admin/' + method, {
    method: 'POST',
    headers: { authorization: 'Bearer ' + token, 'content-type': 'application/json' },
    body: JSON.stringify(body || {}),
  });
  let j = null;
  try { j = await r.json(); } catch (_) { /* not JSON: reported below */ }
  if (!r.ok) {
    const e = (j && j.error) || { code: 'unknown', message: 'HTTP ' + r.status };
    throw new ApiError(r.status, e.code, e.message);
  }
  return j;
}

// Integer micro-credits as credits with up to six decimals (no floating point).
function credits(micro) {
  const n = Math.trunc(Number(micro) || 0);
  const whole = Math.floor(n / 1e6);
  const frac = String(n % 1e6).padStart(6, '0').replace(/0+$/, '');
  return whole.toLocaleString('en-US') + (frac ? '.' + frac : '');
}

// "12.5" -> 12500000 micro-credits, or null.
function parseCredits(s) {
  const m = /^\s*(\d{1,10})(?:\.(\d{1,6}))?\s*$/.exec(s);
  if (!m) return null;
  return Number(m[1]) * 1e6 + Number((m[2] || '').padEnd(6, '0'));
}

function parseCount(s) {
  return /^\s*\d{1,15}\s*$/.test(s) ? Number(s) : null;
}

function when(ms) {
  if (!ms) return '–';
  return new Date(Number(ms)).toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
}

function enumName(v, prefix) {
  return String(v || '').replace(prefix, '').toLowerCase();
}

function setText(id, text) { $(id).textContent = text; }

function fill(tableId, rows, numeric) {
  const body = $(tableId).querySelector('tbody');
  const trs = rows.map((cells) => {
    const tr = document.createElement('tr');
    cells.forEach((c, i) => {
      const td = document.createElement('td');
      td.textContent = c;
      if (numeric.includes(i)) td.className = 'num';
      tr.appendChild(td);
    });
    return tr;
  });
  body.replaceChildren(...trs);
}

// ---- login ----------------------------------------------------------------------------

async function login(tok, wanted) {
  token = tok;
  let tenants = [];
  try {
    const r = await api('ListTenants');
    tenants = (r.tenants || []).map((t) => t.tenant);
  } catch (e) {
    if (e.code !== 'permission_denied') throw e;
    // A reader token: it names its tenant.
    if (!wanted) throw new ApiError(403, e.code, 'this token reads given tenants only: name the tenant');
    await api('GetBalance', { tenant: wanted });
    tenants = [wanted];
  }
  if (wanted && !tenants.includes(wanted)) throw new ApiError(404, 'not_found', 'no tenant ' + wanted);
  sessionStorage.setItem(TOKEN_KEY, tok);
  const sel = $('tenant-select');
  sel.replaceChildren(...tenants.map((t) => {
    const o = document.createElement('option');
    o.value = t;
    o.textContent = t;
    return o;
  }));
  tenant = wanted || (tenants.includes(tenant) ? tenant : tenants[0] || '');
  sel.value = tenant;
  showApp(true);
  switchTenant(tenant);
}

function showApp(on) {
  $('login-view').hidden = on;
  $('app').hidden = !on;
  $('logout').hidden = !on;
  if (!on) {
    clearTimeout(pollTimer);
    pollTimer = null;
  }
}

function switchTenant(t) {
  tenant = t;
  sessionStorage.setItem(TENANT_KEY, t);
  samples = [];
  ticks = 0;
  plan = null;
  setText('who', t ? 'tenant ' + t : '');
  clearTimeout(pollTimer);
  poll();
}

// ---- polling --------------------------------------------------------------------------

async function poll() {
  if (!tenant) return;
  const t = tenant;
  const soft = (p) => p.catch((e) => e);
  try {
    const [bal, st, den, pl, alerts] = await Promise.all([
      api('GetBalance', { tenant: t }),
      api('GetStatement', { tenant: t }),
      soft(api('RecentDenials', { tenant: t })),
      soft(api('GetPlan', { tenant: t })),
      soft(api('ListAlertRules', { tenant: t })),
    ]);
    if (t !== tenant) return;
    renderBalance(bal);
    renderStatement(st);
    if (!(den instanceof Error)) renderDenials(den);
    plan = pl instanceof Error ? null : pl;
    setText('cap-current', bal.hard_cap_micro ? credits(bal.hard_cap_micro) : 'none');
    if (!(alerts instanceof Error)) renderAlerts(alerts);
    if (ticks % DAILY_EVERY === 0) refreshDaily(t);
    if (ticks % AUDIT_EVERY === 0) {
      soft(api('VerifyAudit', { tenant: t })).then((v) => { if (t === tenant) renderAudit(v); });
    }
    ticks += 1;
    setText('poll-error', '');
    setText('updated', 'updated ' + new Date().toISOString().slice(11, 19) + ' UTC');
  } catch (e) {
    setText('poll-error', e.message);
    if (e.code === 'unauthenticated') { logout(); return; }
  }
  pollTimer = setTimeout(poll, POLL_MS);
}

function renderBalance(b) {
  // A plan without a hard cap: spend is unbounded (u64::MAX on the wire).
  setText('available', Number(b.available_micro) >= 2 ** 62 ? 'unbounded' : credits(b.available_micro));
  setText('available-money', b.currency ? (b.available_money_micro / 1e6).toFixed(2) + ' ' + b.currency : '');
  setText('burn1h', credits(b.burn_1h_per_hour_micro));
  setText('burn24h', credits(b.burn_24h_per_hour_micro));
  setText('depletion', b.projected_depletion_unix_ms ? when(b.projected_depletion_unix_ms) : 'not projected');
  setText('depletion-note', b.projected_depletion_unix_ms ? 'at the last hour\'s burn' : 'nothing burning, or no limit');
  setText('period-spent', credits(b.period_spent_micro));
  // Usage a pod served past what it held (e.g. what its lanes held when a cap was lowered):
  // recorded, shown apart, never billed.
  setText('overrun', credits(b.overrun_micro));
  fill('grants', (b.grants || []).map((g) => [
    g.grant_id, enumName(g.kind, 'GRANT_KIND_'), g.label,
    credits(g.amount_micro), credits(g.remaining_micro),
    g.expires_unix_ms ? when(g.expires_unix_ms) : 'never',
  ]), [3, 4]);
  samples.push([Date.now(), Number(b.consumed_micro)]);
  if (samples.length > 900) samples.shift();
  drawChart();
}

function renderStatement(s) {
  setText('awus', String(s.work_units));
  const perAwu = s.work_units ? credits(Math.floor(s.total_micro / s.work_units)) : '–';
  setText('per-awu', perAwu);
  const key = (k) => k || '(unnamed)';
  // The largest lines first, at most TOP_LINES per table (the rest summed in one line).
  const top = (lines, row) => {
    const sorted = [...lines].sort((a, b) => b.amount_micro - a.amount_micro);
    const rows = sorted.slice(0, TOP_LINES).map(row);
    const rest = sorted.slice(TOP_LINES);
    if (rest.length) {
      const sum = rest.reduce((a, l) => a + Number(l.amount_micro), 0);
      const calls = rest.reduce((a, l) => a + Number(l.calls), 0);
      const r = [rest.length + ' more', credits(sum), String(calls)];
      while (r.length < rows[0].length) r.push('');
      rows.push(r);
    }
    return rows;
  };
  fill('by-agent', top(s.by_agent, (l) => [key(l.key), credits(l.amount_micro), String(l.calls), String(l.work_units)]), [1, 2, 3]);
  fill('by-model', top(s.by_model, (l) => [key(l.key), credits(l.amount_micro), String(l.calls), l.input_tokens + ' / ' + l.output_tokens]), [1, 2, 3]);
  fill('by-feature', top(s.by_feature, (l) => [key(l.key), credits(l.amount_micro), String(l.calls)]), [1, 2]);
  fill('by-task', top(s.by_task, (l) => [key(l.key), credits(l.amount_micro), String(l.calls), String(l.work_units)]), [1, 2, 3]);
}

function renderDenials(d) {
  fill('denials', (d.totals || []).slice(0, 20).map((x) => [
    x.limit_key || '(lane ran dry)', enumName(x.tier, 'TIER_'), String(x.count), when(x.last_minute_unix_ms),
  ]), [2]);
}

function renderAlerts(a) {
  fill('alerts', (a.rules || []).map((r) => [
    r.id,
    r.percent_used_permille != null ? (r.percent_used_permille / 10) + '% of budget used'
      : r.depletion_within_hours != null ? 'depletion within ' + r.depletion_within_hours + ' h' : '',
    r.webhook_url,
  ]), []);
}

function renderAudit(v) {
  if (v instanceof Error) {
    setText('audit', '–');
    setText('audit-note', v.message);
    return;
  }
  $('audit').className = 'big ' + (v.ok ? 'ok' : 'error');
  setText('audit', v.ok ? 'verified' : 'BROKEN');
  setText('audit-note', v.ok ? v.records_checked + ' records checked' : 'record ' + v.bad_seq + ': ' + v.problem);
}

// Credits charged on each of the last DAYS UTC days (today last), one statement each.
async function refreshDaily(t) {
  const today = Math.floor(Date.now() / DAY_MS) * DAY_MS;
  const starts = Array.from({ length: DAYS }, (_, i) => today - (DAYS - 1 - i) * DAY_MS);
  try {
    const sts = await Promise.all(starts.map((from) =>
      api('GetStatement', { tenant: t, from_unix_ms: from, to_unix_ms: from + DAY_MS })));
    if (t !== tenant) return;
    drawDaily(starts, sts.map((x) => Number(x.total_micro)));
  } catch (_) { /* the next refresh tries again */ }
}

function drawDaily(starts, totals) {
  const c = $('daily');
  // For tests and screen readers: the figures drawn.
  c.dataset.totals = totals.join(',');
  c.setAttribute('aria-label', 'credits charged per day: ' + totals.map(credits).join(', '));
  const w = c.clientWidth || c.width;
  c.width = w;
  const h = c.height;
  const ctx = c.getContext('2d');
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(...totals, 1);
  const bw = w / totals.length;
  ctx.font = '10px system-ui, sans-serif';
  totals.forEach((v, i) => {
    const bh = (v / max) * (h - 34);
    ctx.fillStyle = '#2f6fde';
    ctx.fillRect(i * bw + 3, h - 16 - bh, bw - 6, bh);
    ctx.fillStyle = '#5b6470';
    ctx.fillText(new Date(starts[i]).toISOString().slice(5, 10), i * bw + 3, h - 4);
  });
  ctx.fillText('max ' + credits(max) + ' credits / day', 4, 10);
}

function drawChart() {
  const c = $('chart');
  const w = c.clientWidth || c.width;
  c.width = w;
  const h = c.height;
  const ctx = c.getContext('2d');
  ctx.clearRect(0, 0, w, h);
  if (samples.length < 2) return;
  const t0 = samples[0][0];
  const t1 = samples[samples.length - 1][0];
  const lo = samples[0][1];
  const hi = Math.max(samples[samples.length - 1][1], lo + 1);
  ctx.strokeStyle = '#2f6fde';
  ctx.lineWidth = 2;
  ctx.beginPath();
  samples.forEach(([t, v], i) => {
    const x = ((t - t0) / Math.max(t1 - t0, 1)) * (w - 4) + 2;
    const y = h - 4 - ((v - lo) / (hi - lo)) * (h - 24);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
  ctx.fillStyle = '#5b6470';
  ctx.fillText('+' + credits(hi - lo) + ' credits', 6, 12);
}

// ---- actions --------------------------------------------------------------------------

async function setCap(ev) {
  ev.preventDefault();
  const micro = parseCredits($('cap').value);
  if (micro === null) { setText('cap-status', 'give credits like 100 or 12.5'); return; }
  try {
    const p = plan ? { ...plan } : {};
    p.tenant = tenant;
    p.hard_cap_micro = micro;
    await api('SetPlan', { plan: p });
    setText('cap-status', micro ? 'cap set to ' + credits(micro) : 'cap removed');
    clearTimeout(pollTimer);
    poll();
  } catch (e) {
    setText('cap-status', e.message);
  }
}

async function runEstimate(ev) {
  ev.preventDefault();
  setText('est-error', '');
  const nums = ['est-calls', 'est-in', 'est-out', 'est-days'].map((id) => parseCount($(id).value));
  if (nums.some((n) => n === null)) { setText('est-error', 'calls, tokens and days are whole numbers'); return; }
  const [calls, inTok, outTok, days] = nums;
  try {
    const e = await api('Estimate', {
      tenant, days, per_day: $('est-perday').checked,
      lines: [{ model: $('est-model').value.trim(), calls, input_tokens_per_call: inTok, output_tokens_per_call: outTok }],
    });
    const unpriced = e.lines.some((l) => !l.priced) ? ' (model not in the price book: charged at its dearest model)' : '';
    setText('est-total', credits(e.credits_micro) + ' credits' + unpriced);
    setText('est-money', e.currency ? '= ' + (e.money_micro / 1e6).toFixed(2) + ' ' + e.currency : '');
    setText('est-per-day', credits(e.credits_per_day_micro));
    setText('est-limit', e.hits_limit
      ? 'Stops on day ' + e.limit_day + ' (' + when(e.limit_unix_ms) + ') at the '
        + (e.limit === 'hard_cap' ? 'hard cap' : 'balance') + ': ' + credits(e.unfunded_micro) + ' credits would be denied.'
      : 'No limit within ' + days + ' day(s).');
    setText('est-runway', e.runway_unbounded ? 'unbounded' : e.runway_days + ' day(s) at the current burn plus this workload');
    fill('est-grants', e.grants.map((g) => [
      g.label || g.grant_id, enumName(g.kind, 'GRANT_KIND_'), credits(g.amount_micro), credits(g.remaining_after_micro),
    ]).concat(e.plan_funded_micro ? [['plan', '', credits(e.plan_funded_micro), '']] : []), [2, 3]);
    $('est-result').hidden = false;
  } catch (err) {
    $('est-result').hidden = true;
    setText('est-error', err.message);
  }
}

function logout() {
  sessionStorage.removeItem(TOKEN_KEY);
  token = '';
  showApp(false);
}

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    setText('login-error', '');
    try {
      await login($('token').value.trim(), $('login-tenant').value.trim());
    } catch (e) {
      token = '';
      setText('login-error', e.code === 'unauthenticated' ? 'unknown token' : e.message);
    }
  });
  $('logout').addEventListener('click', logout);
  $('tenant-select').addEventListener('change', (ev) => switchTenant(ev.target.value));
  $('cap-form').addEventListener('submit', setCap);
  $('estimate-form').addEventListener('submit', runEstimate);
  if (token) {
    login(token, '').catch(() => {
      // A reader token stored with its tenant.
      login(token, tenant).catch(() => logout());
    });
  }
});
