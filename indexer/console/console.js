// The kafkastore web console: one page, routes in the URL's fragment, no dependencies.
"use strict";

const main = document.getElementById("main");
let cleanup = [];

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick" || k === "onsubmit") el[k] = v;
    else if (v !== null && v !== undefined) el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

let navigation = 0;  // counts route() calls: a slow page does not show itself over a newer one

// With auth on (docs/http.md "Security") every request carries the bearer token the user signed
// in with; it is kept in sessionStorage (this tab only, gone when it closes), never in the URL.
const TOKEN_KEY = "kafkastore-token";
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
const authHeaders = () => (token() ? { Authorization: "Bearer " + token() } : {});

class Refused extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// An answer that came after the user went to another page: dropped, never shown.
class Stale extends Error {}

async function api(path, options) {
  const init = Object.assign({}, options || {});
  init.headers = Object.assign({}, init.headers || {}, authHeaders());
  const asked = navigation;
  const response = await fetch(path, init);
  const body = await response.json();
  if (asked !== navigation) throw new Stale(path);
  if (response.status === 401 || response.status === 403) throw new Refused(response.status, body.message || response.statusText);
  if (!response.ok) throw new Error(body.message || response.statusText);
  return body;
}

const enc = encodeURIComponent;
const pretty = (v) => h("pre", {}, JSON.stringify(v, null, 2));
const link = (href, text) => h("a", { href }, text);
const streamLink = (id) => link("#/stream/" + enc(id), id);

let page = "loading";
function show(...nodes) {
  main.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined));
  main.dataset.page = page;
}
function fail(err) {
  if (err instanceof Stale) return;
  if (err instanceof Refused && err.status === 401) return signIn(token() ? "That token is not valid (or no longer)." : null);
  if (err instanceof Refused) return show(h("p", { class: "error", id: "forbidden" }, "Forbidden: " + err.message + " (your token does not grant this page)"));
  show(h("p", { class: "error" }, "Error: " + err.message));
}

// The sign-in prompt (auth on, no valid token): the token goes to sessionStorage.
function signIn(problem) {
  page = "sign-in";
  const input = h("input", { id: "token-input", type: "password", autocomplete: "off", placeholder: "kst_…", "aria-label": "Bearer token" });
  const form = h("form", { id: "sign-in", class: "pager", onsubmit: (ev) => {
    ev.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    account();
    route();
  } }, input, h("button", {}, "Sign in"));
  show(h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "This server has authentication on. Paste a bearer token (from `kafkastore auth token create`, or the admin token `kafkastore dev --auth` printed). It is kept in this tab only."),
    problem ? h("p", { class: "error" }, problem) : null, form);
  input.focus();
}

// The header's account corner: "Sign out" once a token is set.
function account() {
  const corner = document.getElementById("account");
  if (!token()) { corner.replaceChildren(); return; }
  corner.replaceChildren(h("span", { class: "muted" }, "signed in "),
    h("button", { id: "sign-out", onclick: () => { sessionStorage.removeItem(TOKEN_KEY); account(); route(); } }, "Sign out"));
}

function eventCard(e) {
  const data = "data" in e ? e.data : { data_base64: e.data_base64, content_type: e.content_type };
  return h("div", { class: "event", "data-position": e.global_position },
    h("div", { class: "head" },
      h("b", {}, e.type), streamLink(e.stream_id), h("span", {}, "v" + e.version),
      h("span", { class: "muted" }, "#" + e.global_position),
      h("span", { class: "muted" }, e.partition + "/" + e.offset),
      h("span", { class: "muted" }, e.created_at),
      link("#/event/" + e.id, h("code", { class: "muted" }, e.id))),
    h("div", { class: "grid" },
      h("div", {}, h("div", { class: "muted" }, "data"), pretty(data)),
      h("div", {}, h("div", { class: "muted" }, "metadata"), pretty(e.metadata))));
}

