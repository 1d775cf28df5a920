// The node's JSON API (/api/v1): a fetch wrapper with readable errors, and the live event stream.

export class ApiError extends Error {
  constructor(status, code, message, body = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

/**
 * Call the API. json: a body sent as JSON; body: a raw body (with contentType).
 * Returns the parsed JSON (or text with {text: true}); throws ApiError with the node's message.
 */
export async function api(path, { method = 'GET', json, body, contentType, text = false } = {}) {
  const init = { method, headers: { Accept: text ? 'text/plain' : 'application/json' } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers['Content-Type'] = 'application/json';
  } else if (body !== undefined) {
    init.body = body;
    if (contentType) init.headers['Content-Type'] = contentType;
  }
  let resp;
  // a read is tried once more when the request was lost on the way (the browser drops
  // what is in flight when the machine's network changes); an action is never repeated
  for (let tries = method === 'GET' ? 2 : 1; ; tries -= 1) {
    try {
      resp = await fetch(`/api/v1${path}`, init);
      break;
    } catch {
      if (tries <= 1) {
        throw new ApiError(0, 'unreachable',
          'The node did not answer. Check that aienv serve is running; this page reconnects by itself.');
      }
      await new Promise((resolve) => { setTimeout(resolve, 300); });
    }
  }
  if (!resp.ok) {
    let data = null;
    try { data = await resp.json(); } catch { /* not JSON: use the status below */ }
    const err = data?.error;
    throw new ApiError(resp.status, err?.code ?? 'http_error',
      err?.message ?? `The node answered HTTP ${resp.status} to ${method} ${path}.`, data);
  }
  if (text) return resp.text();
  if (resp.status === 204) return null;
  return resp.json();
}

export const enc = encodeURIComponent;

/** True when this page was opened on the node's own machine (a loopback address). */
export function onLoopback() {
  return /^(localhost|127(\.\d+){3}|\[::1\]|::1)$/i.test(location.hostname);
}

/**
 * Follow GET /api/v1/stream. Handlers: hello(data), change(data), progress(data), status(live: bool).
 * EventSource retries by itself while the node is down; if it gives up (CLOSED), a new one is
 * opened after a back-off growing from 1 s to 5 s.
 */
export function openStream(handlers) {
  let source = null;
  let backoff = 1000;
  let timer = null;

  const parse = (event) => {
    try { return JSON.parse(event.data); } catch { return null; }
  };

  const connect = () => {
    timer = null;
    source = new EventSource('/api/v1/stream');
    source.addEventListener('hello', (event) => {
      const data = parse(event);
      backoff = 1000;
      handlers.status(true);
      if (data) handlers.hello(data);
    });
    source.addEventListener('change', (event) => {
      const data = parse(event);
      if (data) handlers.change(data);
    });
    source.addEventListener('progress', (event) => {
      const data = parse(event);
      if (data) handlers.progress(data);
    });
    source.addEventListener('error', () => {
      handlers.status(false);
      if (source.readyState === EventSource.CLOSED && timer === null) {
        source.close();
        timer = setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, 5000);
      }
    });
  };

  connect();
  return {
    close() {
      clearTimeout(timer);
      source?.close();
    },
  };
}
