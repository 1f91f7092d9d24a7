// playpulse dashboard: filters in the URL, charts from the read API, live tiles from
// server-sent events. Pages: "/" (overview) and "/content/<id>" (one title).

import { ApiError, getJSON, metric, sessionHistogram } from "./api.js";
import * as build from "./charts.js";
import * as fmt from "./format.js";
import { watchHealth } from "./health.js";
import { ALL_TIME, RANGE_DAYS, extentOf, extentText, openingRange } from "./ranges.js";

const echarts = window.echarts;
const $ = (selector) => document.querySelector(selector);
const CONTENT_TYPES = ["audiobook", "track", "episode", "video"];
const REFRESH_MS = 60000;
const EMPTY_REFRESH_MS = 5000;

const browserTz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const contentId = location.pathname.startsWith("/content/")
  ? decodeURIComponent(location.pathname.slice("/content/".length))
  : null;

// ---------------------------------------------------------------------------------
// Filters: kept in the address (range, from, to, type, tz, title)

const query = new URLSearchParams(location.search);
// No range in the address: open on one that holds data (see openOnData).
let autoRange = !query.get("range");
const state = {
  range: query.get("range") || "7d",
  from: query.get("from") || "",
  to: query.get("to") || "",
  type: CONTENT_TYPES.includes(query.get("type")) ? query.get("type") : "",
  tz: query.get("tz") || browserTz,
  title: query.get("title") || "",
};

function filterQuery() {
  const q = new URLSearchParams();
  if (state.range !== "7d") q.set("range", state.range);
  if (state.range === "custom") {
    if (state.from) q.set("from", state.from);
    if (state.to) q.set("to", state.to);
  }
  if (state.type) q.set("type", state.type);
  if (state.tz !== browserTz) q.set("tz", state.tz);
  return q;
}

function syncAddress() {
  const q = filterQuery();
  if (!contentId && state.title) q.set("title", state.title);
  const search = q.toString();
  history.replaceState(null, "", location.pathname + (search ? `?${search}` : ""));
  const back = filterQuery().toString();
  $("#back-link").href = `/${back ? `?${back}` : ""}`;
  $("#brand").href = $("#back-link").href;
}

/** The read API's window and filter parameters for the current filters. */
function params(extra = {}) {
  const p = { tz: state.tz };
  if (state.range === "custom") {
    if (state.from) p.from = state.from;
    if (state.to) p.to = fmt.addDays(state.to, 1); // the picker's end day is inclusive
  } else if (state.range === "24h") {
    p.from = new Date(Date.now() - 86400000).toISOString();
  } else if (state.range === "all") {
    p.from = ALL_TIME.from;
    p.to = ALL_TIME.to;
  } else {
    p.from = fmt.addDays(fmt.todayIn(state.tz), -((RANGE_DAYS[state.range] || 7) - 1));
  }
  if (state.type) p.content_type = state.type;
  return { ...p, ...extra };
}

function titleHref(id) {
  const q = filterQuery().toString();
  return `/content/${encodeURIComponent(id)}${q ? `?${q}` : ""}`;
}

function setUpFilters() {
  const tzSelect = $("#tz");
  const zones = new Set(["UTC", browserTz, state.tz]);
  if (Intl.supportedValuesOf) for (const z of Intl.supportedValuesOf("timeZone")) zones.add(z);
  const sorted = ["UTC", ...[...zones].filter((z) => z !== "UTC").sort()];
  tzSelect.replaceChildren(...sorted.map((z) => new Option(z === browserTz ? `${z} (this device)` : z, z)));
  tzSelect.value = state.tz;
  $("#range").value = state.range;
  $("#content-type").value = state.type;
  $("#from").value = state.from;
  $("#to").value = state.to;
  $("#custom-range").hidden = state.range !== "custom";
  if (contentId) $("#content-type").closest("label").hidden = true;

  $("#filters").addEventListener("change", (event) => {
    autoRange = false;
    state.range = $("#range").value;
    state.type = $("#content-type").value;
    state.tz = $("#tz").value;
    state.from = $("#from").value;
    state.to = $("#to").value;
    $("#custom-range").hidden = state.range !== "custom";
    if (state.range === "custom" && !state.from) {
      state.from = fmt.addDays(fmt.todayIn(state.tz), -6);
      $("#from").value = state.from;
    }
    if (event.target.id === "content-type") state.title = "";
    syncAddress();
    loadPage();
  });
  $("#filters").addEventListener("submit", (event) => event.preventDefault());
}

// ---------------------------------------------------------------------------------
// Charts: one ECharts instance per [data-chart] element

