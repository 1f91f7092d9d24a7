// Number, duration, money and date helpers for labels and tooltips.

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const oneDecimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

/** What the data cannot tell (a null of the read API), in tables, tiles and tooltips. */
export const UNKNOWN = "—";

const isUnknown = (value) => value === null || value === undefined;

export function count(value) {
  return isUnknown(value) ? UNKNOWN : integer.format(value);
}

export function percent(share) {
  if (isUnknown(share)) return UNKNOWN;
  return `${oneDecimal.format(share * 100)} %`;
}

/** Seconds as hours, with one decimal below 100 h; null (unknown) as "—", never "0 h". */
export function hours(seconds) {
  if (isUnknown(seconds)) return UNKNOWN;
  const h = seconds / 3600;
  return `${h < 100 ? oneDecimal.format(h) : integer.format(h)} h`;
}

/** A duration in seconds in the largest fitting unit: "45 s", "12 min", "3.4 h", "2 d". */
export function duration(seconds) {
  if (isUnknown(seconds)) return UNKNOWN;
  if (seconds < 10) return `${oneDecimal.format(seconds)} s`;
  if (seconds < 60) return `${integer.format(seconds)} s`;
  if (seconds < 3600) return `${integer.format(seconds / 60)} min`;
  if (seconds < 86400 * 2) return `${oneDecimal.format(seconds / 3600)} h`;
  return `${oneDecimal.format(seconds / 86400)} d`;
}

const fractionDigits = new Map();

/** Digits after the decimal point of ISO 4217 `currency` (2 when unknown). */
export function currencyDigits(currency) {
  if (!fractionDigits.has(currency)) {
    let digits = 2;
    try {
      digits = new Intl.NumberFormat(undefined, { style: "currency", currency })
        .resolvedOptions().maximumFractionDigits;
    } catch {
      digits = 2;
    }
    fractionDigits.set(currency, digits);
  }
  return fractionDigits.get(currency);
}

/** An amount in minor units as money: 129900, "EUR" -> "€1,299.00". */
export function money(minor, currency) {
  const major = minor / 10 ** currencyDigits(currency);
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(major);
  } catch {
    return `${oneDecimal.format(major)} ${currency || ""}`.trim();
  }
}

/** Today's date (YYYY-MM-DD) in IANA time zone `tz`. */
export function todayIn(tz) {
  return new Intl.DateTimeFormat("en-CA", {
    timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit",
  }).format(new Date());
}

/** `date` (YYYY-MM-DD) plus `days` days. */
export function addDays(date, days) {
  const t = Date.parse(`${date}T00:00:00Z`) + days * 86400000;
  return new Date(t).toISOString().slice(0, 10);
}

/** Days from `first` to `last` (YYYY-MM-DD), both counted: 1 when they are equal. */
export function daysBetween(first, last) {
  return Math.round((Date.parse(`${last}T00:00:00Z`) - Date.parse(`${first}T00:00:00Z`)) / 86400000) + 1;
}

/** Every date from `first` to `last` (YYYY-MM-DD, inclusive), however long the range
 * (charts bucket long ranges by week or month: see buckets.js). */
export function dateRange(first, last) {
  const out = [];
  for (let d = first; d <= last; d = addDays(d, 1)) out.push(d);
  return out;
}

export function truncate(text, max) {
  const s = String(text ?? "");
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

export function escapeHtml(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}
