// Whether a peer's workspace fits this machine, from what the peer announces it needs
// (its first environment's runtime, CPUs, memory, GPU) and this node's own summary.
// A quick answer for the Discover cards; Details asks the peer for the real plan.
import { bytes, cpus } from './format.js';

/** {text, cls, why} or null when the peer does not say what the workspace needs. */
export function fitHere(ws, { node, system }) {
  const needs = ws.needs;
  if (!needs) return ws.runtimes?.length ? null : { text: 'files only', cls: '', why: 'It installs as files.' };
  if (!node || !system) return null;
  const runtime = node.runtimes?.[needs.runtime];
  if (!runtime?.available) {
    return { text: `no ${needs.runtime} here`, cls: 'bad', why: runtime?.reason ?? `This node has no ${needs.runtime} runtime.` };
  }
  if (needs.gpu && !system.gpus?.length) return { text: 'needs a GPU', cls: 'bad', why: 'This machine has no GPU.' };
  const free = system.memory?.available;
  if (needs.memory && free !== undefined && free < needs.memory) {
    return { text: `needs ${bytes(needs.memory)}`, cls: 'bad', why: `${bytes(free)} of memory is free here.` };
  }
  const usable = system.cpu?.usable;
  if (needs.cpus && usable !== undefined && usable < needs.cpus) {
    return { text: `needs ${cpus(needs.cpus)}`, cls: 'bad', why: `This machine has ${cpus(usable)}.` };
  }
  const parts = [needs.runtime];
  if (needs.cpus) parts.push(cpus(needs.cpus));
  if (needs.memory) parts.push(`${bytes(needs.memory)} memory`);
  if (needs.gpu) parts.push('a GPU');
  return { text: 'fits here', cls: 'ok', why: `Needs ${parts.join(', ')}.` };
}
