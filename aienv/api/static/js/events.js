// The "Events" section: the node's event log, newest first, filtered by kind.
import { h, fillSelect } from './dom.js';
import { time } from './format.js';

let list;
let empty;
let kind;
let events = [];
let lastSig = '';

export function init() {
  list = document.getElementById('event-list');
  empty = document.getElementById('events-empty');
  kind = document.getElementById('event-kind');
  kind.addEventListener('input', render);
}

export function show(items) {
  events = (items ?? []).slice().sort((a, b) => (b.id ?? 0) - (a.id ?? 0) || b.ts - a.ts);
  fillSelect(kind, events.map((e) => e.kind), 'All');
  render();
}

function render() {
  const shown = kind.value ? events.filter((e) => e.kind === kind.value) : events;
  const sig = JSON.stringify([kind.value, shown.map((e) => e.id ?? `${e.ts}${e.message}`)]);
  if (sig === lastSig) return;
  lastSig = sig;
  empty.hidden = shown.length > 0;
  empty.textContent = events.length ? 'No event of this kind.' : 'Nothing has happened yet.';
  list.replaceChildren(...shown.map((e) => h('li', { class: 'event' },
    h('time', { datetime: new Date(e.ts * 1000).toISOString() }, time(e.ts)), ' ',
    h('span', { class: `kind kind-${e.kind}` }, e.kind), ' ',
    h('span', { class: 'message' }, e.message))));
}
