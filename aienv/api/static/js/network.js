// The "Discover" view: what the LAN's nodes share, as cards with their fit here and Run.
// Search and filters, grouping by node or by tool (or none), a few cards per group until
// asked for all, all kept in the URL (views.js); details and Clone only.
import { api, enc } from './api.js';
import { h, keyed, alertBox, fillSelect, RowState, actionButton } from './dom.js';
import { bytes, list } from './format.js';
import { addJob } from './clones.js';
import { detailsPanel } from './peer-details.js';
import { fitHere } from './fit.js';
import { here } from './node.js';
import * as views from './views.js';

/** Cards shown per group (and in one list when not grouped) before "Show all". */
const FIRST = { peer: 8, tool: 8, none: 24 };

let ctx;
let peers = [];
let els;
const rows = new RowState(); // keyed by PEERID/WS: busy clone, clone error, started notice
const details = new Map(); // PEERID/WS → {open, loading, data, error}
const asNames = new Map(); // PEERID/WS → the other name typed after a name clash (kept across re-renders)
const passwords = new Map(); // PEERID/WS → the password typed for a protected workspace (never stored)
const intents = new Map(); // PEERID/WS → whether the last click asked to launch (Run) or not (Clone only)
const expanded = new Set(); // groups shown in full: "peer:ID", "tool:NAME", "none:"

const FILTERS = [
  ['runtime', (w) => w.runtimes],
  ['tool', (w) => w.tools],
  ['language', (w) => w.languages],
  ['tag', (w) => w.tags],
];

export function init(context) {
  ctx = context;
  els = {
    list: document.getElementById('peer-list'),
    empty: document.getElementById('network-empty'),
    search: document.getElementById('search'),
    group: document.getElementById('group-by'),
    count: document.getElementById('network-count'),
  };
  for (const [name] of FILTERS) els[name] = document.getElementById(`filter-${name}`);
  for (const el of [els.search, els.group, ...FILTERS.map(([name]) => els[name])]) {
    el.addEventListener('input', () => {
      views.setParams('discover', place());
      render();
    });
  }
  views.follow((view, params) => {
    if (view !== 'discover') return;
    els.search.value = params.get('q') ?? '';
    els.group.value = ['tool', 'none'].includes(params.get('group')) ? params.get('group') : 'peer';
    for (const [name] of FILTERS) wanted.set(name, params.get(name) ?? '');
    applyWanted();
    render();
  });
}

const wanted = new Map(); // a filter's value from the URL, kept until its option exists

function applyWanted() {
  for (const [name] of FILTERS) {
    const value = wanted.get(name) ?? '';
    if ([...els[name].options].some((o) => o.value === value)) els[name].value = value;
  }
}

/** The view's state as URL parameters. */
function place() {
  const params = { q: els.search.value.trim(), group: els.group.value === 'peer' ? '' : els.group.value };
  for (const [name] of FILTERS) {
    params[name] = els[name].value;
    wanted.set(name, els[name].value);
  }
  return params;
}

/** Draw again (this machine's summary arrived: the fit badges change). */
export function rerender() {
  if (els) render();
}

export function show(items) {
  peers = (items ?? []).slice().sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  for (const [name, values] of FILTERS) {
    fillSelect(els[name], peers.flatMap((p) => (p.workspaces ?? []).flatMap((w) => values(w) ?? [])), 'Any');
  }
  applyWanted();
  render();
}

function matches(ws, peer) {
  for (const [name, values] of FILTERS) {
    const wanted = els[name].value;
    if (wanted && !(values(ws) ?? []).includes(wanted)) return false;
  }
  const text = els.search.value.trim().toLowerCase();
  if (!text) return true;
  const haystack = [ws.name, peer.name, ws.description ?? '', ...(ws.tags ?? []), ...(ws.tools ?? []),
    ...(ws.languages ?? []), ...(ws.runtimes ?? [])].join(' ').toLowerCase();
  return text.split(/\s+/).every((word) => haystack.includes(word));
}

