// The "Clones" section: one row per clone job, updated in place by fetches and progress events.
import { api, enc } from './api.js';
import { h, setAlert, actionButton } from './dom.js';
import { endpointUrl, shown } from './environments.js';
import { bytes, rate, eta } from './format.js';
import { describe, forget, launchWith, variablesForm } from './variables-form.js';

const FLOW = ['queued', 'connecting', 'downloading', 'verifying', 'extracting', 'adapting'];
const CANCELLABLE = new Set(['queued', 'connecting', 'downloading', 'verifying', 'extracting']);
const DONE = new Set(['installed', 'running']);
const ENDED = new Set([...DONE, 'failed', 'cancelled']);
// Stepper labels: verbs, so that a stage to come never reads like the job's state.
const STEP = {
  queued: 'queue', connecting: 'connect', downloading: 'download', verifying: 'verify',
  extracting: 'extract', adapting: 'adapt', launching: 'launch', running: 'run', installed: 'install',
};

let list;
let empty;
let clear;
const jobs = new Map(); // id → job
const rows = new Map(); // id → {el, parts}
const lastStage = new Map(); // id → the last stage seen before failed/cancelled
const peerNames = new Map(); // peer reference (an id) → the name the Network showed for it
let envStates = null; // environment id → its state, from GET /environments (null: not known yet)
const LIVE = new Set(['starting', 'running']);

let ctx;

export function init(context) {
  ctx = context;
  list = document.getElementById('clone-list');
  empty = document.getElementById('clones-empty');
  clear = document.getElementById('clones-clear');
  clear.addEventListener('click', clearFinished);
}

/** Forget the jobs that have ended; the stream's changes then refetch the list. */
async function clearFinished() {
  const error = document.getElementById('clones-error');
  setAlert(error, null);
  try {
    await api('/clones/clear', { method: 'POST' });
  } catch (err) {
    setAlert(error, err.message);
  }
}

/** The full list from GET /clones. */
export function show(items) {
  const ids = new Set((items ?? []).map((job) => job.id));
  for (const id of [...jobs.keys()]) {
    if (!ids.has(id)) {
      jobs.delete(id);
      rows.get(id)?.el.remove();
      rows.delete(id);
    }
  }
  for (const job of items ?? []) upsert(job);
  order();
}

/** A job just created (POST's 202 answer): shown at once. */
export function addJob(job, peerName) {
  if (peerName) peerNames.set(job.peer, peerName);
  upsert(job);
  order();
}

/** The environments' states: a clone's links stay only while what it launched runs. */
export function environments(items) {
  envStates = new Map((items ?? []).map((env) => [env.id, env.state]));
  for (const [id, row] of rows) update(row, jobs.get(id));
}

/** Jobs from the stream's progress events. */
export function progress(items) {
  for (const job of items) upsert(job);
  order();
}

function upsert(job) {
  const current = jobs.get(job.id);
  if (current && (job.updated_at ?? 0) < (current.updated_at ?? 0)) return; // an older answer
  jobs.set(job.id, job);
  if (FLOW.includes(job.state) || job.state === 'launching') lastStage.set(job.id, job.state);
  let row = rows.get(job.id);
  if (!row) {
    row = build(job);
    rows.set(job.id, row);
  }
  update(row, job);
}

function order() {
  const sorted = [...jobs.values()].sort((a, b) => (b.created_at ?? 0) - (a.created_at ?? 0));
  sorted.forEach((job, index) => {
    const el = rows.get(job.id).el;
    if (list.children[index] !== el) list.insertBefore(el, list.children[index] ?? null);
  });
  empty.hidden = jobs.size > 0;
  clear.hidden = ![...jobs.values()].some((job) => ENDED.has(job.state));
}

function stages(job) {
  return [...FLOW, ...(job.launch ? ['launching', 'running'] : ['installed'])];
}

