// The "My workspaces" section (for a visitor: the workspaces this node shares): rows and actions.
import { api, enc, ApiError } from './api.js';
import { h, keyed, alertBox, RowState, actionButton } from './dom.js';
import { bytes, time } from './format.js';
import * as forms from './workspace-forms.js';
import { forget, launchWith, variablesForm } from './variables-form.js';
import { openRunOn } from './group.js';

let ctx;
let list;
let empty;
let workspaces = [];
const rows = new RowState();

export function init(context) {
  ctx = context;
  list = document.getElementById('workspace-list');
  empty = document.getElementById('workspace-empty');
  forms.init((ws) => {
    upsert(ws);
    ctx.refresh('workspaces');
  }, (name) => {
    workspaces = workspaces.filter((w) => w.name !== name);
    render();
  });
}

export function show(items) {
  workspaces = items ?? [];
  render();
}

export const showTemplates = forms.showTemplates;

function upsert(ws) {
  const i = workspaces.findIndex((w) => w.name === ws.name);
  if (i >= 0) workspaces[i] = { ...workspaces[i], ...ws };
  else workspaces.push(ws);
  workspaces.sort((a, b) => a.name.localeCompare(b.name));
  render();
}

function render() {
  empty.textContent = ctx.admin
    ? 'No workspaces yet: New workspace… above creates one or imports a ZIP; Discover has what other nodes share.'
    : 'This node shares no workspace right now.';
  empty.hidden = workspaces.length > 0;
  keyed(list, workspaces, (ws) => ws.name, ctx.admin ? adminRow : guestRow,
    (ws) => JSON.stringify([ws, rows.sig(ws.name)]));
}

/** Run an action of a row: mark it busy, show its error near it, re-render around it. */
async function act(name, action, work, { keepError = false } = {}) {
  const state = rows.get(name);
  if (state.busy.has(action)) return;
  state.busy.add(action);
  if (!keepError) state.error = null;
  render();
  try {
    await work();
    state.error = null;
  } catch (err) {
    state.error = { where: action, message: err.message, code: err.code };
    if (err instanceof ApiError && err.code === 'does_not_fit') state.error.anyway = true;
    if (err instanceof ApiError && err.code === 'variable_missing') state.error.variables = err.body?.variables ?? [];
  } finally {
    state.busy.delete(action);
    render();
  }
}

function errorFor(name, where, extra = []) {
  const error = rows.get(name).error;
  return error && error.where === where ? alertBox(error.message, extra) : null;
}

function originText(origin) {
  if (!origin) return '—';
  switch (origin.kind) {
    case 'folder': return `folder ${origin.path ?? ''}`.trim();
    case 'template': return `template ${origin.template ?? ''}`.trim();
    case 'clone': return `cloned from ${origin.peer_name ?? origin.peer_id ?? '?'} (${origin.workspace ?? ''} ${origin.version ?? ''})`;
    case 'import': return `imported${origin.file ? ` from ${origin.file}` : ''}`;
    default: return origin.kind ?? '—';
  }
}

function tagList(tags) {
  if (!tags?.length) return null;
  return h('ul', { class: 'tags' }, tags.map((t) => h('li', {}, t)));
}

function summary(ws) {
  return [
    h('div', { class: 'card-head' },
      h('h3', {}, ws.name), ' ',
      h('span', { class: 'muted' }, `v${ws.version}`), ' ',
      ws.shared ? h('span', { class: 'badge ok' }, 'shared') : null),
    ws.description ? h('p', { class: 'desc' }, ws.description) : null,
    tagList(ws.tags),
  ];
}

function guestRow(ws) {
  return h('li', { class: 'card' },
    summary(ws),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Size'), h('dd', {}, bytes(ws.archive?.size)),
      h('dt', {}, 'Runtimes'), h('dd', {}, (ws.runtimes ?? []).join(', ') || '—')),
    h('div', { class: 'actions' },
      h('a', {
        class: 'btn', href: `/api/v1/workspaces/${enc(ws.name)}/archive`, download: '',
        'aria-label': `Download ${ws.name}`,
      }, 'Download ZIP')));
}

function launchName(ws, env, index) {
  return index === 0 ? `Launch ${ws.name}` : `Launch ${ws.name} ${env.name}`;
}

function launch(ws, env, force, values = {}) {
  act(ws.name, `launch:${env.name}`, async () => {
    await launchWith(ws.name, env.name, values, force);
    forget(ws.name);
    ctx.refresh('environments');
    ctx.refresh('workspaces');
  }, { keepError: force });
}

