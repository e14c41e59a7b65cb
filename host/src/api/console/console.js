// The refract console: reads GET /projections, follows GET /changes (Server-Sent
// Events) and updates the page in place. No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  rows: new Map(), // "name/generation" -> status from GET /projections, checkpoints moved by commits
  samples: new Map(), // "name/generation" -> [[ms, checkpoint]] over the last 10 s, for progress rates
  compiling: [], // modules being compiled: no generation yet
  head: null,
  docs: { cursors: [], next: null, key: null },
  busy: new Set(), // projections with an admin action under way
};
const RATE_WINDOW_MS = 10000;
const key = (name, generation) => `${name}/${generation}`;

// ---- tokens ----------------------------------------------------------------

// The token is kept in sessionStorage, not localStorage: it belongs to this
// tab and is gone when the tab closes, so an admin secret is not left on disk
// for whoever uses the browser profile next, nor shared with other tabs.
// (Script on the page could read either; the console runs none but its own.)
const TOKEN_KEY = "refract.token";
const auth = {
  get token() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch { return null; }
  },
  set(token) {
    try { sessionStorage.setItem(TOKEN_KEY, token); } catch { /* storage disabled: this page load only */ }
  },
  clear() {
    try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* nothing kept */ }
  },
  // The sign-in form is up: the host refused a request for want of a token.
  waiting: false,
};

class ApiError extends Error {
  constructor(status, message, scope) {
    super(message);
    this.status = status;
    this.scope = scope || null; // a 403 names the scope the token lacks
  }
}

function authorized(headers) {
  const h = new Headers(headers || {});
  const token = auth.token;
  if (token) h.set("Authorization", `Bearer ${token}`);
  return h;
}

async function refusal(response) {
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  return new ApiError(response.status, (body && body.error) || `${response.status} ${response.statusText}`, body && body.scope);
}

async function api(path, options = {}) {
  const used = auth.token;
  const response = await fetch(path, { ...options, headers: authorized(options.headers) });
  if (!response.ok) {
    const error = await refusal(response);
    // Only if no one signed in with another token while this request was out.
    if (response.status === 401 && auth.token === used) signInNeeded(error, used != null);
    throw error;
  }
  const text = await response.text();
  try { return text ? JSON.parse(text) : null; } catch { return null; }
}

// A failed call's message in the notice; a 401 brought up the sign-in form instead.
function report(what, e) {
  if (e.status === 401) return;
  notice(`${what}: ${e.message}`, true);
}

function notice(text, isError) {
  const n = $("notice");
  n.textContent = text;
  n.classList.toggle("error", Boolean(isError));
}

function fmt(n) {
  return n == null ? "–" : Number(n).toLocaleString("en-US");
}

function fmtRate(r) {
  if (r == null) return "–";
  return r >= 100 ? Math.round(r).toLocaleString("en-US") : r.toFixed(1);
}

function fmtDuration(seconds) {
  if (!isFinite(seconds)) return "–";
  if (seconds < 1) return "<1 s";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function sample(k, checkpoint) {
  const now = Date.now();
  const list = state.samples.get(k) || [];
  list.push([now, checkpoint]);
  while (list.length > 1 && now - list[0][0] > RATE_WINDOW_MS) list.shift();
  state.samples.set(k, list);
}

// Positions per second a generation advanced over the window: what an ETA
// needs (a checkpoint also moves past events the projection does not subscribe to).
function positionRate(k) {
  const list = state.samples.get(k);
  if (!list || list.length < 2) return null;
  const [t0, c0] = list[0];
  const [t1, c1] = list[list.length - 1];
  return t1 > t0 ? ((c1 - c0) * 1000) / (t1 - t0) : null;
}

// ---- projections -----------------------------------------------------------

let refreshing = null;
let refreshAgain = false;
async function refresh() {
  if (auth.waiting) return null;
  if (refreshing) {
    refreshAgain = true;
    return refreshing;
  }
  refreshing = (async () => {
    try {
      const list = await api("/projections");
      const seen = new Set();
      state.compiling = list.filter((p) => p.state === "compiling");
      for (const p of list) {
        if (p.state === "compiling") continue;
        const k = key(p.name, p.generation);
        seen.add(k);
        const old = state.rows.get(k);
        // A commit notice may be newer than the registry read.
        if (old && old.checkpoint > p.checkpoint) p.checkpoint = old.checkpoint;
        if (p.role === "building" || p.state === "running") sample(k, p.checkpoint);
        state.rows.set(k, p);
        if (p.head != null) state.head = Math.max(state.head || 0, p.head);
      }
      for (const k of [...state.rows.keys()]) if (!seen.has(k)) state.rows.delete(k);
      render();
      fillSelects();
    } catch (e) {
      report("Could not read the projections", e);
    } finally {
      refreshing = null;
      if (refreshAgain) {
        refreshAgain = false;
        refresh();
      }
    }
  })();
  return refreshing;
}

let refreshTimer = null;
function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    refresh();
  }, 500);
}

