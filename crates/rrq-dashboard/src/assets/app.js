// RRQ dashboard front end: a hash-routed page per view, built from the JSON
// API with DOM calls (never innerHTML with data), a chart drawn as inline SVG.
"use strict";

const CSRF = document.querySelector('meta[name="rrq-csrf"]').content;
const READ_ONLY = document.querySelector('meta[name="rrq-read-only"]').content === "true";
const app = document.getElementById("app");
let timer = null;

// h("tag.class", {attr: value, onclick: fn}, child, ...): one element.
// The attrs object may be left out: h("tr", h("td"), ...).
function h(spec, attrs, ...children) {
  if (attrs instanceof Node || Array.isArray(attrs) || typeof attrs !== "object" || attrs === null) {
    children.unshift(attrs);
    attrs = {};
  }
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag);
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST",
    headers: {"content-type": "application/json", "x-rrq-csrf": CSRF},
    body: JSON.stringify(body),
  };
  const resp = await fetch(path, opts);
  let data = null;
  try { data = await resp.json(); } catch (_) { data = {error: resp.statusText}; }
  if (!resp.ok) throw new Error((data && data.error) || ("HTTP " + resp.status));
  return data;
}

function toast(msg, bad) {
  const t = document.getElementById("toast");
  t.textContent = msg;
  t.className = bad ? "error" : "";
  t.hidden = false;
  clearTimeout(toast.t);
  toast.t = setTimeout(() => { t.hidden = true; }, 4000);
}

function fmtTime(t) {
  if (!t) return "";
  const d = new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleString();
}

function ago(t) {
  if (!t) return "";
  const s = (Date.now() - new Date(t).getTime()) / 1000;
  const abs = Math.abs(s), sign = s >= 0 ? " ago" : " from now";
  if (abs < 60) return Math.round(abs) + "s" + sign;
  if (abs < 3600) return Math.round(abs / 60) + "m" + sign;
  if (abs < 86400) return (abs / 3600).toFixed(1) + "h" + sign;
  return (abs / 86400).toFixed(1) + "d" + sign;
}

function badge(status) { return status ? h("span.badge." + status, {text: status}) : h("span.muted", {text: "?"}); }
function jobLink(id) { return h("a", {href: "#/job/" + encodeURIComponent(id), "data-job": id}, h("code", {text: id})); }
function queueLink(q) {
  const bare = q.replace(/^rrq:queue:/, "");
  return h("a", {href: "#/queue/" + encodeURIComponent(bare), "data-queue": bare, text: bare});
}
function action(label, cls, fn) {
  if (READ_ONLY) return null;
  return h("button." + cls, {onclick: fn, "data-action": label.toLowerCase()}, label);
}
function pager(offset, limit, total, go, labels = ["‹ Newer", "Older ›"]) {
  return h("div.pager",
    h("button", {disabled: offset === 0, onclick: () => go(Math.max(0, offset - limit))}, labels[0]),
    h("span.muted", {text: total === 0 ? "none" : `${offset + 1}–${Math.min(offset + limit, total)} of ${total}`}),
    h("button", {disabled: offset + limit >= total, onclick: () => go(offset + limit)}, labels[1]));
}

// ---- overview -------------------------------------------------------------

