// The idis console: polls /api/console every `refresh` seconds (and /api/national/stats where
// the node serves it), derives request rates between polls, and redraws.  Everything the node
// sends goes into the page as text (textContent, SVG attributes), never as markup.
"use strict";
(() => {
  const API = "/api/console";
  const STATS_EVERY = 10000;
  const RATE_POINTS = 60;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  // Wall screens: larger type everywhere (the root's font size sets every rem).
  if (params.get("wall") === "1") document.documentElement.classList.add("wall");

  let previous = null;
  const rates = [];
  let lastOk = 0;
  let refresh = 2;
  let stats = null;
  let statsAt = 0;

  // --- building blocks: every child is a node or text -------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, String(value));
      else node[key] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }
  const pill = (text, state) => el("span", { class: "pill", "data-state": state || text }, text);
  const number = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
  function short(n) {
    if (n === null || n === undefined) return "–";
    const units = [[1e9, " billion"], [1e6, " million"], [1e3, "k"]];
    for (const [size, unit] of units) if (Math.abs(n) >= size) return (n / size).toFixed(n >= 10 * size ? 1 : 2) + unit;
    return String(Math.round(n * 10) / 10);
  }
  // Axis labels: short enough for the chart's margin (176M, 1.2B).
  function compact(n) {
    if (n >= 1e9) return (n / 1e9).toFixed(1) + "B";
    if (n >= 1e6) return Math.round(n / 1e6) + "M";
    if (n >= 1e3) return Math.round(n / 1e3) + "k";
    return String(Math.round(n));
  }
  const percent = (r) => (r === null || r === undefined ? "–" : (r * 100).toFixed(1) + " %");
  const when = (iso) => (iso ? iso.replace("T", " ").replace("+00:00", " UTC") : "–");
  function rows(table, list) {
    const body = (typeof table === "string" ? $(table) : table).querySelector("tbody");
    body.replaceChildren(...list);
  }

  // --- charts: inline SVG, drawn here ------------------------------------------------------
  function sparkline(values, width, height) {
    const box = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
    if (values.length < 2) return box;
    const top = Math.max(...values, 1);
    const step = width / (RATE_POINTS - 1);
    const start = width - step * (values.length - 1);
    const points = values.map((v, i) => `${(start + i * step).toFixed(1)},${(height - 2 - (v / top) * (height - 4)).toFixed(1)}`);
    box.append(svg("polyline", { class: "line", points: points.join(" ") }));
    return box;
  }

  // Bars of `key` per day against a target line; the title of each bar holds its figures.
  function barChart(days, key, target, label) {
    const width = 720, height = 200, left = 44, bottom = 24, top = 12;
    const box = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
    const most = Math.max(target, ...days.map((d) => Number(d[key]) || 0)) * 1.1 || 1;
    const y = (v) => top + (height - top - bottom) * (1 - v / most);
    box.append(svg("line", { class: "axis", x1: left, x2: width, y1: y(0), y2: y(0) }));
    for (const tick of [0, most / 2, most]) {
      box.append(svg("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end" }, compact(tick)));
    }
    const slot = (width - left) / Math.max(days.length, 1);
    days.forEach((day, i) => {
      const value = Number(day[key]) || 0;
      const bar = svg("rect", {
        class: "bar-fill", x: left + i * slot + slot * 0.15, width: Math.max(slot * 0.7, 1),
        y: y(value), height: Math.max(y(0) - y(value), 0),
      });
      bar.append(svg("title", {}, `${day.day}: ${number(value)}`));
      box.append(bar);
      if (i === 0 || i === days.length - 1 || days.length <= 8) {
        // The last day's label ends at the bar's right edge: centred, it would be cut off.
        const last = i === days.length - 1 && days.length > 8;
        box.append(svg("text", { x: left + i * slot + (last ? slot : slot / 2), y: height - 8, "text-anchor": last ? "end" : "middle" }, day.day.slice(5)));
      }
    });
    box.append(svg("line", { class: "target", x1: left, x2: width, y1: y(target), y2: y(target) }));
    box.append(svg("text", { x: width - 4, y: y(target) - 5, "text-anchor": "end" }, `target ${short(target)} a day`));
    return box;
  }

  // --- sections --------------------------------------------------------------------------
  function card(title, ...children) {
    return el("div", { class: "card" }, el("h3", {}, title), ...children);
  }
  function kv(pairs) {
    const list = el("dl", { class: "kv" });
    for (const [key, value] of pairs) list.append(el("dt", {}, key), el("dd", {}, value));
    return list;
  }

  function drawNode(data) {
    const node = data.node;
    $("node-name").textContent = node.name;
    $("node-role").textContent = node.role;
    const status = $("node-status");
    status.textContent = node.status;
    status.dataset.state = node.status;
    document.title = `${node.name} · idis console`;

    const db = node.database || {};
    const health = card(
      "health",
      el("p", { class: "big" }, pill(node.status)),
      kv([
        ["database", db.reachable === false ? pill("down") : (db.member || "–")],
        ["lag", db.lag === undefined || db.lag === null ? "–" : `${db.lag} s`],
        ["redis", pill(node.redis, node.redis === "off" ? "unknown" : node.redis)],
        ["workers", number(node.workers)],
        ["uptime", `${Math.round(node.uptime)} s`],
        ["prefixes", node.homed && node.homed.length ? node.homed.join(", ") : "–"],
      ]),
    );
    const traffic = data.traffic;
    const rate = rates.length ? rates[rates.length - 1] : null;
    const requests = card(
      "requests per second",
      el("p", { class: "big", id: "request-rate" }, rate === null ? "…" : short(rate)),
      el("div", { class: "chart" }, sparkline(rates, 300, 60)),
      kv([
        ["answered", number(traffic.requests)],
        ["by door", Object.entries(traffic.byDoor).map(([k, v]) => `${k} ${number(v)}`).join(" · ") || "–"],
        ["walks", number(traffic.walks)],
        ["upstream failures", `${number(traffic.upstreamFailures)} of ${number(traffic.upstreamRequests)}`],
        ["refused", `auth ${number(traffic.authenticationFailures)} · throttled ${number(traffic.throttled)} · quota ${number(traffic.quotaRefusals)}`],
      ]),
    );
    // Hit ratio per layer: the share of resolutions each layer answered, since the node
    // started; then the chain's own cache counters (lookups past the REST front's hot answers).
    const answered = traffic.resolvedBy || {};
    const resolved = Object.values(answered).reduce((a, b) => a + b, 0);
    const order = ["memory", "redis", "store", "stale", "walk"];
    const layers = Object.keys(answered).sort((a, b) => order.indexOf(a) - order.indexOf(b)).map((layer) => {
      const share = resolved ? answered[layer] / resolved : 0;
      const bar = el("div", { class: "bar" }, el("div"));
      bar.firstChild.style.width = `${share * 100}%`;
      return el("div", { "data-layer": layer },
        el("div", {}, `${layer}: `, el("strong", {}, percent(share)),
          el("span", { class: "dim" }, ` · ${number(answered[layer])} answered`)), bar);
    });
    const cacheHits = (answered.memory || 0) + (answered.redis || 0);
    const hitCard = card("cache hit ratio",
      el("p", { class: "big", id: "hit-ratio" }, resolved ? percent(cacheHits / resolved) : "–"),
      ...(layers.length ? layers : [el("p", { class: "dim" }, "no resolutions yet")]),
      kv(data.caches.map((c) => [`${c.layer} cache`,
        `${percent(c.ratio)} of ${number(c.hits + c.misses)} lookups${c.entries === null ? "" : ` · ${number(c.entries)} entries`}`])));
    $("this-node").replaceChildren(health, requests, hitCard);
  }

  function drawTier(data) {
    const tier = data.national;
    $("tier").hidden = !tier;
    if (!tier) return;
    $("leader").textContent = tier.leader || "none";
    $("leader").dataset.state = tier.leader ? "live" : "down";
    const error = $("tier-error");
    error.hidden = !tier.error;
    error.textContent = tier.error || "";
    const byName = {};
    for (const site of data.sites || []) if (site.name) byName[site.name] = site;
    byName[data.node.name] = { name: data.node.name, state: data.node.status, url: "this node" };
    const members = tier.members || [];
    rows("sites", members.map((m) => {
      const site = byName[m.name] || {};
      return el("tr", { class: m.name === tier.leader ? "leader" : "", "data-site": m.name, "data-role": m.role },
        el("td", {}, m.name), el("td", {}, m.role.replace("_", " ")), el("td", {}, pill(m.state)),
        el("td", { class: "num" }, m.lag === null || m.lag === undefined ? "–" : `${number(m.lag)} B`),
        el("td", {}, site.state ? pill(site.state) : "–"), el("td", {}, site.url || ""));
    }));
    const takeovers = tier.takeovers || [];
    $("takeovers").replaceChildren(...(takeovers.length
      ? takeovers.map((t) => el("li", { "data-from": t.from, "data-to": t.to },
        el("strong", {}, `${t.from} → ${t.to}`), el("br"), el("span", { class: "dim" }, when(t.at))))
      : [el("li", { class: "dim" }, "none seen since this node started")]));
  }

  function drawPeers(data) {
    const members = new Set(((data.national || {}).members || []).map((m) => m.name));
    const others = (data.sites || []).filter((s) => !members.has(s.name));
    $("peers").hidden = !others.length;
    rows("peer-sites", others.map((s) => el("tr", { "data-site": s.name || s.url },
      el("td", {}, s.name || "?"), el("td", {}, s.role || "–"), el("td", {}, pill(s.state)),
      el("td", {}, s.member || "–"), el("td", { class: "num" }, s.lag === undefined || s.lag === null ? "–" : `${s.lag} s`),
      el("td", {}, s.url))));
  }

  function drawUpstreams(data) {
    const list = data.upstreams || [];
    $("upstreams").hidden = !list.length;
    rows("upstreams", list.map((u) => el("tr", { "data-url": u.url },
      el("td", {}, u.url), el("td", {}, u.kind), el("td", {}, pill(u.state)),
      el("td", {}, u.name || "–"), el("td", {}, u.role || "–"),
      el("td", { class: "num" }, u.latencyMs === undefined ? "–" : `${u.latencyMs} ms`))));
  }

  function drawDelegations(data) {
    const list = data.delegations || [];
    $("delegations").hidden = !list.length;
    const counts = {};
    for (const n of (stats && stats.nodes) || []) counts[n.prefix] = n;
    rows("delegations", list.map((d) => {
      const site = d.sites[0] || { url: d.urls[0], state: "unknown" };
      const figures = counts[d.prefix] || {};
      return el("tr", { "data-prefix": d.prefix },
        el("td", {}, d.prefix), el("td", {}, d.urls.join(", ")), el("td", {}, pill(site.state)),
        el("td", { class: "num" }, number(figures.identifiers)),
        el("td", { class: "num" }, number(figures.registeredToday)),
        el("td", { class: "num" }, number(figures.resolvedToday)));
    }));
  }

  function drawFigures() {
    $("figures").hidden = !stats;
    if (!stats) return;
    const target = stats.target || {};
    const totals = stats.totals || {};
    const share = target.identifiers ? Math.min(totals.identifiers / target.identifiers, 1) : 0;
    const progress = document.querySelector(".progress");
    progress.setAttribute("aria-valuenow", (share * 100).toFixed(4));
    document.querySelector(".progress-fill").style.width = `${share * 100}%`;
    $("identifiers-text").textContent =
      `${number(totals.identifiers)} of ${short(target.identifiers)} (${(share * 100).toFixed(share < 0.01 ? 4 : 1)} %)` +
      ` · ${number(totals.registeredToday)} registered and ${number(totals.resolvedToday)} resolved today`;
    $("figures-asof").textContent = totals.asOf ? `as of ${when(totals.asOf)}` : "";
    $("resolutions-chart").replaceChildren(
      barChart(stats.days || [], "resolved", target.resolutionsPerDay || 0, "resolutions per day"));
    rows("industry", (stats.nodes || []).map((n) => el("tr", { "data-prefix": n.prefix },
      el("td", {}, n.prefix), el("td", {}, n.node), el("td", { class: "num" }, number(n.identifiers)),
      el("td", { class: "num" }, number(n.registeredToday)), el("td", { class: "num" }, number(n.resolvedToday)),
      el("td", {}, when(n.lastReport)))));
  }

  // --- polling -----------------------------------------------------------------------------
  async function getJson(url) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 5000);
    try {
      const answer = await fetch(url, { cache: "no-store", signal: abort.signal, credentials: "same-origin" });
      return { status: answer.status, body: answer.ok ? await answer.json() : null };
    } finally {
      clearTimeout(timer);
    }
  }

  async function pollStats(data) {
    if (!data.nationalStats || Date.now() - statsAt < STATS_EVERY) return;
    statsAt = Date.now();
    try {
      const answer = await getJson(data.nationalStats);
      stats = answer.status === 200 && answer.body && answer.body.totals ? answer.body : null;
    } catch (error) {
      // Kept: the figures change slowly, and the node's own freshness shows its state.
    }
  }

  function freshness() {
    const badge = $("freshness");
    const age = lastOk ? (Date.now() - lastOk) / 1000 : null;
    const stale = age === null || age > refresh * 2.5 + 1;
    document.body.classList.toggle("stale", Boolean(lastOk) && stale);
    badge.dataset.state = !lastOk ? "waiting" : stale ? "stale" : "live";
    badge.textContent = !lastOk ? "waiting for the node…" : stale
      ? `stale: no answer for ${Math.round(age)} s` : "live";
    $("clock").textContent = new Date().toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  async function poll() {
    try {
      const answer = await getJson(API);
      if (answer.status !== 200 || !answer.body) throw new Error(`HTTP ${answer.status}`);
      const data = answer.body;
      if (previous && data.now > previous.now) {
        const rate = (data.traffic.requests - previous.traffic.requests) / (data.now - previous.now);
        rates.push(Math.max(rate, 0));
        if (rates.length > RATE_POINTS) rates.shift();
      }
      previous = data;
      refresh = data.refresh || refresh;
      lastOk = Date.now();
      await pollStats(data);
      drawNode(data);
      drawTier(data);
      drawPeers(data);
      drawUpstreams(data);
      drawDelegations(data);
      drawFigures();
    } catch (error) {
      // The node did not answer: what is shown stays, marked stale by freshness().
    }
    freshness();
    setTimeout(poll, refresh * 1000);
  }

  setInterval(freshness, 1000);
  poll();
})();