// Overview: counts, rates, index lag per partition; refreshed every 2 s.
async function overview() {
  let previous = null;
  async function refresh() {
    const o = await api("/console/api/overview");
    const now = performance.now();
    let indexRate = "…";
    if (previous) {
      const dt = (now - previous.at) / 1000;
      indexRate = ((o.indexed_events - previous.events) / dt).toFixed(1);
    }
    previous = { at: now, events: o.indexed_events };
    show(
      h("h1", {}, "Overview ", h("span", { class: "muted" }, "topic " + o.topic)),
      h("div", { class: "cards" },
        h("div", { class: "card" }, h("b", { id: "indexed-events" }, o.indexed_events), h("span", {}, "events indexed")),
        h("div", { class: "card" }, h("b", {}, o.streams), h("span", {}, "streams")),
        h("div", { class: "card" }, h("b", {}, o.appended_per_second), h("span", {}, "appended / s (writer, last minute)")),
        h("div", { class: "card" }, h("b", {}, indexRate), h("span", {}, "indexed / s (indexer)"))),
      h("h2", {}, "Index lag per partition"),
      h("div", { class: "scroll" }, h("table", {},
        h("tr", {}, h("th", {}, "partition"), h("th", { class: "num" }, "offsets"), h("th", { class: "num" }, "seconds")),
        o.index_lag.map((l) => h("tr", {}, h("td", {}, l.partition),
          h("td", { class: "num" }, l.offsets), h("td", { class: "num" }, l.seconds))))));
  }
  await refresh();
  const timer = setInterval(() => refresh().catch(fail), 2000);
  cleanup.push(() => clearInterval(timer));
}

// Streams by prefix, paged both ways with cursors.
async function streams(params) {
  const prefix = params.get("prefix") || "";
  const query = new URLSearchParams({ prefix, limit: "50" });
  if (params.get("after")) query.set("after", params.get("after"));
  if (params.get("before")) query.set("before", params.get("before"));
  const page = await api("/console/api/streams?" + query);
  const form = h("form", { class: "pager", onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = "#/streams?prefix=" + enc(form.elements.prefix.value);
  } }, h("input", { name: "prefix", value: prefix, placeholder: "stream id prefix" }), h("button", {}, "Search"));
  const nav = (key, cursor, text) => h("button", { disabled: cursor ? null : "",
    onclick: () => { location.hash = "#/streams?prefix=" + enc(prefix) + "&" + key + "=" + enc(cursor); } }, text);
  show(h("h1", {}, "Streams"), form,
    h("div", { class: "scroll" }, h("table", { id: "streams" },
      h("tr", {}, h("th", {}, "stream"), h("th", {}, "category"), h("th", { class: "num" }, "version"), h("th", { class: "wide" }, "updated")),
      page.streams.map((s) => h("tr", {}, h("td", {}, streamLink(s.stream_id)),
        h("td", {}, link("#/category/" + enc(s.category), s.category)),
        h("td", { class: "num" }, s.version), h("td", { class: "wide muted" }, s.updated_at))))),
    h("div", { class: "pager" }, nav("before", page.previous, "← Previous"), nav("after", page.next, "Next →")));
}

// One stream: its state and a page of events, forward or backward.
async function stream(id, params) {
  const direction = params.get("direction") || "forward";
  const query = new URLSearchParams({ limit: "20", direction });
  if (params.get("from")) query.set("from_version", params.get("from"));
  const [state, page, metadata] = await Promise.all([
    api("/streams/" + enc(id) + "/state"), api("/streams/" + enc(id) + "?" + query),
    api("/streams/" + enc(id) + "/metadata")]);
  const versions = page.events.map((e) => e.version);
  const go = (from, dir) => () => { location.hash = "#/stream/" + enc(id) + "?from=" + from + "&direction=" + dir; };
  const lo = Math.min(...versions), hi = Math.max(...versions);
  show(h("h1", {}, id),
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("b", {}, state.version), h("span", {}, "version")),
      h("div", { class: "card" }, h("b", {}, state.indexed_version), h("span", {}, "indexed version")),
      h("div", { class: "card" }, h("b", {}, link("#/category/" + enc(state.category), state.category)), h("span", {}, "category")),
      h("div", { class: "card" }, h("b", {}, state.readable_from ?? "—"), h("span", {}, "readable from")),
      h("div", { class: "card" }, h("b", { class: "muted small" }, state.updated_at || "—"), h("span", {}, "updated"))),
    h("details", { id: "stream-metadata" },
      h("summary", {}, "Stream metadata (version " + metadata.metadata_version + ")"),
      pretty({ max_count: metadata.max_count, max_age: metadata.max_age,
        truncate_before: metadata.truncate_before, acl: metadata.acl, custom: metadata.custom })),
    h("div", { class: "pager" },
      h("button", { onclick: go(1, "forward") }, "First"),
      h("button", { disabled: lo > 1 ? null : "", onclick: go(lo - 1, "backward") }, "← Older"),
      h("button", { disabled: hi < page.version ? null : "", onclick: go(hi + 1, "forward") }, "Newer →"),
      h("button", { onclick: go(page.version, "backward") }, "Latest")),
    h("div", { id: "events" }, page.events.map(eventCard)));
}

