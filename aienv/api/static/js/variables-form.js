// The values a launch needs that this node does not hold yet (a 422 variable_missing,
// or a clone installed with `needs`): one field per variable, a secret as a password
// field. The values go to the node with the launch and stay there; typed values
// survive the page's re-renders in `drafts`.
import { api, enc } from './api.js';
import { h } from './dom.js';

const drafts = new Map(); // `${workspace}/${name}` → what was typed

/** The variables of `workspace` that `names` lists, with their descriptions. */
export async function describe(workspace, names) {
  const all = (await api(`/workspaces/${enc(workspace)}/variables`)).variables;
  const wanted = new Set(names);
  return all.filter((v) => wanted.has(v.name));
}

/** Launch `environment` of `workspace` with `values` held first; the environment. */
export function launchWith(workspace, environment, values, force = false) {
  return api('/environments', {
    method: 'POST', json: { workspace, environment, force, variables: values },
  });
}

/** A form asking for `variables` ([{name, description, secret}]); `onSubmit(values)`. */
export function variablesForm({ workspace, variables, onSubmit, busy = false }) {
  const slug = (name) => `var-${workspace}-${name}`.replace(/[^a-zA-Z0-9_-]/g, '-');
  const fields = variables.map((v) => {
    const key = `${workspace}/${v.name}`;
    const hint = `${slug(v.name)}-hint`;
    return h('div', { class: 'field' },
      h('label', { for: slug(v.name) }, v.name),
      v.description ? h('span', { id: hint, class: 'muted' }, v.description) : null,
      h('input', {
        id: slug(v.name), name: v.name, type: v.secret ? 'password' : 'text', required: true,
        autocomplete: 'off', spellcheck: 'false', value: drafts.get(key) ?? '',
        'aria-describedby': v.description ? hint : null,
        oninput: (event) => drafts.set(key, event.target.value),
      }));
  });
  return h('form', {
    class: 'form variables', 'aria-label': `Values for ${workspace}`,
    onsubmit: (event) => {
      event.preventDefault();
      if (busy) return;
      const values = Object.fromEntries(variables.map((v) => [v.name, drafts.get(`${workspace}/${v.name}`) ?? '']));
      onSubmit(values);
    },
  },
  h('p', {}, `${workspace} needs ${variables.length === 1 ? 'a value' : 'values'} this node does not hold yet. `,
    'They are kept on this node only: never shared, announced or exported.'),
  fields,
  h('button', { type: 'submit', class: 'btn primary', 'aria-busy': busy ? 'true' : null },
    busy ? 'Launching…' : 'Save and launch'));
}

/** Forget what was typed for `workspace` (after a launch took it). */
export function forget(workspace) {
  for (const key of [...drafts.keys()]) if (key.startsWith(`${workspace}/`)) drafts.delete(key);
}
