// relayguard console: plain JavaScript over the JSON API (docs/console.md).
// Every value from the server reaches the page through textContent or an
// attribute, never as markup.
"use strict";

const S = { csrf: "", role: "", view: "", pages: { bans: 0, queue: 0, accounts: 0 }, last: {}, stream: null };
const PAGE = 100;
const $ = (id) => document.getElementById(id);

// h builds an element: h("td", {class: "x"}, "text", child...).
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const k of kids.flat()) {
    if (k === undefined || k === null) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function status(msg, bad) {
  const s = $("status");
  s.textContent = msg || "";
  s.className = "status" + (bad ? " error" : "");
}

async function api(method, path, body) {
  const opt = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") {
    opt.headers["X-CSRF-Token"] = S.csrf;
    opt.headers["Content-Type"] = "application/json";
    opt.body = JSON.stringify(body || {});
  }
  const r = await fetch(path, opt);
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (r.status === 401 && path !== "/api/login") { showLogin(); throw new Error((data && data.error) || "not logged in"); }
  if (!r.ok) throw new Error((data && data.error) || (r.status + " " + r.statusText));
  return data;
}

// act runs an action and reports its outcome.
async function act(what, method, path, body, after) {
  try {
    const res = await api(method, path, body);
    status(what + ": done");
    if (after) await after(res);
    return res;
  } catch (e) {
    status(what + ": " + e.message, true);
    return null;
  }
}

const fmtTime = (t) => (t ? new Date(t).toLocaleString() : "");
function fmtAge(s) {
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m";
  if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0");
  return Math.floor(s / 86400) + "d" + Math.floor((s % 86400) / 3600) + "h";
}
const num = (n) => Number(n || 0).toLocaleString();
const plural = (n, one, many) => num(n) + " " + (n === 1 ? one : many);

// ---- login and session -------------------------------------------------

function showLogin() {
  S.csrf = "";
  if (S.stream) { S.stream.close(); S.stream = null; }
  $("nav").hidden = true; $("logout").hidden = true; $("who").textContent = "";
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("login").hidden = false;
  $("login-name").focus();
}

async function loggedIn(info) {
  S.csrf = info.csrf; S.role = info.role;
  $("login").hidden = true; $("nav").hidden = false; $("logout").hidden = false;
  $("who").textContent = info.admin + (info.role === "readonly" ? " (read-only)" : "");
  $("host").textContent = info.host + " · " + info.command;
  document.body.classList.toggle("readonly", info.role !== "admin");
  startStream();
  route();
}

async function login(ev) {
  ev.preventDefault();
  $("login-error").textContent = "";
  try {
    const info = await api("POST", "/api/login", { name: $("login-name").value, password: $("login-password").value });
    $("login-password").value = "";
    await loggedIn(info);
  } catch (e) {
    $("login-password").value = "";
    $("login-error").textContent = e.message;
  }
}

async function logout() {
  await act("log out", "POST", "/api/logout", {});
  showLogin();
}

function startStream() {
  if (S.stream) S.stream.close();
  const es = new EventSource("/api/stream");
  S.stream = es;
  es.addEventListener("tick", (m) => {
    const t = JSON.parse(m.data);
    $("live").textContent = "live " + new Date(t.time).toLocaleTimeString();
    $("live").className = "live on";
    const changed = (k) => S.last[k] !== undefined && S.last[k] !== t[k];
    // A list with a confirmation open (an operator typing a reason) is not
    // redrawn under the operator's hands: its change stays pending until
    // the action or cancel, and the action's own reload shows it.
    const editing = document.querySelector("#view-" + S.view + " input.reason") !== null;
    const seen = Object.assign({}, t);
    if (S.view === "overview") loadOverview();
    else if (S.view === "bans" && changed("bans")) { if (editing) seen.bans = S.last.bans; else loadBans(); }
    else if (S.view === "queue" && changed("queue")) { if (editing) seen.queue = S.last.queue; else loadQueue(); }
    S.last = seen;
  });
  es.addEventListener("end", () => { es.close(); showLogin(); });
  es.onerror = () => { $("live").className = "live off"; };
}

// ---- views -------------------------------------------------------------

