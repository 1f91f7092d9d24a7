// playpulse dashboard: filters in the URL, charts from the read API, live tiles from
// server-sent events. Pages: "/" (overview), "/content/<id>" (one title) and
// "/?view=year" (a listener's year, year.js). Every tile and the daily and ranking
// charts show the previous period beside the current one (compare.js); a click on a
// breakdown (a device, a country, a listener) filters the whole page by it.

import { ApiError, getJSON, metric, sessionHistogram } from "./api.js";
import * as build from "./charts.js";
import { previousWindow } from "./compare.js";
import * as fmt from "./format.js";
import { watchHealth } from "./health.js";
import { qoeDevicesTable, qoeTiles, qoeTitlesTable } from "./qoe.js";
import { ALL_TIME, RANGE_DAYS, extentOf, extentText, openingRange } from "./ranges.js";
import { tiles } from "./tiles.js";
import { loadYear } from "./year.js";
import { loadLabels, loadSimilar } from "./similar.js";

const echarts = window.echarts;
const $ = (selector) => document.querySelector(selector);
const CONTENT_TYPES = ["audiobook", "track", "episode", "video"];
const REFRESH_MS = 60000;
const EMPTY_REFRESH_MS = 5000;

const browserTz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const contentId = location.pathname.startsWith("/content/")
  ? decodeURIComponent(location.pathname.slice("/content/".length))
  : null;
const yearView = !contentId && new URLSearchParams(location.search).get("view") === "year";

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
  // Click-through filters (a breakdown's row or slice), and the year page's choice.
  listener: query.get("listener") || "",
  device: query.get("device") || "",
  platform: query.get("platform") || "",
  country: query.get("country") || "",
  year: query.get("year") || "",
};

/** The click-through filters: [state key, address and label, read API parameter]. */
const CLICK_FILTERS = [
  ["listener", "Listener", "user_id"],
  ["device", "Device", "device_type"],
  ["platform", "Platform", "platform"],
  ["country", "Country", "country"],
];

function filterQuery() {
  const q = new URLSearchParams();
  if (state.range !== "7d") q.set("range", state.range);
  if (state.range === "custom") {
    if (state.from) q.set("from", state.from);
    if (state.to) q.set("to", state.to);
  }
  if (state.type) q.set("type", state.type);
  if (state.tz !== browserTz) q.set("tz", state.tz);
  for (const [key] of CLICK_FILTERS) if (state[key]) q.set(key, state[key]);
  return q;
}

/** Filter the page by `changes` (click-through: {device, platform, country, listener};
 * "" clears one) and reload. */
function setFilters(changes) {
  autoRange = false;
  Object.assign(state, changes);
  state.title = "";
  syncAddress();
  showChips();
  loadPage();
}

/** One chip per click-through filter in force, each with a button that clears it. */
function showChips() {
  const chips = $("#chips");
  const active = CLICK_FILTERS.filter(([key]) => state[key]);
  chips.hidden = active.length === 0 || yearView;
  chips.replaceChildren(...active.map(([key, label]) => {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.dataset.filter = key;
    chip.textContent = `${label}: ${state[key]}`;
    const clear = document.createElement("button");
    clear.type = "button";
    clear.textContent = "×";
    clear.setAttribute("aria-label", `Remove the ${label.toLowerCase()} filter`);
    clear.addEventListener("click", () => setFilters({ [key]: "" }));
    chip.append(clear);
    return chip;
  }));
}

