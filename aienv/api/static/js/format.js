// Human-readable sizes, rates, durations, ETAs and times.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function bytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  let value = Number(n);
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

export function rate(n) {
  return n ? `${bytes(n)}/s` : '—';
}

export function eta(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '—';
  if (seconds < 60) return `${Math.max(0, Math.ceil(seconds))} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds ?? 0));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** A Unix timestamp (seconds) as local date and time. */
export function time(ts) {
  if (!ts) return '—';
  return new Date(ts * 1000).toLocaleString(undefined, {
    month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
}

export function shortId(id) {
  return (id ?? '').slice(0, 12);
}

export function cpus(n) {
  if (n === null || n === undefined) return '—';
  const value = Number.isInteger(n) ? n : Number(n).toFixed(1);
  return `${value} CPU${Number(n) === 1 ? '' : 's'}`;
}

export function list(values, empty = '—') {
  return values && values.length ? values.join(', ') : empty;
}

export function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** An environment plan in one line: CPUs, memory, GPU yes/no, accelerator. */
export function planText(plan) {
  if (!plan) return '—';
  const parts = [];
  parts.push(plan.cpus === null || plan.cpus === undefined ? 'all CPUs' : cpus(plan.cpus));
  parts.push(plan.memory === null || plan.memory === undefined
    ? 'no memory limit' : `${bytes(plan.memory)} memory`);
  parts.push(plan.gpu?.use ? 'GPU: yes' : 'GPU: no');
  if (plan.accel) parts.push(`accel: ${plan.accel}`);
  return parts.join(' · ');
}