function cell(tr, field, cls) {
  let td = tr.querySelector(`[data-field="${field}"]`);
  if (!td) {
    td = document.createElement("td");
    td.dataset.field = field;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  return td;
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function badge(td, text) {
  let b = td.querySelector(".badge");
  if (!b) {
    b = document.createElement("span");
    td.appendChild(b);
  }
  b.className = `badge ${text}`;
  setText(b, text);
}

function render() {
  const tbody = $("projection-rows");
  const rows = [...state.rows.values()].sort((a, b) => a.name.localeCompare(b.name) || a.generation - b.generation);
  const names = new Set(rows.map((r) => r.name));
  const building = new Set(rows.filter((r) => r.role === "building").map((r) => r.name));
  setText($("head"), fmt(state.head));
  setText($("count"), fmt(names.size));
  const total = rows.filter((r) => r.role === "active").reduce((s, r) => s + (r.events_per_second || 0), 0);
  setText($("rate"), fmtRate(total));
  const compiling = state.compiling.map((c) => ({ ...c, key: `compiling:${c.source}` }));
  if (rows.length === 0 && compiling.length === 0) {
    tbody.replaceChildren();
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = document.createElement("td");
    td.colSpan = 11;
    td.textContent = "No projections yet: put a .wasm in the plugins folder.";
    tr.appendChild(td);
    tbody.appendChild(tr);
    return;
  }
  tbody.querySelectorAll("tr.empty").forEach((tr) => tr.remove());
  const existing = new Map([...tbody.querySelectorAll("tr[data-key]")].map((tr) => [tr.dataset.key, tr]));
  let previous = null;
  for (const p of rows) {
    const k = key(p.name, p.generation);
    let tr = existing.get(k);
    existing.delete(k);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.key = k;
      tr.dataset.projection = p.name;
      tr.dataset.generation = p.generation;
      const th = document.createElement("th");
      th.scope = "row";
      th.dataset.field = "name";
      tr.appendChild(th);
      for (const [f, c] of [["generation", "num"], ["role"], ["state"], ["checkpoint", "num"], ["head", "num"],
        ["lag", "num"], ["rate", "num"], ["progress"], ["error", "error"], ["actions"]]) cell(tr, f, c);
    }
    fillRow(tr, p, building.has(p.name));
    const place = previous ? previous.nextSibling : tbody.firstChild;
    if (place !== tr) tbody.insertBefore(tr, place);
    previous = tr;
  }
  for (const c of compiling) {
    let tr = existing.get(c.key);
    existing.delete(c.key);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.key = c.key;
      tr.dataset.state = "compiling";
      tr.dataset.source = c.source;
      const th = document.createElement("th");
      th.scope = "row";
      th.dataset.field = "name";
      tr.appendChild(th);
      for (const f of ["generation", "role", "state", "checkpoint", "head", "lag", "rate", "progress", "error", "actions"]) {
        cell(tr, f).textContent = "–";
      }
      cell(tr, "error").textContent = "";
      cell(tr, "actions").textContent = "";
      tr.dataset.projection = c.name || "";
      setText(tr.querySelector('[data-field="name"]'), c.name || c.source);
      const st = cell(tr, "state");
      st.textContent = "";
      badge(st, "compiling");
    }
    const seconds = Math.max(0, (Date.now() - c.started_at) / 1000);
    setText(cell(tr, "progress"), `${c.source}, for ${fmtDuration(seconds)}`);
    tbody.appendChild(tr);
  }
  for (const tr of existing.values()) tr.remove();
}

