// Caly console: plain JavaScript, no framework. Every request goes to this server's REST API
// with the session cookie (set HttpOnly at sign-in, so this script never sees it); no key is
// ever put in a URL or in storage. Data is written into the page with textContent only.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const view = $("view");
  /** Replaces the view's content (skipping absent parts). */
  const show = (...parts) => view.replaceChildren(...parts.flat().filter((p) => p !== null && p !== undefined && p !== false));

  // ---- small helpers -----------------------------------------------------------------

  /** An element with attributes and children (strings become text nodes). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  class Unauthorized extends Error {}

  /** GET/POST/DELETE against the API with the session cookie; JSON back. */
  async function api(path, options = {}) {
    const init = { method: options.method || "GET", credentials: "same-origin", headers: {} };
    if (options.body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    const res = await fetch(path, init);
    if (res.status === 401) throw new Unauthorized((await errorText(res)) || "Sign in again.");
    if (!res.ok) throw new Error((await errorText(res)) || `HTTP ${res.status}`);
    return res.status === 204 ? null : res.json();
  }

  async function errorText(res) {
    try {
      const body = await res.json();
      return body && body.error && body.error.message;
    } catch (_) {
      return null;
    }
  }

  const ms = (v) => (v === null || v === undefined ? "–" : `${Math.round(v)} ms`);
  const pct = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`);
  const usd = (v) => (v === null || v === undefined ? "–" : `$${Number(v).toFixed(4)}`);
  const clock = (t) => (t ? new Date(t).toLocaleString() : "–");
  function span(msTotal) {
    if (msTotal === null || msTotal === undefined) return "–";
    const s = Math.max(0, Math.round(msTotal / 1000));
    const m = Math.floor(s / 60);
    return `${m}:${String(s % 60).padStart(2, "0")}`;
  }
  const label = (s) => (s ? String(s).replace(/_/g, " ") : "–");

  // The API's own vocabulary (statuses, intents, end reasons), from its OpenAPI document.
  let vocabulary = null;
  async function vocab() {
    if (vocabulary) return vocabulary;
    const doc = await api("/v1/openapi.json");
    const params = (doc.paths["/v1/calls"].get.parameters || []);
    const values = (name) => {
      const p = params.find((q) => q.name === name);
      return (p && p.schema && p.schema.enum) || [];
    };
    vocabulary = { status: values("status"), intent: values("intent"), end_reason: values("end_reason") };
    return vocabulary;
  }

  // ---- charts (uPlot) -----------------------------------------------------------------

  const palette = ["#0b6bcb", "#6a3fb5", "#0f7b5f", "#b54708", "#b42318", "#475467"];
  const charts = [];

  function destroyCharts() {
    while (charts.length) charts.pop().destroy();
  }

  /** A chart card: title, a uPlot chart, and the same numbers as a table for screen readers. */
  function chart(title, testid, xLabels, series, opts = {}) {
    const box = el("figure", { class: "chart", "data-testid": testid, "aria-label": title });
    box.append(el("h3", {}, title));
    const host = el("div", { class: "plot" });
    box.append(host);
    const table = el("table", { class: "sr-only" },
      el("caption", {}, title),
      el("tr", {}, el("th", {}, opts.xName || ""), series.map((s) => el("th", {}, s.label))),
      xLabels.map((x, i) => el("tr", {}, el("td", {}, x), series.map((s) => el("td", {}, s.values[i] ?? "")))));
    box.append(table);
    requestAnimationFrame(() => {
      const width = Math.max(280, host.clientWidth || box.clientWidth - 16);
      const xs = xLabels.map((_, i) => i);
      const bars = opts.bars && uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6, 48] }) : null;
      const u = new uPlot({
        width,
        height: opts.height || 200,
        legend: { show: series.length > 1 },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: false, range: [-0.5, Math.max(0.5, xs.length - 0.5)] }, y: { range: opts.yRange } },
        axes: [
          {
            values: (u, splits) => splits.map((i) => (Number.isInteger(i) && xLabels[i] !== undefined ? xLabels[i] : "")),
            incrs: [1, 2, 3, 4, 6, 12, 24, 48, 96],
            size: opts.xSize || 40,
            rotate: 0,
          },
          { values: (u, splits) => splits.map((v) => (opts.yFormat ? opts.yFormat(v) : v)), size: 60 },
        ],
        series: [
          { label: opts.xName || "", value: (u, v) => (v === null || v === undefined ? "" : xLabels[v] ?? "") },
          ...series.map((s, i) => ({
            label: s.label,
            stroke: palette[i % palette.length],
            fill: bars ? palette[i % palette.length] + "cc" : undefined,
            width: 2,
            paths: bars || undefined,
            points: { show: !bars, size: 6 },
            spanGaps: true,
          })),
        ],
      }, [xs, ...series.map((s) => s.values.map((v) => (v === null || v === undefined ? null : v)))], host);
      charts.push(u);
      box.setAttribute("data-rendered", "true");
    });
    return box;
  }

  // ---- sign-in ------------------------------------------------------------------------

  let session = null;

  function showSignIn(message) {
    session = null;
    closeLive();
    destroyCharts();
    view.replaceChildren();
    $("nav").hidden = true;
    $("who").hidden = true;
    $("sign-in").hidden = false;
    const err = $("sign-in-error");
    err.hidden = !message;
    err.textContent = message || "";
    $("key").focus();
  }

  function signedIn(s) {
    session = s;
    $("sign-in").hidden = true;
    $("nav").hidden = false;
    $("who").hidden = false;
    $("who-name").textContent = `${s.name} (${s.scope})`;
  }

  $("sign-in-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("key");
    const key = input.value.trim();
    input.value = "";
    try {
      signedIn(await api("/v1/console/session", { method: "POST", body: { key } }));
      route();
    } catch (err) {
      showSignIn(err instanceof Unauthorized ? "That API key is not valid." : String(err.message || err));
    }
  });

  $("sign-out").addEventListener("click", async () => {
    try {
      await api("/v1/console/session", { method: "DELETE" });
    } finally {
      location.hash = "#/live";
      showSignIn("Signed out.");
    }
  });

  // ---- live calls ---------------------------------------------------------------------

  let live = null; // { source, calls: Map, timer }

  function closeLive() {
    if (!live) return;
    live.source.close();
    clearInterval(live.timer);
    live = null;
  }

  function renderLive() {
    const body = $("live-body");
    if (!body || !live) return;
    const rows = [...live.calls.values()].sort((a, b) => a.started_at.localeCompare(b.started_at));
    $("live-count").textContent = `${rows.length} call${rows.length === 1 ? "" : "s"} in progress`;
    body.replaceChildren(...(rows.length ? rows.map((c) =>
      el("tr", { class: "live-row", "data-testid": "live-call", "data-call-id": c.id },
        el("td", {}, el("a", { href: `#/calls/${encodeURIComponent(c.id)}` }, c.caller || "unknown caller")),
        el("td", { "data-testid": "live-duration" }, span(Date.now() - Date.parse(c.started_at))),
        el("td", {}, el("span", { class: `pill ${c.activity}`, "data-testid": "live-activity" }, label(c.activity))),
        el("td", { "data-testid": "live-intent" }, c.intent ? `${label(c.intent)} (${Math.round((c.intent_confidence || 0) * 100)}%)` : "–"),
        el("td", {}, String(c.turns)),
        el("td", {}, String(c.barge_ins)),
        el("td", { class: "muted" }, c.instance)))
      : [el("tr", {}, el("td", { colspan: 7, class: "empty" }, "No calls right now. They appear here as they start."))]));
  }

  function showLive() {
    view.replaceChildren(
      el("h1", {}, "Live calls"),
      el("p", { class: "muted", id: "live-count", "aria-live": "polite" }, "Connecting…"),
      el("table", { "data-testid": "live-table" },
        el("thead", {}, el("tr", {}, ["Caller", "Duration", "Now", "Latest intent", "Turns", "Barge-ins", "Instance"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", { id: "live-body" })));
    const source = new EventSource("/v1/console/live");
    live = { source, calls: new Map(), timer: setInterval(renderLive, 1000) };
    source.addEventListener("snapshot", (e) => {
      live.calls = new Map(JSON.parse(e.data).map((c) => [c.id, c]));
      renderLive();
    });
    source.addEventListener("call", (e) => {
      const c = JSON.parse(e.data);
      live.calls.set(c.id, c);
      renderLive();
    });
    source.addEventListener("ended", (e) => {
      live.calls.delete(JSON.parse(e.data).id);
      renderLive();
    });
    source.onerror = async () => {
      // The browser retries by itself; a session that ended means signing in again.
      try {
        await api("/v1/console/session");
      } catch (err) {
        if (err instanceof Unauthorized) showSignIn("Your session has ended; sign in again.");
      }
    };
  }

  // ---- calls list ---------------------------------------------------------------------

  async function showCalls(params) {
    const v = await vocab();
    const select = (name, values) => el("label", {}, label(name),
      el("select", { name, "data-testid": `filter-${name}` }, el("option", { value: "" }, "any"),
        values.map((x) => el("option", { value: x, selected: params.get(name) === x }, label(x)))));
    const text = (name, caption, type = "text") => el("label", {}, caption,
      el("input", { name, type, value: params.get(name) || "", "data-testid": `filter-${name}` }));
    const form = el("form", { class: "filters", "data-testid": "call-filters" },
      select("status", v.status), select("intent", v.intent), select("end_reason", v.end_reason),
      text("from", "caller number"), text("since", "since", "datetime-local"), text("until", "until", "datetime-local"),
      el("button", { type: "submit" }, "Filter"),
      el("button", { type: "button", onclick: () => { location.hash = "#/calls"; } }, "Clear"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const q = new URLSearchParams();
      for (const [k, val] of new FormData(form)) if (val) q.set(k, val);
      location.hash = `#/calls${q.toString() ? "?" + q : ""}`;
    });
    const query = new URLSearchParams();
    for (const k of ["status", "intent", "end_reason", "from", "cursor"]) if (params.get(k)) query.set(k, params.get(k));
    for (const k of ["since", "until"]) if (params.get(k)) query.set(k, new Date(params.get(k)).toISOString());
    query.set("limit", /^\d{1,3}$/.test(params.get("limit") || "") ? params.get("limit") : "25");
    const page = await api(`/v1/calls?${query}`);
    const rows = page.items.map((c) => el("tr", { "data-testid": "call-row", "data-call-id": c.id },
      el("td", {}, el("a", { href: `#/calls/${encodeURIComponent(c.id)}` }, clock(c.started_at))),
      el("td", {}, c.from || "–"),
      el("td", {}, label(c.status)),
      el("td", {}, label(c.end_reason)),
      el("td", {}, span(c.duration_ms)),
      el("td", {}, String(c.turns)),
      el("td", {}, ms(c.v2v_p50_ms)),
      el("td", {}, usd(c.cost_usd))));
    const pager = el("div", { class: "pager" });
    if (params.get("cursor")) pager.append(el("a", { href: "#/calls", "data-testid": "first-page" }, "First page"));
    if (page.next_cursor) {
      const next = new URLSearchParams(params);
      next.set("cursor", page.next_cursor);
      pager.append(el("a", { href: `#/calls?${next}`, "data-testid": "next-page" }, "Next page →"));
    }
    view.replaceChildren(
      el("h1", {}, "Calls"), form,
      el("table", { "data-testid": "calls-table" },
        el("thead", {}, el("tr", {}, ["Started", "Caller", "Status", "End reason", "Duration", "Turns", "v2v p50", "Cost"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 8, class: "empty", "data-testid": "no-calls" }, "No calls match.")))),
      pager);
  }

  // ---- one call -----------------------------------------------------------------------

  async function showCall(id) {
    const c = await api(`/v1/calls/${encodeURIComponent(id)}`);
    const start = Date.parse(c.started_at);
    const at = (iso) => Math.max(0, Date.parse(iso) - start);
    const items = [
      ...c.transcript.map((s) => ({ t: s.pts_ms, kind: s.speaker, who: s.speaker === "caller" ? "Caller" : "Bot", text: s.text })),
      ...c.intents.map((i) => ({ t: at(i.at), kind: "intent", who: "Intent",
        text: `${label(i.intent)} · ${Math.round(i.confidence * 100)}%${i.accepted ? "" : " (not acted on)"}${Object.keys(i.entities || {}).length ? " · " + Object.entries(i.entities).map(([k, v]) => `${k} ${v}`).join(", ") : ""}` })),
      ...c.actions.map((a) => ({ t: at(a.created_at), kind: "action", who: "Action",
        text: `${label(a.action)}${a.order ? " " + a.order : ""} → ${label(a.status)}: ${a.detail}` })),
      ...c.events.map((e) => ({ t: e.pts_ms, kind: "event", who: label(e.kind), text: e.detail || "" })),
    ].sort((a, b) => a.t - b.t);
    const facts = [
      ["Caller", c.from || "–"], ["Started", clock(c.started_at)], ["Duration", span(c.duration_ms)],
      ["Status", label(c.status)], ["End reason", label(c.end_reason)], ["Turns", c.turns],
      ["Barge-ins", c.barge_ins], ["v2v p50", ms(c.v2v_p50_ms)], ["v2v max", ms(c.v2v_max_ms)],
      ["Model cost", usd(c.cost_usd)],
    ];
    destroyCharts();
    const turns = c.turns_ledger;
    show(
      el("p", {}, el("a", { href: "#/calls" }, "← Calls")),
      el("h1", {}, `Call ${c.call_sid || c.id}`),
      el("dl", { class: "facts", "data-testid": "call-facts" }, facts.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, String(v))))),
      c.erased_at ? el("p", { class: "muted" }, `Personal data erased ${clock(c.erased_at)}.`) : null,
      el("h2", {}, "Latency per turn"),
      turns.length
        ? chart("End of speech → model audio → first chunk sent → first chunk played (ms)", "latency-chart",
          turns.map((t) => `turn ${t.seq + 1}`), [
            { label: "model audio", values: turns.map((t) => t.model_ms) },
            { label: "first chunk sent", values: turns.map((t) => t.v2v_sent_ms) },
            { label: "first chunk played", values: turns.map((t) => t.v2v_played_ms) },
            { label: "engine share", values: turns.map((t) => t.engine_ms) },
          ], { xName: "turn", yFormat: (v) => `${v} ms` })
        : el("p", { class: "muted" }, "No turns with a latency ledger."),
      el("h2", {}, "Timeline"),
      el("ol", { class: "timeline", "data-testid": "timeline" }, items.length ? items.map((i) =>
        el("li", { class: i.kind, "data-kind": i.kind },
          el("span", { class: "t" }, span(i.t)), el("span", { class: "who" }, i.who), el("span", {}, i.text)))
        : el("li", {}, el("span", {}), el("span", {}), el("span", { class: "muted" }, "Nothing recorded."))));
  }

  // ---- KPIs ---------------------------------------------------------------------------

  const RANGES = { "24h": { hours: 24, bucket: "hour" }, "7d": { hours: 168, bucket: "day" }, "30d": { hours: 720, bucket: "day" } };

  async function showKpis(params) {
    const name = RANGES[params.get("range")] ? params.get("range") : "24h";
    const r = RANGES[name];
    const until = new Date(Math.ceil(Date.now() / 3600000) * 3600000);
    const since = new Date(until.getTime() - r.hours * 3600000);
    const q = `since=${since.toISOString()}&until=${until.toISOString()}`;
    const [k, s] = await Promise.all([api(`/v1/analytics/kpis?${q}`), api(`/v1/analytics/series?${q}&bucket=${r.bucket}`)]);
    destroyCharts();
    const x = s.buckets.map((b) => {
      const d = new Date(b.start);
      return r.bucket === "hour" ? `${String(d.getHours()).padStart(2, "0")}h` : `${d.getDate()}/${d.getMonth() + 1}`;
    });
    const rate = (part, whole) => s.buckets.map((b) => (b[whole] ? b[part] / b[whole] : null));
    const facts = [
      ["Calls", k.calls], ["Answered", k.answered], ["Containment", pct(k.containment_rate)],
      ["Hand-off rate", pct(k.answered ? k.handed_off / k.answered : null)], ["Action success", pct(k.action_success_rate)],
      ["v2v p50", ms(k.v2v_p50_ms)], ["v2v p95", ms(k.v2v_p95_ms)], ["Cost per call", usd(k.cost_per_call_usd)],
      ["Cost per contained call", usd(k.cost_per_contained_call_usd)],
    ];
    const endReasons = Object.entries(k.end_reasons);
    const intents = Object.entries(k.intents).sort((a, b) => b[1] - a[1]);
    view.replaceChildren(
      el("h1", {}, "KPIs"),
      el("div", { class: "range", role: "group", "aria-label": "Range" }, Object.keys(RANGES).map((n) =>
        el("button", { type: "button", "aria-pressed": n === name ? "true" : "false", onclick: () => { location.hash = `#/kpis?range=${n}`; } }, `Last ${n}`))),
      el("dl", { class: "facts", "data-testid": "kpi-facts" }, facts.map(([a, b]) => el("div", {}, el("dt", {}, a), el("dd", {}, String(b))))),
      el("div", { class: "charts" },
        chart(`Calls per ${r.bucket}`, "chart-calls", x, [{ label: "calls", values: s.buckets.map((b) => b.calls) }], { bars: true }),
        chart("Containment and hand-off rate", "chart-containment", x, [
          { label: "containment", values: rate("contained", "answered") },
          { label: "hand-off", values: rate("handed_off", "answered") },
        ], { yRange: [0, 1], yFormat: (v) => `${Math.round(v * 100)}%` }),
        chart("Voice-to-voice latency (ms)", "chart-v2v", x, [
          { label: "p50", values: s.buckets.map((b) => b.v2v_p50_ms) },
          { label: "p95", values: s.buckets.map((b) => b.v2v_p95_ms) },
        ]),
        chart("Model cost per call (USD)", "chart-cost", x, [
          { label: "cost per call", values: s.buckets.map((b) => (b.answered ? b.cost_usd / b.answered : null)) },
        ], { yFormat: (v) => `$${v.toFixed(3)}` }),
        chart("End reasons", "chart-end-reasons", endReasons.map(([n]) => label(n)), [{ label: "calls", values: endReasons.map(([, n]) => n) }], { bars: true, xSize: 50 }),
        chart("Intent mix (calls)", "chart-intents", intents.map(([n]) => label(n)), [{ label: "calls", values: intents.map(([, n]) => n) }], { bars: true, xSize: 50 }),
        chart("Agent actions", "chart-actions", ["done", "not done"], [{ label: "actions", values: [k.actions_done, k.actions_finished - k.actions_done] }], { bars: true })));
  }

  // ---- routing ------------------------------------------------------------------------

  async function route() {
    if (!session) return;
    closeLive();
    destroyCharts();
    const hash = location.hash || "#/live";
    delete view.dataset.shows;
    const [path, query] = hash.slice(1).split("?");
    const params = new URLSearchParams(query || "");
    const parts = path.split("/").filter(Boolean);
    const page = parts[0] || "live";
    for (const a of document.querySelectorAll("nav a")) {
      if (a.dataset.route === page) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    try {
      if (page === "calls" && parts[1]) await showCall(decodeURIComponent(parts[1]));
      else if (page === "calls") await showCalls(params);
      else if (page === "kpis") await showKpis(params);
      else showLive();
      // What the view now shows (the browser tests wait for it after a navigation).
      view.dataset.shows = hash;
    } catch (err) {
      if (err instanceof Unauthorized) showSignIn("Your session has ended; sign in again.");
      else view.replaceChildren(el("p", { class: "error", role: "alert" }, String(err.message || err)));
    }
  }

  window.addEventListener("hashchange", route);

  (async () => {
    try {
      signedIn(await api("/v1/console/session"));
      route();
    } catch (err) {
      showSignIn(err instanceof Unauthorized ? "" : String(err.message || err));
    }
  })();
})();
