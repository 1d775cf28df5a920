// The terminal of a running environment, in a dialog: xterm.js (window.Terminal, loaded
// by index.html from what install.sh fetched) over the node's WebSocket. Binary frames
// carry the shell's bytes both ways; text frames the window size and, last, its end.
import { enc } from './api.js';
import { openDialog, closeDialog, restoreFocusOnClose, setAlert } from './dom.js';

let dialog;
let session = null; // {term, socket, fit, onResize}

export function init() {
  dialog = document.getElementById('terminal-dialog');
  restoreFocusOnClose(dialog);
  dialog.querySelector('[data-close]').addEventListener('click', () => closeDialog(dialog));
  dialog.addEventListener('close', end);
}

/** Whether this page can show a terminal (xterm.js was installed and loaded). */
export function available() {
  return typeof window.Terminal === 'function';
}

const WHAT = {
  vm: (id) => `The serial console of ${id}: what its guest runs there. Output also goes to its logs.`,
  container: (id) => `A shell in ${id}'s container, with its variables.`,
};

export function open(envId, runtime) {
  end();
  document.getElementById('terminal-h').textContent = `Terminal of ${envId}`;
  const status = document.getElementById('terminal-status');
  const error = document.getElementById('terminal-error');
  const screen = document.getElementById('terminal-screen');
  setAlert(error, null);
  screen.replaceChildren();
  openDialog(dialog, `Terminal of ${envId}`);
  if (!available()) {
    setAlert(error, 'The terminal needs xterm.js, which install.sh installs: run it again on this node.');
    return;
  }
  const term = new window.Terminal({ cursorBlink: true, fontSize: 14, convertEol: false });
  const fit = window.FitAddon ? new window.FitAddon.FitAddon() : null;
  if (fit) term.loadAddon(fit);
  term.open(screen);
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const socket = new WebSocket(`${scheme}://${location.host}/api/v1/environments/${enc(envId)}/terminal`);
  socket.binaryType = 'arraybuffer';
  const encoder = new TextEncoder();
  const size = () => {
    fit?.fit();
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ resize: [term.cols, term.rows] }));
  };
  status.textContent = 'Connecting…';
  socket.addEventListener('open', () => {
    status.textContent = (WHAT[runtime] ?? ((id) => `A shell in ${id}: its folder, its variables, its sandbox.`))(envId);
    size();
    term.focus();
  });
  socket.addEventListener('message', (event) => {
    if (typeof event.data === 'string') {
      const ended = JSON.parse(event.data);
      status.textContent = `Ended: ${ended.reason}${ended.exit != null ? ` (exit code ${ended.exit})` : ''}.`;
    } else {
      term.write(new Uint8Array(event.data));
    }
  });
  socket.addEventListener('close', () => {
    if (status.textContent === 'Connecting…') setAlert(error, `The node refused a terminal in ${envId}: is it running?`);
  });
  term.onData((data) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
  });
  const onResize = () => size();
  window.addEventListener('resize', onResize);
  session = { term, socket, onResize };
}

function end() {
  if (!session) return;
  window.removeEventListener('resize', session.onResize);
  session.socket.close();
  session.term.dispose();
  session = null;
}
