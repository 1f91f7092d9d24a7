// Time buckets for charts over days: a long range is drawn by week or by month instead
// of one bar per day (12 years are ~4,400 days: too many bars to read or draw).

import { addDays, dateRange, daysBetween } from "./format.js";

/** Longest range (days) drawn one bar per day. */
export const DAILY_MAX_DAYS = 92;
/** Longest range (days) drawn one bar per week; longer ranges are drawn per month. */
export const WEEKLY_MAX_DAYS = 731;

const GRAIN_NAMES = { day: "day", week: "week", month: "month" };

/** The bucket for a range from `first` to `last` (YYYY-MM-DD, inclusive): "day" up to
 * 92 days, "week" up to 731 days (two years), "month" beyond. */
export function grainFor(first, last) {
  const days = daysBetween(first, last);
  if (days <= DAILY_MAX_DAYS) return "day";
  if (days <= WEEKLY_MAX_DAYS) return "week";
  return "month";
}

/** "day", "week", "month": the word for `grain` (for titles such as "per week"). */
export function grainName(grain) {
  return GRAIN_NAMES[grain];
}

/** The first day (YYYY-MM-DD) of the bucket of `date`: the date itself ("day"), the
 * Monday of its ISO 8601 week ("week"), or the first of its month ("month"). */
export function bucketStart(date, grain) {
  if (grain === "day") return date;
  if (grain === "month") return `${date.slice(0, 7)}-01`;
  if (grain === "week") {
    const weekday = (new Date(`${date}T00:00:00Z`).getUTCDay() + 6) % 7; // Monday = 0
    return addDays(date, -weekday);
  }
  throw new RangeError(`unknown bucket grain '${grain}' (day, week or month)`);
}

/** The first day of the bucket after the one starting on `start`. */
function nextBucket(start, grain) {
  if (grain === "day") return addDays(start, 1);
  if (grain === "week") return addDays(start, 7);
  const [y, m] = start.split("-").map(Number);
  return m === 12 ? `${y + 1}-01-01` : `${y}-${String(m + 1).padStart(2, "0")}-01`;
}

/** Every bucket (its first day) from the one of `first` to the one of `last`. */
export function bucketKeys(first, last, grain) {
  if (grain === "day") return dateRange(first, last);
  const out = [];
  const end = bucketStart(last, grain);
  for (let b = bucketStart(first, grain); b <= end; b = nextBucket(b, grain)) out.push(b);
  return out;
}

/** An axis label for the bucket starting on `key`: "2024-03-18" (a day; a week by its
 * Monday) or "2024-03" (a month). */
export function bucketLabel(key, grain) {
  return grain === "month" ? key.slice(0, 7) : key;
}

/**
 * Per-day `rows` (objects with a `date`, YYYY-MM-DD, ascending or not) summed into
 * buckets of `grain` (default: {@link grainFor} the rows' first and last date).
 *
 * `sum`: fields added up per bucket; a bucket's sum is null (unknown) when a row in it
 * has the field null, never a partial total. `max`: fields whose largest daily value is
 * kept (distinct counts such as listeners are not additive over days). Days without a
 * row count as zero. Returns `{grain, keys, labels, values}` where `values[i]` holds the
 * fields of bucket `keys[i]`; `null` when `rows` is empty.
 */
export function bucketRows(rows, { sum = [], max = [], grain } = {}) {
  if (!rows.length) return null;
  const dates = rows.map((r) => r.date).sort();
  const first = dates[0];
  const last = dates[dates.length - 1];
  const g = grain || grainFor(first, last);
  const keys = bucketKeys(first, last, g);
  const index = new Map(keys.map((k, i) => [k, i]));
  const values = keys.map(() => {
    const v = {};
    for (const f of sum) v[f] = 0;
    for (const f of max) v[f] = 0;
    return v;
  });
  for (const r of rows) {
    const v = values[index.get(bucketStart(r.date, g))];
    for (const f of sum) {
      const x = r[f];
      v[f] = x === null || x === undefined || v[f] === null ? null : v[f] + x;
    }
    for (const f of max) v[f] = Math.max(v[f], r[f] || 0);
  }
  return { grain: g, keys, labels: keys.map((k) => bucketLabel(k, g)), values };
}
