// The "Group" section: the paired nodes (pair with a code, unpair), the environments
// running across the group (Stop on the node that runs them, lost when it left), and the
// "Run on…" dialog that ranks the group's nodes for an environment and launches it there.
import { api, enc } from './api.js';
import { h, keyed, alertBox, RowState, actionButton, openDialog, closeDialog, restoreFocusOnClose, setAlert } from './dom.js';
import { planText } from './format.js';
import { endpointUrl, shown } from './environments.js';

/** Where an endpoint on another node is opened from here, and the text shown for it:
 * its LAN address (with the tool's login for the node that placed it; not shown). */
function remote(ep) {
  const text = ep.lan_url ?? ep.url;
  return { href: ep.login_url ?? text, text };
}

let ctx;
let peers = [];
let group = { members: [], offer: {}, code: { open: false } };
let envs = [];
const rows = new RowState();

export function init(context) {
  ctx = context;
  const dialog = document.getElementById('run-dialog');
  restoreFocusOnClose(dialog);
  dialog.querySelector('[data-close]').addEventListener('click', () => closeDialog(dialog));
  dialog.querySelector('form').addEventListener('submit', (ev) => { ev.preventDefault(); runThere(dialog); });
  document.getElementById('pair-code').addEventListener('click', showCode);
  document.getElementById('pair-form').addEventListener('submit', (ev) => { ev.preventDefault(); pair(ev.target); });
  setInterval(() => ctx.refresh('groupEnvironments'), 15000);  // other nodes' changes
}

export function showGroup(data) {
  group = data;
  const offer = data.offer;
  const part = (v, unit) => (v == null ? `all ${unit}` : `${v} ${unit}`);
  document.getElementById('group-offer').textContent = `This node offers the group ${part(offer.cpus, 'CPUs')}, `
    + `${offer.memory == null ? 'all free memory' : `${Math.round(offer.memory / 2 ** 20)} MiB of memory`}, `
    + `${part(offer.gpus, 'GPUs')}${offer.launches ? '' : ', and takes no launches'}.`;
  const list = document.getElementById('member-list');
  keyed(list, data.members, (m) => m.node_id, (m) => h('li', { class: 'member' },
    h('strong', {}, m.name), ' ', h('span', { class: `badge ${m.online ? 'ok' : ''}` }, m.online ? 'online' : 'away'), ' ',
    actionButton({ label: `Unpair ${m.name}`, text: 'Unpair', cls: 'danger', onclick: () => unpair(m) })));
  document.getElementById('members-empty').hidden = data.members.length > 0;
  const code = document.getElementById('pair-shown');
  code.hidden = !data.code?.open;
  code.textContent = data.code?.open ? `Pairing code: ${data.code.code} — type it on the other node (valid ${Math.ceil(data.code.expires_in / 60)} min).` : '';
  fillPeers();
}

export function showPeers(items) {
  peers = items ?? [];
  fillPeers();
}

function fillPeers() {
  const select = document.getElementById('pair-peer');
  const paired = new Set(group.members.map((m) => m.node_id));
  const choices = peers.filter((p) => !paired.has(p.id));
  const old = select.value;
  select.replaceChildren(...choices.map((p) => h('option', { value: p.id }, `${p.name} (${p.address})`)));
  if (choices.some((p) => p.id === old)) select.value = old;
  document.getElementById('pair-form').hidden = choices.length === 0;
}

async function showCode() {
  const error = document.getElementById('group-error');
  try {
    await api('/group/code', { method: 'POST' });
    setAlert(error, null);
    ctx.refresh('group', 0);
  } catch (err) {
    setAlert(error, err.message);
  }
}

async function pair(form) {
  const error = document.getElementById('pair-error');
  try {
    await api('/group/members', { method: 'POST', json: { peer: form.elements.peer.value, code: form.elements.code.value } });
    form.elements.code.value = '';
    setAlert(error, null);
    ctx.refresh('group', 0);
  } catch (err) {
    setAlert(error, err.message);
  }
}

async function unpair(member) {
  try {
    await api(`/group/members/${enc(member.node_id)}`, { method: 'DELETE' });
    ctx.refresh('group', 0);
  } catch (err) {
    setAlert(document.getElementById('group-error'), err.message);
  }
}

export function showEnvironments(items) {
  envs = (items ?? []).filter((e) => !e.here);
  const list = document.getElementById('group-env-list');
  keyed(list, envs, (e) => `${e.node_id}/${e.id}`, envRow, (e) => JSON.stringify([e, rows.sig(`${e.node_id}/${e.id}`)]));
  document.getElementById('group-envs-empty').hidden = envs.length > 0;
}