const dark = window.matchMedia("(prefers-color-scheme: dark)").matches;
const instances = new Map();
const resizer = new ResizeObserver((entries) => {
  for (const entry of entries) echarts.getInstanceByDom(entry.target)?.resize();
});

function chartElement(name) {
  return document.querySelector(`[data-chart="${name}"]`);
}

function setChartState(name, state, message = "") {
  const el = chartElement(name);
  el.dataset.state = state;
  el.dataset.message = message;
}

function draw(name, option, onClick) {
  const el = chartElement(name);
  let chart = instances.get(name);
  if (!chart) {
    chart = echarts.init(el, dark ? "dark" : null, { renderer: "canvas" });
    instances.set(name, chart);
    resizer.observe(el);
  }
  chart.off("click");
  if (onClick) chart.on("click", onClick);
  chart.setOption(option, true);
  setChartState(name, "ready");
}

function clear(name, message) {
  instances.get(name)?.clear();
  setChartState(name, "empty", message);
}

let generation = 0;

/** Fetch `rows()`, build the option and draw; a newer load makes older answers moot. */
async function chart(name, rows, builder, emptyMessage, onClick) {
  const mine = generation;
  const el = chartElement(name);
  if (el.dataset.state !== "ready") setChartState(name, "loading", "Loading…");
  try {
    const data = await rows();
    if (mine !== generation) return;
    const option = builder(data);
    if (option) draw(name, option, onClick);
    else clear(name, emptyMessage);
  } catch (err) {
    if (mine !== generation) return;
    instances.get(name)?.clear();
    setChartState(name, "error", err instanceof ApiError ? err.message : String(err));
  }
}

const NO_DATA = "No data in this range.";

// ---------------------------------------------------------------------------------
// KPIs and the titles table

function kpis(container, items) {
  container.replaceChildren(...items.map(([label, value]) => {
    const box = document.createElement("div");
    box.className = "kpi";
    const name = document.createElement("span");
    name.textContent = label;
    const strong = document.createElement("strong");
    strong.textContent = value;
    box.append(name, strong);
    return box;
  }));
}

function titlesTable(rows) {
  const body = $("#titles-table tbody");
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    const title = document.createElement("td");
    const link = document.createElement("a");
    link.href = titleHref(r.content_id);
    link.textContent = r.title || r.content_id;
    link.className = "title-link";
    link.dataset.contentId = r.content_id;
    title.append(link);
    const type = document.createElement("span");
    type.className = "type-badge";
    type.textContent = r.content_type || "–";
    const cells = [
      title, r.creator || fmt.UNKNOWN, type, fmt.count(r.plays), fmt.count(r.listeners),
      fmt.hours(r.listening_s), fmt.percent(r.completion_rate), fmt.percent(r.skip_rate),
    ].map((value, i) => {
      if (value instanceof HTMLElement && value.tagName === "TD") return value;
      const td = document.createElement("td");
      if (i >= 3) td.className = "num";
      td.append(value);
      return td;
    });
    tr.append(...cells);
    return tr;
  }));
}

// ---------------------------------------------------------------------------------
// Empty state

let lastLive = null;
let pageEmpty = false;
const extents = new Map();
const EXTENT_TTL_MS = 60000;

/** The first and last day with data (in the dashboard's time zone) for the filters
 * `extra` (content_type, content_id) over all time, or null; from the `daily` query,
 * kept a minute per zone and filters (the empty state asks again every few seconds). */
async function dataExtent(extra = {}) {
  const p = { tz: state.tz, ...ALL_TIME, ...extra };
  const key = JSON.stringify(p);
  const cached = extents.get(key);
  if (cached && performance.now() - cached.at < EXTENT_TTL_MS) return cached.extent;
  const extent = metric("daily", p).then(extentOf);
  extents.set(key, { at: performance.now(), extent });
  extent.catch(() => extents.delete(key));
  return extent;
}

/** Switch to `range` (with `from`/`to` for "custom") and reload. */
function switchRange(range, from = "", to = "") {
  autoRange = false;
  state.range = range;
  state.from = from;
  state.to = to;
  $("#range").value = range;
  $("#from").value = from;
  $("#to").value = to;
  $("#custom-range").hidden = range !== "custom";
  syncAddress();
  loadPage();
}

/**
 * The first load with no range in the address found nothing in the default range: when
 * the data (for `extra` filters) lies elsewhere, switch to the shortest preset that holds
 * its last day, or "All time" (a history imported months after it ended), and return
 * true. Only once per page: a range the reader picks stays.
 */
