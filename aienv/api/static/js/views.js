// The page's views (Discover, Running, My workspaces, Activity, This node): one shown at
// a time, chosen by the URL's fragment so back, forward and reload keep the place.
// "#discover?q=jupyter&group=tool" also keeps a view's own state (its search); an old
// section link ("#clones") opens the view that holds the section and scrolls to it.

const VIEWS = ['discover', 'running', 'mine', 'activity', 'node'];

let fallback = 'discover';
let current = null;
const listeners = [];

function parse() {
  const [place, query = ''] = decodeURIComponent(location.hash.slice(1)).split('?');
  const params = new URLSearchParams(query);
  if (VIEWS.includes(place)) return { view: place, section: null, params };
  const section = place ? document.getElementById(place)?.closest('section[data-view]') : null;
  if (section && allowed(section)) return { view: section.dataset.view, section, params };
  return { view: fallback, section: null, params };
}

function allowed(el) {
  return !el.hasAttribute('data-admin') || document.body.classList.contains('admin');
}

function apply(moveFocus) {
  const { view, section, params } = parse();
  const changed = view !== current;
  current = view;
  for (const el of document.querySelectorAll('main > section[data-view]')) {
    el.hidden = el.dataset.view !== view;
  }
  let title = view;
  for (const link of document.querySelectorAll('nav a[data-view]')) {
    if (link.dataset.view === view) {
      link.setAttribute('aria-current', 'page');
      title = link.firstChild.textContent.trim();
    } else {
      link.removeAttribute('aria-current');
    }
  }
  document.title = `${title} · ${document.body.dataset.node ?? 'aienv'}`;
  if (section) section.scrollIntoView();
  else if (changed) window.scrollTo(0, 0);
  if (changed && moveFocus) {
    const heading = document.querySelector(`main > section[data-view="${view}"]:not([hidden]) h2`);
    heading?.focus({ preventScroll: true });
  }
  for (const listener of listeners) listener(view, params);
}

/** Start following the fragment; ``home`` is the view an empty or unknown one opens. */
export function init(home) {
  fallback = home;
  window.addEventListener('hashchange', () => apply(true));
  apply(false);
}

/** Call ``fn(view, params)`` now and whenever the place changes. */
export function follow(fn) {
  listeners.push(fn);
  if (current) fn(current, parse().params);
}

/** Keep a view's own state in the URL without a new history entry per keystroke. */
export function setParams(view, params) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v)).toString();
  const hash = `#${view}${query ? `?${query}` : ''}`;
  if (location.hash !== hash) history.replaceState(null, '', hash);
}

export function go(view) {
  if (current !== view) location.hash = `#${view}`;
}

/** A count beside a view's tab ("Running 2"), hidden at zero. */
export function setCount(view, n) {
  const el = document.getElementById(`${view}-count`);
  if (!el) return;
  el.textContent = n ? String(n) : '';
  el.hidden = !n;
}