function filtering() {
  return Boolean(els.search.value.trim()) || FILTERS.some(([name]) => els[name].value);
}

/** The groups to draw: [{key, title, peer?, items: [{peer, ws}]}], by the chosen grouping. */
function groups(mode) {
  const found = peers.flatMap((peer) => (peer.workspaces ?? [])
    .filter((ws) => matches(ws, peer)).map((ws) => ({ peer, ws })));
  if (mode === 'peer') {
    return peers.map((peer) => ({
      key: `peer:${peer.id}`, peer, items: found.filter((item) => item.peer === peer),
    })).filter((g) => !filtering() || g.items.length);
  }
  const byName = (a, b) => a.ws.name.localeCompare(b.ws.name) || a.peer.name.localeCompare(b.peer.name);
  if (mode === 'none') return found.length ? [{ key: 'none:', title: null, items: found.sort(byName) }] : [];
  const tools = new Map();
  for (const item of found) {
    for (const tool of item.ws.tools?.length ? item.ws.tools : ['']) {
      if (!tools.has(tool)) tools.set(tool, []);
      tools.get(tool).push(item);
    }
  }
  return [...tools.entries()]
    .sort(([a], [b]) => (a === '') - (b === '') || a.localeCompare(b))
    .map(([tool, items]) => ({ key: `tool:${tool}`, title: tool || 'No tool named', items: items.sort(byName) }));
}

function render() {
  const mode = els.group.value;
  const shown = groups(mode);
  const total = shown.reduce((n, g) => n + g.items.length, 0);
  const nodes = new Set(shown.flatMap((g) => g.items.map((item) => item.peer.id))).size;
  els.count.textContent = peers.length
    ? `${total} workspace${total === 1 ? '' : 's'} from ${nodes} of ${peers.length} node${peers.length === 1 ? '' : 's'}${filtering() ? ' match' : ''}.`
    : '';
  els.empty.textContent = peers.length
    ? 'No shared workspace matches the search and filters.'
    : 'No other nodes seen yet';
  els.empty.hidden = shown.length > 0;
  const fits = here();
  keyed(els.list, shown, (g) => `${mode}|${g.key}`, (g) => groupCard(g, mode, fits), (g) => JSON.stringify([
    g.peer ? { ...g.peer, last_seen_ago: 0, expires_in: 0 } : null, g.title, ctx.admin, expanded.has(g.key),
    g.items.map((item) => [item.ws, rows.sig(key(item.peer, item.ws)), details.get(key(item.peer, item.ws))]),
    fits,
  ]));
}

const key = (peer, ws) => `${peer.id}/${ws.name}`;

function resourcesText(r = {}) {
  const parts = [];
  if (r.cpus !== undefined) parts.push(`${r.cpus} CPUs`);
  if (r.memory !== undefined) {
    parts.push(`${bytes(r.memory)} memory${r.memory_free !== undefined ? ` (${bytes(r.memory_free)} free)` : ''}`);
  }
  if (r.disk_free !== undefined) parts.push(`${bytes(r.disk_free)} disk free`);
  if (r.gpus !== undefined) parts.push(r.gpus ? `${r.gpus} GPU${r.gpus === 1 ? '' : 's'}` : 'no GPU');
  if (r.kvm !== undefined) parts.push(r.kvm ? 'KVM' : 'no KVM');
  const runtimes = Object.keys(r).filter((k) => k.startsWith('rt_') && r[k]).map((k) => k.slice(3));
  if (runtimes.length) parts.push(`runs ${runtimes.join(', ')}`);
  return parts.join(' · ') || 'resources not announced';
}