async function openOnData(extra = {}) {
  if (!autoRange) return false;
  autoRange = false;
  const extent = await dataExtent(extra).catch(() => null);
  const range = openingRange(extent, fmt.todayIn(state.tz));
  if (!range || range === state.range) return false;
  switchRange(range);
  return true;
}

async function showEmpty(anyData) {
  pageEmpty = true;
  $("#empty").hidden = false;
  $("#overview-page").hidden = true;
  const filtered = state.type ? { content_type: state.type } : {};
  let extent = await dataExtent(filtered).catch(() => null);
  let clearType = false;
  if (!extent && state.type) {
    extent = await dataExtent().catch(() => null);
    clearType = Boolean(extent);
  }
  anyData = anyData || Boolean(extent);
  $("#empty-title").textContent = anyData ? "Nothing in this range" : "No events yet";
  $("#empty-lead").textContent = anyData
    ? "There are events, but none in the selected time range and content type. Pick a longer range or “All types”, or add more data:"
    : "This dashboard fills in as soon as events arrive. Three ways to get some:";
  $("#empty-ranges").hidden = !anyData;
  const button = $("#data-range");
  button.hidden = !extent;
  if (extent) {
    button.textContent = `Where the data is: ${extentText(extent)}${clearType ? " (all types)" : ""}`;
    button.dataset.from = extent.first;
    button.dataset.to = extent.last;
    button.dataset.clearType = clearType ? "1" : "";
  }
}

function setUpEmptyState() {
  for (const button of document.querySelectorAll("#empty-ranges button[data-range]")) {
    button.addEventListener("click", () => switchRange(button.dataset.range));
  }
  const dataRange = $("#data-range");
  dataRange.addEventListener("click", () => {
    if (dataRange.dataset.clearType) {
      state.type = "";
      $("#content-type").value = "";
    }
    switchRange("custom", dataRange.dataset.from, dataRange.dataset.to);
  });
}

function hideEmpty() {
  pageEmpty = false;
  $("#empty").hidden = true;
}

// ---------------------------------------------------------------------------------
// Overview page

async function loadOverview() {
  const p = params();
  const [overview, funnelRows] = await Promise.all([
    metric("overview", p).catch(() => null),
    metric("funnel", p).catch(() => []),
  ]);
  const o = overview ? overview[0] : null;
  if (o && !o.plays && !o.listening_s && !funnelRows.length) {
    if (await openOnData(state.type ? { content_type: state.type } : {})) return;
    const live = lastLive || (await getJSON("/v1/live").catch(() => null));
    await showEmpty(Boolean(live && live.freshness_s !== null));
    return;
  }
  autoRange = false;
  hideEmpty();
  $("#overview-page").hidden = false;
  if (o) {
    kpis($("#kpis"), [
      ["Plays", fmt.count(o.plays)],
      ["Streams (≥ 30 s)", fmt.count(o.streams)],
      ["Listeners", fmt.count(o.listeners)],
      ["Listening time", fmt.hours(o.listening_s)],
      ["Sessions", fmt.count(o.sessions)],
      ["Avg session", fmt.duration(o.avg_session_s)],
      ["Completion", fmt.percent(o.completion_rate)],
      ["Skip rate", fmt.percent(o.skip_rate)],
    ]);
  }
  $("#heatmap-tz").textContent = `listening hours, ${state.tz}`;
  $("#revenue-total").textContent = build.revenueTotals(funnelRows);

  const openTitle = (event) => {
    if (event.data && event.data.content_id) location.assign(titleHref(event.data.content_id));
  };
  // One ranked list of every title in the range (up to 10,000) feeds the top-content
  // chart, the titles table, the rates per content type and the title chooser.
  // Rankings are by listening time, or by plays where it is unknown (charts.js measure):
  // ranked here over every row, so they hold the top 10 of either.
  const titles = metric("top_content", { ...p, limit: 10000 });
  titles.catch(() => null); // each user below reports the error itself
  const types = state.type ? [state.type] : CONTENT_TYPES;
  await Promise.all([
    chart("daily", () => metric("daily", p), withHeading("#daily-heading", build.dailyHeading, build.daily), NO_DATA),
    chart("top_content", async () => {
      const all = await titles;
      $("#top-content-note").textContent = build.rankingNote(all, "titles");
      const rows = build.ranked(all).slice(0, 10);
      titlesTable(rows);
      return rows;
    }, build.topContent, NO_DATA, openTitle),
    chart("top_creators", async () => {
      const all = await metric("top_creators", { ...p, limit: 10000 });
      $("#top-creators-note").textContent = build.rankingNote(all, "creators");
      return build.ranked(all).slice(0, 10);
    }, build.topCreators, NO_DATA),
    chart("heatmap", () => metric("hourly_engagement", p), (rows) => {
      $("#heatmap-tz").textContent = `${build.heatmapMeasure(rows)}, ${state.tz}`;
      return build.heatmap(rows);
    }, NO_DATA),
    chart("sessions", () => sessionHistogram(p), build.sessions, NO_DATA),
    chart("devices", () => metric("devices", p), withHeading("#devices-note", build.devicesMeasure, build.devices), NO_DATA),
    chart("rates", async () => ratesByType(await titles, types), build.rates, NO_DATA),
    chart("visibility", () => metric("watch_time_visibility", p), withHeading("#visibility-note", build.visibilityHeading, build.visibility), NO_DATA),
    chart("funnel", async () => funnelRows, build.funnel, "No shop events in this range."),
    chart("revenue", async () => funnelRows, build.revenue, "No completed orders with an amount in this range."),
    loadTitleChoice(titles),
  ]);
}