function syncAddress() {
  const q = filterQuery();
  if (!contentId && state.title) q.set("title", state.title);
  if (yearView) {
    for (const key of ["range", "from", "to", "type", ...CLICK_FILTERS.map(([k]) => k)]) q.delete(key);
    q.set("view", "year");
    if (state.year) q.set("year", state.year);
    if (state.listener) q.set("listener", state.listener);
  }
  const search = q.toString();
  history.replaceState(null, "", location.pathname + (search ? `?${search}` : ""));
  const back = filterQuery().toString();
  $("#back-link").href = `/${back ? `?${back}` : ""}`;
  $("#year-back").href = $("#back-link").href;
  $("#brand").href = $("#back-link").href;
  const year = new URLSearchParams({ view: "year" });
  if (state.tz !== browserTz) year.set("tz", state.tz);
  if (state.listener) year.set("listener", state.listener);
  $("#year-link").href = `/?${year}`;
}

/** The read API's window and filter parameters for the current filters. Windows are
 * explicit at both ends (the previous period is the same length: compare.js). */
function params(extra = {}) {
  const p = { tz: state.tz };
  const tomorrow = fmt.addDays(fmt.todayIn(state.tz), 1);
  if (state.range === "custom") {
    if (state.from) p.from = state.from;
    p.to = state.to ? fmt.addDays(state.to, 1) : tomorrow; // the picker's end day is inclusive
  } else if (state.range === "24h") {
    const now = Date.now();
    p.from = new Date(now - 86400000).toISOString();
    p.to = new Date(now).toISOString();
  } else if (state.range === "all") {
    p.from = ALL_TIME.from;
    p.to = ALL_TIME.to;
  } else {
    p.from = fmt.addDays(fmt.todayIn(state.tz), -((RANGE_DAYS[state.range] || 7) - 1));
    p.to = tomorrow;
  }
  if (state.type) p.content_type = state.type;
  for (const [key, , name] of CLICK_FILTERS) if (state[key]) p[name] = state[key];
  return { ...p, ...extra };
}

