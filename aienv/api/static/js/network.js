// The "Network" section: peers and what they share, search and filters, details and Clone.
import { api, enc } from './api.js';
import { h, keyed, alertBox, fillSelect, RowState, actionButton } from './dom.js';
import { bytes, list } from './format.js';
import { addJob } from './clones.js';
import { detailsPanel } from './peer-details.js';

let ctx;
let peers = [];
let els;
const rows = new RowState(); // keyed by PEERID/WS: busy clone, clone error, started notice
const details = new Map(); // PEERID/WS → {open, loading, data, error}
const asNames = new Map(); // PEERID/WS → the other name typed after a name clash (kept across re-renders)
const passwords = new Map(); // PEERID/WS → the password typed for a protected workspace (never stored)
const intents = new Map(); // PEERID/WS → whether the last click asked to launch (Run) or not (Clone only)

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
  };
  for (const [name] of FILTERS) els[name] = document.getElementById(`filter-${name}`);
  for (const el of [els.search, ...FILTERS.map(([name]) => els[name])]) {
    el.addEventListener('input', render);
  }
}

export function show(items) {
  peers = (items ?? []).slice().sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  for (const [name, values] of FILTERS) {
    fillSelect(els[name], peers.flatMap((p) => (p.workspaces ?? []).flatMap((w) => values(w) ?? [])), 'Any');
  }
  render();
}

function matches(ws, peer) {
  for (const [name, values] of FILTERS) {
    const wanted = els[name].value;
    if (wanted && !(values(ws) ?? []).includes(wanted)) return false;
  }
  const text = els.search.value.trim().toLowerCase();
  if (!text) return true;
  const haystack = [ws.name, peer.name, ...(ws.tags ?? []), ...(ws.tools ?? []),
    ...(ws.languages ?? []), ...(ws.runtimes ?? [])].join(' ').toLowerCase();
  return text.split(/\s+/).every((word) => haystack.includes(word));
}

function filtering() {
  return Boolean(els.search.value.trim()) || FILTERS.some(([name]) => els[name].value);
}

function render() {
  const shown = peers
    .map((peer) => ({ peer, workspaces: (peer.workspaces ?? []).filter((w) => matches(w, peer)) }))
    .filter((item) => !filtering() || item.workspaces.length);
  els.empty.textContent = peers.length
    ? 'No shared workspace matches the search and filters.'
    : 'No other nodes seen yet';
  els.empty.hidden = shown.length > 0;
  keyed(els.list, shown, (item) => item.peer.id, peerCard, (item) => JSON.stringify([
    { ...item.peer, last_seen_ago: 0, expires_in: 0 }, item.workspaces, ctx.admin,
    item.workspaces.map((w) => [rows.sig(key(item.peer, w)), details.get(key(item.peer, w))]),
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

function peerCard({ peer, workspaces }) {
  return h('li', { class: 'peer card' },
    h('div', { class: 'card-head' },
      h('h3', {}, peer.name), ' ',
      h('span', { class: 'muted' }, peer.address), ' ',
      h('code', { class: 'muted', title: peer.id }, peer.id.slice(0, 12))),
    h('p', { class: 'resources' }, resourcesText(peer.resources)),
    workspaces.length
      ? h('ul', { class: 'ws-grid', 'aria-label': `Shared by ${peer.name}` },
        workspaces.map((ws) => wsCard(peer, ws)))
      : h('p', { class: 'muted' }, 'Shares nothing right now.'),
    peer.more_workspaces ? h('p', { class: 'muted' }, 'It shares more than its announcement lists.') : null);
}

function tagChips(label, values) {
  if (!values?.length) return null;
  return [h('dt', {}, label), h('dd', {}, h('ul', { class: 'tags' }, values.map((v) => h('li', {}, v))))];
}

function wsCard(peer, ws) {
  const k = key(peer, ws);
  const state = rows.get(k);
  const open = details.get(k);
  const panelId = `details-${k.replace(/[^a-zA-Z0-9_-]/g, '-')}`;
  return h('li', { class: 'ws card inner' },
    h('div', { class: 'card-head' },
      h('h4', {}, ws.name), ' ', h('span', { class: 'muted' }, `v${ws.version}`), ' '),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Size'), h('dd', {}, bytes(ws.size)),
      h('dt', {}, 'Runtimes'), h('dd', {}, list(ws.runtimes)),
      ws.protected ? [h('dt', {}, 'Access'), h('dd', {}, 'Password required')] : null,
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
      h('a', { href: '#clones' }, 'see its progress and its links in Clones'), '.')
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
  } catch (err) {
    state.error = { message: err.message, code: err.code };
  } finally {
    state.busy.delete('clone');
    render();
  }
}