function route() {
  if (!S.csrf) return;
  const v = (location.hash || "#overview").slice(1).split("/")[0];
  S.view = ["overview", "bans", "queue", "accounts", "reports"].includes(v) ? v : "overview";
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + S.view;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("current", a.dataset.view === S.view);
  status("");
  ({ overview: loadOverview, bans: loadBans, queue: loadQueue, accounts: loadAccounts, reports: loadReport })[S.view]();
}

function table(head, rows) {
  return h("table", { class: "list" }, h("thead", {}, h("tr", {}, head.map((x) => h("th", {}, x)))), h("tbody", {}, rows));
}

function pager(el, total, key, load) {
  el.replaceChildren();
  const off = S.pages[key];
  if (total <= PAGE) return;
  el.append(
    h("button", { type: "button", disabled: off === 0, onclick: () => { S.pages[key] = Math.max(0, off - PAGE); load(); } }, "‹ previous"),
    h("span", {}, " " + num(off + 1) + "–" + num(Math.min(total, off + PAGE)) + " of " + num(total) + " "),
    h("button", { type: "button", disabled: off + PAGE >= total, onclick: () => { S.pages[key] = off + PAGE; load(); } }, "next ›"));
}

// confirmCell replaces a cell's content with a reason field and a button
// that runs fn(reason); the reason is logged with the action.
function confirmCell(cell, label, needReason, fn) {
  const input = h("input", { class: "reason", placeholder: needReason ? "reason (logged)" : "reason (optional)", "aria-label": "reason" });
  const ok = h("button", { type: "button", class: "confirm" }, label);
  const cancel = h("button", { type: "button", class: "cancel" }, "cancel");
  const old = [...cell.childNodes];
  cell.replaceChildren(input, ok, cancel);
  input.focus();
  cancel.onclick = () => cell.replaceChildren(...old);
  ok.onclick = () => {
    if (needReason && !input.value.trim()) { input.classList.add("missing"); input.focus(); return; }
    fn(input.value.trim());
  };
}

// ---- overview ------------------------------------------------------------

const SERIES = { connections: "Connections", accepted: "Accepted", rejected: "Rejected", deferred: "Deferred", auth_failures: "AUTH failures", bans: "Bans" };

// chart draws one series as columns of an inline SVG.
function chart(title, points, unit, cls) {
  const W = 300, H = 90, top = 16, bottom = 14;
  const peak = Math.max(0, ...points);
  const max = Math.max(1, peak);
  const total = points.reduce((a, b) => a + b, 0);
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart " + cls);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${title}: ${total} over the last ${unit}`);
  const t = document.createElementNS(NS, "title");
  t.textContent = `${title}: ${total} (${unit}), peak ${peak}`;
  svg.append(t);
  const bw = W / points.length;
  points.forEach((v, i) => {
    const bh = ((H - top - bottom) * v) / max;
    const r = document.createElementNS(NS, "rect");
    r.setAttribute("x", (i * bw + 0.5).toFixed(1));
    r.setAttribute("y", (H - bottom - bh).toFixed(1));
    r.setAttribute("width", Math.max(1, bw - 1).toFixed(1));
    r.setAttribute("height", Math.max(v > 0 ? 1 : 0, bh).toFixed(1));
    svg.append(r);
  });
  const label = document.createElementNS(NS, "text");
  label.setAttribute("x", "2"); label.setAttribute("y", "11");
  label.textContent = `${title} ${num(total)} · peak ${num(peak)}` + (unit === "hour" ? "/min" : "/h");
  svg.append(label);
  const axis = document.createElementNS(NS, "text");
  axis.setAttribute("x", "2"); axis.setAttribute("y", String(H - 2)); axis.setAttribute("class", "axis");
  axis.textContent = unit === "hour" ? "−60 min … now" : "−24 h … now";
  svg.append(axis);
  return svg;
}