/** `p` moved to its previous period (compare.js), or null when it has none. */
function previousParams(p) {
  const before = previousWindow(p);
  return before ? { params: { ...p, from: before.from, to: before.to }, window: before } : null;
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
  if (yearView) {
    $("#range").closest("label").hidden = true;
    $("#content-type").closest("label").hidden = true;
    $("#custom-range").hidden = true;
  }

  $("#filters").addEventListener("change", (event) => {
    autoRange = false;
    state.range = $("#range").value;
    state.type = $("#content-type").value;
    state.tz = $("#tz").value;
    state.from = $("#from").value;
    state.to = $("#to").value;
    $("#custom-range").hidden = state.range !== "custom" || yearView;
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

/** The totals tiles of an `overview` row `o` (`before`: the previous period's, or null;
 * `short`: the title page's six). */
function overviewTiles(container, o, before, window, short = false) {
  const items = [
    { key: "plays", label: "Plays", value: o.plays, format: fmt.count, better: "up" },
    { key: "streams", label: "Streams (≥ 30 s)", value: o.streams, format: fmt.count, better: "up" },
    { key: "listeners", label: "Listeners", value: o.listeners, format: fmt.count, better: "up" },
    { key: "listening_s", label: "Listening time", value: o.listening_s, format: fmt.hours, better: "up" },
    { key: "sessions", label: "Sessions", value: o.sessions, format: fmt.count, better: "up" },
    { key: "avg_session_s", label: "Avg session", value: o.avg_session_s, format: fmt.duration, better: "up" },
    { key: "completion_rate", label: "Completion", value: o.completion_rate, format: fmt.percent, kind: "share", better: "up" },
    { key: "skip_rate", label: "Skip rate", value: o.skip_rate, format: fmt.percent, kind: "share", better: "down" },
  ];
  const shown = short ? items.filter((i) => !["sessions", "avg_session_s"].includes(i.key)) : items;
  tiles(container, shown, before, window);
}

function titlesTable(rows) {
  const body = $("#titles-table tbody");
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    const title = document.createElement("td");
    const link = document.createElement("a");
    link.href = titleHref(r.content_id);
    link.textContent = build.displayTitle(r);
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
  const prev = previousParams(p);
  const [overview, funnelRows, before, funnelBefore] = await Promise.all([
    metric("overview", p).catch(() => null),
    metric("funnel", p).catch(() => []),
    prev ? metric("overview", prev.params).catch(() => null) : null,
    prev ? metric("funnel", prev.params).catch(() => null) : null,
  ]);
  const o = overview ? overview[0] : null;
  const filtered = CLICK_FILTERS.some(([key]) => state[key]);
  if (o && !o.plays && !o.listening_s && !funnelRows.length && !filtered) {
    if (await openOnData(state.type ? { content_type: state.type } : {})) return;
    const live = lastLive || (await getJSON("/v1/live").catch(() => null));
    await showEmpty(Boolean(live && live.freshness_s !== null));
    return;
  }
  autoRange = false;
  hideEmpty();
  $("#overview-page").hidden = false;
  const note = $("#compare-note");
  note.hidden = !prev;
  if (prev) note.textContent = `▲▼ compared with the previous ${prev.window.days ? `${prev.window.days} day${prev.window.days === 1 ? "" : "s"}` : "period"} (${prev.window.from.slice(0, 10)} to ${fmt.addDays(prev.window.to.slice(0, 10), prev.window.days ? -1 : 0)})`;
  if (o) overviewTiles($("#kpis"), o, before ? before[0] : null, prev && prev.window);
  $("#heatmap-tz").textContent = `listening hours, ${state.tz}`;
  const revenueNow = build.revenueTotals(funnelRows);
  const revenueBefore = funnelBefore ? build.revenueTotals(funnelBefore) : "";
  $("#revenue-total").textContent = revenueNow || revenueBefore
    ? `${revenueNow || "none"}${prev ? ` (previous period: ${revenueBefore || "none"})` : ""}`
    : "";

  const openTitle = (event) => {
    if (event.data && event.data.content_id) location.assign(titleHref(event.data.content_id));
  };
  const pickDevice = (event) => {
    // The inner ring is the device type, the outer its platforms.
    const path = (event.treePathInfo || []).slice(1).map((t) => t.name);
    if (path.length) setFilters({ device: path[0], platform: path[1] || "" });
  };
  // One ranked list of every title in the range (up to 10,000) feeds the top-content
  // chart, the titles table, the rates per content type and the title chooser.
  // Rankings are by listening time, or by plays where it is unknown (charts.js measure):
  // ranked here over every row, so they hold the top 10 of either.
  const titles = metric("top_content", { ...p, limit: 10000 });
  titles.catch(() => null); // each user below reports the error itself
  const previousOf = (name, key) => (prev
    ? metric(name, { ...prev.params, limit: 10000 })
      .then((rows) => new Map(rows.map((r) => [r[key], r])))
      .catch(() => null)
    : Promise.resolve(null));
  const earlierTitles = previousOf("top_content", "content_id"); // the chart and the rates
  const types = state.type ? [state.type] : CONTENT_TYPES;
  await Promise.all([
    loadLabels(p),
    chart("daily", async () => {
      const [rows, earlier] = await Promise.all([
        metric("daily", p),
        prev ? metric("daily", prev.params).catch(() => null) : null,
      ]);
      return { rows, earlier };
    }, ({ rows, earlier }) => {
      $("#daily-heading").textContent = build.dailyHeading(rows);
      return build.daily(rows, earlier, prev && prev.window.days ? prev.window.days : 0);
    }, NO_DATA),
    chart("top_content", async () => {
      const [all, earlier] = await Promise.all([titles, earlierTitles]);
      $("#top-content-note").textContent = build.rankingNote(all, "titles");
      const rows = build.ranked(all).slice(0, 10);
      titlesTable(rows);
      return { rows, earlier };
    }, ({ rows, earlier }) => build.topContent(rows, earlier), NO_DATA, openTitle),
    chart("top_creators", async () => {
      const [all, earlier] = await Promise.all([
        metric("top_creators", { ...p, limit: 10000 }), previousOf("top_creators", "creator"),
      ]);
      $("#top-creators-note").textContent = build.rankingNote(all, "creators");
      return { rows: build.ranked(all).slice(0, 10), earlier };
    }, ({ rows, earlier }) => build.topCreators(rows, earlier), NO_DATA),
    chart("heatmap", async () => {
      const [rows, earlier] = await Promise.all([
        metric("hourly_engagement", p),
        prev ? metric("hourly_engagement", prev.params).catch(() => null) : null,
      ]);
      return { rows, earlier };
    }, ({ rows, earlier }) => {
      $("#heatmap-tz").textContent = `${build.heatmapMeasure(rows)}, ${state.tz}`;
      return build.heatmap(rows, earlier);
    }, NO_DATA),
    chart("sessions", async () => {
      const [rows, earlier] = await Promise.all([
        sessionHistogram(p), prev ? sessionHistogram(prev.params).catch(() => null) : null,
      ]);
      return { rows, earlier };
    }, ({ rows, earlier }) => build.sessions(rows, earlier), NO_DATA),
    chart("devices", async () => {
      const [rows, earlier] = await Promise.all([
        metric("devices", p), prev ? metric("devices", prev.params).catch(() => null) : null,
      ]);
      return { rows, earlier };
    }, ({ rows, earlier }) => {
      $("#devices-note").textContent = build.devicesMeasure(rows);
      return build.devices(rows, earlier);
    }, NO_DATA, pickDevice),
    chart("rates", async () => {
      const [all, earlier] = await Promise.all([titles, earlierTitles]);
      return { rows: ratesByType(all, types), earlier: earlier ? ratesByType([...earlier.values()], types) : null };
    }, ({ rows, earlier }) => build.rates(rows, earlier), NO_DATA),
    chart("visibility", async () => {
      const [rows, earlier] = await Promise.all([
        metric("watch_time_visibility", p),
        prev ? metric("watch_time_visibility", prev.params).catch(() => null) : null,
      ]);
      return { rows, earlier };
    }, ({ rows, earlier }) => {
      $("#visibility-note").textContent = build.visibilityHeading(rows);
      return build.visibility(rows, earlier, prev && prev.window.days ? prev.window.days : 0);
    }, NO_DATA),
    chart("funnel", async () => funnelRows, (rows) => build.funnel(rows, funnelBefore), "No shop events in this range."),
    chart("revenue", async () => funnelRows, build.revenue, "No completed orders with an amount in this range."),
    loadBreakdowns(p),
    loadQoe(p, prev),
    loadTitleChoice(titles),
  ]);
}

/** A table body of rows a click filters the page by (`pick(row)`); `cells(row)` are its
 * cells' texts (numeric after the first `text` ones). */
function pickTable(selector, emptySelector, rows, cells, pick, describe, text = 1) {
  const body = $(`${selector} tbody`);
  $(emptySelector).hidden = rows.length > 0;
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    tr.className = "pickable";
    tr.tabIndex = 0;
    tr.title = describe(r);
    tr.addEventListener("click", () => pick(r));
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") pick(r); });
    tr.append(...cells(r).map((value, i) => {
      const td = document.createElement("td");
      if (i >= text) td.className = "num";
      td.append(value);
      return td;
    }));
    return tr;
  }));
}

