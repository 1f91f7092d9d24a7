// Time ranges of the dashboard: the presets, "All time", and the range to open on so that
// a history that ended months ago (an import) is shown rather than an empty page.

import { addDays } from "./format.js";

/** Days of the preset ranges, each ending today. */
export const RANGE_DAYS = { "7d": 7, "30d": 30, "90d": 90 };

/** The read API's window for "All time": every accepted `from`/`to` (1970 to 2100, UTC;
 * events are from 2000 on). UTC instants, so that no time zone moves them outside. */
export const ALL_TIME = { from: "1970-01-01T00:00:00Z", to: "2100-01-01T00:00:00Z" };

/** The first and last date (YYYY-MM-DD) of per-day `rows` of the `daily` query (dates in
 * the query's time zone), as `{first, last}`; null when no row has a play, a listener or
 * listening time. */
export function extentOf(rows) {
  const dates = rows
    .filter((r) => r.plays > 0 || r.listeners > 0 || r.listening_s > 0)
    .map((r) => r.date)
    .sort();
  return dates.length ? { first: dates[0], last: dates[dates.length - 1] } : null;
}

/**
 * The range to open on for data spanning `extent` (from {@link extentOf}) when today is
 * `today` (YYYY-MM-DD, in the dashboard's time zone): the shortest preset ("7d", "30d",
 * "90d") whose window (the last N days up to today) holds the data's last day, else
 * "all". Null when there is no data (`extent` null).
 */
export function openingRange(extent, today) {
  if (!extent) return null;
  for (const [range, days] of Object.entries(RANGE_DAYS)) {
    const from = addDays(today, -(days - 1));
    if (extent.last >= from && extent.first <= today) return range;
  }
  return "all";
}

const longDate = new Intl.DateTimeFormat("en-GB", {
  day: "numeric", month: "short", year: "numeric", timeZone: "UTC",
});

/** "25 May 2014 – 11 Jul 2024": `extent` for a button or a note. */
export function extentText(extent) {
  const f = (d) => longDate.format(new Date(`${d}T00:00:00Z`));
  return extent.first === extent.last ? f(extent.first) : `${f(extent.first)} – ${f(extent.last)}`;
}
