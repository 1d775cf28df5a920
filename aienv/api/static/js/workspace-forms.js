// The forms around "My workspaces": create, import a ZIP, and the edit and delete dialogs.
import { api, enc } from './api.js';
import { h, fillSelect, openDialog, closeDialog, restoreFocusOnClose, setAlert } from './dom.js';

let onSaved; // called with a workspace object after create/import/edit
let onDeleted; // called with a name

/** Run a form's submit with its button busy (focus kept) and errors shown in errorEl. */
async function submitting(button, busyText, errorEl, work) {
  if (button.getAttribute('aria-disabled') === 'true') return;
  const text = button.textContent;
  button.setAttribute('aria-disabled', 'true');
  button.setAttribute('aria-busy', 'true');
  button.textContent = busyText;
  setAlert(errorEl, null);
  try {
    await work();
  } catch (err) {
    setAlert(errorEl, err.message);
  } finally {
    button.textContent = text;
    button.removeAttribute('aria-disabled');
    button.removeAttribute('aria-busy');
  }
}

/** A workspace name from a file name: "My Project-1.0.zip" → "my-project-1-0". */
function nameFromFile(fileName) {
  return fileName.replace(/\.zip$/i, '').toLowerCase().replace(/[^a-z0-9_-]+/g, '-')
    .replace(/^[-_]+|[-]+$/g, '').slice(0, 63);
}

export function init(saved, deleted) {
  onSaved = saved;
  onDeleted = deleted;

  const create = document.getElementById('create-form');
  create.addEventListener('submit', (event) => {
    event.preventDefault();
    const name = create.elements.name.value.trim();
    const from = create.elements.from.value.trim();
    const template = create.elements.template.value;
    const body = from ? { name, from } : template ? { name, template } : { name };
    showDraft(null);
    submitting(create.querySelector('button[type=submit]'), 'Creating…',
      document.getElementById('create-error'), async () => {
        try {
          created(await api('/workspaces', { method: 'POST', json: body }));
        } catch (err) {
          if (err.code !== 'no_manifest') throw err;
          // a project folder: what aienv would make of its files, written on the person's word
          showDraft(await api('/workspaces/draft', { method: 'POST', json: { name, from } }), body);
        }
      });
  });
  create.elements.from.addEventListener('input', () => showDraft(null));

  const imp = document.getElementById('import-form');
  imp.elements.file.addEventListener('change', () => {
    const file = imp.elements.file.files[0];
    if (file && !imp.elements.name.value.trim()) imp.elements.name.value = nameFromFile(file.name);
  });
  imp.addEventListener('submit', (event) => {
    event.preventDefault();
    const name = imp.elements.name.value.trim();
    const file = imp.elements.file.files[0];
    const errorEl = document.getElementById('import-error');
    if (!file) {
      setAlert(errorEl, 'Choose a ZIP file to import (a workspace exported by aienv).');
      return;
    }
    submitting(imp.querySelector('button[type=submit]'), 'Importing…', errorEl, async () => {
      const ws = await api(`/workspaces/import?name=${enc(name)}&file=${enc(file.name)}`, {
        method: 'POST', body: file, contentType: 'application/zip',
      });
      imp.reset();
      onSaved(ws);
    });
  });

  const edit = document.getElementById('edit-dialog');
  restoreFocusOnClose(edit);
  edit.querySelector('form').addEventListener('submit', (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const name = edit.dataset.name;
    const tags = form.elements.tags.value.split(',').map((t) => t.trim()).filter(Boolean);
    const body = { description: form.elements.description.value, tags };
    submitting(form.querySelector('button[type=submit]'), 'Saving…',
      document.getElementById('edit-error'), async () => {
        const ws = await api(`/workspaces/${enc(name)}`, { method: 'PATCH', json: body });
        closeDialog(edit);
        onSaved(ws);
      });
  });
  edit.querySelector('[data-close]').addEventListener('click', () => closeDialog(edit));
  // Closed, the dialog holds no fields: their labels never clash with the page's own.
  edit.addEventListener('close', () => document.getElementById('edit-fields').replaceChildren());

  const del = document.getElementById('delete-dialog');
  restoreFocusOnClose(del);
  del.querySelector('[data-confirm]').addEventListener('click', (event) => {
    const name = del.dataset.name;
    submitting(event.currentTarget, 'Deleting…', document.getElementById('delete-error'), async () => {
      await api(`/workspaces/${enc(name)}`, { method: 'DELETE' });
      del.returnTo = null;
      closeDialog(del);
      onDeleted(name);
      document.getElementById('workspaces-h').focus();
    });
  });
  del.querySelector('[data-close]').addEventListener('click', () => closeDialog(del));
}