function fillRow(tr, p, rebuilding) {
  const k = key(p.name, p.generation);
  const head = Math.max(p.head || 0, state.head || 0);
  const lag = Math.max(0, head - p.checkpoint);
  tr.dataset.role = p.role;
  tr.dataset.state = p.state;
  tr.dataset.paused = String(Boolean(p.paused));
  setText(tr.querySelector('[data-field="name"]'), p.name);
  setText(cell(tr, "generation"), String(p.generation));
  badge(cell(tr, "role"), p.role);
  const st = cell(tr, "state");
  badge(st, p.state);
  let pausedBadge = st.querySelector(".badge.paused");
  if (p.paused && !pausedBadge) {
    pausedBadge = document.createElement("span");
    pausedBadge.className = "badge paused";
    pausedBadge.textContent = "paused";
    st.append(" ", pausedBadge);
  } else if (!p.paused && pausedBadge) {
    st.replaceChildren(st.querySelector(".badge"));
  }
  setText(cell(tr, "checkpoint"), fmt(p.checkpoint));
  setText(cell(tr, "head"), fmt(head));
  const lagCell = cell(tr, "lag");
  setText(lagCell, fmt(lag));
  lagCell.classList.toggle("lag-high", lag > 1000);
  setText(cell(tr, "rate"), fmtRate(p.events_per_second));
  const progress = cell(tr, "progress");
  if (p.role === "building") {
    let wrap = progress.querySelector(".progress");
    if (!wrap) {
      wrap = document.createElement("div");
      wrap.className = "progress";
      const bar = document.createElement("progress");
      bar.max = 100;
      bar.setAttribute("aria-label", `Rebuild of ${p.name} generation ${p.generation}`);
      const text = document.createElement("span");
      wrap.append(bar, text);
      progress.replaceChildren(wrap);
    }
    const pct = head > 0 ? Math.min(100, (p.checkpoint / head) * 100) : 100;
    const rate = positionRate(k);
    const eta = rate && rate > 0 ? fmtDuration(lag / rate) : "–";
    wrap.querySelector("progress").value = pct;
    setText(wrap.querySelector("span"), `${pct.toFixed(0)}% · ETA ${eta}`);
    wrap.dataset.eta = eta;
  } else if (progress.firstChild) {
    progress.replaceChildren();
  }
  setText(cell(tr, "error"), p.last_error || p.store_error || "");
  fillActions(cell(tr, "actions"), p, rebuilding);
}

// ---- admin actions -----------------------------------------------------------

// The buttons of an active generation, in the order an operator reaches for them.
const ACTIONS = [
  { action: "pause", label: "Pause", hint: "Stop projecting until resumed; appends go on" },
  { action: "resume", label: "Resume", hint: "Project again from the checkpoint" },
  { action: "retry", label: "Retry", hint: "Clear the fault and replay the dead letters" },
  { action: "reset", label: "Reset…", hint: "Move the checkpoint to a position and project again from there" },
  { action: "rebuild", label: "Rebuild", hint: "Build a new generation from position 0 and swap it in at the head" },
  { action: "drop", label: "Drop…", hint: "Delete every generation's tables and registry entries", danger: true },
];