async function loadOverview() {
  let o;
  try { o = await api("GET", "/api/overview"); } catch (e) { status(e.message, true); return; }
  const charts = $("charts");
  charts.replaceChildren();
  for (const k of Object.keys(SERIES)) {
    if (!o.series.measured.includes(k)) continue;
    charts.append(h("div", { class: "chartpair", "data-series": k }, chart(SERIES[k], o.series.hour[k], "hour", k), chart(SERIES[k], o.series.day[k], "day", k)));
  }
  if (o.series.measured.length < Object.keys(SERIES).length)
    charts.append(h("p", { class: "sub" }, "Not measured by relayguard " + o.command + ": " +
      Object.keys(SERIES).filter((k) => !o.series.measured.includes(k)).map((k) => SERIES[k]).join(", ") + " (Postfix's own traffic: see Reports)."));

  $("attacks").replaceChildren(o.attacks.length === 0 ? h("p", { class: "quiet" }, "No failed logins in the last hour.") :
    table(["Network", "Failures", "Addresses", "Usernames tried", "Last", ""], o.attacks.map((a) =>
      h("tr", { "data-prefix": a.prefix }, h("td", {}, a.prefix), h("td", { class: "n" }, num(a.failures)), h("td", { class: "n" }, a.addresses),
        h("td", { class: "users" }, a.users.map((u) => u.key + " (" + u.count + ")").join(", ")), h("td", {}, fmtTime(a.last)),
        h("td", {}, a.banned ? h("span", { class: "tag banned" }, "banned " + a.banned) : "")))));

  const b = o.bans;
  $("ban-summary").replaceChildren(
    h("p", { class: "big", id: "ban-total" }, plural(b.total, "ban", "bans")),
    h("p", {}, Object.entries(b.by_source).map(([k, v]) => k + " " + num(v)).join(" · ") + (b.total ? " · " + num(b.subnets) + " subnets, " + num(b.ipv4) + " IPv4, " + num(b.ipv6) + " IPv6" : "")),
    (b.latest || []).length ? table(["Prefix", "Reason", "Expires"], b.latest.map((x) =>
      h("tr", { "data-prefix": x.prefix }, h("td", {}, x.prefix), h("td", {}, x.reason), h("td", {}, x.until ? fmtTime(x.until) : "never")))) : "");

  const q = o.queue;
  $("queue-summary").replaceChildren(!q.available ? h("p", { class: "quiet" }, "The queue is not in this process (relayguard " + o.command + ").") :
    h("div", {}, h("p", { class: "big" }, plural(q.total, "message", "messages")),
      h("p", {}, Object.entries(q.by_state).map(([k, v]) => k + " " + num(v)).join(" · ")),
      q.oldest ? h("p", {}, "oldest since " + fmtTime(q.oldest)) : "",
      q.top_destinations.length ? h("p", {}, "to " + q.top_destinations.map((d) => d.key + " (" + d.count + ")").join(", ")) : "",
      q.error ? h("p", { class: "error" }, q.error) : ""));

  const rp = o.reputation;
  const finding = (f) => h("tr", { class: "sev-" + f.severity }, h("td", {}, f.subject), h("td", {}, f.title), h("td", {}, (f.evidence || []).join("; ")));
  $("reputation").replaceChildren(
    !rp.available ? h("p", { class: "quiet" }, "No reputation monitor in this process.") :
    rp.checked ? h("p", { id: "reputation-verdict", class: rp.listed.length ? "error" : "ok" },
      rp.listed.length ? "LISTED: " + plural(rp.listed.length, "listing", "listings") : rp.lists ? "not listed on the lists asked" : "no DNS list to ask ([dnsbl] zones, [audit] catalog): certificates only") : h("p", { class: "quiet" }, rp.running ? "checking…" : "not checked yet"),
    rp.listed.length ? table(["Address or domain", "Listing", "Evidence"], rp.listed.map(finding)) : "",
    rp.other.length ? table(["Certificate", "Finding", "Evidence"], rp.other.map(finding)) : "",
    rp.problems.length ? h("p", { class: "warn" }, "Could not ask: " + rp.problems.map((p) => p.check + " (" + p.error + ")").join("; ")) : "",
    ...(rp.notes || []).map((n) => h("p", { class: "sub" }, n)),
    rp.checked ? h("p", { class: "sub" }, "checked " + fmtTime(rp.checked) + (rp.interval ? ", every " + rp.interval : ", only when asked ([audit] reputation_interval = 0)")) : "",
    rp.available ? h("button", { type: "button", class: "admin-only", id: "reputation-check", onclick: () => act("reputation check", "POST", "/api/reputation/check", {}, loadOverview) }, "Check now") : "");

  $("egress").replaceChildren(o.egress.length === 0 ? h("p", { class: "quiet" }, "No blocked attempt seen by this process.") :
    table(["User", "Program", "Attempts", "Last", "To"], o.egress.map((e) =>
      h("tr", {}, h("td", {}, e.user), h("td", {}, e.program), h("td", { class: "n" }, num(e.count)), h("td", {}, fmtTime(e.last)), h("td", {}, e.last_destination)))));

  const au = o.audit;
  $("audit").replaceChildren(!au.available ? h("p", { class: au.error ? "error" : "quiet" }, au.error || au.hint) :
    h("div", {}, h("p", {}, "Grade " + au.grade + " · score " + au.score + " · " + fmtTime(au.started) + " on " + au.host +
      (au.problems ? " · " + au.problems + " check(s) could not be made" : "")),
      au.findings.length === 0 ? h("p", { class: "ok" }, "No findings.") :
        table(["Severity", "Area", "Finding", "Subject", "Fix"], au.findings.map((f) =>
          h("tr", { class: "sev-" + f.severity }, h("td", {}, f.severity + (f.fixed ? " (fixed)" : "")), h("td", {}, f.area), h("td", {}, f.title), h("td", {}, f.subject), h("td", {}, h("code", {}, f.fix)))))));
}