function groupCard(group, mode, fits) {
  const { peer, items } = group;
  const limit = expanded.has(group.key) ? Infinity : FIRST[mode];
  const label = peer ? `Shared by ${peer.name}` : group.title ? `Workspaces with ${group.title}` : 'Shared workspaces';
  return h('li', { class: `card group ${peer ? 'peer' : ''}` },
    peer ? h('div', { class: 'card-head' },
      h('h3', {}, peer.name), ' ',
      h('span', { class: 'muted' }, peer.address), ' ',
      h('code', { class: 'muted', title: peer.id }, peer.id.slice(0, 12))) : null,
    peer ? h('p', { class: 'resources' }, resourcesText(peer.resources)) : null,
    group.title ? h('h3', {}, group.title, ' ', h('span', { class: 'muted' }, `(${items.length})`)) : null,
    items.length
      ? h('ul', { class: 'ws-grid', 'aria-label': label },
        items.slice(0, limit).map((item) => wsCard(item.peer, item.ws, fits, !peer)))
      : h('p', { class: 'muted' }, 'Shares nothing right now.'),
    items.length > limit ? h('button', {
      type: 'button', class: 'btn link',
      onclick: () => { expanded.add(group.key); render(); },
    }, `Show all ${items.length}${peer ? ` from ${peer.name}` : group.title ? ` with ${group.title}` : ''}`) : null,
    peer?.more_workspaces ? h('p', { class: 'muted' }, 'It shares more than its announcement lists.') : null);
}

function tagChips(label, values) {
  if (!values?.length) return null;
  return [h('dt', {}, label), h('dd', {}, h('ul', { class: 'tags' }, values.map((v) => h('li', {}, v))))];
}

function wsCard(peer, ws, fits, showPeer) {
  const k = key(peer, ws);
  const state = rows.get(k);
  const open = details.get(k);
  const panelId = `details-${k.replace(/[^a-zA-Z0-9_-]/g, '-')}`;
  const fit = fitHere(ws, fits);
  return h('li', { class: 'ws card inner' },
    h('div', { class: 'card-head' },
      h('h4', {}, ws.name), ' ', h('span', { class: 'muted' }, `v${ws.version}`), ' ',
      showPeer ? h('span', { class: 'muted' }, `from ${peer.name}`) : null, ' ',
      fit ? h('span', { class: `badge ${fit.cls}`, title: fit.why },
        h('span', { class: 'sr-only' }, 'Here: '), fit.text) : null),
    ws.description ? h('p', { class: 'desc clamp' }, ws.description) : null,
    h('dl', { class: 'facts' },
      h('dt', {}, 'Size'), h('dd', {}, sizes(ws)),
      h('dt', {}, 'Runtimes'), h('dd', {}, list(ws.runtimes)),
      ws.protected ? [h('dt', {}, 'Access'), h('dd', {}, 'Password required')] : null,
      ws.fork_of ? [h('dt', {}, 'Lineage'), h('dd', {}, lineage(ws))] : null,
      tagChips('Tools', ws.tools), tagChips('Languages', ws.languages), tagChips('Tags', ws.tags)),
    ws.protected && ctx.admin ? passwordField(peer, ws) : null,
    h('div', { class: 'actions' },
      ctx.admin ? h('button', {
        type: 'button', class: 'btn', 'aria-expanded': open?.open ? 'true' : 'false',
        'aria-controls': open?.open ? panelId : null, 'aria-label': `Details of ${ws.name} from ${peer.name}`,
        onclick: () => toggleDetails(peer, ws),
      }, open?.open ? 'Hide details' : 'Details') : null,
      ctx.admin ? actionButton({
        label: `Run ${ws.name} from ${peer.name}`, text: 'Run', busyText: 'Starting…',
        busy: state.busy.has('clone'), cls: 'primary', onclick: () => clone(peer, ws, '', true),
      }) : null,
      ctx.admin ? actionButton({
        label: `Clone ${ws.name} from ${peer.name} without launching`, text: 'Clone only',
        busyText: 'Starting…', busy: state.busy.has('clone'), onclick: () => clone(peer, ws),
      }) : null),
    state.error ? alertBox(state.error.message, state.error.code === 'name_taken' ? rename(peer, ws) : []) : null,
    state.extra.started ? h('p', { class: 'note', role: 'status' },
      `${state.extra.launch ? 'Downloading, then launching,' : 'Clone started'} as ${state.extra.started}: `,
      h('a', { href: '#clones' }, 'see its progress and its links in Running'), '.')
      : null,
    open?.open ? detailsPanel(panelId, open) : null);
}

