"""Turning results into the printed table, the targets verdicts, and bench/results/latest.json."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    section: str
    metric: str
    value: str
    target: str = ""
    met: bool | None = None  # None: no target


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _ms(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "n/a"
    return f"p50 {summary['p50_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms (n={summary['n']})"


def _full_refresh(r: dict[str, Any]) -> list[Row]:
    s, floor, refresh, mem = "1 full refresh", r["floor"], r["refresh"], r["redis_memory"]
    ratio, seconds, rss = refresh["ratio_to_floor"], refresh["seconds"], refresh["peak_worker_rss_mb"]
    per_json = mem["bytes_per_record_vs_json"]
    rss_each = ", ".join(f"{m['peak_rss_mb']:.0f}" for m in refresh["worker_memory"])
    cpu = refresh.get("cpu_seconds")
    cpu_rows = [Row(s, "CPU s: workers / upstream / server (wall x cores)",
                    f"{cpu['workers']} / {cpu['upstream']} / {cpu['server']} ({cpu['wall_x_cores']})")] if cpu else []
    return [
        Row(s, "fetch floor (httpx, same concurrency)",
            f"{floor['seconds']:.1f} s, {floor['requests']} requests, {floor['records']} records"),
        Row(s, "refresh wall time", f"{seconds:.1f} s ({refresh['task']}, {refresh['status']})", "< 60 s",
            seconds < 60),
        Row(s, "records/s", f"{refresh['records_per_second']:,.0f} ({refresh['records']} records)"),
        Row(s, "upstream requests", f"{refresh['upstream_requests']['total']}"),
        Row(s, "ratio to fetch floor (this run; the means below are judged)", f"{ratio:.2f}x"),
        Row(s, "peak worker RSS incl. horses", f"{rss:.0f} MB (each: {rss_each})", "< 250 MB", rss < 250),
        Row(s, "Redis memory per record",
            f"{mem['bytes_per_record']} B = {per_json}x JSON ({mem['json_bytes_avg']} B)",
            "<= 1.5x JSON", per_json is not None and per_json <= 1.5),
        *cpu_rows,
    ]


def _opaque_ids(r: dict[str, Any]) -> list[Row]:
    """The same refresh with opaque ids (scenario 1 runs both, ABBA), against the one with the sample's ids."""
    s, versus = "1 full refresh", r["opaque_vs_coded"]
    runs = ", ".join(f"{run['id_format']} {run['seconds']:.1f} s ({run['ratio_to_floor']:.2f}x)" for run in r["runs"])
    ratio, against = versus["opaque_ratio_to_floor"], versus["refresh_seconds"]
    cpu = (r["opaque"]["refresh"].get("cpu_seconds") or {})
    return [
        Row(s, "refreshes in order (each one's ratio to its floor)", runs),
        Row(s, "coded ids: mean ratio to fetch floor", f"{versus['coded_ratio_to_floor']:.2f}x", "<= 1.15x",
            versus["coded_ratio_to_floor"] <= 1.15),
        Row(s, "opaque ids: mean ratio to fetch floor", f"{ratio:.2f}x", "<= 1.15x", ratio <= 1.15),
        Row(s, "opaque ids: mean refresh time / the coded ids' mean", f"{against:.2f}x", "<= 1.1x",
            against is not None and against <= 1.1),
        Row(s, "opaque ids: CPU s workers / upstream / server", f"{cpu.get('workers')} / {cpu.get('upstream')} / "
            f"{cpu.get('server')} (means: server {versus['server_cpu_seconds']}x the coded ids', workers "
            f"{versus['worker_cpu_seconds']}x, upstream {versus['upstream_cpu_seconds']}x)"),
    ]


def _by_place(s: str, by_place: dict[str, Any] | None) -> list[Row]:
    """The same calls by their place in each pair: sent second, a call's tail is shorter."""
    if not by_place:
        return []
    return [
        Row(s, f"    sent {place}: get_task_status / PING p99",
            f"{d['get_task_status'].get('p99_ms')} / {d['ping'].get('p99_ms')} ms")
        for place, d in by_place.items()
    ]


def _status(r: dict[str, Any]) -> list[Row]:
    s, st = "2 status", r["status"]
    api = st["get_task_status"]
    return [
        Row(s, "get_task_status under load", _ms(api)),
        Row(s, "  PING between them (machine baseline)", _ms(api.get("ping"))),
        Row(s, "  p99 as a ratio to the PINGs' p99", f"{api.get('p99_vs_ping_p99')}x", "<= 1.5x",
            api.get("p99_vs_ping_p99") is not None and api["p99_vs_ping_p99"] <= 1.5),
        *_by_place(s, api.get("by_place")),
        Row(s, "  server stalls > 5 ms meanwhile (LATENCY LATEST)",
            ", ".join(f"{k} max {v['max_ms']} ms" for k, v in st.get("server_stalls_during_probes", {}).items())
            or "none"),
        Row(s, "  get_task_status, nothing running", _ms(st.get("get_task_status_idle"))),
        Row(s, "refreshq status --json under load", _ms(st["refreshq_status_json"])),
        Row(s, "  refreshq status --json, nothing running", _ms(st.get("refreshq_status_json_idle"))),
        *_http_rows(s, st),
    ]