function fillActions(td, p, rebuilding) {
  if (p.role !== "active") {
    if (td.firstChild) td.replaceChildren();
    return;
  }
  let group = td.querySelector(".row-actions");
  if (!group) {
    group = document.createElement("div");
    group.className = "row-actions";
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", `Actions on ${p.name}`);
    for (const a of ACTIONS) {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.action = a.action;
      b.className = a.action + (a.danger ? " danger" : "");
      b.textContent = a.label;
      b.title = a.hint;
      b.setAttribute("aria-label", `${a.label.replace("…", "")} ${p.name}`);
      b.addEventListener("click", () => perform(p.name, a.action));
      group.appendChild(b);
    }
    td.replaceChildren(group);
  }
  const busy = state.busy.has(p.name);
  group.setAttribute("aria-busy", String(busy));
  const button = (a) => group.querySelector(`[data-action="${a}"]`);
  button("pause").hidden = Boolean(p.paused);
  button("resume").hidden = !p.paused;
  for (const b of group.querySelectorAll("button")) b.disabled = busy;
  // Only a fault or dead letters give a retry something to do; the dead letters have their own button.
  button("retry").disabled = busy || p.state !== "faulted";
  // The host refuses a reset while a new generation builds (409): say so before it is asked.
  button("reset").disabled = busy || rebuilding;
  button("reset").title = rebuilding ? "Not while a new generation is being built" : ACTIONS[3].hint;
}

// What the host answered, as a sentence.
const DONE = {
  pause: (n, r) => (r.changed ? `${n} is paused at ${fmt(r.checkpoint)}: no host runs it until it is resumed.` : `${n} was already paused.`),
  resume: (n, r) => (r.changed ? `${n} resumes from ${fmt(r.checkpoint)}.` : `${n} was not paused.`),
  retry: (n, r) => `${n}: ${r.cleared_fault ? "fault cleared, " : ""}${fmt(r.replays)} dead letter(s) to replay.`,
  reset: (n, r) => `${n} was reset from ${fmt(r.from)} to ${fmt(r.to)}${r.paused ? "; it stays paused" : ""}.`,
  rebuild: (n, r) => `${n}: generation ${r.generation} is building; it is swapped in when it reaches the head.`,
  drop: (n) => `${n} was dropped. Its module is registered again from position 0 when its file changes or the host restarts.`,
};

// Where keyboard focus goes once an action is done: the button that undoes it, if any.
const NEXT_FOCUS = { pause: "resume", resume: "pause" };

async function perform(name, action) {
  if (state.busy.has(name)) return;
  let query = "";
  if (action === "drop" || action === "reset") {
    const answer = await confirmAction(name, action);
    if (!answer) {
      focusAction(name, action);
      return;
    }
    if (action === "reset") query = `?to=${answer.to}`;
  }
  state.busy.add(name);
  render();
  notice(`${action}: ${name}…`);
  try {
    const r = await api(`/projections/${encodeURIComponent(name)}/${action}${query}`, { method: "POST" });
    notice(DONE[action](name, r));
    if (action === "retry") loadLetters();
  } catch (e) {
    report(`Could not ${action} ${name}`, e);
  } finally {
    state.busy.delete(name);
  }
  await refresh();
  render();
  focusAction(name, NEXT_FOCUS[action] || action);
}

function focusAction(name, action) {
  const b = [...document.querySelectorAll(`#projection-rows tr[data-role="active"]`)]
    .find((tr) => tr.dataset.projection === name)
    ?.querySelector(`[data-action="${action}"]`);
  if (b && !b.hidden && !b.disabled) b.focus();
}

// Drop and reset ask first, in a modal dialog (keyboard: Tab, Enter, Escape cancels).
function confirmAction(name, action) {
  const dialog = $("confirm");
  const input = $("confirm-to");
  const reset = action === "reset";
  const head = Math.max(state.head || 0, ...[...state.rows.values()].map((r) => r.head || 0));
  $("confirm-title").textContent = reset ? `Reset ${name}?` : `Drop ${name}?`;
  $("confirm-text").textContent = reset
    ? "Its checkpoint moves to this position and it projects again from there. The documents stay as they are and the events after the position are projected again on top of them; 0 empties the read model first. A running projection is paused for the reset and resumed after it."
    : "Every generation's tables, documents and registry entries are deleted. A host whose plugins folder still has the module registers it again from position 0 when the file changes or the host restarts.";
  $("confirm-ok").textContent = reset ? `Reset ${name}` : `Drop ${name}`;
  $("confirm-position").hidden = !reset;
  input.required = reset;
  input.value = "0";
  setText($("confirm-range"), `0 to the head, ${fmt(head)}.`);
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok" ? { to: reset ? Number(input.value) : null } : null);
    }, { once: true });
    dialog.showModal();
    // A destructive dialog starts on Cancel; a reset on its position.
    (reset ? input : $("confirm-cancel")).focus();
  });
}