/** The countries and top listeners breakdowns: a click on a row filters by it. */
async function loadBreakdowns(p) {
  const mine = generation;
  const [countries, listeners] = await Promise.all([
    metric("countries", { ...p, limit: 15 }).catch(() => []),
    metric("user_sessions", { ...p, limit: 10 }).catch(() => []),
  ]);
  if (mine !== generation) return;
  pickTable("#countries-table", "#countries-empty", countries,
    (r) => [r.country, fmt.count(r.plays), fmt.count(r.listeners), fmt.hours(r.listening_s)],
    (r) => setFilters({ country: r.country }), (r) => `Show only plays in ${r.country}`);
  for (const [tr, r] of [...$("#countries-table tbody").children].map((tr, i) => [tr, countries[i]])) {
    tr.dataset.country = r.country;
  }
  pickTable("#listeners-table", "#listeners-empty", listeners,
    (r) => [fmt.truncate(r.user_id, 40), fmt.count(r.sessions), fmt.duration(r.avg_session_s), fmt.hours(r.listening_s)],
    (r) => setFilters({ listener: r.user_id }), (r) => `Show only ${r.user_id}'s plays`);
  for (const [tr, r] of [...$("#listeners-table tbody").children].map((tr, i) => [tr, listeners[i]])) {
    tr.dataset.listener = r.user_id;
  }
}

