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
};
const RATE_WINDOW_MS = 10000;
const key = (name, generation) => `${name}/${generation}`;

async function api(path, options) {
  const response = await fetch(path, options);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) {
    throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
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
      notice(`Could not read the projections: ${e.message}`, true);
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
    fillRow(tr, p);
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

function fillRow(tr, p) {
  const k = key(p.name, p.generation);
  const head = Math.max(p.head || 0, state.head || 0);
  const lag = Math.max(0, head - p.checkpoint);
  tr.dataset.role = p.role;
  tr.dataset.state = p.state;
  setText(tr.querySelector('[data-field="name"]'), p.name);
  setText(cell(tr, "generation"), String(p.generation));
  badge(cell(tr, "role"), p.role);
  badge(cell(tr, "state"), p.state);
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
  const actions = cell(tr, "actions");
  if (p.role === "active" && !actions.querySelector("button")) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "rebuild";
    b.textContent = "Rebuild";
    b.setAttribute("aria-label", `Rebuild ${p.name}`);
    b.addEventListener("click", () => rebuild(p.name, b));
    actions.appendChild(b);
  } else if (p.role !== "active" && actions.firstChild) {
    actions.replaceChildren();
  }
}

async function rebuild(name, button) {
  button.disabled = true;
  try {
    const r = await api(`/projections/${encodeURIComponent(name)}/rebuild`, { method: "POST" });
    notice(`${name}: generation ${r.generation} is building; it is swapped in when it reaches the head.`);
    await refresh();
  } catch (e) {
    notice(`Could not rebuild ${name}: ${e.message}`, true);
  } finally {
    button.disabled = false;
  }
}

// ---- live feed -------------------------------------------------------------

function follow() {
  const feed = $("feed");
  const source = new EventSource("/changes");
  const status = (s) => {
    feed.dataset.state = s;
    feed.textContent = s;
  };
  source.onopen = () => status("live");
  source.onerror = () => status(source.readyState === EventSource.CLOSED ? "down" : "connecting");
  source.addEventListener("subscribed", (e) => {
    const d = JSON.parse(e.data);
    state.head = d.head;
    refresh();
  });
  source.addEventListener("commit", (e) => {
    const d = JSON.parse(e.data);
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
  });
  source.addEventListener("ready", (e) => {
    state.head = Math.max(state.head || 0, JSON.parse(e.data).checkpoint);
    render();
  });
  source.addEventListener("lagged", () => refresh());
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
  if (!name) return;
  try {
    const letters = await api(`/projections/${encodeURIComponent(name)}/dead-letters`);
    if (letters.length === 0) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = document.createElement("td");
      td.colSpan = 5;
      td.textContent = `${name} has no dead letters.`;
      tr.appendChild(td);
      tbody.replaceChildren(tr);
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
    notice(`Could not read the dead letters of ${name}: ${e.message}`, true);
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
    setText(info, e.message);
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

wire();
refresh();
follow();
// A fault or a head that moves without commits (events no projection has
// reached yet) sends no notice: look again now and then.
setInterval(refresh, 3000);