// ---- bans ------------------------------------------------------------------

async function loadBans() {
  const q = $("ban-q").value.trim();
  let p;
  try { p = await api("GET", "/api/bans?limit=" + PAGE + "&offset=" + S.pages.bans + "&q=" + encodeURIComponent(q)); } catch (e) { status(e.message, true); return; }
  $("ban-count").textContent = num(p.total) + (q ? " matching" : " in force");
  $("bans").replaceChildren(...p.items.map((b) => {
    const act_ = h("td", { class: "actions" });
    const row = h("tr", { "data-prefix": b.prefix },
      h("td", { class: "prefix" }, b.prefix), h("td", { class: "reason" }, b.reason), h("td", {}, b.source), h("td", {}, fmtTime(b.created)),
      h("td", {}, b.until ? fmtTime(b.until) + " (" + fmtAge(b.remaining_s) + ")" : "never"), h("td", { class: "n" }, b.count), act_);
    act_.append(h("button", { type: "button", class: "unban admin-only", onclick: () =>
      confirmCell(act_, "Unban " + b.prefix, true, (reason) => act("unban " + b.prefix, "POST", "/api/bans/remove", { prefix: b.prefix, reason }, loadBans)) }, "Unban"));
    return row;
  }));
  pager($("bans-pager"), p.total, "bans", loadBans);
}

async function addBan(ev) {
  ev.preventDefault();
  const prefix = $("ban-add-prefix").value.trim();
  await act("ban " + prefix, "POST", "/api/bans", { prefix, duration: $("ban-add-duration").value.trim(), reason: $("ban-add-reason").value.trim() }, () => {
    $("ban-add-prefix").value = ""; $("ban-add-reason").value = "";
    return loadBans();
  });
}

// ---- queue -----------------------------------------------------------------

