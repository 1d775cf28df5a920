// The "This machine" section (admin): AI workloads with the reason each was recognised,
// the containers, and the recent changes the node's sampler saw (processes, containers).
import { h } from './dom.js';
import { bytes, time } from './format.js';

const SHOWN_CHANGES = 30;

let summaryEl;
let workloadsEl;
let containersEl;
let changesEl;
let changesEmpty;
let lastInventory = '';
let lastChanges = '';

export function init() {
  summaryEl = document.getElementById('machine-summary');
  workloadsEl = document.getElementById('machine-workloads');
  containersEl = document.getElementById('machine-containers');
  changesEl = document.getElementById('machine-changes');
  changesEmpty = document.getElementById('machine-changes-empty');
}

function count(items, reason, word) {
  if (!items.length && reason) return `no ${word} (${reason})`;
  return `${items.length} ${word}`;
}

/** The full inventory (GET /system, admin): what runs here. */
export function showInventory(data) {
  const processes = data.processes ?? [];
  const services = data.services ?? [];
  const containers = data.containers ?? [];
  const workloads = data.ai_workloads ?? [];
  const sig = JSON.stringify([
    processes.length, services.length, data.sampling,
    workloads, containers.map((c) => [c.id, c.state, c.ports, c.ai_reasons]),
  ]);
  if (sig === lastInventory) return;
  lastInventory = sig;
  const interval = data.sampling?.interval;
  summaryEl.textContent = [
    `${processes.length} processes`,
    count(services, data.services_reason, 'services'),
    count(containers, data.containers_reason, 'containers'),
    interval ? `sampled every ${interval} s` : 'sampling off',
  ].join(' · ');
  const rss = Object.fromEntries(processes.map((p) => [p.pid, p.rss]));
  workloadsEl.replaceChildren(...(workloads.length ? workloads.map((w) => h('li', { class: 'machine-item' },
    h('span', { class: 'badge busy' }, w.kind), ' ',
    h('strong', {}, w.name ?? ''),
    w.pid ? h('span', { class: 'muted' }, ` pid ${w.pid}${rss[w.pid] ? `, ${bytes(rss[w.pid])}` : ''}`) : null,
    w.id ? h('code', { class: 'muted' }, ` ${w.id}`) : null,
    h('div', { class: 'reason' }, w.reasons.join('; ')),
  )) : [h('li', { class: 'machine-item muted' }, 'No AI workload recognised on this machine.')]));
  containersEl.replaceChildren(...containers.map((c) => h('li', { class: 'machine-item' },
    h('span', { class: `badge ${c.state === 'running' ? 'ok' : 'warn'}` }, c.state ?? '?'), ' ',
    h('strong', {}, c.name), ' ', h('span', { class: 'muted' }, c.image ?? ''), ' ',
    h('span', { class: 'reason' }, (c.ports ?? []).map((p) => (p.host_port
      ? `${p.host_port}→${p.container_port}/${p.protocol}` : `${p.container_port}/${p.protocol}`)).join(' ')),
  )));
  containersEl.hidden = !containers.length;
  document.getElementById('machine-containers-h').hidden = !containers.length;
}

/** Recent changes (GET /system/changes, admin), newest first. */
export function showChanges(data) {
  const changes = (data.changes ?? []).slice(-SHOWN_CHANGES).reverse();
  const sig = JSON.stringify(changes.map((c) => c.id));
  if (sig === lastChanges) return;
  lastChanges = sig;
  changesEmpty.hidden = changes.length > 0;
  changesEl.replaceChildren(...changes.map((c) => h('li', { class: 'machine-item' },
    h('time', { datetime: new Date(c.ts * 1000).toISOString() }, time(c.ts)), ' ',
    h('span', { class: `badge ${['started', 'up'].includes(c.action) ? 'ok' : 'bad'}` }, `${c.kind} ${c.action}`), ' ',
    h('strong', {}, c.name ?? ''), c.pid ? h('span', { class: 'muted' }, ` pid ${c.pid}`) : null, ' ',
    h('span', { class: 'message' }, c.detail ?? ''),
    c.ai ? h('div', { class: 'reason' }, `AI: ${c.reasons.join('; ')}`) : null,
  )));
}