// ---- sign-in -------------------------------------------------------------------

// The host refused a request for want of a (valid) token: show the form.
function signInNeeded(error, tried) {
  auth.clear();
  const first = !auth.waiting;
  auth.waiting = true;
  forget();
  $("content").hidden = true;
  $("signout").hidden = true;
  $("signin").hidden = false;
  notice("");
  if (tried) setText($("signin-error"), `The token was refused: ${error.message}.`);
  if (first) $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const input = $("token");
  const token = input.value.trim();
  if (!token) {
    setText($("signin-error"), "Enter a token.");
    input.focus();
    return;
  }
  const submit = event.target.querySelector("button[type=submit]");
  submit.disabled = true;
  auth.set(token);
  try {
    // The console needs `read`: try it before showing anything.
    await api("/projections");
  } catch (e) {
    auth.clear();
    // A 401 has set its message in signInNeeded.
    if (e.status !== 401) setText($("signin-error"), e.status === 403 ? `This token cannot be used here: ${e.message}.` : `Could not reach the host: ${e.message}.`);
    input.select();
    input.focus();
    return;
  } finally {
    submit.disabled = false;
  }
  input.value = "";
  auth.waiting = false;
  setText($("signin-error"), "");
  $("signin").hidden = true;
  $("content").hidden = false;
  $("signout").hidden = false;
  notice("Signed in.");
  start();
  $("projections-title").focus();
}

function signOut() {
  auth.clear();
  forget();
  notice("Signed out.");
  $("signout").hidden = true;
  // A host with tokens answers 401 and the sign-in form comes up.
  start();
}

// Nothing read with a token stays on the page once it is gone.
function forget() {
  stopFeed();
  state.rows.clear();
  state.samples.clear();
  state.compiling = [];
  state.head = null;
  state.docs = { cursors: [], next: null, key: null };
  render();
  fillSelects();
  $("letter-rows").replaceChildren(emptyRow(5, "Pick a projection."));
  $("doc-rows").replaceChildren(emptyRow(2, "Pick a collection and press Query."));
  $("letters-retry").disabled = true;
  setText($("docs-info"), "");
}

function emptyRow(columns, text) {
  const tr = document.createElement("tr");
  tr.className = "empty";
  const td = document.createElement("td");
  td.colSpan = columns;
  td.textContent = text;
  tr.appendChild(td);
  return tr;
}

// ---- live feed -------------------------------------------------------------

// The feed is read with fetch, not EventSource. EventSource cannot send an
// Authorization header, and the other way out, the token in the URL
// (`/changes?access_token=`), puts the secret in access logs, proxy logs
// and the browser's history, and gives the host a second way to check
// tokens. fetch sends the header every other call sends; the price is
// parsing the stream and reconnecting here.
const RECONNECT_MS = 2000;
let feed = null; // the AbortController of the feed being read

function feedStatus(s) {
  const el = $("feed");
  el.dataset.state = s;
  setText(el, s);
}

function stopFeed() {
  if (feed) feed.abort();
  feed = null;
  feedStatus("down");
}