def _http_rows(s: str, st: dict[str, Any]) -> list[Row]:
    if "http_get_refresh" not in st:
        return [Row(s, "HTTP", str(st.get("http", "n/a")))]
    http, idle, verdicts = st["http_get_refresh"], st["http_get_refresh_idle"], st.get("http_verdicts", {})
    return [
        Row(s, f"GET /api/v1/refreshes/{{id}} under load ({http['open_streams']} streams open)", _ms(http),
            "p99 <= 2x get_task_status", verdicts.get("load_p99_within_2x")),
        Row(s, "  the same, nothing running", _ms(idle), "p99 <= 10 ms", verdicts.get("idle_p99_within_10ms")),
    ]


def _cancel(c: dict[str, Any]) -> list[Row]:
    s = "3 cancel"
    if "skipped" in c:
        return [Row(s, "cancel", c["skipped"])]
    return [
        Row(s, "cancelled at progress", f"{c.get('progress_at_cancel')}% (mark {c.get('cancel_at_progress')}%)"),
        Row(s, "last upstream request after cancel returned", f"{c['stop_seconds']:.2f} s "
            f"({c['requests_after_return']} requests)", "<= 2 s", c["stop_seconds"] <= 2),
        Row(s, "cancel_task call", f"{c['call_ms']:.1f} ms"),
        Row(s, "status CANCELLED after", f"{c['status_cancelled_after_seconds']} s"),
    ]


def _list(r: dict[str, Any]) -> list[Row]:
    s, page1 = "2 list", r["page1"]
    rows = [
        Row(s, f"list_tasks page 1, {r['records']:,} records", _ms(page1), "p99 <= 20 ms", page1["p99_ms"] <= 20),
        Row(s, "list_tasks page 1, status filter", _ms(r["page1_status_filter"])),
    ]
    observe = r.get("observe")
    if observe:
        for name, label in (("metrics_report_24h", "metrics report (24h)"), ("health_report", "health check"),
                            ("metrics_scrape_http", "/metrics scrape over HTTP")):
            figure = observe[name]
            rows.append(Row(s, f"{label}, same records", _ms(figure), "p99 <= 50 ms", figure["p99_ms"] <= 50))
        rows += [Row(s, "  metrics report (7d)", _ms(observe["metrics_report_7d"])),
                 Row(s, "  performance report", _ms(observe["performance_report"]))]
    return rows


def _orchestration(o: dict[str, Any]) -> list[Row]:
    s = "4 orchestration"
    top = ", ".join(f"{n} {v}" for n, v in list(o["top_commands_per_leaf"].items())[:6])
    return [
        Row(s, "Redis commands per leaf / per record", f"{o['commands_per_leaf']} / {o['commands_per_record']}"),
        Row(s, "top commands per leaf", top),
        Row(s, "bytes written per leaf / per record",
            f"{o['bytes_written_per_leaf']:,.0f} / {o['bytes_written_per_record']:,.0f} "
            f"({o['bytes_written_vs_json']}x the records' JSON)"),
    ]


def _short_jobs(r: dict[str, Any]) -> list[Row]:
    s = "5 short jobs"
    rows = [
        Row(s, f"{d['kind']} worker x{d['processes']}",
            f"{d['jobs_per_second']:,.0f} jobs/s ({d['jobs']} in {d['drain_seconds']:.1f} s)")
        for d in r["drains"]
    ]
    rows += [Row(s, name.replace("_", " "), f"{value:.2f}x") for name, value in r["ratios"].items()]
    fast = next((d for d in r["drains"] if d["kind"] == "refreshq-fast" and d["processes"] == 2), None)
    if fast is not None:
        rows.append(Row(s, "fast mode, 2 processes", f"{fast['jobs_per_second']:,.0f} jobs/s", ">= 1,000 jobs/s",
                        fast["jobs_per_second"] >= 1000))
    for kind, lat in r.get("start_latency", {}).items():
        target = kind == "refreshq-fast"
        rows.append(Row(s, f"enqueue->start, idle {kind} x{lat['processes']}",
                        f"p50 {lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms (n={lat['n']})",
                        "p50 <= 5 ms" if target else "", lat["p50_ms"] <= 5 if target else None))
    enqueue = r["enqueue"]
    rows += [Row(s, f"enqueue rate: {n}", f"{v:,.0f}/s") for n, v in enqueue["per_second"].items()]
    rows.append(Row(s, "Queue.enqueue / create_full_refresh_task", f"{enqueue['enqueue_vs_create_full']:.2f}x"))
    return rows