/** Plays and completion and skip rates per content type; a rate is over the plays that
 * can tell it (each title's `*_rate_plays`; null when none can: unknown, not 0). */
function ratesByType(rows, types) {
  const blank = () => ({ plays: 0, sum: 0 });
  const sums = new Map(types.map((type) => [type, { type, plays: 0, c: blank(), s: blank() }]));
  for (const r of rows) {
    const sum = sums.get(r.content_type);
    if (!sum || !r.plays) continue;
    sum.plays += r.plays;
    for (const [acc, rate, n] of [
      [sum.c, r.completion_rate, r.completion_rate_plays],
      [sum.s, r.skip_rate, r.skip_rate_plays],
    ]) {
      if (rate === null || rate === undefined) continue;
      const over = n ?? r.plays;
      acc.plays += over;
      acc.sum += rate * over;
    }
  }
  const share = (acc) => (acc.plays ? acc.sum / acc.plays : null);
  return [...sums.values()].map((s) => ({
    type: s.type, plays: s.plays, completion_rate: share(s.c), skip_rate: share(s.s),
  }));
}

/** A chart builder that also sets the heading `selector` to `heading(rows)`. */
function withHeading(selector, heading, builder) {
  return (rows) => {
    $(selector).textContent = heading(rows);
    return builder(rows);
  };
}

/** Fill the title chooser (audiobooks first: they have chapters) and draw its charts. */
async function loadTitleChoice(titles) {
  const select = $("#title-choice");
  let rows = [];
  try {
    const all = await titles;
    const type = state.type || "audiobook";
    rows = all.filter((r) => r.content_type === type);
    if (!rows.length) rows = all;
    rows = rows.slice(0, 25);
  } catch (err) {
    setChartState("chapters", "error", err.message);
    setChartState("retention", "error", err.message);
    return;
  }
  select.replaceChildren(...rows.map((r) => new Option(fmt.truncate(r.title || r.content_id, 60), r.content_id)));
  if (state.title && !rows.some((r) => r.content_id === state.title)) {
    select.prepend(new Option(state.title, state.title));
  }
  if (!rows.length && !state.title) {
    $("#title-link").hidden = true;
    clear("chapters", "No titles in this range.");
    clear("retention", "No titles in this range.");
    return;
  }
  select.value = state.title || rows[0].content_id;
  await loadTitleCharts(select.value);
}

async function loadTitleCharts(id) {
  const p = params({ content_id: id, content_type: undefined });
  $("#title-link").hidden = false;
  $("#title-link").href = titleHref(id);
  await Promise.all([
    chart("chapters", () => metric("chapters", p), build.chapters,
      "No chapter data for this title (chapters come from content.chapter on audiobook events)."),
    chart("retention", () => metric("retention_curve", { ...p, limit: 1 }), build.retention,
      "No plays with a known duration in this range."),
  ]);
}

// ---------------------------------------------------------------------------------
// Title page