async function follow() {
  stopFeed();
  const controller = new AbortController();
  feed = controller;
  feedStatus("connecting");
  const used = auth.token;
  try {
    const response = await fetch("/changes", {
      headers: authorized({ Accept: "text/event-stream" }),
      cache: "no-store",
      signal: controller.signal,
    });
    if (!response.ok) {
      const error = await refusal(response);
      if (response.status === 401) {
        if (auth.token === used) signInNeeded(error, used != null);
        return;
      }
      throw error;
    }
    feedStatus("live");
    await readEvents(response.body, dispatch);
  } catch (e) {
    if (controller.signal.aborted) return;
    if (e instanceof ApiError) notice(`The live feed was refused: ${e.message}`, true);
  }
  // The host closed the feed (it shut down) or could not be reached: try again.
  if (feed !== controller) return;
  feedStatus("down");
  setTimeout(() => {
    if (feed === controller) follow();
  }, RECONNECT_MS);
}

// Server-Sent Events framing: blocks separated by a blank line, of `event:`
// and `data:` lines; lines starting with `:` are keep-alives.
async function readEvents(body, handle) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const raw of block.split("\n")) {
        const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
        if (line === "" || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? "" : line.slice(colon + 1);
        if (v.startsWith(" ")) v = v.slice(1);
        if (field === "event") name = v;
        else if (field === "data") data.push(v);
      }
      if (data.length) handle(name, JSON.parse(data.join("\n")));
    }
  }
}

function dispatch(name, d) {
  if (name === "subscribed") {
    state.head = d.head;
    refresh();
  } else if (name === "commit") {
    const k = key(d.projection, d.generation);
    const row = state.rows.get(k);
    state.head = Math.max(state.head || 0, d.checkpoint);
    sample(k, d.checkpoint);
    if (row) {
      row.checkpoint = Math.max(row.checkpoint, d.checkpoint);
      render();
    }
    // Head, rates and roles come from the registry: read it again, at most twice a second.
    refreshSoon();
    documentsChanged(d);
  } else if (name === "ready") {
    state.head = Math.max(state.head || 0, d.checkpoint);
    render();
  } else if (name === "lagged") {
    refresh();
  }
}

// ---- dead letters and documents --------------------------------------------

function fillSelect(select, values) {
  const current = select.value;
  const have = [...select.options].map((o) => o.value);
  if (have.join("\n") === values.join("\n")) return;
  select.replaceChildren(...values.map((v) => new Option(v, v)));
  if (values.includes(current)) select.value = current;
}

function activeRows() {
  return [...state.rows.values()].filter((r) => r.role === "active").sort((a, b) => a.name.localeCompare(b.name));
}

function fillSelects() {
  const names = activeRows().map((r) => r.name);
  const hadLetters = $("letters-projection").value;
  fillSelect($("letters-projection"), names);
  fillSelect($("docs-projection"), names);
  fillCollections();
  if (!hadLetters && names.length) loadLetters();
  else if (hadLetters) lettersSoon();
}

function fillCollections() {
  const p = activeRows().find((r) => r.name === $("docs-projection").value);
  const collections = p && p.collections ? p.collections : [];
  fillSelect($("docs-collection"), collections.map((c) => c.name));
  const c = collections.find((c) => c.name === $("docs-collection").value);
  setText($("docs-indexes"), c ? `(indexed: ${["id", ...c.indexes].join(", ")})` : "");
}

let lettersTimer = null;
function lettersSoon() {
  if (lettersTimer) return;
  lettersTimer = setTimeout(() => {
    lettersTimer = null;
    loadLetters();
  }, 2000);
}

async function loadLetters() {
  const name = $("letters-projection").value;
  const tbody = $("letter-rows");
  const retry = $("letters-retry");
  if (!name) return;
  try {
    const letters = await api(`/projections/${encodeURIComponent(name)}/dead-letters`);
    // Nothing to replay unless some letter is not marked yet.
    retry.disabled = !letters.some((l) => !l.replay) || state.busy.has(name);
    retry.setAttribute("aria-label", `Retry all dead letters of ${name}`);
    if (letters.length === 0) {
      tbody.replaceChildren(emptyRow(5, `${name} has no dead letters.`));
      return;
    }
    tbody.replaceChildren(...letters.map((l) => {
      const tr = document.createElement("tr");
      for (const [text, cls] of [[fmt(l.position), "num"], [l.stream_id], [l.event_type], [l.error, "error"],
        [l.replay ? "pending replay" : "not marked"]]) {
        const td = document.createElement("td");
        if (cls) td.className = cls;
        td.textContent = text;
        tr.appendChild(td);
      }
      return tr;
    }));
  } catch (e) {
    retry.disabled = true;
    // Dropped meanwhile: the next read of the registry takes it off the list.
    if (e.status === 404) tbody.replaceChildren(emptyRow(5, `${name} is gone.`));
    else report(`Could not read the dead letters of ${name}`, e);
  }
}

