// The year page (/?view=year&year=2026&listener=ID): one listener's year in music, as
// ListenBrainz and "Wrapped" show it, from the catalog's yearly queries
// (docs/metrics.md, "Yearly stats"): totals, top artists and titles by listening time and
// by plays, and the listening clock. Years and hours are the dashboard's time zone's.

import { metric } from "./api.js";
import * as fmt from "./format.js";
import { ALL_TIME } from "./ranges.js";
import { tiles } from "./tiles.js";

const $ = (selector) => document.querySelector(selector);

/** "3 days (5 Jan – 7 Jan 2026)": a streak of `row` (a `yearly_listeners` row). */
export function streakText(row) {
  if (!row || !row.longest_streak_days) return fmt.UNKNOWN;
  const day = new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", timeZone: "UTC" });
  const f = (d) => day.format(new Date(`${d}T00:00:00Z`));
  const n = row.longest_streak_days;
  const span = row.streak_start === row.streak_end ? f(row.streak_start) : `${f(row.streak_start)} – ${f(row.streak_end)}`;
  return `${n} day${n === 1 ? "" : "s"} (${span})`;
}

function list(element, rows, key, figure) {
  element.replaceChildren(...rows.map((r) => {
    const li = document.createElement("li");
    li.dataset.name = r.name;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = r.name;
    const value = document.createElement("span");
    value.className = "figure";
    value.textContent = figure(r);
    li.append(name, value);
    return li;
  }));
  if (!rows.length) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = "Nothing this year.";
    element.append(li);
  }
  element.dataset.ranking = key;
}

function fillTop(prefix, rows, limit) {
  const byTime = rows.filter((r) => r.rank_by_time <= limit).sort((a, b) => a.rank_by_time - b.rank_by_time);
  const byPlays = rows.filter((r) => r.rank_by_plays <= limit).sort((a, b) => a.rank_by_plays - b.rank_by_plays);
  list($(`#${prefix}-time`), byTime, "time", (r) => fmt.duration(r.listening_s));
  list($(`#${prefix}-plays`), byPlays, "plays", (r) => `${fmt.count(r.plays)} play${r.plays === 1 ? "" : "s"}`);
}

/**
 * Load the year page. `ctx`: `{tz, year, listener}` (the address's; empty: the newest
 * year and its most listening listener), `choose(year, listener)` to keep a choice in
 * the address, and `clock(rows)` to draw the listening clock. Returns the year and
 * listener shown, or null when there is no listening at all.
 */
export async function loadYear(ctx) {
  const all = await metric("yearly_listeners", { tz: ctx.tz, ...ALL_TIME, limit: 10000 });
  const years = [...new Set(all.map((r) => r.year))].sort((a, b) => b - a);
  $("#year-empty").hidden = years.length > 0;
  $("#year-content").hidden = years.length === 0;
  if (!years.length) return null;
  const year = years.includes(Number(ctx.year)) ? Number(ctx.year) : years[0];
  const ofYear = all.filter((r) => r.year === year);
  const listener = ofYear.some((r) => r.user_id === ctx.listener) ? ctx.listener : ofYear[0].user_id;

  const yearSelect = $("#year-year");
  yearSelect.replaceChildren(...years.map((y) => new Option(String(y), String(y))));
  yearSelect.value = String(year);
  const listenerSelect = $("#year-listener");
  listenerSelect.replaceChildren(...ofYear.map((r) => new Option(
    `${fmt.truncate(r.user_id, 40)} (${fmt.hours(r.listening_s)})`, r.user_id,
  )));
  listenerSelect.value = listener;
  yearSelect.onchange = () => ctx.choose(yearSelect.value, listener);
  listenerSelect.onchange = () => ctx.choose(String(year), listenerSelect.value);

  const row = ofYear.find((r) => r.user_id === listener);
  const before = all.find((r) => r.year === year - 1 && r.user_id === listener) || null;
  $("#year-title").textContent = `${year} in review: ${listener}`;
  document.title = `${year} · ${listener} · playpulse`;
  const days = (v) => (v === null || v === undefined ? fmt.UNKNOWN : `${fmt.count(v)} days`);
  tiles($("#year-kpis"), [
    { key: "plays", label: "Plays", value: row.plays, format: fmt.count, better: "up" },
    { key: "listening_s", label: "Listening time", value: row.listening_s, format: fmt.hours, better: "up" },
    { key: "listening_days", label: "Days with listening", value: row.listening_days, format: days, better: "up" },
    { key: "artists", label: "Artists", value: row.artists, format: fmt.count, better: "up" },
    { key: "new_artists", label: "New artists", value: row.new_artists, format: fmt.count, better: "up" },
    { key: "longest_streak_days", label: "Longest streak", value: row.longest_streak_days, format: days, better: "up" },
  ], before, before ? { from: `${year - 1}-01-01`, to: `${year}-01-01`, days: 365 } : null);
  $("#year-streak").textContent = `Longest streak: ${streakText(row)}`;

  const p = { tz: ctx.tz, from: `${year}-01-01`, to: `${year + 1}-01-01`, user_id: listener };
  const limit = 5;
  const [top, clockRows] = await Promise.all([
    metric("yearly_top", { ...p, limit }),
    metric("listening_clock", p),
  ]);
  const mine = top.filter((r) => r.user_id === listener && r.year === year);
  fillTop("year-artists", mine.filter((r) => r.kind === "artist"), limit);
  fillTop("year-titles", mine.filter((r) => r.kind === "title"), limit);
  const clock = clockRows.filter((r) => r.user_id === listener && r.year === year);
  const peak = clock.reduce((best, r) => ((r.listening_s ?? 0) > (best?.listening_s ?? 0) ? r : best), null);
  $("#clock-note").textContent = peak
    ? `most listening at ${String(peak.hour_of_day).padStart(2, "0")}:00 (${ctx.tz})`
    : `hours in ${ctx.tz}`;
  $("#clock-note").dataset.peakHour = peak ? String(peak.hour_of_day) : "";
  await ctx.clock(clock);
  return { year, listener };
}
