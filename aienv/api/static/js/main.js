// Page start-up: who we are (admin or not), fetching each resource, and the live stream's updates.
import { api, openStream, onLoopback } from './api.js';
import * as nodeView from './node.js';
import * as workspacesView from './workspaces.js';
import * as networkView from './network.js';
import * as clonesView from './clones.js';
import * as environmentsView from './environments.js';
import * as eventsView from './events.js';
import * as machineView from './machine.js';
import * as groupView from './group.js';
import * as views from './views.js';


// Each resource: where it comes from, whether it needs the admin role, and who shows it.
const RESOURCES = {
  node: { path: '/node', section: 'node', show: (d) => { nodeView.showNode(d); networkView.rerender(); } },
  system: { path: '/system?full=false', section: 'node', show: (d) => { nodeView.showSystem(d); networkView.rerender(); } },
  machine: { path: '/system', section: 'machine', admin: true, show: (d) => machineView.showInventory(d) },
  changes: { path: '/system/changes?limit=30', section: 'machine', admin: true, show: (d) => machineView.showChanges(d) },
  workspaces: { path: '/workspaces', section: 'workspaces', show: (d) => workspacesView.show(d.workspaces) },
  templates: { path: '/templates', section: 'workspaces', admin: true, show: (d) => workspacesView.showTemplates(d.templates) },
  peers: { path: '/peers', section: 'network', show: (d) => { networkView.show(d.peers); groupView.showPeers(d.peers); } },
  group: { path: '/group', section: 'group', admin: true, show: (d) => groupView.showGroup(d) },
  groupEnvironments: { path: '/group/environments', section: 'group', admin: true, show: (d) => groupView.showEnvironments(d.environments) },
  clones: { path: '/clones', section: 'clones', admin: true, show: (d) => clonesView.show(d.clones) },
  environments: {
    path: '/environments', section: 'environments', admin: true,
    show: (d) => {
      environmentsView.show(d.environments);
      clonesView.environments(d.environments);
      views.setCount('running', (d.environments ?? []).filter((e) => e.state === 'running').length);
    },
  },
  events: { path: '/events', section: 'events', admin: true, show: (d) => eventsView.show(d.events) },
};

// What to refetch for each kind of change the stream reports.
const ON_CHANGE = {
  workspace: ['workspaces'],
  share: ['workspaces'],
  archive: ['workspaces'],
  peer: ['peers', 'group'],
  member: ['group', 'groupEnvironments'],
  placement: ['groupEnvironments'],
  manual_peer: ['peers'],
  clone: ['clones'],
  environment: ['environments', 'workspaces', 'groupEnvironments'],
  event: ['events'],
  node: ['node', 'system'],
  system: ['machine', 'changes'],
};

const ctx = { admin: false, refresh, refreshAll };
const timers = {};
const running = {};
const again = {};

function allowed(name) {
  const resource = RESOURCES[name];
  return resource && (!resource.admin || ctx.admin);
}

/** Refetch one resource soon; a burst of calls costs one fetch. */
function refresh(name, delay = 150) {
  if (!allowed(name)) return;
  clearTimeout(timers[name]);
  timers[name] = setTimeout(() => fetchNow(name), delay);
}

function refreshAll(delay = 0) {
  for (const name of Object.keys(RESOURCES)) refresh(name, delay);
}

function sectionError(section, message) {
  const el = document.getElementById(`${section}-error`);
  if (!el) return;
  el.textContent = message ?? '';
  el.hidden = !message;
}

async function fetchNow(name) {
  if (running[name]) {
    again[name] = true;
    return;
  }
  running[name] = true;
  const resource = RESOURCES[name];
  try {
    const data = await api(resource.path);
    sectionError(resource.section, null);
    resource.show(data);
  } catch (err) {
    // An unreachable node is shown by the connection state; anything else here.
    if (err.status) sectionError(resource.section, err.message);
    else console.warn(`aienv: ${name}: ${err.message}`);
  } finally {
    running[name] = false;
    if (again[name]) {
      again[name] = false;
      fetchNow(name);
    }
  }
}

function setAdmin(admin) {
  ctx.admin = admin;
  document.body.classList.toggle('admin', admin);
  document.body.classList.toggle('guest', !admin);
  const title = admin ? 'My workspaces' : 'Shared workspaces';
  document.getElementById('workspaces-h').textContent = title;
  document.getElementById('nav-workspaces').textContent = title;
}

async function start() {
  for (const view of [nodeView, machineView, workspacesView, networkView, clonesView, environmentsView, eventsView, groupView]) {
    view.init(ctx);
  }
  let node = null;
  while (node === null) {
    try {
      node = await api('/node');
    } catch (err) {
      nodeView.setLive(false);
      sectionError('node', err.status ? err.message : null);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
  setAdmin(node.admin ?? onLoopback());
  ctx.nodeId = node.id;
  nodeView.showNode(node);
  views.init(ctx.admin ? 'discover' : 'mine');
  document.body.classList.remove('loading');
  refreshAll();
  openStream({
    status: (live) => nodeView.setLive(live),
    hello: (data) => { if (data.resync) refreshAll(); },
    change: (data) => { for (const name of ON_CHANGE[data.kind] ?? []) refresh(name); },
    progress: (data) => { if (ctx.admin) clonesView.progress(data.clones ?? []); },
  });
}

start();
