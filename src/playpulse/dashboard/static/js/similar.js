// The enrichment on the dashboard (docs/enrichment.md): "Listeners also played" and the
// genre and mood on a title page (the similar_content and content_catalog queries), and
// listening time per genre and mood on the overview (genre_metrics, mood_metrics).

import { metric } from "./api.js";
import * as fmt from "./format.js";

function item(name, figure, href) {
  const li = document.createElement("li");
  const label = document.createElement(href ? "a" : "span");
  label.className = "name";
  label.textContent = name;
  if (href) label.href = href;
  const value = document.createElement("span");
  value.className = "figure";
  value.textContent = figure;
  li.append(label, value);
  return li;
}

function none(list, text) {
  const li = document.createElement("li");
  li.className = "none";
  li.textContent = text;
  list.replaceChildren(li);
}

function tagText(row) {
  // The title's genre and mood (imported genres first, else the best tag).
  if (!row) return "";
  return [["genre", row.genre, row.genre_confidence, row.genre_source], ["mood", row.mood, row.mood_confidence, "tag"]]
    .filter(([, label]) => label)
    .map(([kind, label, confidence, source]) => (
      `${kind}: ${label}${confidence !== null && confidence !== undefined ? ` (${fmt.percent(confidence)}` : " ("}${source ? `, ${source})` : ")"}`
    ))
    .join(" · ");
}

/**
 * Fill the title page's "Listeners also played" card for `contentId` (the
 * similar_content query: titles played in the same sessions, linked to their pages by
 * `hrefOf`, with the listeners they share) and its genre and mood (content_catalog).
 */
export async function loadSimilar(contentId, params, hrefOf) {
  const card = document.querySelector("#content-similar-card");
  const list = document.querySelector("#content-similar");
  const tags = document.querySelector("#content-tags");
  let similar;
  let entry;
  try {
    [similar, entry] = await Promise.all([
      metric("similar_content", { content_id: contentId, limit: 10 }),
      metric("content_catalog", { ...params, content_id: contentId, limit: 1 }).catch(() => []),
    ]);
  } catch (err) {
    tags.textContent = "";
    none(list, `Cannot load the catalog: ${err.message}`);
    return;
  }
  tags.textContent = tagText(entry[0]);
  // No placeholder: the card shows only what the enrichment computed for this title.
  card.hidden = !similar.length && !tags.textContent;
  if (!similar.length) {
    none(list, "No title shares 2 listening sessions with this one yet.");
    return;
  }
  list.replaceChildren(...similar.map((s) => item(
    s.title || s.similar_content_id,
    `${fmt.count(s.shared_listeners)} listener${s.shared_listeners === 1 ? "" : "s"} in common`,
    hrefOf(s.similar_content_id),
  )));
}

/** Fill the overview's genre and mood lists for the range `params`. */
export async function loadLabels(params) {
  const card = document.querySelector("#labels-card");
  const [genres, moods] = await Promise.all([
    metric("genre_metrics", { ...params, limit: 10 }).catch(() => null),
    metric("mood_metrics", { ...params, limit: 10 }).catch(() => null),
  ]);
  const known = (rows) => (rows || []).filter((r) => r.genre !== "unknown" && r.mood !== "unknown");
  // Hidden until the enrichment has labelled something: no card of "unknown" only.
  card.hidden = !known(genres).length && !known(moods).length;
  for (const [rows, id, kind] of [[genres, "#labels-genres", "genre"], [moods, "#labels-moods", "mood"]]) {
    const list = document.querySelector(id);
    if (!rows || !rows.length) {
      none(list, "Nothing in this range.");
      continue;
    }
    list.replaceChildren(...rows.map((r) => item(
      r[kind],
      r.listening_s ? fmt.duration(r.listening_s) : `${fmt.count(r.plays)} plays`,
    )));
  }
}