def _web_clients(r: dict[str, Any]) -> list[Row]:
    s, overlap = "6 web clients", r["overlap"]
    held = f"{r['idle_connections']:,} idle connections + {r['stream_clients']} stream clients held"
    statuses = ", ".join(f"{n} x {code}" for code, n in r["stream_statuses"].items())
    return [
        Row(s, "stream clients answered", f"{statuses} within {r['streams_answered_within_s']:.2f} s "
            f"(Retry-After {', '.join(r['stream_retry_after']) or 'none'})"),
        Row(s, f"/healthz, new connection each, {held}", _ms(r["healthz"]), "p99 <= 100 ms",
            r["healthz"]["p99_ms"] <= 100),
        Row(s, "  GET /api/v1/refreshes/{id} (token), same time", _ms(r["api_get"]), "p99 <= 100 ms",
            r["api_get"]["p99_ms"] <= 100),
        Row(s, "  /healthz / the GET with nothing held", f"{_ms(r['healthz_nothing_held'])} / "
            f"{_ms(r['api_get_nothing_held'])}"),
        Row(s, "  held throughout (all open after the probes, stream cap still full)",
            f"{overlap['open_after_probes']} of {overlap['held']} open", "held", overlap["held_throughout"]),
    ]
def _crash_recovery(r: dict[str, Any]) -> list[Row]:
    s = "8 crash recovery"
    rows = [Row(s, "setting", f"full refresh, {r['scale']:,} hospitals, {r['latency_ms']:g} ms a request, "
                              f"{r['upstream_concurrency']} in flight; replacement worker started at the kill")]
    for mode, data in r["modes"].items():
        gap, runs = data["gap_seconds"], data["runs"]
        rows.append(Row(s, f"{mode.replace('_', ' ')}: kill -9 -> next request for its province",
                        f"min {gap['min']:.1f} s, median {gap['median']:.1f} s, max {gap['max']:.1f} s "
                        f"(n={len(runs)})", "max <= 25 s", gap["max"] <= 25))
        medians = " / ".join(_median(runs, k) for k in ("abandoned_after", "requeued_after", "restarted_after"))
        rows.append(Row(s, "  medians: abandoned / requeued / restarted", f"{medians} s"))
    return rows


def _median(runs: list[dict[str, Any]], key: str) -> str:
    values = sorted(run[key] for run in runs if run[key] is not None)
    return f"{values[len(values) // 2]:.1f}" if values else "n/a"


def _rate_limited(r: dict[str, Any]) -> list[Row]:
    s, limit = "7 rate-limited upstream", r["limit_per_second"]
    rows = [Row(s, "the upstream", f"{limit} requests in any rolling second, answers of {r['latency_seconds']} s, "
                f"{r['task']} refresh, workers x {r['job_concurrency']} in flight")]
    targets = {"configured": (0.95, 0.001), "configured, 3 workers": (0.95, 0.001), "unknown": (0.80, 0.02)}
    for name, run in r["runs"].items():
        used, refused = run["budget_used"], run["refused_share"]
        value = (f"{used:.1%} of the budget ({run['admitted_per_second']}/s), {refused:.2%} refused "
                 f"({run['refused']} of {run['requests']}), {run['seconds']:.0f} s, {run['status']}")
        want = targets.get(name) if r.get("targets_apply") else None
        target = f">= {want[0]:.0%} used, <= {want[1]:.1%} refused" if want else ""
        met = None if want is None else (used >= want[0] and refused <= want[1] and run["status"] == "SUCCEEDED")
        label = f"  {name.split(',')[0]} (RPS={run['REFRESHQ_UPSTREAM_RPS']}, {run['workers']} workers)"
        rows.append(Row(s, label, value, target, met))
    return rows


def rows(results: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    scenarios = results.get("scenarios", {})
    builders = [
        (("full_refresh",), _full_refresh),
        (("full_refresh", "opaque_vs_coded"), lambda _: _opaque_ids(scenarios["full_refresh"])),
        (("status_cancel",), _status),
        (("status_cancel", "cancel"), _cancel),
        (("list_tasks",), _list),
        (("full_refresh", "orchestration"), _orchestration),
        (("short_jobs",), _short_jobs),
        (("web_clients",), _web_clients),
        (("crash_recovery",), _crash_recovery),
        (("rate_limited",), _rate_limited),
    ]
    for path, build in builders:
        data = _get(scenarios, *path)
        if data is not None and "error" not in data:
            out += build(data)
    for name, data in scenarios.items():
        if isinstance(data, dict) and "error" in data:
            out.append(Row(name, "FAILED", str(data["error"])[:200]))
    return out


def table(all_rows: list[Row]) -> str:
    verdict = {True: "met", False: "MISSED", None: ""}
    cells = [("scenario", "metric", "value", "target", "")] + [
        (r.section, r.metric, r.value, r.target, verdict[r.met]) for r in all_rows
    ]
    widths = [min(60, max(len(c[i]) for c in cells)) for i in range(4)]
    lines = []
    for i, c in enumerate(cells):
        lines.append("  ".join(c[j].ljust(widths[j]) for j in range(4)) + "  " + c[4])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def targets(all_rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in all_rows if r.met is not None]


def write(results: dict[str, Any], path: Path) -> None:
    """Write atomically, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