async function loadContent() {
  const p = params({ content_id: contentId, content_type: undefined });
  $("#content-page").hidden = false;
  const [info, overview] = await Promise.all([
    metric("top_content", { ...p, limit: 1 }).catch(() => []),
    metric("overview", p).catch(() => null),
  ]);
  const row = info[0];
  $("#content-title").textContent = row?.title || contentId;
  document.title = `${row?.title || contentId} · playpulse`;
  $("#content-meta").textContent = row
    ? [row.creator, row.content_type, contentId].filter(Boolean).join(" · ")
    : `${contentId}: no plays in this range`;
  const o = overview ? overview[0] : null;
  if (o && !o.plays && !o.listening_s && (await openOnData({ content_id: contentId }))) return;
  autoRange = false;
  if (o) {
    kpis($("#content-kpis"), [
      ["Plays", fmt.count(o.plays)],
      ["Streams (≥ 30 s)", fmt.count(o.streams)],
      ["Listeners", fmt.count(o.listeners)],
      ["Listening time", fmt.hours(o.listening_s)],
      ["Completion", fmt.percent(o.completion_rate)],
      ["Skip rate", fmt.percent(o.skip_rate)],
    ]);
  }
  await Promise.all([
    chart("content_chapters", () => metric("chapters", p), build.chapters,
      "No chapter data for this title (chapters come from content.chapter on audiobook events)."),
    chart("content_retention", () => metric("retention_curve", { ...p, limit: 1 }), build.retention,
      "No plays with a known duration in this range."),
    chart("content_daily", () => metric("daily", p),
      withHeading("#content-daily-heading", build.dailyHeading, build.daily), NO_DATA),
    chart("content_devices", () => metric("devices", p), build.devices, NO_DATA),
  ]);
}

// ---------------------------------------------------------------------------------
// Loading and refreshing

let refreshTimer = null;
let loading = null;

function loadPage() {
  generation += 1;
  const mine = generation;
  clearTimeout(refreshTimer);
  const run = (contentId ? loadContent() : loadOverview())
    .catch((err) => console.error("loading the dashboard failed", err))
    .finally(() => {
      if (loading === run) loading = null;
      if (mine !== generation) return; // a newer load (a range switch) owns the timer
      document.body.dataset.loaded = String(generation);
      refreshTimer = setTimeout(() => {
        if (document.visibilityState === "visible") loadPage();
        else refreshTimer = setTimeout(loadPage, REFRESH_MS);
      }, pageEmpty ? EMPTY_REFRESH_MS : REFRESH_MS);
    });
  loading = run;
  return run;
}

// ---------------------------------------------------------------------------------
// Live tiles

const liveFormat = {
  concurrent_listeners: fmt.count,
  events_last_minute: fmt.count,
  freshness_s: (v) => (v === null || v === undefined ? "no events" : fmt.duration(v)),
  quarantined: fmt.count,
};

let liveReceivedAt = 0;

/** Freshness now: the snapshot's, aged by the time since it arrived. */
function freshnessNow() {
  if (!lastLive || lastLive.freshness_s === null) return null;
  return lastLive.freshness_s + (performance.now() - liveReceivedAt) / 1000;
}

function tickFreshness() {
  const output = $("#tile-freshness output");
  const value = freshnessNow();
  output.textContent = liveFormat.freshness_s(value);
  $("#tile-freshness").classList.toggle("stale", value !== null && value > 300);
}

function showLive(snapshot) {
  const hadNoData = !lastLive || lastLive.freshness_s === null;
  lastLive = snapshot;
  liveReceivedAt = performance.now();
  for (const output of document.querySelectorAll("[data-live]")) {
    const key = output.dataset.live;
    const value = snapshot[key];
    const text = liveFormat[key](value);
    const tile = output.closest(".tile");
    if (output.textContent !== text) {
      if (key !== "freshness_s" && output.dataset.value !== undefined) {
        tile.classList.remove("flash");
        void tile.offsetWidth; // restart the animation
        tile.classList.add("flash");
      }
      output.textContent = text;
    }
    output.dataset.value = value === null ? "" : String(value);
  }
  tickFreshness();
  if (pageEmpty && hadNoData && snapshot.freshness_s !== null && !loading) loadPage();
}

function connectLive() {
  const status = $("#live-status");
  const source = new EventSource("/v1/live/stream");
  source.addEventListener("open", () => {
    status.dataset.state = "open";
    status.textContent = "live";
  });
  source.addEventListener("live", (event) => showLive(JSON.parse(event.data)));
  setInterval(() => lastLive && tickFreshness(), 1000);
  source.addEventListener("error", () => {
    status.dataset.state = "error";
    status.textContent = "live updates interrupted, reconnecting…";
  });
}

// ---------------------------------------------------------------------------------

function start() {
  if (!echarts) {
    document.body.textContent = "The chart library did not load (/assets/vendor/echarts/echarts.min.js).";
    return;
  }
  if (document.body.dataset.auth === "keys") $("#logout").hidden = false;
  setUpFilters();
  setUpEmptyState();
  syncAddress();
  if (!contentId) {
    $("#title-choice").addEventListener("change", (event) => {
      state.title = event.target.value;
      syncAddress();
      loadTitleCharts(state.title);
    });
  }
  connectLive();
  watchHealth($("#health-banner"));
  loadPage();
}

start();
