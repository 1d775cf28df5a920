// The details panel of a peer's workspace: what it is, what it needs, and whether it fits here.
import { h, append, alertBox } from './dom.js';
import { bytes, cpus, planText } from './format.js';

function resources(r) {
  if (!r) return 'nothing stated';
  const parts = [];
  if (r.cpus !== null && r.cpus !== undefined) parts.push(cpus(r.cpus));
  if (r.memory !== null && r.memory !== undefined) parts.push(`${bytes(r.memory)} memory`);
  if (r.disk !== null && r.disk !== undefined) parts.push(`${bytes(r.disk)} disk`);
  if (r.gpu && r.gpu !== 'none') parts.push(`GPU ${r.gpu}`);
  return parts.join(', ') || 'nothing stated';
}

/** The verdict in words: "fits", "fits with less", "needs a GPU", "does not fit", … */
function verdict(plan) {
  if (!plan) return { text: 'not planned', cls: '' };
  const gpu = (plan.shortfalls ?? []).some((s) => /\bgpu\b/i.test(s));
  if (plan.fit === 'fits') return { text: 'fits', cls: 'ok' };
  if (plan.fit === 'fits with less') return { text: 'fits with less', cls: 'warn' };
  if (plan.fit === 'does not fit' && gpu) return { text: 'needs a GPU', cls: 'bad' };
  return { text: plan.fit ?? 'unknown', cls: 'bad' };
}

function bullets(label, items, cls) {
  if (!items?.length) return null;
  return h('div', { class: cls }, h('span', { class: 'label' }, `${label}:`),
    h('ul', {}, items.map((item) => h('li', {}, item))));
}

function environment(env, plan) {
  const v = verdict(plan);
  return h('li', { class: 'env-detail' },
    h('div', { class: 'card-head' },
      h('strong', {}, env.name), ' ', h('span', { class: 'muted' }, `(${env.runtime})`), ' ',
      h('span', { class: `badge ${v.cls}` }, h('span', { class: 'sr-only' }, 'Here: '), v.text), ' '),
    env.description ? h('p', {}, env.description) : null,
    h('dl', { class: 'facts' },
      h('dt', {}, 'Requires'), h('dd', {}, resources(env.requires)),
      h('dt', {}, 'Recommends'), h('dd', {}, resources(env.recommends)),
      env.runs ? [h('dt', {}, 'Runs'), h('dd', {}, h('code', { class: 'runs' }, env.runs))] : null,
      plan?.plan ? [h('dt', {}, 'Would get here'), h('dd', {}, planText(plan.plan))] : null),
    bullets('Short of', plan?.shortfalls, 'shortfalls'),
    bullets('Notes', plan?.notes, 'notes'),
    bullets('What it may do here', plan?.plan?.allowed, 'allowed'));
}

export function detailsPanel(id, state) {
  const panel = h('div', { class: 'details', id });
  if (state.loading && !state.data) {
    panel.append(h('p', { role: 'status' }, 'Asking the peer…'));
    return panel;
  }
  if (state.error) panel.append(alertBox(state.error));
  const data = state.data;
  if (!data) return panel;
  const ws = data.workspace ?? {};
  const plans = new Map((data.plans ?? []).map((p) => [p.environment, p]));
  append(panel, [
    ws.description ? h('p', { class: 'desc' }, ws.description) : null,
    h('dl', { class: 'facts' },
      h('dt', {}, 'Version'), h('dd', {}, ws.version ?? '—'),
      h('dt', {}, 'Size'), h('dd', {},
        ws.archive ? `${bytes(ws.archive.size)} (unpacked ${bytes(ws.archive.unpacked_size)})` : '—'),
      ws.projects?.length
        ? [h('dt', {}, 'Projects'), h('dd', {}, ws.projects.map((p) => p.name).join(', '))] : null),
    h('h5', {}, 'Environments on this machine'),
    (ws.environments ?? []).length
      ? h('ul', { class: 'env-details' }, ws.environments.map((env) => environment(env, plans.get(env.name))))
      : h('p', { class: 'muted' }, 'No environments: it installs as files only.'),
    ws.setup?.length ? [
      h('h5', {}, 'Set up once, before its first launch'),
      h('ul', { class: 'setup-steps' }, ws.setup.map((s) => h('li', {},
        h('strong', {}, s.name),
        s.platforms.length ? h('span', { class: 'muted' }, ` (on ${s.platforms.join(', ')})`) : null,
        ' ', h('code', { class: 'runs' }, s.runs)))),
    ] : null,
  ]);
  return panel;
}