function envLine(ws, env, index) {
  const id = `${ws.name}.${env.name}`;
  const running = (ws.running ?? []).includes(id);
  const state = rows.get(ws.name);
  const action = `launch:${env.name}`;
  const name = launchName(ws, env, index);
  const anyway = state.error?.where === action && state.error.anyway
    ? actionButton({
      label: `${name} anyway`, text: 'Launch anyway', busyText: 'Launching…',
      busy: state.busy.has(action), onclick: () => launch(ws, env, true),
    })
    : null;
  return h('li', { class: 'env-line' },
    h('span', {}, h('strong', {}, env.name), ` (${env.runtime})`), ' ',
    running
      ? h('span', { class: 'badge ok' }, 'running')
      : h('span', { class: 'badge' }, 'not running'), ' ',
    running ? null : actionButton({
      label: name, text: 'Launch', busyText: 'Launching…', busy: state.busy.has(action),
      cls: 'primary', onclick: () => launch(ws, env, false),
    }),
    // the group's best node, or one chosen (its peers can fetch a shared or cloned one)
    running || !(ws.shared || ws.origin?.kind === 'clone') ? null : actionButton({
      label: `Run ${ws.name} ${env.name} on another node`, text: 'Run on…',
      onclick: () => openRunOn(ws.name, env.name),
    }),
    // what Launch would run, read before clicking (a cloned workspace is a peer's code)
    env.runs ? h('code', { class: 'runs' }, env.runs) : null,
    state.error?.where === action && state.error.variables?.length
      ? variablesForm({
        workspace: ws.name, variables: state.error.variables, busy: state.busy.has(action),
        onSubmit: (values) => launch(ws, env, false, values),
      })
      : errorFor(ws.name, action, anyway ? [anyway] : []));
}

function shareSwitch(ws) {
  const busy = rows.get(ws.name).busy.has('share');
  return h('button', {
    type: 'button', role: 'switch', class: 'switch', 'aria-checked': ws.shared ? 'true' : 'false',
    'aria-label': `Share ${ws.name}`, 'aria-busy': busy ? 'true' : null,
    'aria-disabled': busy ? 'true' : null,
    onclick: (event) => {
      if (event.currentTarget.getAttribute('aria-disabled') === 'true') return;
      act(ws.name, 'share', async () => {
        const updated = await api(`/workspaces/${enc(ws.name)}/${ws.shared ? 'unshare' : 'share'}`,
          { method: 'POST' });
        upsert(updated);
      });
    },
  }, h('span', { class: 'track', 'aria-hidden': 'true' }, h('span', { class: 'thumb' })),
  h('span', {}, busy ? (ws.shared ? 'Unsharing…' : 'Sharing…') : (ws.shared ? 'Shared' : 'Not shared')));
}

function runUpdate(ws, body, action = 'update') {
  delete rows.get(ws.name).extra.versions; // stale once it changes
  act(ws.name, 'update', async () => {
    const done = await api(`/workspaces/${enc(ws.name)}/${action}`, { method: 'POST', json: body });
    rows.get(ws.name).extra.note = action === 'update'
      ? `Updated ${done.from} → ${done.to}: ${bytes(done.received)} received, ${bytes(done.reused)} reused`
        + (done.beside.length ? `; written beside yours: ${done.beside.join(', ')}` : '')
        + (done.merged.length ? `; merged: ${done.merged.join(', ')}` : '')
      : `Rolled back to ${done.version}`;
    ctx.refresh('workspaces');
    ctx.refresh('environments');
  });
}

/** Show a list under the card (loaded by ``load`` into ``extra[key]``), or hide it. */
function toggle(ws, key, action, load) {
  const state = rows.get(ws.name);
  if (state.extra[key]) {
    delete state.extra[key];
    render();
    return;
  }
  act(ws.name, action, async () => { state.extra[key] = await load(); });
}

function toggleHistory(ws) {
  toggle(ws, 'versions', 'history', async () => {
    const data = await api(`/workspaces/${enc(ws.name)}/versions`);
    return data.versions.map((v) => ({
      ...v, current: v.digest === data.current, previous: v.digest === data.previous,
    }));
  });
}

function historyList(ws) {
  const versions = rows.get(ws.name).extra.versions;
  if (!versions) return null;
  if (!versions.length) return h('p', { class: 'muted' }, 'No version yet: sharing makes one.');
  return h('ol', { class: 'history', 'aria-label': `Version history of ${ws.name}` },
    versions.map((v) => h('li', {},
      h('strong', {}, v.revision ? `${v.version} (r${v.revision})` : v.version), ' ',
      h('span', { class: 'muted' }, `${v.how} ${time(v.created_at)} · ${bytes(v.size)} · ${v.files} files`),
      v.current ? [' ', h('span', { class: 'badge ok' }, 'current')] : null,
      v.previous ? [' ', h('span', { class: 'badge' }, 'kept for a rollback')] : null)));
}

function toggleSetup(ws) {
  toggle(ws, 'setup', 'setup', async () => (await api(`/workspaces/${enc(ws.name)}/setup`)).steps);
}

function runSetup(ws) {
  const state = rows.get(ws.name);
  act(ws.name, 'setup', async () => {
    try {
      await api(`/workspaces/${enc(ws.name)}/setup`, { method: 'POST', json: {} });
    } finally { // how each step stands, whether one failed or not
      state.extra.setup = (await api(`/workspaces/${enc(ws.name)}/setup`)).steps;
    }
  });
}

