// The demo page's script: the panel that asks every worker at once, the
// live feed of changes, and the counter and logout buttons without a page
// reload (a reload would drop the feed's connection, and the events sent
// meanwhile). Everything it shows goes in with textContent, never as
// markup, so no user name or answer can inject any.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const workers = Number(document.body.dataset.workers) || 1;
  const myKey = document.body.dataset.key || '';

  // ---- Every worker at once ----

  // Each round sends one request per worker, all at once. The server
  // closes each connection after its answer, so every request is a new
  // connection that the kernel may give to any worker; rounds go on until
  // every worker has answered, or maxRounds.
  const maxRounds = 4;
  const table = $('workers');
  const summary = $('summary');
  const ask = $('ask');
  let rounds = 0;
  let queue = Promise.resolve();

  async function askOne() {
    const t0 = performance.now();
    const r = await fetch('/api/state', { cache: 'no-store' });
    if (!r.ok) throw new Error('status ' + r.status);
    const s = await r.json();
    s.ms = performance.now() - t0;
    return s;
  }

  async function askAll() {
    const seen = new Map(); // worker number -> its first answer
    let failed = 0;
    for (let i = 0; i < maxRounds && seen.size < workers; i++) {
      const got = await Promise.allSettled(Array.from({ length: workers }, askOne));
      for (const g of got) {
        if (g.status !== 'fulfilled') failed++;
        else if (!seen.has(g.value.worker)) seen.set(g.value.worker, g.value);
      }
    }
    return { seen, failed };
  }

  function cell(tr, text, cls) {
    const td = tr.insertCell();
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function uptime(ms) {
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min';
    return Math.floor(s / 3600) + ' h';
  }

  function render({ seen, failed }) {
    const body = table.tBodies[0];
    body.replaceChildren();
    for (let n = 1; n <= workers; n++) {
      const tr = body.insertRow();
      cell(tr, String(n));
      const s = seen.get(n);
      if (!s) {
        tr.className = 'missing';
        cell(tr, 'not reached this time').colSpan = 5;
        continue;
      }
      cell(tr, String(s.pid));
      cell(tr, uptime(s.up_ms));
      if (s.user) cell(tr, s.user);
      else cell(tr, 'anonymous', 'anon');
      cell(tr, String(s.count));
      cell(tr, Math.round(s.ms) + ' ms');
    }

    const answers = [...seen.values()];
    const views = new Set(answers.map((s) => JSON.stringify([s.user, s.count])));
    let text = answers.length + ' of ' + workers + ' workers answered';
    summary.className = 'summary';
    if (answers.length === 0) {
      text = 'No worker answered.';
    } else if (views.size > 1) {
      text += ', and they disagree.';
      summary.classList.add('disagree');
    } else if (answers[0].user) {
      text += ': every one reads ' + answers[0].user + ', counter ' + answers[0].count + '.';
      summary.classList.add('agree');
      const count = $('count');
      if (count && !$('controls').hidden) count.textContent = String(answers[0].count);
    } else {
      text += ': to every one this browser is anonymous.';
      summary.classList.add('agree');
    }
    if (failed) text += ' (' + failed + ' request' + (failed > 1 ? 's' : '') + ' failed.)';
    summary.textContent = text;
  }

  // refresh asks every worker and shows the answers. Calls queue up, so
  // two refreshes never interleave their rows.
  function refresh() {
    queue = queue.then(async () => {
      ask.disabled = true;
      table.setAttribute('aria-busy', 'true');
      try {
        render(await askAll());
      } finally {
        table.dataset.round = String(++rounds);
        table.removeAttribute('aria-busy');
        ask.disabled = false;
      }
    });
    return queue;
  }

  ask.addEventListener('click', refresh);
  refresh();

  // ---- The session's buttons ----

  // ended shows that the session is over, whoever ended it.
  function ended(why) {
    const notice = $('ended');
    if (!notice || !notice.hidden) return;
    $('controls').hidden = true;
    $('ended-why').textContent = why;
    notice.hidden = false;
  }

  // post sends a form's POST without leaving the page. The server answers
  // a success with a redirect (for browsers without this script), which
  // fetch reports as an opaque redirect; anything else is shown by
  // reloading the page, which renders the server's answer.
  async function post(form) {
    const buttons = form.querySelectorAll('button');
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const r = await fetch(form.action, { method: 'POST', redirect: 'manual' });
      if (r.type !== 'opaqueredirect') {
        location.reload();
        return false;
      }
      return true;
    } catch (err) {
      summary.textContent = 'The request did not reach the demo (' + err.message + ').';
      return false;
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  const countForm = $('count-form');
  if (countForm) {
    countForm.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (await post(countForm)) await refresh();
    });
  }
  // loggingOut tells the feed's report of the deletion, which may arrive
  // before the logout's own answer, that this tab did it.
  let loggingOut = false;
  const logoutForm = $('logout-form');
  if (logoutForm) {
    logoutForm.addEventListener('submit', async (e) => {
      e.preventDefault();
      loggingOut = true;
      const ok = await post(logoutForm);
      loggingOut = false;
      if (!ok) return;
      ended('You logged out.');
      await refresh();
    });
  }

  // ---- Changes, live ----

  const list = $('events');
  const status = $('feed-status');
  const maxItems = 30;

  function span(cls, text) {
    const el = document.createElement('span');
    el.className = cls;
    el.textContent = text;
    return el;
  }

  function show(c) {
    const li = document.createElement('li');
    const mine = myKey !== '' && c.key === myKey;
    li.className = c.kind + (mine ? ' mine' : '');
    const time = document.createElement('time');
    time.textContent = c.time;
    const key = document.createElement('code');
    key.textContent = c.key || 'some changes were missed';
    li.append(time, span('kind', c.kind), key, span('who', 'reported by worker ' + c.worker));
    if (mine) li.append(span('tag', 'your session'));
    list.prepend(li);
    while (list.children.length > maxItems) list.lastElementChild.remove();
  }

  // The browser reconnects by itself, to whichever worker takes the new
  // connection, and every (re)connection starts with a hello and the
  // worker's recent history, which replaces the list.
  const source = new EventSource('/events');
  source.addEventListener('hello', (e) => {
    const h = JSON.parse(e.data);
    list.replaceChildren();
    status.dataset.worker = String(h.worker);
    status.dataset.pid = String(h.pid);
    status.textContent = h.watching
      ? 'From worker ' + h.worker + ' (pid ' + h.pid + '). Every worker sees the changes of every process, so one feed shows them all.'
      : 'Worker ' + h.worker + ' cannot watch the session directory; the feed stays empty.';
  });
  source.addEventListener('change', (e) => {
    const c = JSON.parse(e.data);
    show(c);
    if (myKey !== '' && c.key === myKey && c.kind === 'deleted') {
      ended(loggingOut ? 'You logged out.' : 'This session was ended elsewhere: by a logout in another tab, or it expired.');
      refresh();
    }
  });
  source.addEventListener('error', () => {
    status.textContent = 'Feed lost; reconnecting…';
  });
})();
