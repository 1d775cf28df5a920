// Tiny DOM helpers: build elements, update keyed lists in place, keep focus across re-renders.

/** Build an element: h('button', {class: 'x', 'aria-label': 'Go', onclick: fn}, 'text', child…). */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name === 'text') el.textContent = value;
    else if (name === 'value') el.value = value;
    else if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

/** Append children, skipping null/false and flattening arrays; strings become text. */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A visible error, announced to screen readers, with the controls that help (after it). */
export function alertBox(message, extra = []) {
  const helpers = [extra].flat().filter(Boolean);
  return h('div', { class: 'error-block' },
    h('p', { class: 'alert', role: 'alert' }, message),
    helpers.length ? h('div', { class: 'actions' }, helpers) : null);
}

/** Show or clear a message in an existing role="alert" element. */
export function setAlert(el, message) {
  el.textContent = message ?? '';
  el.hidden = !message;
}

/** What identifies the focused element inside root, to find its twin after a re-render. */
function focusKey(root) {
  const el = document.activeElement;
  if (!el || el === document.body || !root.contains(el)) return null;
  return el.getAttribute('aria-label') || el.id || el.getAttribute('name') || null;
}

function refocus(root, key) {
  if (!key || root.contains(document.activeElement)) return;
  const esc = CSS.escape(key);
  const twin = root.querySelector(`[aria-label="${esc}"], #${esc}, [name="${esc}"]`);
  twin?.focus({ preventScroll: true });
}

/**
 * Make container's children match items, in order. A row is rebuilt with render(item)
 * only when sig(item) changed; focus inside a rebuilt row moves to its twin.
 */
export function keyed(container, items, keyOf, render, sig = (item) => JSON.stringify(item)) {
  const focus = focusKey(container);
  const old = new Map();
  for (const el of container.children) if (el.dataset.key !== undefined) old.set(el.dataset.key, el);
  items.forEach((item, index) => {
    const key = String(keyOf(item));
    const signature = sig(item);
    let el = old.get(key);
    old.delete(key);
    if (!el || el._sig !== signature) {
      const fresh = render(item);
      fresh.dataset.key = key;
      fresh._sig = signature;
      if (el) el.replaceWith(fresh);
      el = fresh;
    }
    if (container.children[index] !== el) container.insertBefore(el, container.children[index] ?? null);
  });
  for (const el of old.values()) el.remove();
  refocus(container, focus);
}

/** Fill a <select> with options, keeping the current choice (even if no longer offered). */
export function fillSelect(select, values, anyLabel) {
  const current = select.value;
  const wanted = [...new Set(values)].sort((a, b) => a.localeCompare(b));
  if (current && !wanted.includes(current)) wanted.unshift(current);
  const signature = JSON.stringify(wanted);
  if (select._sig === signature) return;
  select._sig = signature;
  const options = wanted.map((v) => h('option', { value: v }, v));
  if (anyLabel !== undefined) options.unshift(h('option', { value: '' }, anyLabel));
  select.replaceChildren(...options);
  select.value = current && wanted.includes(current) ? current : (anyLabel !== undefined ? '' : wanted[0] ?? '');
}

/** Open a modal dialog; on close, give focus back to the control named opener (if still there). */
export function openDialog(dialog, openerName) {
  dialog.returnTo = openerName;
  if (!dialog.open) dialog.showModal();
}

export function closeDialog(dialog) {
  if (dialog.open) dialog.close();
}

export function restoreFocusOnClose(dialog) {
  dialog.addEventListener('close', () => {
    const name = dialog.returnTo;
    if (!name) return;
    const el = document.querySelector(`[aria-label="${CSS.escape(name)}"]`);
    el?.focus();
  });
}

/** Remember per-row UI state (busy actions, errors) that a re-render must keep. */
export class RowState {
  constructor() { this.rows = new Map(); }
  get(key) {
    if (!this.rows.has(key)) this.rows.set(key, { busy: new Set(), error: null, extra: {} });
    return this.rows.get(key);
  }
  sig(key) {
    const s = this.rows.get(key);
    return s ? JSON.stringify([[...s.busy], s.error, s.extra]) : '';
  }
}

/** A button that shows busyLabel while busy and ignores clicks then (focus stays on it). */
export function actionButton({ label, text, busyText, busy = false, onclick, cls = '' }) {
  return h('button', {
    type: 'button',
    class: `btn ${cls}`.trim(),
    'aria-label': label,
    'aria-busy': busy ? 'true' : null,
    'aria-disabled': busy ? 'true' : null,
    onclick: (event) => {
      if (event.currentTarget.getAttribute('aria-disabled') === 'true') return;
      onclick(event);
    },
  }, busy ? busyText ?? `${text}…` : text);
}