// Server-Sent Events read with fetch() and a stream parser: what EventSource does, but able to
// send the Authorization header (EventSource cannot). Reconnects after `retry` ms with
// Last-Event-ID, as EventSource does; a 401/403 is final (shown, no retry).
function fetchEventSource(url, handlers) {
  const controller = new AbortController();
  let lastId = null, retry = 1000, closed = false;
  async function connect() {
    const headers = Object.assign({ Accept: "text/event-stream" }, authHeaders());
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    const response = await fetch(url, { headers, signal: controller.signal, cache: "no-store" });
    if (response.status === 401 || response.status === 403) {
      const body = await response.json().catch(() => ({}));
      closed = true;
      throw new Refused(response.status, body.message || response.statusText);
    }
    if (!response.ok || !response.body) throw new Error("subscription answered " + response.status);
    handlers.onopen();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "", data = null, id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
        if (line === "") {
          if (id !== null) lastId = id;
          if (data !== null) handlers.onmessage({ data, lastEventId: lastId });
          data = null; id = null;
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let v = colon < 0 ? "" : line.slice(colon + 1);
          if (v.startsWith(" ")) v = v.slice(1);
          if (field === "data") data = data === null ? v : data + "\n" + v;
          else if (field === "id") id = v;
          else if (field === "retry" && /^\d+$/.test(v)) retry = Number(v);
        }
      }
    }
  }
  (async () => {
    while (!closed) {
      try { await connect(); } catch (err) {
        if (controller.signal.aborted) return;
        if (err instanceof Refused) { handlers.onrefused(err); return; }
      }
      if (closed || controller.signal.aborted) return;
      handlers.onerror();
      await new Promise((resolve) => setTimeout(resolve, retry));
    }
  })();
  return { close: () => { closed = true; controller.abort(); } };
}

// The last events of $all or a category, found with the public position reads (`/all`,
// `/categories/{c}`), so hidden events (deleted, truncated, scavenged: positions with no event)
// and, with auth on, events of streams the caller may not read are never counted.
const TAIL = 20;

// At most n events of the position read `path` from `position`, all below `below`. A page
// short of its limit ended at the head, unless auth on left events out of it: then read on
// from next_position (a few pages at most).
async function eventsFrom(path, position, n, below) {
  const events = [];
  let from = position;
  for (let pages = 0; pages < 5 && events.length < n && from < below; pages++) {
    const page = await api(path + "?" + new URLSearchParams({ from_position: from, limit: n }));
    for (const e of page.events) if (e.global_position < below && events.length < n) events.push(e);
    if (page.next_position <= from || (page.events.length < n && !token())) break;
    from = page.next_position;
  }
  return events;
}

// The highest position from which `path` has n events below `below` (1 when it has fewer):
// gallop up from 1, then bisect, as `kafkastore tail --api` finds the end of $all.
async function tailStart(path, n, below = Number.MAX_SAFE_INTEGER) {
  const enough = async (position) => (await eventsFrom(path, position, n, below)).length >= n;
  if (!(await enough(1))) return 1;
  let low = 1, high = below, step = n;
  while (low + step < below) {
    if (!(await enough(low + step))) { high = low + step; break; }
    low += step;
    step *= 2;
  }
  while (high - low > 1) {  // enough(low), not enough(high)
    const middle = Math.floor((low + high) / 2);
    if (await enough(middle)) low = middle; else high = middle;
  }
  return low;
}

// $all or a category, live over Server-Sent Events from its last TAIL events; newest first,
// the last 100 kept (more once older pages are loaded).
async function live(title, feed, read) {
  const start = await tailStart(read, TAIL);
  const list = h("div", { id: "events" });
  const dot = h("span", { class: "live off", id: "live-dot" });
  let keep = 100;
  const older = h("button", { id: "older", disabled: start > 1 ? null : "", onclick: async () => {
    older.disabled = true;
    const below = list.lastChild ? Number(list.lastChild.dataset.position) : start;
    try {
      const from = await tailStart(read, TAIL, below);
      const events = await eventsFrom(read, from, TAIL, below);
      keep += events.length;
      for (const e of events.reverse()) list.append(eventCard(e));
      older.disabled = from <= 1;
    } catch (err) { fail(err); }
  } }, "Older events");
  show(h("h1", {}, dot, title), h("p", { class: "muted" }, "Live: new events appear at the top."),
    list, h("div", { class: "pager" }, older));
  const url = feed + (feed.includes("?") ? "&" : "?") + "from_position=" + start;
  const onmessage = (message) => {
    list.prepend(eventCard(JSON.parse(message.data)));
    while (list.children.length > keep) list.lastChild.remove();
    if (list.children.length === keep) older.disabled = false;
  };
  const onopen = () => dot.classList.remove("off");
  const onerror = () => dot.classList.add("off");
  let source;
  if (token()) {
    source = fetchEventSource(url, { onopen, onerror, onmessage, onrefused: (err) => { source.close(); fail(err); } });
  } else {
    source = new EventSource(url);
    Object.assign(source, { onopen, onerror, onmessage });
  }
  cleanup.push(() => source.close());
}

