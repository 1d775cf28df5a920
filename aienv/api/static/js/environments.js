// The "Environments" section: each environment's state, plan, endpoint links, logs and Stop.
import { api, enc, onLoopback } from './api.js';
import { h, keyed, alertBox, RowState, actionButton, openDialog, closeDialog, restoreFocusOnClose, setAlert } from './dom.js';
import { planText } from './format.js';
import * as terminal from './terminal.js';

const LIVE = new Set(['starting', 'running']);

let ctx;
let list;
let empty;
let envs = [];
const rows = new RowState();

export function init(context) {
  ctx = context;
  terminal.init();
  list = document.getElementById('environment-list');
  empty = document.getElementById('environments-empty');
  const dialog = document.getElementById('logs-dialog');
  restoreFocusOnClose(dialog);
  dialog.querySelector('[data-close]').addEventListener('click', () => closeDialog(dialog));
  dialog.querySelector('[data-refresh]').addEventListener('click', () => loadLogs(dialog.dataset.id));
}

export function show(items) {
  envs = items ?? [];
  render();
}

function render() {
  empty.hidden = envs.length > 0;
  keyed(list, envs, (env) => env.id, row, (env) => JSON.stringify([env, rows.sig(env.id)]));
}

/** Where to open an endpoint from this page: on the node's machine, the link that
 * logs its user into the tool (login_url) when the tool has one. */
export function endpointUrl(ep) {
  return onLoopback() ? ep.login_url ?? ep.url ?? ep.lan_url : ep.lan_url ?? ep.url;
}

function endpoints(env) {
  if (env.state !== 'running' || !env.endpoints?.length) return null;
  return h('ul', { class: 'endpoints', 'aria-label': `Endpoints of ${env.id}` }, env.endpoints.map((ep) => {
    const url = endpointUrl(ep);
    if (!url || !/^https?:/i.test(url)) {
      return h('li', {}, `${ep.name}: ${ep.protocol ?? ''} port ${ep.port}`);
    }
    return h('li', {}, h('a', {
      href: url, target: '_blank', rel: 'noopener noreferrer', 'aria-label': `Open ${ep.name} of ${env.id}`,
    }, h('span', { class: 'ep-name' }, ep.name), ' ', h('span', { class: 'ep-url' }, shown(ep, url)),
    h('span', { 'aria-hidden': 'true' }, ' ↗')),
    url === ep.login_url ? h('span', { class: 'muted' }, ' (opens it logged in)') : null);
  }));
}

/** The URL as shown: a login secret is not for the screen. */
export function shown(ep, url) {
  return url === ep.login_url ? ep.url : url;
}

function stateClass(state) {
  if (state === 'running') return 'ok';
  if (state === 'failed') return 'bad';
  if (state === 'starting' || state === 'stopping' || state === 'planned') return 'busy';
  return '';
}

function row(env) {
  const state = rows.get(env.id);
  return h('li', { class: 'card env' },
    h('div', { class: 'card-head' },
      h('h3', {}, env.id), ' ',
      h('span', { class: 'muted' }, env.runtime), ' ',
      h('span', { class: `badge ${stateClass(env.state)}` }, env.state), ' '),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Plan'), h('dd', {}, planText(env.plan)),
      env.plan?.fit ? [h('dt', {}, 'Fit'), h('dd', {}, env.plan.fit + (env.plan.forced ? ' (forced)' : ''))] : null,
      env.plan?.allowed?.length ? [h('dt', {}, 'May do'), h('dd', {}, h('ul', { class: 'allowed' },
        env.plan.allowed.map((line) => h('li', {}, line))))] : null),
    endpoints(env),
    h('div', { class: 'actions' },
      actionButton({ label: `Logs of ${env.id}`, text: 'Logs', onclick: () => openLogs(env.id) }),
      env.state === 'running' ? actionButton({
        label: `Terminal of ${env.id}`, text: 'Terminal', onclick: () => terminal.open(env.id, env.runtime),
      }) : null,
      LIVE.has(env.state) ? actionButton({
        label: `Stop ${env.id}`, text: 'Stop', busyText: 'Stopping…', cls: 'danger',
        busy: state.busy.has('stop'), onclick: () => stop(env.id),
      }) : null),
    state.error ? alertBox(state.error.message) : null,
    env.state === 'failed' && env.error ? alertBox(env.error) : null);
}

async function stop(id) {
  const state = rows.get(id);
  if (state.busy.has('stop')) return;
  state.busy.add('stop');
  state.error = null;
  render();
  try {
    const env = await api(`/environments/${enc(id)}/stop`, { method: 'POST' });
    envs = envs.map((e) => (e.id === id ? env : e));
    ctx.refresh('workspaces');
  } catch (err) {
    state.error = { message: err.message };
  } finally {
    state.busy.delete('stop');
    render();
  }
}

function openLogs(id) {
  const dialog = document.getElementById('logs-dialog');
  dialog.dataset.id = id;
  document.getElementById('logs-h').textContent = `Logs of ${id}`;
  document.getElementById('logs-pre').textContent = '';
  openDialog(dialog, `Logs of ${id}`);
  dialog.querySelector('[data-close]').focus();
  loadLogs(id);
}

async function loadLogs(id) {
  const pre = document.getElementById('logs-pre');
  const error = document.getElementById('logs-error');
  const status = document.getElementById('logs-status');
  setAlert(error, null);
  status.textContent = 'Loading…';
  try {
    const text = await api(`/environments/${enc(id)}/logs?tail=200`, { text: true });
    pre.textContent = text || '(no output yet)';
    status.textContent = `Last 200 lines, read at ${new Date().toLocaleTimeString()}.`;
    pre.scrollTop = pre.scrollHeight;
  } catch (err) {
    status.textContent = '';
    setAlert(error, err.message);
  }
}
