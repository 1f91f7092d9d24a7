// Number, duration, money and date helpers for labels and tooltips.

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const oneDecimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

export function count(value) {
  return value === null || value === undefined ? "–" : integer.format(value);
}

export function percent(share) {
  if (share === null || share === undefined) return "–";
  return `${oneDecimal.format(share * 100)} %`;
}

/** Seconds as hours, with one decimal below 100 h. */
export function hours(seconds) {
  const h = (seconds || 0) / 3600;
  return `${h < 100 ? oneDecimal.format(h) : integer.format(h)} h`;
}

/** A duration in seconds in the largest fitting unit: "45 s", "12 min", "3.4 h", "2 d". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
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

/** Every date from `first` to `last` (YYYY-MM-DD, inclusive); at most 400. */
export function dateRange(first, last) {
  const out = [];
  for (let d = first; d <= last && out.length < 400; d = addDays(d, 1)) out.push(d);
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