async function loadQueue() {
  const q = $("queue-q").value.trim(), st = $("queue-state").value;
  let p;
  try { p = await api("GET", "/api/queue?limit=" + PAGE + "&offset=" + S.pages.queue + "&state=" + st + "&q=" + encodeURIComponent(q)); }
  catch (e) { $("queue").replaceChildren(); status(e.message, true); return; }
  $("queue-count").textContent = plural(p.total, "message", "messages");
  $("queue").replaceChildren(...p.items.map((m) => {
    const a = h("td", { class: "actions" });
    const row = h("tr", { "data-id": m.id, "data-state": m.state },
      h("td", { class: "id" }, m.id), h("td", {}, fmtAge(m.age_s)), h("td", {}, m.from || "<>"), h("td", {}, m.user || ""),
      h("td", { class: "n" }, m.recipients), h("td", {}, m.destinations.join(", ")),
      h("td", { class: "state" }, m.state + (m.hold_reason ? ": " + m.hold_reason : "")), h("td", { class: "n" }, m.attempts),
      h("td", { class: "lasterror" }, m.last_error || ""), a);
    const path = "/api/queue/" + encodeURIComponent(m.id);
    if (m.state === "held") a.append(h("button", { type: "button", class: "release admin-only", onclick: () => act("release " + m.id, "POST", path + "/release", {}, loadQueue) }, "Release"));
    else a.append(h("button", { type: "button", class: "hold admin-only", onclick: () => confirmCell(a, "Hold", true, (reason) => act("hold " + m.id, "POST", path + "/hold", { reason }, loadQueue)) }, "Hold"));
    a.append(h("button", { type: "button", class: "delete admin-only", onclick: () => confirmCell(a, "Delete " + m.id, true, (reason) => act("delete " + m.id, "POST", path + "/delete", { reason }, loadQueue)) }, "Delete"),
      h("button", { type: "button", class: "headers", onclick: () => showMessage(m.id) }, "Headers"));
    return row;
  }));
  pager($("queue-pager"), p.total, "queue", loadQueue);
}

async function showMessage(id) {
  let m;
  try { m = await api("GET", "/api/queue/" + encodeURIComponent(id)); } catch (e) { status(e.message, true); return; }
  const e = m.envelope;
  const panel = $("message");
  panel.hidden = false;
  panel.replaceChildren(h("h2", {}, "Message " + e.id),
    h("p", {}, "from " + (e.from || "<>") + (e.auth_user ? " (user " + e.auth_user + ")" : "") + (e.client_ip ? " via " + e.client_ip : "") + ", received " + fmtTime(e.received) + ", " + num(e.size) + " bytes"),
    table(["Recipient", "State", "Tries", "Next try", "Last error"], e.recipients.map((r) =>
      h("tr", {}, h("td", {}, r.addr), h("td", {}, r.status), h("td", { class: "n" }, r.attempts || 0), h("td", {}, fmtTime(r.next_attempt)), h("td", {}, r.last_error || "")))),
    h("pre", { id: "message-headers" }, m.headers + (m.headers_cut ? "\n[…]" : "")),
    h("button", { type: "button", onclick: () => { panel.hidden = true; } }, "Close"));
}

// ---- accounts --------------------------------------------------------------