function chart(series) {
  const W = 900, H = 200, P = 30;
  const pts = series.points || [];
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H + 20}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("id", "throughput");
  const max = Math.max(1, ...pts.map(p => Math.max(p.failed || 0, p.completed || 0)));
  // The last hour, or less while the dashboard has been up for less.
  const now = Date.now();
  const first = pts.length ? new Date(pts[0].t).getTime() : now;
  const span = Math.min(3600e3, Math.max(10e3, now - first));
  const mins = s => s >= 120e3 ? Math.round(s / 60e3) + "m" : Math.round(s / 1e3) + "s";
  const x = t => P + (W - P) * (1 - (now - new Date(t).getTime()) / span);
  const y = v => H - (H - 10) * (v / max);
  const line = (key, color) => {
    const ps = pts.filter(p => p[key] !== null && p[key] !== undefined);
    if (!ps.length) return;
    const path = document.createElementNS(svg.namespaceURI, "polyline");
    path.setAttribute("points", ps.map(p => `${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" "));
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", color);
    path.setAttribute("stroke-width", "2");
    path.setAttribute("data-series", key);
    svg.append(path);
  };
  for (const frac of [0, 0.5, 1]) {
    const g = document.createElementNS(svg.namespaceURI, "line");
    g.setAttribute("x1", P); g.setAttribute("x2", W);
    g.setAttribute("y1", y(max * frac)); g.setAttribute("y2", y(max * frac));
    g.setAttribute("stroke", "#e5e7eb");
    svg.append(g);
    const lab = document.createElementNS(svg.namespaceURI, "text");
    lab.setAttribute("x", 0); lab.setAttribute("y", y(max * frac) + 4);
    lab.setAttribute("font-size", "11"); lab.setAttribute("fill", "#6b7280");
    lab.textContent = (max * frac).toFixed(max < 10 ? 1 : 0);
    svg.append(lab);
  }
  for (const [label, at] of [["-" + mins(span), P], ["-" + mins(span / 2), P + (W - P) / 2], ["now", W - 22]]) {
    const t = document.createElementNS(svg.namespaceURI, "text");
    t.setAttribute("x", at); t.setAttribute("y", H + 16);
    t.setAttribute("font-size", "11"); t.setAttribute("fill", "#6b7280");
    t.textContent = label;
    svg.append(t);
  }
  line("completed", "#16a34a");
  line("failed", "#dc2626");
  const hasCompleted = pts.some(p => p.completed !== null && p.completed !== undefined);
  return h("div.chart",
    h("div.legend",
      h("span.c", {text: hasCompleted ? "● completed/s" : "● completed/s (no worker reports counts yet)"}),
      h("span.f", {text: "● failed/s (moved to a DLQ)"}),
      h("span.muted", {text: `sampled every ${series.interval_seconds}s, up to the last hour`})),
    svg);
}

async function overview() {
  const o = await api("/api/overview");
  const total = o.queues.reduce((a, q) => ({ready: a.ready + q.ready, scheduled: a.scheduled + q.scheduled}),
    {ready: 0, scheduled: 0});
  const card = (n, l, id) => h("div.card", {id}, h("div.n", {text: n}), h("div.l", {text: l}));
  const rows = o.queues.map(q => h("tr", {"data-queue-row": q.name},
    h("td", queueLink(q.queue), q.paused ? [" ", h("span.badge.paused", {text: "paused"})] : null),
    h("td.num", {text: q.ready}), h("td.num", {text: q.scheduled}), h("td.num", {text: q.active}),
    h("td", q.paused ? action("Resume", "", () => pause(q.name, false, overview))
                     : action("Pause", "", () => pause(q.name, true, overview)))));
  render(h("div",
    h("h1", {text: "Overview"}),
    o.error ? h("p.error", {text: o.error}) : null,
    h("div.cards",
      card(total.ready, "ready", "c-ready"), card(total.scheduled, "scheduled", "c-scheduled"),
      card(o.active, "active", "c-active"), card(o.dlq.len, "failed (DLQ)", "c-failed"),
      card(o.workers_alive, "workers alive", "c-workers")),
    chart(o.series),
    h("h2", {text: "Queues"}),
    h("table", {id: "queues"},
      h("thead", h("tr", h("th", {text: "Queue"}), h("th.num", {text: "Ready"}), h("th.num", {text: "Scheduled"}),
        h("th.num", {text: "Active"}), h("th"))),
      h("tbody", rows.length ? rows : h("tr", h("td", {colspan: 5, class: "muted", text: "No queues yet"})))),
    h("p.muted", {text: `Counts read ${ago(o.sampled_at)}; queues and workers discovered ${ago(o.discovered_at)}.`})));
  refreshIn(3000, overview);
}

async function pause(name, yes, then) {
  try {
    await api(yes ? "/api/queue/pause" : "/api/queue/resume", {name});
    toast(`${name} ${yes ? "paused" : "resumed"}`);
  } catch (e) { toast(e.message, true); }
  then(name);
}

// ---- queue ----------------------------------------------------------------

async function queuePage(name, offset = 0) {
  const limit = 50;
  const p = await api(`/api/queue?name=${encodeURIComponent(name)}&offset=${offset}&limit=${limit}`);
  const c = p.counts;
  const now = Date.now();
  const rows = p.jobs.map(j => h("tr",
    h("td", jobLink(j.id)), h("td", {text: j.function || j.problem || ""}), h("td", badge(j.status)),
    h("td", {text: j.ready_at ? (new Date(j.ready_at).getTime() <= now ? "ready" : "scheduled " + ago(j.ready_at)) : ""}),
    h("td", {text: j.attempts || ""}), h("td", {text: ago(j.enqueue_time)})));
  render(h("div",
    h("h1", {text: "Queue " + c.name + " "}, c.paused ? h("span.badge.paused", {id: "paused-badge", text: "paused"}) : null),
    h("div.toolbar",
      h("span", {text: `${c.ready} ready, ${c.scheduled} scheduled`}),
      c.paused ? action("Resume", "primary", () => pause(c.name, false, () => queuePage(name, offset)))
               : action("Pause", "", () => pause(c.name, true, () => queuePage(name, offset)))),
    h("table", {id: "queue-jobs"},
      h("thead", h("tr", ...["Job", "Function", "Status", "When", "Attempts", "Enqueued"].map(t => h("th", {text: t})))),
      h("tbody", rows.length ? rows : h("tr", h("td", {colspan: 6, class: "muted", text: "No jobs wait in this queue"})))),
    pager(offset, limit, c.ready + c.scheduled, o => queuePage(name, o), ["‹ Sooner", "Later ›"])));
  refreshIn(5000, () => queuePage(name, offset));
}

// ---- job ------------------------------------------------------------------

function pretty(v) { return h("pre", {text: v === null || v === undefined ? "null" : JSON.stringify(v, null, 2)}); }

async function jobPage(id) {
  let j;
  try { j = await api("/api/job?id=" + encodeURIComponent(id)); } catch (e) {
    render(h("div", h("h1", {text: "Job " + id}), h("p.error", {id: "job-error", text: e.message})));
    return;
  }
  const act = async (what) => {
    try {
      const r = await api("/api/job/" + what, {id});
      if (what === "replay") { toast("Replayed as " + r.new_job_id); location.hash = "#/job/" + encodeURIComponent(r.new_job_id); return; }
      toast(what === "retry" ? "Requeued to " + r.queue : "Cancel: " + r.result);
    } catch (e) { toast(e.message, true); }
    jobPage(id);
  };
  const kv = (k, v) => [h("dt", {text: k}), h("dd", {}, v instanceof Node ? v : String(v ?? ""))];
  render(h("div",
    h("h1", {text: "Job "}, h("code", {id: "job-id", text: j.id}), " ", h("span", {id: "job-status"}, badge(j.status))),
    h("div.toolbar",
      j.actions.retry ? action("Retry", "primary", () => act("retry")) : null,
      j.actions.cancel ? action("Cancel", "danger", () => act("cancel")) : null,
      j.actions.replay ? action("Replay", "", () => act("replay")) : null),
    j.problem ? h("p.error", {text: "This job cannot be parsed: " + j.problem}) : null,
    h("dl.kv",
      kv("Function", j.function), kv("Queue", j.queue ? queueLink(j.queue) : ""), kv("DLQ", j.dlq),
      kv("Attempts", `${j.current_retries ?? "?"} of ${j.max_retries ?? "?"}`), kv("Worker", j.worker_id),
      kv("Trace id", j.trace_id ? h("code", {id: "trace-id", text: j.trace_id}) : "")),
    j.last_error ? [h("h2", {text: "Last error"}), h("pre", {id: "last-error", text: j.last_error})] : null,
    h("h2", {text: "Params"}), pretty(j.params),
    h("h2", {text: "Result"}), pretty(j.result),
    h("h2", {text: "Timeline"}),
    h("table", {id: "timeline"}, h("tbody", j.timeline.map(e =>
      h("tr", h("td", {text: e.event}), h("td", {text: fmtTime(e.at)}), h("td.muted", {text: ago(e.at)}), h("td", {text: e.details}))))),
    h("h2", {text: "Every field"}),
    h("table", {id: "fields"}, h("tbody", Object.entries(j.fields).map(([k, v]) =>
      h("tr", h("td", h("code", {text: k})), h("td", h("code", {text: v}))))))));
  if (j.status === "ACTIVE" || j.status === "PENDING" || j.status === "RETRYING") refreshIn(2000, () => jobPage(id));
}

// ---- DLQ ------------------------------------------------------------------

const dlqState = {queue: "", function: "", error: "", offset: 0};

async function dlqPage() {
  const limit = 50, f = dlqState;
  const qs = new URLSearchParams({queue: f.queue, function: f.function, error: f.error, offset: f.offset, limit});
  const p = await api("/api/dlq?" + qs);
  const filter = {queue: f.queue || null, function: f.function || null, error: f.error || null};
  const selected = new Set();
  const input = (key, ph) => h("input", {placeholder: ph, value: f[key], "data-filter": key,
    onchange: e => { f[key] = e.target.value; f.offset = 0; dlqPage(); }});
  const requeue = async (body, what) => {
    try { const r = await api("/api/dlq/requeue", body); toast(`Requeued ${r.requeued} ${what}`); } catch (e) { toast(e.message, true); }
    dlqPage();
  };
  const confirmBox = h("div.confirm", {hidden: true, id: "purge-confirm"});
  const purge = async () => {
    try {
      const preview = await api("/api/dlq/purge", {all_matching: true, filter, confirm: false});
      confirmBox.replaceChildren(
        h("p", {text: `Purge ${preview.would_purge} dead-lettered job(s) for good? Their job data is deleted.`}),
        h("button.danger", {id: "purge-yes", onclick: async () => {
          try { const r = await api("/api/dlq/purge", {ids: preview.ids, confirm: true}); toast(`Purged ${r.purged}`); }
          catch (e) { toast(e.message, true); }
          dlqPage();
        }}, `Purge ${preview.would_purge}`), " ",
        h("button", {onclick: () => { confirmBox.hidden = true; }}, "Keep them"));
      confirmBox.hidden = false;
    } catch (e) { toast(e.message, true); }
  };
  const rows = p.jobs.map(j => h("tr", {"data-dlq-row": j.id},
    READ_ONLY ? null : h("td", h("input", {type: "checkbox", onchange: e => e.target.checked ? selected.add(j.id) : selected.delete(j.id)})),
    h("td", jobLink(j.id)), h("td", {text: j.function || j.problem || ""}),
    h("td", {text: (j.queue || "").replace(/^rrq:queue:/, "")}),
    h("td.error", {text: j.last_error || ""}), h("td", {text: ago(j.completion_time)}),
    h("td", action("Requeue", "", () => requeue({ids: [j.id]}, "job")))));
  render(h("div",
    h("h1", {text: "Dead letters "}, h("span.muted", {text: p.dlq})),
    h("div.toolbar", input("queue", "queue"), input("function", "function contains"), input("error", "error contains"),
      h("span.muted", {id: "dlq-count", text: `${p.matched} matching of ${p.total}` + (p.scanned < p.total ? ` (newest ${p.scanned} searched)` : "")})),
    READ_ONLY ? null : h("div.toolbar",
      action("Requeue selected", "", () => requeue({ids: [...selected]}, "selected")),
      action("Requeue all matching", "primary", () => requeue({all_matching: true, filter}, "matching")),
      action("Purge matching…", "danger", purge)),
    confirmBox,
    h("table", {id: "dlq-jobs"},
      h("thead", h("tr", READ_ONLY ? null : h("th"), ...["Job", "Function", "Queue", "Last error", "Failed", ""].map(t => h("th", {text: t})))),
      h("tbody", rows.length ? rows : h("tr", h("td", {colspan: 7, class: "muted", text: "The DLQ is empty"})))),
    pager(f.offset, limit, p.matched, o => { f.offset = o; dlqPage(); })));
}

// ---- workers and cron -----------------------------------------------------

async function workersPage() {
  const w = await api("/api/workers");
  render(h("div",
    h("h1", {text: "Workers"}),
    h("table", {id: "workers"},
      h("thead", h("tr", ...["Worker", "Status", "Active", "Concurrency", "Queues", "Completed", "Failed", "Heartbeat", "Expires in"].map(t => h("th", {text: t})))),
      h("tbody", w.workers.length ? w.workers.map(x => h("tr",
        h("td", h("code", {text: x.worker_id})), h("td", {text: x.readable ? (x.status || "") : "health data unreadable"}),
        h("td.num", {text: x.active_jobs ?? ""}), h("td.num", {text: x.concurrency_limit ?? ""}),
        h("td", x.queues.map(q => [queueLink(q), x.active_by_queue && x.active_by_queue[q] ? ` (${x.active_by_queue[q]}) ` : " "])),
        h("td.num", {text: x.completed_jobs ?? ""}), h("td.num", {text: x.failed_jobs ?? ""}),
        h("td", {text: x.last_heartbeat ? ago(x.last_heartbeat) : ""}),
        h("td", {text: x.ttl_seconds === null ? "no expiry" : x.ttl_seconds + "s"})))
        : h("tr", h("td", {colspan: 9, class: "muted", text: "No live worker"})))),
    h("p.muted", {text: "Discovered " + ago(w.discovered_at)})));
  refreshIn(5000, workersPage);
}

async function cronPage() {
  const c = await api("/api/cron");
  render(h("div",
    h("h1", {text: "Cron"}),
    h("table", {id: "cron"},
      h("thead", h("tr", ...["Entry", "Function", "Schedule", "Queue", "Last run", "Next run"].map(t => h("th", {text: t})))),
      h("tbody", c.entries.length || c.invalid.length ? [
        ...c.invalid.map(e => h("tr", h("td", {text: e.key}), h("td.error", {colspan: 5, text: e.error}))),
        ...c.entries.map(e => h("tr", h("td", {text: e.name, title: e.key}), h("td", {text: e.function}),
          h("td", h("code", {text: e.schedule}), " ", h("span.muted", {text: e.timezone})),
          h("td", queueLink(e.queue)), h("td", {text: e.last_tick ? `${fmtTime(e.last_tick)} (${ago(e.last_tick)})` : "never"}),
          h("td", {title: e.next_runs.map(fmtTime).join("\n"),
            text: e.next_runs.length ? `${fmtTime(e.next_runs[0])} (${ago(e.next_runs[0])})` : "none"})))]
        : h("tr", h("td", {colspan: 6, class: "muted", text: "No cron entries in the configuration"}))))));
}

// ---- routing --------------------------------------------------------------

function render(el) { app.replaceChildren(el); }
function refreshIn(ms, fn) { clearTimeout(timer); timer = setTimeout(() => fn().catch(showError), ms); }
function showError(e) { render(h("div", h("h1", {text: "Error"}), h("p.error", {text: e.message}))); }

function route() {
  clearTimeout(timer);
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const nav = parts[0] || "overview";
  document.querySelectorAll("header nav a").forEach(a => a.classList.toggle("active", a.dataset.nav === nav));
  const views = {
    "overview": overview, "": overview,
    "queue": () => queuePage(parts.slice(1).join("/")),
    "job": () => jobPage(parts.slice(1).join("/")),
    "dlq": dlqPage, "workers": workersPage, "cron": cronPage,
  };
  (views[parts[0]] || overview)().catch(showError);
}

document.getElementById("search").addEventListener("submit", e => {
  e.preventDefault();
  const id = document.getElementById("search-id").value.trim();
  if (id) location.hash = "#/job/" + encodeURIComponent(id);
});
document.getElementById("ro-badge").hidden = !READ_ONLY;
window.addEventListener("hashchange", route);
route();
