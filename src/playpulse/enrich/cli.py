"""``playpulse catalog ...`` and ``playpulse enrich ...`` (docs/enrichment.md).

Registered in the ``playpulse`` command as ``app.add_typer(catalog_app, name="catalog")``
and ``app.add_typer(enrich_app, name="enrich")``. The data dir is ``--data-dir`` (here or
before the command), else ``PLAYPULSE_DATA_DIR``; ``--project NAME`` picks a project's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from playpulse.cli_options import DataDir, command_settings
from playpulse.cli_options import ProjectName as Project
from playpulse.config import Settings
from playpulse.errors import ConfigError

catalog_app = typer.Typer(
    help="The content catalog: import metadata (genres, release date, ISRC, MusicBrainz "
    "ids), show a title (docs/enrichment.md).",
    no_args_is_help=True,
)
enrich_app = typer.Typer(
    help="Enrichment jobs: the catalog from the lake, listeners also played, genre and mood "
    "tags (docs/enrichment.md).",
    no_args_is_help=True,
)


def _settings(ctx: typer.Context, data_dir: Path | None, project: str | None) -> Settings:
    return command_settings(ctx, data_dir, project)


@catalog_app.command("import")
def catalog_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A CSV (with a header) or JSON metadata file.")],
    project: Project = None,
    data_dir: DataDir = None,
) -> None:
    """Add metadata to the catalog: per content_id any of genres (CSV: a;b), release_date
    (YYYY-MM-DD), isrc, musicbrainz_recording_id, musicbrainz_release_id. All rows or
    none: the first bad row is named and nothing is stored."""
    from playpulse.enrich.catalog import import_metadata

    summary = import_metadata(_settings(ctx, data_dir, project), file)
    typer.echo(f"imported metadata of {summary.rows} title(s) from {summary.file}")


@catalog_app.command("show")
def catalog_show(
    ctx: typer.Context,
    content_id: Annotated[str, typer.Argument(help="The content id.")],
    similar: Annotated[int, typer.Option(help="Similar titles to list.")] = 10,
    project: Project = None,
    data_dir: DataDir = None,
) -> None:
    """Print a title's catalog entry as JSON: what the events say, the imported metadata,
    its tags and listeners also played."""
    from playpulse.enrich.catalog import EnrichError, content_entry

    entry = content_entry(_settings(ctx, data_dir, project), content_id, similar=similar)
    if entry is None:
        raise EnrichError(f"the content catalog does not know {content_id!r}")
    typer.echo(json.dumps(entry, indent=2, ensure_ascii=False))


@enrich_app.command("run")
def enrich_run(
    ctx: typer.Context,
    provider: Annotated[
        str,
        typer.Option(
            help="Tagger: local (the local sentence-embedding model; needs the enrich "
            "extra), anthropic (ANTHROPIC_API_KEY; needs the anthropic package) or none."
        ),
    ] = "local",
    every: Annotated[
        float | None,
        typer.Option(help="Run a round every this many seconds until interrupted."),
    ] = None,
    titles_per_s: Annotated[float, typer.Option(help="Tagging rate limit.")] = 5.0,
    limit: Annotated[int, typer.Option(help="Titles tagged per round at most.")] = 500,
    min_support: Annotated[
        int, typer.Option(help="Shared sessions a similar pair needs at least.")
    ] = 2,
    model: Annotated[
        str | None, typer.Option(help="The Anthropic model (with --provider anthropic).")
    ] = None,
    project: Project = None,
    data_dir: DataDir = None,
) -> None:
    """Run the enrichment jobs: the catalog from the lake's events, listeners also played,
    then tags for titles that have none. Once, or every --every seconds (Ctrl-C stops)."""
    from playpulse.enrich.providers import AnthropicTagger, TagProvider
    from playpulse.enrich.runner import EnrichmentRunner
    from playpulse.enrich.tags import LocalEmbeddingTagger

    settings = _settings(ctx, data_dir, project)
    chosen: TagProvider | None
    if provider == "local":
        chosen = LocalEmbeddingTagger()
    elif provider == "anthropic":
        chosen = AnthropicTagger(model=model) if model else AnthropicTagger()
    elif provider == "none":
        chosen = None
    else:
        raise ConfigError(f"--provider must be local, anthropic or none, not {provider!r}")
    runner = EnrichmentRunner(
        settings,
        provider=chosen,
        interval_s=every or 0.0,
        titles_per_s=titles_per_s,
        tag_limit=limit,
        min_support=min_support,
    )
    if every is None:
        result = runner.run_once()
        tags = result.tags
        typer.echo(
            f"catalog: {result.seen} title(s); similar: {result.pairs} pair(s)"
            + (
                f"; tagged {tags.tagged} ({tags.cached} cached), {tags.failed} failed"
                if tags
                else ""
            )
        )
        for name, reason in result.errors.items():
            typer.echo(f"error: job {name}: {reason}", err=True)
        if result.errors:
            raise typer.Exit(1)
        return
    runner.start()
    try:
        runner.wait()
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()


@enrich_app.command("sql")
def enrich_sql(
    name: Annotated[str, typer.Argument(help="Catalog query (see `playpulse queries`).")],
    dialect: Annotated[str, typer.Option(help="bigquery (the only one so far).")] = "bigquery",
    tz: Annotated[str, typer.Option(help="IANA time zone of the query's hours.")] = "UTC",
) -> None:
    """Print a catalog query's SQL in BigQuery's dialect (sqlglot), the engine's views
    written out over the lake's plays table and parameters as @name."""
    from playpulse.query.catalog_enrich import bigquery_sql

    if dialect != "bigquery":
        raise ConfigError(f"--dialect must be bigquery, not {dialect!r}")
    typer.echo(bigquery_sql(name, tz))
