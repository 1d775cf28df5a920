// The chat page: the conversation is kept here and sent whole with each question;
// the answer streams in (server-sent events from /v1/chat/completions).
const $ = (id) => document.getElementById(id);
const history = []; // {role, content}
let running = null; // the AbortController of the answer being written

function bubble(role, text) {
  const li = document.createElement('li');
  li.className = `msg ${role}`;
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = role === 'user' ? 'You' : 'Model';
  const body = document.createElement('div');
  body.className = 'text';
  body.textContent = text;
  li.append(who, body);
  $('messages').append(li);
  $('empty').hidden = true;
  li.scrollIntoView({ block: 'end' });
  return body;
}

function busy(on) {
  $('send').disabled = on;
  $('stop').hidden = !on;
  $('prompt').readOnly = on;
}

function showError(message) {
  $('error').hidden = !message;
  $('error').textContent = message ?? '';
}

async function ask(question) {
  showError(null);
  history.push({ role: 'user', content: question });
  bubble('user', question);
  const out = bubble('assistant', '');
  out.parentElement.classList.add('pending');
  running = new AbortController();
  busy(true);
  const started = performance.now();
  let tokens = 0;
  let text = '';
  try {
    const res = await fetch('/v1/chat/completions', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ messages: history, stream: true, max_tokens: 512 }),
      signal: running.signal,
    });
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      throw new Error(body.error?.message ?? `the server answered ${res.status}`);
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += value;
      const events = buffered.split('\n\n');
      buffered = events.pop();
      for (const event of events) {
        const data = event.replace(/^data: /, '');
        if (data === '[DONE]') continue;
        const delta = JSON.parse(data).choices?.[0]?.delta?.content;
        if (delta) {
          text += delta;
          tokens += 1;
          out.textContent = text;
        }
      }
      out.parentElement.scrollIntoView({ block: 'end' });
    }
  } catch (err) {
    if (err.name !== 'AbortError') showError(`No answer: ${err.message}`);
  } finally {
    out.parentElement.classList.remove('pending');
    if (!text) out.textContent = '(no answer)';
    history.push({ role: 'assistant', content: text });
    const seconds = (performance.now() - started) / 1000;
    $('stats').textContent = tokens ? `${tokens} tokens in ${seconds.toFixed(1)} s` : '';
    running = null;
    busy(false);
    $('prompt').focus();
  }
}

$('ask').addEventListener('submit', (event) => {
  event.preventDefault();
  const question = $('prompt').value.trim();
  if (!question || running) return;
  $('prompt').value = '';
  ask(question);
});
$('prompt').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey) {
    event.preventDefault();
    $('ask').requestSubmit();
  }
});
$('stop').addEventListener('click', () => running?.abort());
$('new-chat').addEventListener('click', () => {
  running?.abort();
  history.length = 0;
  $('messages').replaceChildren();
  $('empty').hidden = false;
  $('stats').textContent = '';
  showError(null);
  $('prompt').focus();
});

fetch('/v1/models').then((res) => res.json()).then((body) => {
  $('model').textContent = body.data?.[0]?.id ?? '';
}).catch(() => {});
$('prompt').focus();
