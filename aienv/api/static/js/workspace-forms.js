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
    submitting(create.querySelector('button[type=submit]'), 'Creating…',
      document.getElementById('create-error'), async () => {
        const ws = await api('/workspaces', { method: 'POST', json: body });
        create.reset();
        onSaved(ws);
      });
  });

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

export function showTemplates(templates) {
  fillSelect(document.getElementById('create-template'), templates ?? []);
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