/** The quality-of-experience section (qoe.js), compared with the previous period. */
async function loadQoe(p, prev) {
  const mine = generation;
  const [rows, before, byTitle, byDevice] = await Promise.all([
    metric("qoe", p).catch(() => null),
    prev ? metric("qoe", prev.params).catch(() => null) : null,
    metric("qoe_titles", { ...p, limit: 10 }).catch(() => []),
    metric("qoe_devices", { ...p, limit: 20 }).catch(() => []),
  ]);
  if (mine !== generation || !rows) return;
  const row = rows[0];
  qoeTiles($("#qoe-kpis"), row, before ? before[0] : null, prev && prev.window);
  $("#qoe-empty").hidden = row.plays > 0;
  $("#qoe-tables").hidden = row.plays === 0;
  qoeTitlesTable($("#qoe-titles-table tbody"), byTitle, titleHref, build.displayTitle);
  qoeDevicesTable($("#qoe-devices-table tbody"), byDevice,
    (r) => setFilters({ device: r.device_type, platform: r.platform }));
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
  titleTypes = new Map(rows.map((r) => [r.content_id, r.content_type]));
  select.replaceChildren(...rows.map((r) => new Option(fmt.truncate(build.displayTitle(r), 60), r.content_id)));
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

let titleTypes = new Map();

async function loadTitleCharts(id) {
  const p = params({ content_id: id, content_type: undefined });
  $("#title-link").hidden = false;
  $("#title-link").href = titleHref(id);
  // Chapters are an audiobook's: no placeholder beside a track, an episode or a video.
  const type = titleTypes.get(id);
  const chapters = type === undefined || type === "audiobook";
  chartElement("chapters").hidden = !chapters;
  await Promise.all([
    chapters ? chart("chapters", () => chaptersCompared(p), ({ rows, earlier }) => build.chapters(rows, earlier),
      "No chapter data for this title (chapters come from content.chapter on audiobook events).") : null,
    chart("retention", () => retentionCompared(p), ({ rows, earlier }) => build.retention(rows, earlier),
      "No plays with a known duration in this range."),
  ]);
}

/** A title's chapter reach in `p` and in the previous period (null: none). */
async function chaptersCompared(p) {
  const prev = previousParams(p);
  const [rows, earlier] = await Promise.all([
    metric("chapters", p),
    prev ? metric("chapters", prev.params).catch(() => null) : null,
  ]);
  return { rows, earlier };
}

/** A title's retention curve in `p` and in the previous period (null: none). */
async function retentionCompared(p, rows = null) {
  const prev = previousParams(p);
  const [now, earlier] = await Promise.all([
    rows || metric("retention_curve", { ...p, limit: 1 }),
    prev ? metric("retention_curve", { ...prev.params, limit: 1 }).catch(() => null) : null,
  ]);
  return { rows: now, earlier };
}

// ---------------------------------------------------------------------------------
// Title page

async function loadContent() {
  const p = params({ content_id: contentId, content_type: undefined });
  const prev = previousParams(p);
  $("#content-page").hidden = false;
  const [info, overview, before, known] = await Promise.all([
    metric("top_content", { ...p, limit: 1 }).catch(() => []),
    metric("overview", p).catch(() => null),
    prev ? metric("overview", prev.params).catch(() => null) : null,
    // Its name and type even when it has no plays in the range.
    metric("top_content", { tz: state.tz, ...ALL_TIME, content_id: contentId, limit: 1 }).catch(() => []),
  ]);
  const row = info[0] || known[0] || null;
  const name = row ? build.displayTitle(row) : build.displayTitle({ content_id: contentId });
  $("#content-title").textContent = name;
  document.title = `${name} · playpulse`;
  const o = overview ? overview[0] : null;
  const played = Boolean(o && (o.plays || o.listening_s));
  $("#content-meta").textContent = [
    row && row.creator, row && row.content_type, contentId,
    played ? "" : "no plays of this title in this range",
  ].filter(Boolean).join(" · ");
  if (!played && (await openOnData({ content_id: contentId }))) return;
  autoRange = false;
  if (o && played) {
    overviewTiles($("#content-kpis"), o, before ? before[0] : null, prev && prev.window, true);
  } else {
    // No plays here: no figures (not 0 % rates), and what to do instead.
    $("#content-kpis").replaceChildren();
  }
  // Chapters are an audiobook's; retention needs a known duration: no placeholders.
  const audiobook = !row || row.content_type === "audiobook";
  $("#content-chapters-card").hidden = !audiobook;
  const retention = await metric("retention_curve", { ...p, limit: 1 }).catch(() => null);
  $("#content-retention-card").hidden = Array.isArray(retention) && retention.length === 0;
  await Promise.all([
    audiobook ? chart("content_chapters", () => chaptersCompared(p), ({ rows, earlier }) => build.chapters(rows, earlier),
      "No chapter data for this title (chapters come from content.chapter on audiobook events).") : null,
    chart("content_retention", () => retentionCompared(p, retention),
      ({ rows, earlier }) => build.retention(rows, earlier), "No plays with a known duration in this range."),
    chart("content_daily", async () => {
      const [rows, earlier] = await Promise.all([
        metric("daily", p), prev ? metric("daily", prev.params).catch(() => null) : null,
      ]);
      return { rows, earlier };
    }, ({ rows, earlier }) => {
      $("#content-daily-heading").textContent = build.dailyHeading(rows);
      return build.daily(rows, earlier, prev && prev.window.days ? prev.window.days : 0);
    }, NO_DATA),
    chart("content_devices", () => metric("devices", p), build.devices, NO_DATA),
    loadSimilar(contentId, p, titleHref),
  ]);
}

// ---------------------------------------------------------------------------------
// Year page (year.js)

async function loadYearPage() {
  $("#year-page").hidden = false;
  await loadYear({
    tz: state.tz,
    year: state.year,
    listener: state.listener,
    choose(year, listener) {
      state.year = year;
      state.listener = listener;
      syncAddress();
      loadPage();
    },
    clock: (rows) => chart("year_clock", async () => rows, build.clock, "No listening this year."),
  }).then((shown) => {
    if (shown) {
      state.year = String(shown.year);
      state.listener = shown.listener;
      syncAddress();
    }
  });
}

// ---------------------------------------------------------------------------------
// Loading and refreshing

let refreshTimer = null;
let loading = null;

function loadPage() {
  generation += 1;
  const mine = generation;
  clearTimeout(refreshTimer);
  const run = (contentId ? loadContent() : yearView ? loadYearPage() : loadOverview())
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
  // Behind only while events arrive: a static history (an import, a demo of past days)
  // is old by nature, not late.
  const flowing = Boolean(lastLive && lastLive.events_last_minute > 0);
  $("#tile-freshness").classList.toggle("stale", flowing && value !== null && value > 300);
  $("#tile-freshness .tile-note").textContent = flowing || value === null
    ? "age of the newest processed event"
    : "newest event; no events in the last minute";
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
  showChips();
  if (!contentId && !yearView) {
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
