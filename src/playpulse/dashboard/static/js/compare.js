// Comparison with the previous period (as PostHog and Plausible show it): the window of
// the same length right before the current one, and how a figure moved since.

import { addDays, daysBetween } from "./format.js";
import { ALL_TIME } from "./ranges.js";

/**
 * The previous period of read API window `p` (`from`, `to`: dates YYYY-MM-DD, end
 * exclusive, or ISO instants): `{from, to, days}` of the same length ending where `p`
 * starts (`days`: its length in days, for dates; null for instants), or null when `p`
 * has no start or is "All time".
 */
export function previousWindow(p) {
  if (!p.from || !p.to || p.from === ALL_TIME.from) return null;
  if (p.from.length === 10 && p.to.length === 10) {
    const days = daysBetween(p.from, p.to) - 1;
    if (days <= 0) return null;
    return { from: addDays(p.from, -days), to: p.from, days };
  }
  const start = Date.parse(p.from);
  const end = Date.parse(p.to);
  if (!(end > start)) return null;
  return { from: new Date(start - (end - start)).toISOString(), to: p.from, days: null };
}

const isUnknown = (value) => value === null || value === undefined || Number.isNaN(value);
const signed = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1, signDisplay: "exceptZero" });

/**
 * How `now` moved from `before`: `{text, direction}` with direction "up", "down" or
 * "flat", or null when either is unknown (nothing to compare). `kind` "share": a rate
 * (0 to 1), compared in percentage points ("+2.5 pp"); otherwise the relative change
 * ("+12 %", "new" from 0, "−100 %" to 0).
 */
export function change(now, before, kind = "amount") {
  if (isUnknown(now) || isUnknown(before)) return null;
  if (kind === "share") {
    const points = Math.round((now - before) * 1000) / 10;
    const direction = points > 0 ? "up" : points < 0 ? "down" : "flat";
    return { text: `${signed.format(points)} pp`, direction };
  }
  if (before === 0) {
    return now === 0 ? { text: "±0 %", direction: "flat" } : { text: "new", direction: "up" };
  }
  const relative = (now - before) / Math.abs(before);
  const rounded = Math.round(relative * 1000) / 10;
  const direction = rounded > 0 ? "up" : rounded < 0 ? "down" : "flat";
  return { text: rounded === 0 ? "±0 %" : `${signed.format(rounded)} %`, direction };
}

/** "previous period: 12.3 h (1–7 Mar)": the tooltip of a compared figure. */
export function previousNote(text, window) {
  if (!window) return "";
  const label = window.days
    ? `${window.from} to ${addDays(window.to, -1)}`
    : `${window.from.slice(0, 16).replace("T", " ")} to ${window.to.slice(0, 16).replace("T", " ")} UTC`;
  return `previous period (${label}): ${text}`;
}