function build(job) {
  const parts = {
    title: h('h3', { tabindex: '-1' }),
    target: h('span', { class: 'muted' }),
    state: h('span', { class: 'badge' }),
    bar: h('progress', { 'aria-label': `Clone ${job.source}`, max: 1 }),
    numbers: h('p', { class: 'numbers' }),
    stepper: h('ol', { class: 'stepper', 'aria-label': `Stages of clone ${job.source}` }),
    cancel: h('button', {
      type: 'button', class: 'btn', 'aria-label': `Cancel clone ${job.source}`,
      onclick: () => cancel(job.id),
    }, 'Cancel'),
    actionError: h('p', { class: 'alert', role: 'alert', hidden: true }),
    error: h('p', { class: 'alert', role: 'alert', hidden: true }),
    note: h('p', { class: 'note', hidden: true }),
    links: h('ul', { class: 'endpoints', 'aria-label': `Links of ${job.target}`, hidden: true }),
    ask: h('div', { hidden: true }),
  };
  const el = h('li', { class: 'card clone' },
    h('div', { class: 'card-head' }, parts.title, ' ', parts.target, ' ', parts.state, ' '),
    h('div', { class: 'bar-line' }, parts.bar, parts.numbers),
    parts.stepper,
    parts.links,
    h('div', { class: 'actions' }, parts.cancel),
    parts.ask, parts.actionError, parts.error, parts.note);
  el.dataset.key = job.id;
  return { el, parts };
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function update({ parts }, job) {
  const peer = job.peer_name ?? peerNames.get(job.peer) ?? job.peer ?? '?';
  setText(parts.title, `${peer}/${job.workspace}`);
  setText(parts.target, `→ ${job.target}`);
  const failed = job.state === 'failed' || job.state === 'cancelled';
  setText(parts.state, job.state);
  parts.state.className = `badge ${job.state === 'failed' ? 'bad' : DONE.has(job.state) ? 'ok' : failed ? '' : 'busy'}`;

  const total = job.bytes_total || 0;
  if (DONE.has(job.state)) {
    parts.bar.max = total || 1;
    parts.bar.value = total || 1;
  } else if (total > 0) {
    parts.bar.max = total;
    parts.bar.value = Math.min(job.bytes_done ?? 0, total);
  } else {
    parts.bar.removeAttribute('value'); // size not known yet: indeterminate
  }
  const done = DONE.has(job.state) ? total : job.bytes_done ?? 0;
  const active = !failed && !DONE.has(job.state);
  const numbers = [`${bytes(done)} of ${total ? bytes(total) : '?'}`];
  if (active && job.state === 'downloading') numbers.push(rate(job.rate), `ETA ${eta(job.eta)}`);
  if (job.resumed) numbers.push(`resumed from ${bytes(job.resumed)}`);
  setText(parts.numbers, numbers.join(' · '));

  renderStepper(parts.stepper, job);
  const hideCancel = !CANCELLABLE.has(job.state);
  if (hideCancel && document.activeElement === parts.cancel) parts.title.focus(); // keep focus nearby
  parts.cancel.hidden = hideCancel;
  setAlert(parts.error, job.state === 'failed' ? job.error || 'The clone failed.' : null);
  const note = job.state === 'cancelled' ? 'Cancelled: nothing was kept.'
    : DONE.has(job.state) && job.error ? job.error : null;
  parts.note.hidden = !note;
  setText(parts.note, note ?? '');
  const env = job.state === 'running' ? { id: job.environment, endpoints: job.endpoints } : launched.get(job.id);
  const known = envStates?.get(env?.id); // a job's environment may be newer than the list
  const live = env && (known === undefined || LIVE.has(known));
  renderLinks(parts.links, live ? env.endpoints : null);
  if (job.state === 'installed' && job.needs?.length && !launched.has(job.id)) renderAsk(parts, job);
  else if (job.state === 'installed' && job.refused && !launched.has(job.id)) renderAnyway(parts, job);
  else parts.ask.hidden = true;
}

/** The running environment's links: the tool opens logged in from this machine. */
function renderLinks(ul, endpoints) {
  const usable = (endpoints ?? []).map((ep) => [ep, endpointUrl(ep)]).filter(([, url]) => /^https?:/i.test(url ?? ''));
  const sig = JSON.stringify(usable.map(([, url]) => url));
  ul.hidden = usable.length === 0;
  if (ul._sig === sig) return;
  ul._sig = sig;
  ul.replaceChildren(...usable.map(([ep, url]) => h('li', {}, h('a', {
    href: url, target: '_blank', rel: 'noopener noreferrer', 'aria-label': `Open ${ep.name}`,
  }, h('span', { class: 'ep-name' }, `Open ${ep.name}`), ' ', h('span', { class: 'ep-url' }, shown(ep, url)),
  h('span', { 'aria-hidden': 'true' }, ' ↗')),
  url === ep.login_url ? h('span', { class: 'muted' }, ' (logged in)') : null)));
}

/** A clone installed whose plan does not fit here: why, and the person's call to run it. */
function renderAnyway(parts, job) {
  const busy = asking.get(job.id)?.busy ?? false;
  const sig = `anyway|${busy}`;
  parts.ask.hidden = false;
  if (parts.ask._sig === sig) return;
  parts.ask._sig = sig;
  parts.ask.replaceChildren(
    h('p', { class: 'note' }, `Installed, not launched: ${job.refused}`),
    actionButton({
      label: `Launch ${job.target} anyway`, text: 'Launch anyway', busyText: 'Launching…', busy,
      onclick: async () => {
        asking.set(job.id, { busy: true });
        renderAnyway(parts, job);
        setAlert(parts.actionError, null);
        try {
          launched.set(job.id, await launchWith(job.target, null, {}, true));
          ctx?.refresh('environments');
        } catch (err) {
          setAlert(parts.actionError, err.message);
        } finally {
          asking.delete(job.id);
          update(rows.get(job.id), jobs.get(job.id));
        }
      },
    }));
}

const asking = new Map(); // job id → {variables, busy} of its form
const launched = new Map(); // job id → the environment launched from its form

/** A clone installed that needs values: the form, then the launch with them. */
async function renderAsk(parts, job) {
  let state = asking.get(job.id);
  if (!state) {
    state = { variables: null, busy: false };
    asking.set(job.id, state);
    try {
      state.variables = await describe(job.target, job.needs);
    } catch (err) {
      setAlert(parts.actionError, err.message);
      return;
    }
  }
  if (!state.variables) return;
  const submit = async (values) => {
    state.busy = true;
    renderAsk(parts, job);
    setAlert(parts.actionError, null);
    try {
      launched.set(job.id, await launchWith(job.target, null, values));
      forget(job.target);
      ctx?.refresh('environments');
    } catch (err) {
      setAlert(parts.actionError, err.message);
    } finally {
      state.busy = false;
      update(rows.get(job.id), jobs.get(job.id));
    }
  };
  parts.ask.hidden = false;
  const sig = `${state.busy}`;
  if (parts.ask._sig === sig) return; // typing goes on undisturbed by progress events
  parts.ask._sig = sig;
  parts.ask.replaceChildren(variablesForm({
    workspace: job.target, variables: state.variables, busy: state.busy, onSubmit: submit,
  }));
}

function renderStepper(ol, job) {
  const all = stages(job);
  const reached = DONE.has(job.state) || all.includes(job.state) ? job.state : lastStage.get(job.id);
  const at = all.indexOf(reached);
  const ended = job.state === 'failed' || job.state === 'cancelled';
  const sig = `${all.join()}|${job.state}|${at}`;
  if (ol._sig === sig) return;
  ol._sig = sig;
  ol.replaceChildren(...all.map((stage, i) => {
    let status = 'todo';
    if (i < at || (i === at && DONE.has(stage))) status = 'done';
    else if (i === at) status = ended ? job.state : 'current';
    const words = { done: 'done', current: 'now', todo: 'to do', failed: 'failed here', cancelled: 'cancelled here' };
    return h('li', { class: status, 'aria-current': status === 'current' ? 'step' : null },
      STEP[stage], h('span', { class: 'sr-only' }, ` (${words[status]})`));
  }));
  if (ended && at < 0) ol.append(h('li', { class: job.state }, job.state));
}

async function cancel(id) {
  const row = rows.get(id);
  const button = row.parts.cancel;
  if (button.getAttribute('aria-disabled') === 'true') return;
  button.setAttribute('aria-disabled', 'true');
  button.textContent = 'Cancelling…';
  setAlert(row.parts.actionError, null);
  try {
    upsert(await api(`/clones/${enc(id)}`, { method: 'DELETE' }));
  } catch (err) {
    setAlert(row.parts.actionError, err.message);
  } finally {
    button.removeAttribute('aria-disabled');
    button.textContent = 'Cancel';
  }
}