async function toggleDetails(peer, ws) {
  const k = key(peer, ws);
  const current = details.get(k);
  if (current?.open) {
    details.set(k, { ...current, open: false });
    render();
    return;
  }
  details.set(k, { open: true, loading: true, data: current?.data ?? null, error: null });
  render();
  try {
    const data = await api(`/peers/${enc(peer.id)}/workspaces/${enc(ws.name)}`);
    details.set(k, { ...details.get(k), loading: false, data, error: null });
  } catch (err) {
    details.set(k, { ...details.get(k), loading: false, error: err.message });
  }
  render();
}

/** A protected workspace: its password, kept in this page only and sent with the clone. */
function passwordField(peer, ws) {
  const k = key(peer, ws);
  const id = `pw-${k.replace(/[^a-zA-Z0-9_-]/g, '-')}`;
  return h('div', { class: 'rename' },
    h('label', { for: id }, `Password for ${ws.name}`),
    h('input', {
      id, type: 'password', value: passwords.get(k) ?? '', autocomplete: 'off',
      oninput: (event) => passwords.set(k, event.target.value),
      onkeydown: (event) => { if (event.key === 'Enter') clone(peer, ws); },
    }));
}

/** After a name clash: a field for another local name, and a button to clone under it. */
function rename(peer, ws) {
  const k = key(peer, ws);
  const id = `as-${k.replace(/[^a-zA-Z0-9_-]/g, '-')}`;
  const input = h('input', {
    id, value: asNames.get(k) ?? '', autocomplete: 'off', spellcheck: 'false',
    oninput: (event) => asNames.set(k, event.target.value),
    onkeydown: (event) => { if (event.key === 'Enter') clone(peer, ws, input.value.trim(), intents.get(k)); },
  });
  return h('div', { class: 'rename' },
    h('label', { for: id }, `Another name for ${ws.name} here`), input,
    actionButton({
      label: `Clone ${ws.name} from ${peer.name} under this name`, text: 'Clone under this name',
      busyText: 'Starting…', busy: rows.get(k).busy.has('clone'),
      onclick: () => clone(peer, ws, input.value.trim(), intents.get(k)),
    }));
}

async function clone(peer, ws, asName = '', launch = false) {
  const state = rows.get(key(peer, ws));
  intents.set(key(peer, ws), launch); // a retry under another name does what was asked
  if (state.busy.has('clone')) return;
  state.busy.add('clone');
  if (!asName) state.error = null; // a retry under another name keeps its field on screen
  state.extra = {};
  render();
  try {
    const body = { source: `${peer.id}/${ws.name}`, launch };
    if (asName) body.as = asName;
    if (ws.protected) body.password = passwords.get(key(peer, ws)) ?? '';
    const job = await api('/clones', { method: 'POST', json: body });
    addJob(job, peer.name);
    state.error = null;
    asNames.delete(key(peer, ws));
    state.extra = { started: job.target, launch };
    ctx.refresh('clones');
    if (launch) views.go('running'); // where its progress, then its links, appear
  } catch (err) {
    state.error = { message: err.message, code: err.code };
  } finally {
    state.busy.delete('clone');
    render();
  }
}

/** The download, and the disk its files take once extracted when its node says (older
 * nodes do not). */
function sizes(ws) {
  return ws.unpacked == null ? bytes(ws.size) : `${bytes(ws.size)} (unpacked ${bytes(ws.unpacked)})`;
}

/** "fork of alpha/notes (r2)": a clone shared again, with its own changes or not. */
function lineage(ws) {
  const f = ws.fork_of;
  const what = f.digest === ws.digest ? 'copy' : 'fork';
  return `${what} of ${f.peer}/${f.workspace}${f.revision ? ` (r${f.revision})` : ''}`;
}