async function loadAccounts() {
  const q = $("account-q").value.trim();
  let p;
  try { p = await api("GET", "/api/accounts?limit=" + PAGE + "&offset=" + S.pages.accounts + "&q=" + encodeURIComponent(q)); } catch (e) { status(e.message, true); return; }
  $("account-count").textContent = plural(p.total, "account", "accounts") + (p.errors ? " (" + p.errors.join("; ") + ")" : "");
  $("accounts").replaceChildren(...p.items.map((a) => h("tr", { "data-name": a.name },
    h("td", {}, h("a", { href: "#accounts/" + encodeURIComponent(a.name), class: "account-link", onclick: (ev) => { ev.preventDefault(); showAccount(a.name); } }, a.name)),
    h("td", { class: "state" }, a.suspended ? h("span", { class: "tag banned" }, "suspended" + (a.suspension ? ": " + a.suspension.signal : "")) : (a.mailbox ? "active" : "seen")),
    h("td", { class: "n" }, num(a.logins)), h("td", { class: "n" }, a.networks), h("td", {}, fmtTime(a.last_login)))));
  pager($("accounts-pager"), p.total, "accounts", loadAccounts);
  const m = location.hash.match(/^#accounts\/(.+)$/);
  if (m) showAccount(decodeURIComponent(m[1]));
}

function meter(label, used, max) {
  const pct = max > 0 ? Math.min(100, Math.round((100 * used) / max)) : 0;
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 200 10"); svg.setAttribute("class", "meter" + (pct >= 100 ? " full" : pct >= 80 ? " high" : ""));
  const bg = document.createElementNS(NS, "rect"); bg.setAttribute("width", "200"); bg.setAttribute("height", "10"); bg.setAttribute("class", "bg");
  const fg = document.createElementNS(NS, "rect"); fg.setAttribute("width", String(2 * pct)); fg.setAttribute("height", "10");
  svg.append(bg, fg);
  return h("tr", {}, h("td", {}, label), h("td", {}, svg), h("td", { class: "n" }, num(used) + " / " + num(max)));
}

async function showAccount(name) {
  let a;
  try { a = await api("GET", "/api/accounts/" + encodeURIComponent(name)); } catch (e) { status(e.message, true); return; }
  const panel = $("account");
  panel.hidden = false;
  const path = "/api/accounts/" + encodeURIComponent(a.name);
  const actions = h("div", { class: "actions" });
  const reload = () => Promise.all([loadAccounts(), showAccount(a.name)]);
  if (a.suspended) actions.append(h("button", { type: "button", class: "unsuspend admin-only", onclick: () => confirmCell(actions, "Unsuspend " + a.name, true, (reason) => act("unsuspend " + a.name, "POST", path + "/unsuspend", { reason }, reload)) }, "Unsuspend"));
  else actions.append(h("button", { type: "button", class: "suspend admin-only", onclick: () => confirmCell(actions, "Suspend " + a.name, true, (reason) => act("suspend " + a.name, "POST", path + "/suspend", { reason }, reload)) }, "Suspend"));
  const v = a.volume_rule;
  const over = v.factor > 0 && a.sent_this_hour > Math.max(v.minimum, v.factor * a.baseline);
  panel.replaceChildren(h("h2", { id: "account-name" }, a.name),
    h("p", { id: "account-state", class: a.suspended ? "error" : "ok" }, a.suspended ? "Suspended" + (a.suspension ? " since " + fmtTime(a.suspension.since) + " by " + a.suspension.by + " (" + a.suspension.signal + ")" : "") : "Active"),
    a.suspension ? h("p", { class: "evidence" }, "Evidence: " + a.suspension.evidence) : "",
    a.addresses.length ? h("p", {}, "Sends as " + a.addresses.join(", ")) : "",
    h("h3", {}, "Send volume"),
    a.volume_known ? h("p", { class: over ? "error" : "", id: "account-volume" }, plural(a.sent_this_hour, "message", "messages") + " this hour; its busiest hour of the last " + v.baseline_window + ": " + num(a.baseline) +
      (v.factor > 0 ? " (the volume signal fires above " + v.factor + "× that and at least " + v.minimum + ")" : "")) : "",
    a.limits.length ? h("table", { class: "limits" }, h("tbody", {}, a.limits.map((l) => meter(l.limit.replaceAll("_", " "), l.used, l.max)))) : h("p", { class: "quiet" }, "No per-user send limit in force here."),
    h("h3", {}, "Recent logins"),
    a.recent_logins.length ? table(["Network", "Logins", "Last"], a.recent_logins.map((l) => h("tr", {}, h("td", {}, l.network), h("td", { class: "n" }, l.count), h("td", {}, fmtTime(l.last)))))
      : h("p", { class: "quiet" }, "No login seen by this process since it started."),
    a.errors ? h("p", { class: "error" }, a.errors.join("; ")) : "",
    actions);
}

// ---- reports ---------------------------------------------------------------

function loadReport() {
  const d = $("report-date");
  if (!d.value) d.value = new Date().toISOString().slice(0, 10);
  $("report").src = "/api/report?date=" + encodeURIComponent(d.value);
}

// ---- start -------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("ban-search").addEventListener("submit", (ev) => { ev.preventDefault(); S.pages.bans = 0; loadBans(); });
  $("ban-add").addEventListener("submit", addBan);
  $("queue-search").addEventListener("submit", (ev) => { ev.preventDefault(); S.pages.queue = 0; loadQueue(); });
  $("queue-state").addEventListener("change", () => { S.pages.queue = 0; loadQueue(); });
  $("queue-flush").addEventListener("click", () => act("flush", "POST", "/api/queue/flush", {}, loadQueue));
  $("account-search").addEventListener("submit", (ev) => { ev.preventDefault(); S.pages.accounts = 0; loadAccounts(); });
  $("report-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadReport(); });
  window.addEventListener("hashchange", route);
  try {
    const info = await api("GET", "/api/session");
    await loggedIn(info);
  } catch (e) {
    showLogin();
  }
});