function created(ws) {
  document.getElementById('create-form').reset();
  showDraft(null);
  onSaved(ws);
}

/** The workspace.yaml drafted from a folder's files, what was found and what to check,
 * and the button that writes it; null hides it. */
function showDraft(draft, body) {
  const box = document.getElementById('create-draft');
  box.hidden = !draft;
  if (!draft) {
    box.replaceChildren();
    return;
  }
  const error = h('p', { class: 'alert', role: 'alert', hidden: true });
  const write = h('button', { type: 'button', class: 'btn primary' }, `Create ${draft.name} from this draft`);
  write.addEventListener('click', () => submitting(write, 'Creating…', error, async () => {
    created(await api('/workspaces', { method: 'POST', json: { ...body, draft: true } }));
  }));
  box.replaceChildren(
    h('h4', { tabindex: '-1' }, 'No workspace.yaml there: drafted from its files'),
    h('ul', { 'aria-label': 'Found' }, draft.found.map((line) => h('li', {}, line))),
    h('pre', { class: 'logs', tabindex: '0', 'aria-label': 'The drafted workspace.yaml' }, draft.yaml),
    draft.todo.length ? h('p', { class: 'muted' }, 'To check:') : null,
    draft.todo.length ? h('ul', { 'aria-label': 'To check' }, draft.todo.map((line) => h('li', {}, line))) : null,
    h('div', { class: 'actions' }, write,
      h('button', { type: 'button', class: 'btn', onclick: () => showDraft(null) }, 'Cancel')),
    error);
  box.querySelector('h4').focus();
}

export function showTemplates(templates) {
  const select = document.getElementById('create-template');
  const before = select.value;
  fillSelect(select, templates ?? []);
  if (!before && (templates ?? []).includes('hello-web')) select.value = 'hello-web'; // the API's default
}

export function openEdit(ws) {
  const dialog = document.getElementById('edit-dialog');
  dialog.dataset.name = ws.name;
  document.getElementById('edit-h').textContent = `Edit ${ws.name}`;
  const form = dialog.querySelector('form');
  document.getElementById('edit-fields').replaceChildren(
    h('div', { class: 'field' },
      h('label', { for: 'edit-description' }, 'Description'),
      h('textarea', { id: 'edit-description', name: 'description', rows: '4', maxlength: '4096' })),
    h('div', { class: 'field' },
      h('label', { for: 'edit-tags' }, 'Tags'),
      h('input', {
        id: 'edit-tags', name: 'tags', autocomplete: 'off', spellcheck: 'false',
        'aria-describedby': 'tags-hint',
      }),
      h('p', { id: 'tags-hint', class: 'hint' }, 'Comma separated, e.g. demo, python.')));
  form.elements.description.value = ws.description ?? '';
  form.elements.tags.value = (ws.tags ?? []).join(', ');
  setAlert(document.getElementById('edit-error'), null);
  openDialog(dialog, `Edit ${ws.name}`);
  form.elements.description.focus();
}

export function openDelete(ws) {
  const dialog = document.getElementById('delete-dialog');
  dialog.dataset.name = ws.name;
  document.getElementById('delete-h').textContent = `Delete ${ws.name}?`;
  document.getElementById('delete-text').textContent =
    `The workspace ${ws.name} and all its files will be removed from this node. This cannot be undone.`;
  setAlert(document.getElementById('delete-error'), null);
  openDialog(dialog, `Delete ${ws.name}`);
  dialog.querySelector('[data-close]').focus();
}