function envRow(env) {
  const key = `${env.node_id}/${env.id}`;
  const state = rows.get(key);
  const links = env.state === 'running' ? (env.endpoints ?? []).map((ep) => {
    const { href, text } = remote(ep);
    return /^https?:/i.test(href) ? h('li', {}, h('a', { href, target: '_blank', rel: 'noopener noreferrer' },
      `${ep.name} ${text}`)) : null;
  }) : [];
  return h('li', { class: 'card env' },
    h('div', { class: 'card-head' }, h('h3', {}, env.id), ' ', h('span', { class: 'muted' }, `on ${env.node}`), ' ',
      h('span', { class: `badge ${env.state === 'running' ? 'ok' : env.state === 'lost' ? 'bad' : ''}` }, env.state)),
    env.plan ? h('p', { class: 'muted' }, planText(env.plan)) : null,
    links.length ? h('ul', { class: 'endpoints', 'aria-label': `Endpoints of ${env.id} on ${env.node}` }, links) : null,
    env.state === 'running' && env.requested_by ? h('div', { class: 'actions' }, actionButton({
      label: `Stop ${env.id} on ${env.node}`, text: 'Stop', busyText: 'Stopping…', cls: 'danger',
      busy: state.busy.has('stop'), onclick: () => stopThere(env, key),
    })) : null,
    state.error ? alertBox(state.error) : null,
    env.state === 'lost' && env.error ? alertBox(env.error) : null);
}

async function stopThere(env, key) {
  const state = rows.get(key);
  state.busy.add('stop');
  state.error = null;
  showEnvironments([...envs]);
  try {
    await api(`/group/environments/${enc(env.id)}/stop?node=${enc(env.node_id)}`, { method: 'POST' });
  } catch (err) {
    state.error = err.message;
  } finally {
    state.busy.delete('stop');
    ctx.refresh('groupEnvironments', 0);
  }
}

// -- "Run on…" ---------------------------------------------------------------------

export async function openRunOn(workspace, environment) {
  const dialog = document.getElementById('run-dialog');
  dialog.dataset.workspace = workspace;
  dialog.dataset.environment = environment;
  document.getElementById('run-h').textContent = `Run ${workspace} ${environment} on…`;
  const body = document.getElementById('run-ranking');
  body.replaceChildren(h('p', { class: 'muted' }, 'Asking the group…'));
  setAlert(document.getElementById('run-error'), null);
  document.getElementById('run-result').replaceChildren();
  openDialog(dialog, `Run ${workspace} on`);
  try {
    const result = await api('/group/launch', { method: 'POST', json: { workspace, environment, on: 'auto', dry_run: true } });
    const first = result.ranking.find((c) => c.fit === 'fits' || c.fit === 'fits with less');
    body.replaceChildren(h('fieldset', {}, h('legend', {}, 'Nodes, best first'),
      ...result.ranking.map((c) => {
        const fits = c.fit === 'fits' || c.fit === 'fits with less';
        const why = (c.shortfalls?.length ? c.shortfalls : c.notes ?? []).join('; ');
        return h('label', { class: 'choice' },
          h('input', { type: 'radio', name: 'on', value: c.here ? 'here' : c.node_id, disabled: !fits, checked: c === first }), ' ',
          h('strong', {}, c.node + (c.here ? ' (this node)' : '')), ` — ${c.fit}`,
          c.plan ? h('span', { class: 'muted' }, ` (${planText(c.plan)})`) : null,
          why ? h('span', { class: 'muted' }, ` ${why}`) : null);
      })));
    dialog.querySelector('[type=submit]').disabled = !first;
  } catch (err) {
    body.replaceChildren();
    setAlert(document.getElementById('run-error'), err.message);
  }
}

async function runThere(dialog) {
  const chosen = dialog.querySelector('input[name=on]:checked');
  if (!chosen) return;
  const submit = dialog.querySelector('[type=submit]');
  submit.disabled = true;
  submit.textContent = 'Launching…';
  const { workspace, environment } = dialog.dataset;
  try {
    const result = await api('/group/launch', { method: 'POST', json: { workspace, environment, on: chosen.value } });
    const here = result.node_id === ctx.nodeId;
    const links = (result.environment.endpoints ?? []).map((ep) => {
      const { href, text } = here ? { href: endpointUrl(ep), text: shown(ep, endpointUrl(ep)) } : remote(ep);
      return h('li', {}, h('a', { href, target: '_blank', rel: 'noopener noreferrer' }, `${ep.name} ${text}`));
    });
    document.getElementById('run-result').replaceChildren(
      h('p', { role: 'status' }, `${result.environment.id} runs on ${result.node} (${result.seconds} s).`),
      h('ul', { class: 'endpoints' }, links));
    ctx.refresh('groupEnvironments', 0);
    ctx.refresh('environments', 0);
  } catch (err) {
    setAlert(document.getElementById('run-error'), err.message);
  } finally {
    submit.disabled = false;
    submit.textContent = 'Run';
  }
}
