"""Published data commands: show, export, stats."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from typing import Any

import click

from commands.runtime import Runtime, pass_runtime
from jobs.errors import ValidationError
from jobs.refresh import published
from jobs.refresh.provinces import match_province


@click.group()
def data() -> None:
    """Read the refreshed (published) hospital data."""


def _province_code(rt: Runtime, text: str) -> str:
    provinces = published.published_provinces(rt.conn)
    regions = [{"code": code, "name": meta["name"], "level": "province"} for code, meta in provinces.items()]
    if not regions:
        raise ValidationError("no province is published yet: run 'refreshq refresh full' first")
    try:
        return match_province(regions, text)["code"]  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ValidationError(f"{exc} (among published provinces)") from None


@data.command()
@click.argument("province")
@click.option("--city", default=None, help="Only this city (name).")
@click.option("--district", default=None, help="Only this district (name).")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True, help="0 for all.")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
@pass_runtime
def show(rt: Runtime, province: str, city: str | None, district: str | None, limit: int, as_json: bool) -> None:
    """Show the hospitals of a province (optionally one city or district)."""
    code = _province_code(rt, province)
    _version, leaves = published.leaves_of(rt.conn, code)
    chosen = [
        leaf for leaf in leaves
        if (city is None or leaf.city == city or (leaf.level == "city" and leaf.name == city))
        and (district is None or (leaf.level == "district" and leaf.name == district))
    ]
    if not chosen:
        where = " ".join(x for x in (city, district) if x)
        raise ValidationError(f"no region {where!r} in the published data of {province}")
    shown = 0
    for leaf, record in published.iter_hospitals(rt.conn, code, chosen):
        if limit and shown >= limit:
            # On stderr: with --json stdout is JSON lines only.
            click.echo("... (more; use --limit 0 for all)", err=as_json)
            break
        shown += 1
        click.echo(record if as_json else _line(leaf.city, leaf.name, json.loads(record)))
    if not as_json:
        click.echo(f"{shown} hospitals shown")


def _line(city: str, region: str, h: dict[str, Any]) -> str:
    return f"{h.get('id')}  {h.get('name')}  {h.get('grade', '')}  {h.get('type', '')}  {city} {region}"


@data.command()
@click.option("--province", default=None, help="Only this province (name or code).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), required=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None, help="Default: stdout.")
@pass_runtime
def export(rt: Runtime, province: str | None, fmt: str, output: str | None) -> None:
    """Export published records, streaming (every upstream field kept as received)."""
    provinces = [_province_code(rt, province)] if province else None
    with ExitStack() as stack:
        try:
            out = stack.enter_context(open(output, "w", encoding="utf-8", newline="")) if output else sys.stdout
        except OSError as exc:
            raise ValidationError(f"--output {output}: cannot write it: {exc.strerror}") from None
        count = published.export(rt.conn, out, fmt, provinces)
    click.echo(f"exported {count} records", err=True)


@data.command()
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def stats(rt: Runtime, as_json: bool) -> None:
    """Records per published province, counted from what the data keys hold."""
    provinces = published.verified_provinces(rt.conn)
    if as_json:
        click.echo(json.dumps(provinces, ensure_ascii=False))
        return
    for code, meta in provinces.items():
        missing = f"  {meta['missing_leaves']} regions MISSING" if meta["missing_leaves"] else ""
        click.echo(f"{code}  {meta['name']:<10} {meta['records']:>8} records  {meta['leaves']:>4} regions  "
                   f"published {meta['published_at']} by {meta['version']}{missing}")
    total = sum(m["records"] for m in provinces.values())
    click.echo(f"{len(provinces)} provinces, {total} records")