async function all() {
  await live("$all", "/subscribe/all", "/all");
}

async function category(name) {
  await live("Category " + name, "/subscribe/categories/" + enc(name), "/categories/" + enc(name));
}

async function eventById(id) {
  const e = await api("/console/api/events/" + enc(id));
  show(h("h1", {}, "Event ", h("code", {}, e.id)), eventCard(e));
}

// Consumer groups of the events topic with lag per partition, and a group's dead letters.
async function groups() {
  const body = await api("/console/api/groups");
  show(h("h1", {}, "Consumer groups"),
    body.groups.length ? null : h("p", { class: "muted" }, "No consumer group has read the topic."),
    body.groups.map((g) => h("div", { class: "event group", "data-group": g.group },
      h("div", { class: "head" }, h("b", {}, g.group), h("span", {}, g.state),
        h("span", {}, "lag " + g.lag), h("span", {}, g.members.length + " member(s)"),
        link("#/dead-letters/" + enc(g.group), "dead letters")),
      h("div", { class: "scroll" }, h("table", {},
        h("tr", {}, h("th", {}, "partition"), h("th", { class: "num" }, "committed"), h("th", { class: "num" }, "end"), h("th", { class: "num" }, "lag")),
        g.partitions.map((p) => h("tr", {}, h("td", {}, p.partition), h("td", { class: "num" }, p.committed ?? "—"),
          h("td", { class: "num" }, p.high_watermark), h("td", { class: "num" }, p.lag))))),
      g.members.map((m) => h("div", { class: "muted" }, m.client_id + " @ " + m.host + " → partitions " + m.partitions.join(", "))))));
}

async function deadLetters(group) {
  const body = await api("/console/api/groups/" + enc(group) + "/dead-letters");
  const status = h("p", { id: "replay-status", class: "muted" });
  const replay = h("button", { id: "replay", disabled: body.dead_letters.length ? null : "", onclick: async () => {
    replay.disabled = true;
    try {
      const r = await api("/console/api/groups/" + enc(group) + "/dead-letters/replay", { method: "POST" });
      status.textContent = "Replayed " + r.replayed.length + ": " + r.replayed.map((x) => x.outcome).join(", ");
    } catch (err) { status.textContent = "Replay failed: " + err.message; status.className = "error"; }
  } }, "Replay to the group's handler");
  show(h("h1", {}, "Dead letters of ", group), h("div", { class: "pager" }, replay), status,
    body.dead_letters.length ? null : h("p", { class: "muted" }, "None."),
    h("div", { id: "dead-letters" }, body.dead_letters.map((d) => h("div", { class: "event dead-letter" },
      h("div", { class: "head" }, h("b", {}, d.type || "?"), d.stream_id ? streamLink(d.stream_id) : null,
        h("span", { class: "muted" }, "dlq " + d.partition + "/" + d.offset),
        h("span", { class: "muted" }, "from " + d.origin.partition + "/" + d.origin.offset),
        h("span", {}, "attempts " + d.attempts)),
      h("p", { class: "error" }, d.error),
      h("div", { class: "grid" }, h("div", {}, h("div", { class: "muted" }, "value"), h("pre", {}, d.value)),
        h("div", {}, h("div", { class: "muted" }, "headers"), pretty(d.headers)))))));
}

async function route() {
  navigation++;
  for (const undo of cleanup.splice(0)) undo();
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  page = "loading";
  show(h("p", { class: "muted" }, "Loading…"));
  page = parts[0] || "overview";
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.getAttribute("href") === "#/" + (parts[0] || "")));
  try {
    if (!parts.length) await overview();
    else if (parts[0] === "streams") await streams(params);
    else if (parts[0] === "stream") await stream(parts.slice(1).join("/"), params);
    else if (parts[0] === "all") await all();
    else if (parts[0] === "category") await category(parts[1]);
    else if (parts[0] === "event") await eventById(parts[1]);
    else if (parts[0] === "groups") await groups();
    else if (parts[0] === "dead-letters") await deadLetters(parts[1]);
    else show(h("p", {}, "No such page."));
  } catch (err) { fail(err); }
}

document.getElementById("search").onsubmit = (ev) => {
  ev.preventDefault();
  const id = document.getElementById("search-id").value.trim();
  if (id) location.hash = "#/event/" + id;
};
window.addEventListener("hashchange", route);
account();
route();
