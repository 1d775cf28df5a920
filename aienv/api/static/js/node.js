// The "This node" section: identity, addresses, resources, runtimes and the connection state.
// What it knows of this machine (here()) also tells the Discover cards what fits here.
import { h } from './dom.js';
import { bytes, duration, shortId } from './format.js';

let facts;
let runtimesList;
let liveEl;
let node = null;
let system = null;
let nodeFetchedAt = 0;
let lastSig = '';

export function init() {
  facts = document.getElementById('node-facts');
  runtimesList = document.getElementById('node-runtimes');
  liveEl = document.getElementById('conn');
  // Uptime keeps counting between fetches.
  setInterval(() => {
    const el = document.getElementById('node-uptime');
    if (el && node) el.textContent = duration(node.uptime + (Date.now() - nodeFetchedAt) / 1000);
  }, 10000);
}

/** This node and its machine summary, as last fetched (either may still be null). */
export function here() {
  return { node, system };
}

export function setLive(live) {
  const text = live ? 'Live' : 'Reconnecting…';
  if (liveEl.textContent !== text) liveEl.textContent = text;
  liveEl.dataset.live = live ? 'yes' : 'no';
}

export function showNode(data) {
  node = data;
  nodeFetchedAt = Date.now();
  const brand = document.getElementById('brand-node');
  brand.textContent = data.name;
  document.body.dataset.node = data.name; // the page's title: views.js
  render();
}

export function showSystem(data) {
  system = data;
  render();
}

function addresses() {
  if (node.addresses?.length) return node.addresses.join(', ');
  const ifaces = node.discovery?.interfaces ?? [];
  return ifaces.length ? ifaces.map((i) => i.address).join(', ') : '—';
}

function cpuText() {
  const cpu = system?.cpu;
  if (!cpu) return '—';
  const count = cpu.usable === cpu.logical
    ? `${cpu.logical} logical` : `${cpu.usable} usable of ${cpu.logical} logical`;
  return cpu.model ? `${count} · ${cpu.model}` : count;
}

function gpuText() {
  const gpus = system?.gpus;
  if (!gpus) return '—';
  if (!gpus.length) return 'none';
  return gpus.map((g) => `${g.name}${g.memory ? ` (${bytes(g.memory)})` : ''}`).join(', ');
}

function kvmText() {
  const kvm = system?.kvm;
  if (!kvm) return '—';
  return kvm.usable ? 'yes' : `no${kvm.reason ? ` (${kvm.reason})` : ''}`;
}

function fact(term, value, id) {
  return h('div', {}, h('dt', {}, term), h('dd', { id }, value));
}

function render() {
  if (!node) return;
  const sig = JSON.stringify([{ ...node, uptime: 0, state_version: 0, discovery: 0, uploads: 0 }, system]);
  if (sig === lastSig) return;
  lastSig = sig;
  const memory = system?.memory;
  facts.replaceChildren(
    fact('Name', node.name),
    fact('Id', h('code', { title: node.id }, shortId(node.id))),
    fact('Addresses', addresses()),
    fact('Version', node.version),
    fact('Uptime', duration(node.uptime + (Date.now() - nodeFetchedAt) / 1000), 'node-uptime'),
    fact('CPU', cpuText()),
    fact('Memory', memory ? `${bytes(memory.available)} available of ${bytes(memory.total)}` : '—'),
    fact('GPUs', gpuText()),
    fact('Free disk', system ? bytes(system.home_disk_free) : '—'),
    fact('KVM', kvmText()),
  );
  const runtimes = node.runtimes ?? system?.runtimes ?? {};
  runtimesList.replaceChildren(...Object.entries(runtimes).map(([name, r]) => h('li', {},
    h('span', { class: `badge ${r.available ? 'ok' : 'bad'}` }, r.available ? 'available' : 'unavailable'),
    ' ', h('strong', {}, name),
    r.available || !r.reason ? null : h('span', { class: 'reason' }, ` — ${r.reason}`),
  )));
  if (!Object.keys(runtimes).length) runtimesList.replaceChildren(h('li', {}, 'none'));
}