function docsQuery(cursor) {
  const p = $("docs-projection").value;
  const c = $("docs-collection").value;
  if (!p || !c) return null;
  const params = new URLSearchParams();
  for (const line of $("docs-filters").value.split("\n")) {
    if (line.trim()) params.append("filter", line.trim());
  }
  if ($("docs-order").value.trim()) params.set("order", $("docs-order").value.trim());
  const base = `/projections/${encodeURIComponent(p)}/${encodeURIComponent(c)}`;
  const count = new URLSearchParams(params);
  count.set("count", "true");
  params.set("limit", $("docs-limit").value);
  if (cursor) params.set("cursor", cursor);
  return { page: `${base}?${params}`, count: `${base}?${count}`, projection: p, collection: c };
}

async function loadDocuments(cursor) {
  const q = docsQuery(cursor);
  if (!q) return;
  const info = $("docs-info");
  try {
    const [page, count] = await Promise.all([api(q.page), api(q.count)]);
    state.docs.key = `${q.projection}/${q.collection}`;
    state.docs.current = cursor || null;
    state.docs.next = page.next_cursor;
    $("docs-next").disabled = !page.next_cursor;
    $("docs-prev").disabled = state.docs.cursors.length === 0;
    const shown = state.docs.cursors.length * Number($("docs-limit").value);
    setText(info, count.count === 0 ? "No match." :
      `${fmt(shown + 1)}–${fmt(shown + page.documents.length)} of ${fmt(count.count)}`);
    const tbody = $("doc-rows");
    tbody.replaceChildren(...page.documents.map((d) => {
      const tr = document.createElement("tr");
      const id = document.createElement("td");
      id.className = "mono";
      id.textContent = d.id;
      const body = document.createElement("td");
      body.className = "json";
      body.textContent = JSON.stringify(d.document);
      tr.append(id, body);
      return tr;
    }));
  } catch (e) {
    if (e.status !== 401) setText(info, e.message);
  }
}

let docsTimer = null;
function documentsChanged(commit) {
  if (!state.docs.key || docsTimer) return;
  const touched = commit.changed.some((c) => `${commit.projection}/${c.collection}` === state.docs.key);
  if (!touched) return;
  docsTimer = setTimeout(() => {
    docsTimer = null;
    loadDocuments(state.docs.current);
  }, 1000);
}

function wire() {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("letters-retry").addEventListener("click", () => {
    const name = $("letters-projection").value;
    if (name) perform(name, "retry");
  });
  $("letters-form").addEventListener("submit", (e) => {
    e.preventDefault();
    loadLetters();
  });
  $("letters-projection").addEventListener("change", loadLetters);
  $("docs-projection").addEventListener("change", fillCollections);
  $("docs-collection").addEventListener("change", fillCollections);
  $("docs-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.docs.cursors = [];
    loadDocuments(null);
  });
  $("docs-next").addEventListener("click", () => {
    if (!state.docs.next) return;
    state.docs.cursors.push(state.docs.current);
    loadDocuments(state.docs.next);
  });
  $("docs-prev").addEventListener("click", () => {
    if (state.docs.cursors.length === 0) return;
    loadDocuments(state.docs.cursors.pop());
  });
}

function start() {
  refresh();
  follow();
}

wire();
// A token from earlier in this tab's session: offer to sign out.
$("signout").hidden = auth.token == null;
start();
// A fault or a head that moves without commits (events no projection has
// reached yet) sends no notice: look again now and then.
setInterval(refresh, 3000);
