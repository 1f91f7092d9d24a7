// ECharts options for each chart, built from read API rows. A builder returns null when
// the rows hold nothing to draw (the chart then shows its empty message).

import { bucketRows, grainFor, grainName } from "./buckets.js";
import * as fmt from "./format.js";

export const PALETTE = [
  "#2f6fed", "#14a38b", "#f0a020", "#e0544e", "#7c5cd6", "#2bb3d6", "#8c9bb0", "#d65db1",
];

const DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const TYPE_NAMES = { audiobook: "Audiobooks", track: "Music", episode: "Podcasts", video: "Video" };

function base(extra) {
  return {
    color: PALETTE,
    backgroundColor: "transparent",
    animationDuration: 400,
    textStyle: { fontFamily: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif" },
    grid: { left: 8, right: 16, top: 36, bottom: 8 },
    ...extra,
  };
}

const h = (seconds) => Math.round(((seconds || 0) / 3600) * 10) / 10;
/** Hours of `seconds` for a bar: null (unknown, no bar) stays null. */
const hKnown = (seconds) => (seconds === null || seconds === undefined ? null : h(seconds));
const pct = (share) => (share === null || share === undefined
  ? null : Math.round(share * 1000) / 10);

/**
 * What a chart of `rows` (each with `plays` and `listening_s`) measures: listening time
 * when every row's time is known (not null) and some is above zero, else plays.
 * Listening time is null where the source cannot tell it (a Last.fm scrobble, a YouTube
 * view: docs/metrics.md), and a ranking mixing known and unknown times would rank the
 * unknown last; plays are known for every source. Returns `{by: "time" | "plays",
 * unknown}`: `unknown` counts the rows whose time is null.
 */
export function measure(rows) {
  const unknown = rows.filter((r) => r.listening_s === null || r.listening_s === undefined).length;
  const anyTime = rows.some((r) => r.listening_s > 0);
  return { by: !unknown && anyTime ? "time" : "plays", unknown };
}

/** Why a chart of `rows` counts plays ("" when it measures listening time): "listening
 * time unknown for 3 of 10" or "no listening time recorded". `what` names the rows. */
export function playsReason(rows, what = "rows") {
  const m = measure(rows);
  if (m.by === "time") return "";
  if (m.unknown === rows.length) return "listening time unknown";
  if (m.unknown) return `listening time unknown for ${fmt.count(m.unknown)} of ${fmt.count(rows.length)} ${what}`;
  return "no listening time recorded";
}

/** `rows` in the order of their chart's measure (see {@link measure}): by listening time
 * (unknown last), then plays; or by plays, then listening time. Returns a new array. */
export function ranked(rows) {
  const byTime = measure(rows).by === "time";
  const t = (r) => r.listening_s ?? -1;
  return [...rows].sort((a, b) => (byTime
    ? t(b) - t(a) || (b.plays || 0) - (a.plays || 0)
    : (b.plays || 0) - (a.plays || 0) || t(b) - t(a)));
}

/** The daily chart's heading: "Listening time per day", "Plays per month (listening
 * time unknown)"... for per-day `rows` of the `daily` query. */
export function dailyHeading(rows) {
  const grain = rows.length ? grainFor(rows[0].date, rows[rows.length - 1].date) : "day";
  const what = measure(rows).by === "time" ? "Listening time" : "Plays";
  const why = playsReason(rows, "days");
  return `${what} per ${grainName(grain)}${why ? ` (${why})` : ""}`;
}

/**
 * Listening hours (bars) and listeners (line) per day, or per week or month over long
 * ranges (buckets.js); bars count plays where listening time is unknown ({@link measure}).
 * Missing days are zero. Over weeks and months the line is the peak daily listeners:
 * listeners of different days are not additive.
 */
export function daily(rows, previous = null, shiftDays = 0) {
  if (!rows.length || rows.every((r) => !r.listening_s && !r.plays)) return null;
  rows = [...rows].sort((a, b) => (a.date < b.date ? -1 : a.date > b.date ? 1 : 0));
  const byTime = measure(rows).by === "time";
  const b = bucketRows(rows, { sum: ["plays", "listening_s"], max: ["listeners"] });
  const perDay = b.grain === "day";
  // The previous period, day by day, shifted onto this one (per day only).
  const before = new Map((previous || []).map((r) => [fmt.addDays(r.date, shiftDays), r]));
  const compared = previous && perDay ? [{
    name: "Previous period", type: "line", smooth: 0.25, symbolSize: 4,
    lineStyle: { type: "dashed", width: 1.5 }, itemStyle: { color: PALETTE[6] },
    data: b.labels.map((day) => {
      const r = before.get(day);
      if (!r) return 0;
      return byTime ? hKnown(r.listening_s) : r.plays;
    }),
  }] : [];
  const barName = byTime ? "Listening (h)" : `Plays (${playsReason(rows, "days")})`;
  const lineName = perDay ? "Listeners" : "Listeners (peak day)";
  return base({
    tooltip: { trigger: "axis" },
    legend: { top: 0, left: "center" },
    grid: { left: 8, right: 8, top: 44, bottom: 8 },
    xAxis: {
      type: "category", data: b.labels,
      name: perDay ? "" : `per ${grainName(b.grain)}`, nameLocation: "end",
    },
    yAxis: [
      { type: "value", name: byTime ? "hours" : "plays", nameTextStyle: { align: "left" } },
      { type: "value", name: "listeners", splitLine: { show: false }, nameTextStyle: { align: "right" } },
    ],
    series: [
      {
        name: barName, type: "bar", barMaxWidth: 36,
        data: b.values.map((v) => (byTime ? hKnown(v.listening_s) : v.plays)),
      },
      {
        name: lineName, type: "line", yAxisIndex: 1, smooth: 0.25, symbolSize: perDay ? 6 : 3,
        data: b.values.map((v) => v.listeners),
      },
      ...compared,
    ],
  });
}

/** A ranking chart's "Previous period" series: each row's figure in the previous period
 * (`previous`: a Map of key -> row), drawn as a thin grey bar below its bar. */
function previousBars(option, rows, previous, key, byTime) {
  if (!previous) return option;
  option.series.push({
    name: "Previous period", type: "bar", barMaxWidth: 6, barGap: "10%",
    itemStyle: { color: PALETTE[6], opacity: 0.7, borderRadius: [0, 3, 3, 0] },
    data: rows.map((r) => {
      const p = previous.get(r[key]);
      const value = p ? (byTime ? hKnown(p.listening_s) : p.plays) : 0;
      return { value, row: r, previous: p || null, content_id: r.content_id };
    }),
    cursor: option.series[0].cursor,
  });
  option.legend = { top: 0, right: 0, data: ["Previous period"], textStyle: { fontSize: 11 } };
  option.grid = { ...option.grid, top: 24 };
  return option;
}

function rankedBar(items, seriesName, tooltip, byTime = true) {
  return base({
    grid: { left: 8, right: 48, top: 8, bottom: 8 },
    tooltip: { trigger: "item", formatter: tooltip },
    xAxis: { type: "value", name: byTime ? "h" : "plays", axisLabel: { hideOverlap: true } },
    yAxis: {
      type: "category", inverse: true, data: items.map((i) => i.label),
      axisLabel: { width: 150, overflow: "truncate" },
    },
    series: [{
      name: seriesName, type: "bar", barMaxWidth: 22, data: items,
      label: {
        show: true, position: "right",
        formatter: (p) => (byTime ? `${p.value} h` : fmt.count(p.value)),
      },
      itemStyle: { borderRadius: [0, 4, 4, 0] },
      cursor: "pointer",
    }],
  });
}

/** "by listening time" or "by plays (listening time unknown)": what a ranking of `rows`
 * is ordered and drawn by ({@link measure}); `what` names the rows ("titles"). */
export function rankingNote(rows, what) {
  const why = playsReason(rows, what);
  return why ? `by plays (${why})` : "by listening time";
}

/** The series name of a ranking of `rows`: "Listening (h)" or "Plays (...)" */
function rankingSeries(rows, what) {
  const why = playsReason(rows, what);
  return why ? `Plays (${why})` : "Listening (h)";
}

/** Top content by listening hours, or by plays where listening time is unknown
 * ({@link measure}; give `rows` in {@link ranked} order); each bar carries its
 * content_id (for the click). */
export function topContent(rows, previous = null) {
  if (!rows.length) return null;
  const byTime = measure(rows).by === "time";
  const items = rows.map((r) => ({
    value: byTime ? hKnown(r.listening_s) : r.plays,
    label: fmt.truncate(displayTitle(r), 40), row: r, content_id: r.content_id,
  }));
  const option = rankedBar(items, rankingSeries(rows, "titles"), (p) => {
    const r = p.data.row;
    const before = previous ? previous.get(r.content_id) : null;
    return `<b>${fmt.escapeHtml(displayTitle(r))}</b><br>${fmt.escapeHtml(r.creator || "")}`
      + `<br>${fmt.hours(r.listening_s)} · ${fmt.count(r.plays)} plays · `
      + `${fmt.count(r.listeners)} listeners<br>completion ${fmt.percent(r.completion_rate)}`
      + `, skips ${fmt.percent(r.skip_rate)}`
      + (previous ? `<br>previous period: ${before ? `${fmt.hours(before.listening_s)} · ${fmt.count(before.plays)} plays` : "no plays"}` : "")
      + "<br><i>click to open</i>";
  }, byTime);
  return previousBars(option, rows, previous, "content_id", byTime);
}

/** What a title is called on the dashboard: its title, "Removed video (YouTube)" for the
 * views of removed videos (the importer's `youtube:removed`, which has no title), else
 * its id. */
export function displayTitle(r) {
  if (r.title) return r.title;
  if (r.content_id === "youtube:removed") return "Removed video (YouTube)";
  return r.content_id;
}

/** Top creators by listening hours, or by plays where listening time is unknown
 * ({@link measure}; give `rows` in {@link ranked} order). */
export function topCreators(rows, previous = null) {
  if (!rows.length) return null;
  const byTime = measure(rows).by === "time";
  const items = rows.map((r) => ({
    value: byTime ? hKnown(r.listening_s) : r.plays, label: fmt.truncate(r.creator, 40), row: r,
  }));
  const option = rankedBar(items, rankingSeries(rows, "creators"), (p) => {
    const r = p.data.row;
    const before = previous ? previous.get(r.creator) : null;
    return `<b>${fmt.escapeHtml(r.creator)}</b><br>${fmt.hours(r.listening_s)} · `
      + `${fmt.count(r.plays)} plays · ${fmt.count(r.listeners)} listeners`
      + (previous ? `<br>previous period: ${before ? `${fmt.hours(before.listening_s)} · ${fmt.count(before.plays)} plays` : "no plays"}` : "");
  }, byTime);
  option.series[0].cursor = "default";
  option.series[0].itemStyle.color = PALETTE[1];
  return previousBars(option, rows, previous, "creator", byTime);
}

/** What the heatmap of `rows` shows: "listening hours", or "plays" where listening time
 * is unknown ({@link measure}). */
export function heatmapMeasure(rows) {
  return measure(rows).by === "time" ? "listening hours" : "plays";
}

/** Listening hours (or plays, where listening time is unknown: {@link measure}) by hour
 * of day (x) and day of week (y). */
export function heatmap(rows, previous = null) {
  if (!rows.some((r) => r.listening_s > 0 || r.plays > 0)) return null;
  const before = new Map((previous || []).map((r) => [`${r.day_of_week} ${r.hour_of_day}`, r]));
  const byTime = measure(rows).by === "time";
  const data = rows.map((r) => [
    r.hour_of_day, r.day_of_week, byTime ? hKnown(r.listening_s) : r.plays, r.plays, r.listening_s,
  ]);
  const max = Math.max(...data.map((d) => d[2] || 0), byTime ? 0.1 : 1);
  return base({
    grid: { left: 8, right: 8, top: 8, bottom: 72 },
    tooltip: {
      formatter: (p) => {
        const was = before.get(`${p.data[1]} ${p.data[0]}`);
        return `${DAYS[p.data[1]]} ${String(p.data[0]).padStart(2, "0")}:00`
          + `<br>${fmt.hours(p.data[4])} listening · ${fmt.count(p.data[3])} plays`
          + (previous ? `<br>previous period: ${was ? `${fmt.hours(was.listening_s)} · ${fmt.count(was.plays)} plays` : "none"}` : "");
      },
    },
    xAxis: {
      type: "category", data: [...Array(24).keys()].map((x) => String(x).padStart(2, "0")),
      splitArea: { show: true },
    },
    yAxis: { type: "category", data: DAYS, inverse: true, splitArea: { show: true } },
    visualMap: {
      min: 0, max, calculable: false, orient: "horizontal", left: "center", bottom: 0,
      itemHeight: 160, text: ["more", "less"], dimension: 2,
      inRange: { color: ["#eef3ff", "#9db8fb", "#2f6fed", "#17388a"] },
    },
    series: [{ type: "heatmap", data, emphasis: { itemStyle: { borderColor: "#333", borderWidth: 1 } } }],
  });
}

/** Sessions per length bucket, labelled with their share. */
export function sessions(rows, previous = null) {
  if (!rows.some((r) => r.sessions > 0)) return null;
  const before = new Map((previous || []).map((r) => [r.bucket, r.sessions]));
  const compared = previous ? [{
    name: "Previous period", type: "line", symbolSize: 4, lineStyle: { type: "dashed", width: 1.5 },
    itemStyle: { color: PALETTE[6] }, data: rows.map((r) => before.get(r.bucket) ?? 0),
  }] : [];
  return base({
    tooltip: { trigger: "axis" },
    legend: previous ? { top: 0, right: 0, data: ["Previous period"], textStyle: { fontSize: 11 } } : undefined,
    grid: { left: 8, right: 8, top: 24, bottom: 8 },
    xAxis: { type: "category", data: rows.map((r) => r.bucket), axisLabel: { hideOverlap: true } },
    yAxis: { type: "value", name: "sessions" },
    series: [{
      name: "Sessions", type: "bar", barMaxWidth: 40, itemStyle: { color: PALETTE[4] },
      data: rows.map((r) => ({ value: r.sessions, share: r.share })),
      label: { show: true, position: "top", formatter: (p) => fmt.percent(p.data.share) },
    }, ...compared],
  });
}

/** What the devices chart of `rows` shows: "listening time", or "plays" where listening
 * time is unknown ({@link measure}). */
export function devicesMeasure(rows) {
  return measure(rows).by === "time" ? "listening time" : `plays (${playsReason(rows, "platforms")})`;
}

/** Listening hours (or plays, where listening time is unknown: {@link measure}) by device
 * type (inner ring) and platform (outer ring). */
export function devices(rows, previous = null) {
  if (!rows.some((r) => r.listening_s > 0 || r.plays > 0)) return null;
  const byTime = measure(rows).by === "time";
  const unit = byTime ? " h" : " plays";
  // The previous period's figure per device type and per device type and platform.
  const before = new Map();
  for (const r of previous || []) {
    const value = byTime ? h(r.listening_s) : r.plays;
    before.set(r.device_type, (before.get(r.device_type) || 0) + (value || 0));
    before.set(`${r.device_type} › ${r.platform}`, value || 0);
  }
  const byDevice = new Map();
  for (const r of rows) {
    if (!byDevice.has(r.device_type)) byDevice.set(r.device_type, []);
    const value = byTime ? h(r.listening_s) : r.plays;
    byDevice.get(r.device_type).push({ name: r.platform, value: value || 0.01 });
  }
  const data = [...byDevice.entries()]
    .map(([name, children]) => ({ name, children }))
    .sort((a, b) => b.children.reduce((s, c) => s + c.value, 0)
      - a.children.reduce((s, c) => s + c.value, 0));
  return base({
    tooltip: {
      formatter: (p) => {
        const path = p.treePathInfo.slice(1).map((t) => t.name).join(" › ");
        const was = before.get(path);
        return `${fmt.escapeHtml(path)}<br>${p.value}${unit}`
          + (previous ? `<br>previous period: ${was === undefined ? "none" : `${Math.round(was * 10) / 10}${unit}`}` : "")
          + "<br><i>click to see only these plays</i>";
      },
    },
    series: [{
      type: "sunburst", data, radius: ["18%", "92%"], sort: null,
      itemStyle: { borderColor: "#fff", borderWidth: 1 },
      // Labels only where they fit (no overlap): small slices keep their tooltip.
      label: { minAngle: 22, fontSize: 11, overflow: "truncate", width: 70 },
      labelLayout: { hideOverlap: true },
      levels: [{}, { r0: "18%", r: "58%", label: { rotate: 0 } }, { r0: "58%", r: "92%", label: { rotate: "radial", minAngle: 12 } }],
    }],
  });
}

const rateLabel = (p) => (p.value === null || p.value === undefined ? fmt.UNKNOWN : `${p.value} %`);

/** Completion and skip rates per content type (rows: {type, plays, completion_rate, skip_rate}). */
export function rates(rows, previous = null) {
  const used = rows.filter((r) => r.plays > 0);
  if (!used.length) return null;
  const before = new Map((previous || []).map((r) => [r.type, r]));
  const was = (r, key) => {
    const b = before.get(r.type);
    return b && b.plays ? pct(b[key]) : null;
  };
  // The previous period's rates: a grey mark on each bar.
  const marks = previous ? [
    ["Completed", "completion_rate"], ["Skipped", "skip_rate"],
  ].map(([name, key]) => ({
    name: "Previous period", type: "scatter", symbol: "rect", symbolSize: [26, 3],
    itemStyle: { color: PALETTE[6] }, z: 5,
    data: used.map((r) => was(r, key)), tooltip: { valueFormatter: (v) => `${name}, previous period: ${rateLabel({ value: v })}` },
  })) : [];
  return base({
    tooltip: {
      trigger: "axis",
      valueFormatter: (v) => (v === null || v === undefined ? fmt.UNKNOWN : `${v} %`),
    },
    legend: { top: 0, right: 0 },
    xAxis: { type: "category", data: used.map((r) => TYPE_NAMES[r.type] || r.type) },
    yAxis: { type: "value", max: 100, axisLabel: { formatter: "{value} %" } },
    series: [
      {
        name: "Completed", type: "bar", barMaxWidth: 32, itemStyle: { color: PALETTE[1] },
        data: used.map((r) => pct(r.completion_rate)),
        label: { show: true, position: "top", formatter: rateLabel },
      },
      {
        name: "Skipped", type: "bar", barMaxWidth: 32, itemStyle: { color: PALETTE[3] },
        data: used.map((r) => pct(r.skip_rate)),
        label: { show: true, position: "top", formatter: rateLabel },
      },
      ...marks,
    ],
  });
}

/** "playing time per day" (or week, or month: the visibility chart's bucket) for rows
 * of `watch_time_visibility`. */
export function visibilityHeading(rows) {
  const dates = rows.map((r) => r.date).sort();
  const grain = dates.length ? grainFor(dates[0], dates[dates.length - 1]) : "day";
  return `playing time per ${grainName(grain)}`;
}

/** Foreground and background playing hours per day, stacked; per week or month over
 * long ranges (buckets.js). */
export function visibility(rows, previous = null, shiftDays = 0) {
  const known = rows.filter((r) => (r.foreground_s || 0) + (r.background_s || 0) > 0);
  if (!known.length) return null;
  const b = bucketRows(rows, { sum: ["foreground_s", "background_s"] });
  // The previous period's playing time per day (both states), shifted onto this one.
  const before = new Map();
  for (const r of previous || []) {
    const day = fmt.addDays(r.date, shiftDays);
    before.set(day, (before.get(day) || 0) + (r.foreground_s || 0) + (r.background_s || 0));
  }
  const compared = previous && b.grain === "day" ? [{
    name: "Previous period", type: "line", symbolSize: 4, lineStyle: { type: "dashed", width: 1.5 },
    itemStyle: { color: PALETTE[6] }, data: b.labels.map((day) => h(before.get(day) || 0)),
  }] : [];
  return base({
    tooltip: { trigger: "axis", valueFormatter: (v) => (v === null ? fmt.UNKNOWN : `${v} h`) },
    legend: { top: 0, right: 0 },
    xAxis: {
      type: "category", data: b.labels,
      name: b.grain === "day" ? "" : `per ${grainName(b.grain)}`, nameLocation: "end",
    },
    yAxis: { type: "value", name: "hours", nameTextStyle: { align: "left" } },
    series: [
      { name: "Foreground", type: "bar", stack: "time", barMaxWidth: 36, data: b.values.map((v) => hKnown(v.foreground_s)) },
      { name: "Background", type: "bar", stack: "time", barMaxWidth: 36, itemStyle: { color: PALETTE[2] }, data: b.values.map((v) => hKnown(v.background_s)) },
      ...compared,
    ],
  });
}

/** Reach rate (share of the title's starters who reached each chapter). */
export function chapters(rows, previous = null) {
  if (!rows.length) return null;
  const before = new Map((previous || []).map((r) => [r.chapter, r]));
  // The previous period's reach: a grey mark on each chapter's bar.
  const compared = previous ? [{
    name: "Previous period", type: "scatter", symbol: "rect", symbolSize: [22, 3], z: 5,
    itemStyle: { color: PALETTE[6] },
    data: rows.map((r) => (before.has(r.chapter) ? pct(before.get(r.chapter).reach_rate) : null)),
  }] : [];
  return base({
    legend: previous ? { top: 0, right: 0, data: ["Previous period"], textStyle: { fontSize: 11 } } : undefined,
    tooltip: {
      trigger: "axis",
      formatter: (ps) => {
        const r = ps[0].data.row;
        const was = before.get(r.chapter);
        return `Chapter ${r.chapter}<br>reached by ${fmt.percent(r.reach_rate)} of starters`
          + `<br>${fmt.count(r.listeners)} listeners · ${fmt.hours(r.listening_s)}`
          + (previous ? `<br>previous period: ${was ? fmt.percent(was.reach_rate) : "none"}` : "");
      },
    },
    grid: { left: 8, right: 8, top: 28, bottom: 8 },
    xAxis: { type: "category", name: "chapter", data: rows.map((r) => r.chapter), nameLocation: "end" },
    yAxis: { type: "value", max: 100, axisLabel: { formatter: "{value} %" }, name: "reached" },
    series: [{
      name: "Reached", type: "bar", barMaxWidth: 28,
      data: rows.map((r) => ({ value: pct(r.reach_rate), row: r })),
      itemStyle: { color: PALETTE[0], borderRadius: [3, 3, 0, 0] },
    }, ...compared],
  });
}

/** Share of plays still playing at each percent of the duration. */
export function retention(rows, previous = null) {
  if (!rows.length) return null;
  const compared = previous && previous.length ? [{
    name: "Previous period", type: "line", showSymbol: false, smooth: 0.2,
    data: previous.map((r) => [r.position_pct, pct(r.share)]),
    lineStyle: { width: 1.5, type: "dashed", color: PALETTE[6] }, itemStyle: { color: PALETTE[6] },
  }] : [];
  return base({
    legend: compared.length ? { top: 0, right: 0, data: ["Previous period"], textStyle: { fontSize: 11 } } : undefined,
    tooltip: {
      trigger: "axis",
      formatter: (ps) => `At ${ps[0].data[0]} % of the title<br>${ps[0].data[1]} % of plays still playing`
        + (ps[1] ? `<br>previous period: ${ps[1].data[1]} %` : ""),
    },
    grid: { left: 8, right: 16, top: 28, bottom: 8 },
    xAxis: { type: "value", min: 0, max: 100, name: "position", axisLabel: { formatter: "{value} %" } },
    yAxis: { type: "value", min: 0, max: 100, name: "still playing", axisLabel: { formatter: "{value} %" } },
    series: [{
      name: "Retention", type: "line", showSymbol: false, smooth: 0.2,
      data: rows.map((r) => [r.position_pct, pct(r.share)]),
      lineStyle: { width: 2, color: PALETTE[4] }, itemStyle: { color: PALETTE[4] },
      areaStyle: { opacity: 0.15, color: PALETTE[4] },
    }, ...compared],
  });
}

/** The shop funnel over every vendor (a vendor's rows repeat per currency: count once).
 * A step no row can tell (null: a data set that records only views) is left out of the
 * funnel and named below it with "—"; known steps add up the rows that tell them. */
const FUNNEL_STEPS = {
  views: "Product views", cart_adds: "Added to cart",
  orders: "Orders", completed_orders: "Completed orders",
};

/** Each funnel step's count over the vendors of `rows` (a vendor's rows repeat per
 * currency: counted once), null for a step no row can tell. */
function funnelTotals(rows) {
  const vendors = new Map();
  for (const r of rows) if (!vendors.has(r.vendor_id)) vendors.set(r.vendor_id, r);
  const total = {};
  for (const k of Object.keys(FUNNEL_STEPS)) {
    const known = [...vendors.values()].filter((r) => r[k] !== null && r[k] !== undefined);
    total[k] = known.length ? known.reduce((sum, r) => sum + r[k], 0) : null;
  }
  return total;
}

export function funnel(rows, previous = null) {
  const names = FUNNEL_STEPS;
  const total = funnelTotals(rows);
  if (!Object.values(total).some((v) => v > 0)) return null;
  const steps = Object.keys(names).filter((k) => total[k] !== null).map((k) => [names[k], total[k], k]);
  const unknown = Object.keys(names).filter((k) => total[k] === null).map((k) => `${names[k]} —`);
  const top = total.views || 1;
  return base({
    tooltip: {
      formatter: (p) => `${p.name}: ${fmt.count(p.value)}<br>${fmt.percent(p.value / top)} of views`
        + (previous ? `<br>previous period: ${fmt.count(funnelTotals(previous)[p.data.key])}` : ""),
    },
    graphic: unknown.length ? [{
      type: "text", left: "4%", bottom: 0,
      style: { text: `Not in this data: ${unknown.join(" · ")}`, fill: "#6b7280", fontSize: 11 },
    }] : [],
    series: [{
      type: "funnel", sort: "none", left: "4%", width: "52%", top: 12,
      bottom: unknown.length ? 24 : 8, gap: 3,
      minSize: "8%", maxSize: "100%",
      label: {
        show: true, position: "right", lineHeight: 16,
        formatter: (p) => `${p.name}\n${fmt.count(p.value)} · ${fmt.percent(p.value / top)}`,
      },
      labelLine: { show: true, length: 12 },
      data: steps.map(([name, value, key]) => ({ name, value, key })),
    }],
  });
}

/** Revenue of the top vendors, one stacked series per currency (major units). */
export function revenue(rows) {
  const paid = rows.filter((r) => r.revenue_minor > 0 && r.currency);
  if (!paid.length) return null;
  const currencies = [...new Set(paid.map((r) => r.currency))].sort();
  const byVendor = new Map();
  for (const r of paid) {
    const v = byVendor.get(r.vendor_id) || { total: 0, by: {} };
    v.by[r.currency] = r.revenue_minor / 10 ** fmt.currencyDigits(r.currency);
    v.total += v.by[r.currency];
    byVendor.set(r.vendor_id, v);
  }
  const vendors = [...byVendor.entries()].sort((a, b) => b[1].total - a[1].total).slice(0, 10);
  return base({
    grid: { left: 8, right: 16, top: 28, bottom: 8 },
    tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
    legend: { top: 0, right: 0 },
    xAxis: { type: "value", axisLabel: { hideOverlap: true } },
    yAxis: { type: "category", inverse: true, data: vendors.map(([id]) => id) },
    series: currencies.map((c, i) => ({
      name: c, type: "bar", stack: "revenue", barMaxWidth: 20,
      itemStyle: { color: PALETTE[(i + 1) % PALETTE.length] },
      data: vendors.map(([, v]) => Math.round((v.by[c] || 0) * 100) / 100),
    })),
  });
}

/** "€1,234.00 · $987.00": total revenue per currency. */
export function revenueTotals(rows) {
  const totals = new Map();
  for (const r of rows) {
    if (r.revenue_minor > 0 && r.currency) {
      totals.set(r.currency, (totals.get(r.currency) || 0) + r.revenue_minor);
    }
  }
  return [...totals.entries()].sort().map(([c, v]) => fmt.money(v, c)).join(" · ");
}

/** The listening clock: listening hours (or plays where listening time is unknown) by
 * hour of the day, 24 bars around a circle (rows of `listening_clock`, one listener and
 * year). */
export function clock(rows) {
  if (!rows.some((r) => r.listening_s > 0 || r.plays > 0)) return null;
  const byTime = measure(rows).by === "time";
  const byHour = new Map(rows.map((r) => [r.hour_of_day, r]));
  const hoursOfDay = [...Array(24).keys()];
  return base({
    tooltip: {
      formatter: (p) => {
        const r = byHour.get(p.dataIndex) || {};
        return `${String(p.dataIndex).padStart(2, "0")}:00–${String(p.dataIndex + 1).padStart(2, "0")}:00`
          + `<br>${fmt.hours(r.listening_s)} · ${fmt.count(r.plays)} plays`;
      },
    },
    polar: { radius: ["12%", "80%"] },
    angleAxis: {
      type: "category", data: hoursOfDay.map((h) => String(h).padStart(2, "0")),
      startAngle: 90, clockwise: true, boundaryGap: true,
      axisLabel: { interval: 2 },
    },
    radiusAxis: { axisLabel: { show: false }, splitLine: { show: false } },
    series: [{
      name: byTime ? "Listening (h)" : "Plays", type: "bar", coordinateSystem: "polar",
      itemStyle: { color: PALETTE[4] },
      data: hoursOfDay.map((h) => {
        const r = byHour.get(h);
        if (!r) return 0;
        return byTime ? Math.round(((r.listening_s || 0) / 3600) * 100) / 100 : r.plays;
      }),
    }],
  });
}