const STEP_BADGE = { done: 'ok', failed: 'bad', unsupported: 'bad', running: 'warn' };

/** The workspace's setup steps as they stand here; what each runs, read before it runs. */
function setupList(ws) {
  const state = rows.get(ws.name);
  const steps = state.extra.setup;
  if (!steps) return null;
  return h('div', { class: 'setup' },
    h('ol', { class: 'history', 'aria-label': `Setup steps of ${ws.name}` },
      steps.map((s) => h('li', {},
        h('strong', {}, s.name), ' ', h('span', { class: `badge ${STEP_BADGE[s.state] ?? ''}` }, s.state),
        s.runs ? [' ', h('code', { class: 'runs' }, s.runs)] : null,
        s.detail ? h('p', { class: 'muted' }, s.detail) : null))),
    steps.some((s) => s.state !== 'done') ? actionButton({
      label: `Run the setup of ${ws.name}`, text: 'Run setup', busyText: 'Setting up…',
      busy: state.busy.has('setup'), onclick: () => runSetup(ws),
    }) : null,
    errorFor(ws.name, 'setup'));
}

/** A clone's versions: the update its origin offers, the choices an update asks
 * for (local changes, running environments), and a rollback after an update. */
function versionBlock(ws) {
  const state = rows.get(ws.name);
  const u = ws.update;
  const busy = state.busy.has('update');
  const code = state.error?.where === 'update' ? state.error.code : null;
  const choices = [];
  const restart = code === 'running';
  if (code === 'local_changes') {
    choices.push(
      actionButton({ label: `Update ${ws.name} keeping my changes`, text: 'Keep mine', busy,
        onclick: () => runUpdate(ws, { keep: 'keep-local' }) }),
      actionButton({ label: `Update ${ws.name} taking theirs`, text: 'Take theirs', busy,
        onclick: () => runUpdate(ws, { keep: 'theirs' }) }));
  }
  if (restart) {
    choices.push(actionButton({ label: `Update ${ws.name} and restart`, text: 'Update and restart',
      busy, cls: 'primary', onclick: () => runUpdate(ws, { restart: true }) }));
  }
  const parts = [];
  if (u) {
    parts.push(h('span', { class: 'badge warn' }, 'update available'), ' ',
      h('span', {}, u.text ?? u.version), ' ',
      actionButton({ label: `Update ${ws.name}`, text: 'Update', busyText: 'Updating…', busy,
        cls: 'primary', onclick: () => runUpdate(ws, {}) }));
  }
  if (ws.origin?.updated_at) {
    parts.push(' ', actionButton({ label: `Roll back ${ws.name}`, text: 'Roll back', busy,
      onclick: () => runUpdate(ws, { restart: (ws.running ?? []).length > 0 }, 'rollback') }));
  }
  if (!parts.length && !state.extra.note && !state.error) return null;
  return h('div', { class: 'versions', 'aria-label': `Versions of ${ws.name}` },
    h('p', {}, ...parts),
    state.extra.note ? h('p', { class: 'muted', role: 'status' }, state.extra.note) : null,
    errorFor(ws.name, 'update', choices));
}

function adminRow(ws) {
  const envs = ws.environments ?? [];
  return h('li', { class: 'card' },
    summary(ws),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Size'), h('dd', {}, ws.archive ? bytes(ws.archive.size) : 'not packed yet'),
      h('dt', {}, 'Origin'), h('dd', {}, originText(ws.origin))),
    envs.length
      ? h('ul', { class: 'envs', 'aria-label': `Environments of ${ws.name}` },
        envs.map((env, i) => envLine(ws, env, i)))
      : h('p', { class: 'muted' }, 'No environments to launch.'),
    versionBlock(ws),
    historyList(ws),
    setupList(ws),
    h('div', { class: 'actions' },
      shareSwitch(ws),
      actionButton({ label: `Edit ${ws.name}`, text: 'Edit', onclick: () => forms.openEdit(ws) }),
      h('button', {
        type: 'button', class: 'btn', 'aria-label': `History of ${ws.name}`,
        'aria-expanded': rows.get(ws.name).extra.versions ? 'true' : 'false',
        onclick: () => toggleHistory(ws),
      }, 'History'),
      ws.setup?.length ? h('button', {
        type: 'button', class: 'btn', 'aria-label': `Setup of ${ws.name}`,
        'aria-expanded': rows.get(ws.name).extra.setup ? 'true' : 'false',
        onclick: () => toggleSetup(ws),
      }, 'Setup') : null,
      h('a', {
        class: 'btn', href: `/api/v1/workspaces/${enc(ws.name)}/archive`, download: '',
        'aria-label': `Export ${ws.name}`,
      }, 'Export ZIP'),
      actionButton({
        label: `Delete ${ws.name}`, text: 'Delete', cls: 'danger', onclick: () => forms.openDelete(ws),
      })),
    errorFor(ws.name, 'share'));
}
