#!/usr/bin/env python3
"""Turns the JSON the side-by-side benchmarks write (benches/agents.rs,
benches/facade_vs_prometheus.rs, benches/whole_job.rs) into docs/benchmarks.md and bar charts
in SVG (the given path, and the whole job's beside it with `-whole-job` in its name).

    scripts/benchmark-report.py target/bench-results docs/benchmarks.md docs/benchmarks.svg
"""

import datetime
import json
import os
import platform
import subprocess
import sys

MIB = 1 << 20


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0] if text else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def verdict(ok):
    return "met" if ok else "**not met**"


COLOURS = {"steady": "#4e79a7", "peak": "#a0cbe8", "cpu": "#f28e2b"}


def chart(panels, path):
    """Panels of horizontal bars; each panel is (title, rows, colour of the k-th bar), each
    row (name, value, value ...)."""
    width, bar, gap, left = 760, 18, 8, 230
    heights = [len(rows) * (bar + gap) + 40 for _, rows, _ in panels]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{sum(heights) + 30}" '
        'font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    top = 0
    for (title, values, colour_of), height in zip(panels, heights):
        out.append(f'<text x="10" y="{top + 16}" font-weight="bold">{title}</text>')
        biggest = max(v for vs in values for v in vs[1:] if v is not None) or 1
        scale = (width - left - 90) / biggest
        for i, (name, *vs) in enumerate(values):
            y = top + 28 + i * (bar + gap)
            out.append(f'<text x="{left - 8}" y="{y + bar - 5}" text-anchor="end">{name}</text>')
            h = bar / len(vs)
            for k, v in enumerate(vs):
                if v is None:
                    continue
                w = max(1.0, v * scale)
                out.append(
                    f'<rect x="{left}" y="{y + k * h:.1f}" width="{w:.1f}" height="{h:.1f}" '
                    f'fill="{colour_of(k)}"/>'
                )
                out.append(
                    f'<text x="{left + w + 4:.1f}" y="{y + (k + 1) * h - 2:.1f}" '
                    f'font-size="10">{v:.2f}</text>'
                )
        top += height
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def cpu_and_memory_chart(cpu_title, cpu_rows, rows, path):
    """A CPU panel (name, value) and a memory panel from each row's steady and peak RSS."""
    chart(
        [
            (cpu_title, cpu_rows, lambda k: COLOURS["cpu"]),
            (
                "Resident memory, MiB: steady (dark) and peak (light)",
                [(r["name"], r["steady_rss"] / MIB, r["peak_rss"] / MIB) for r in rows],
                lambda k: COLOURS["steady"] if k == 0 else COLOURS["peak"],
            ),
        ],
        path,
    )


def whole_job_section(job):
    """The whole job against vmagent + a Prometheus server: table, goals, freshness."""
    stacks = job["stacks"]
    lines = [
        "## The whole job: one agent against the stack it replaces",
        "",
        f"{job['sidecars']} sidecars of 10 canaried workloads ({job['series']:,} series every 5 s).",
        "meshmetrics runs the `daemonset` overlay's shape: scrape → memory_limiter → resource →",
        "batch → OTLP/gRPC (zstd, persistent queue on disk), and the `promql` exporter with a",
        "15-minute window on a pipeline of its own. The stack it replaces is vmagent (export, to",
        "the same sink) and a Prometheus server scraping the same sidecars for the queries; their",
        "CPU and memory are added. While each runs, Flagger's two builtin checks for the 10",
        "canaries every 10 s, and a 10-panel dashboard (each panel an instant query and a 1 h",
        "range at a 15 s step) every 30 s, are asked of the façade and of the Prometheus server.",
        "Each scraper's n-th request to a sidecar returns step n stamped `start + (n-1) × 5 s`, so",
        "every stack holds the same samples relative to its start; queries carry `time` at the",
        "same step of each run (Flagger sends none), and their answers, times made relative, are",
        f"compared. Each stack runs alone for {job['measure_s']} s after a warm-up.",
        "",
        "Freshness is the delay from a probe target's answer (scraped every second) to the",
        "query endpoint answering its new value, polled after each probe scrape every 2 ms (or",
        "every tenth of the time waited so far, when longer: the polls are queries the stack",
        "answers, and count in its CPU).",
        "The last row feeds the façade from behind `batch` in the export pipeline, the overlays'",
        "earlier shape.",
        "",
        "| stack | CPU-s | CPU-s per million samples | steady RSS | peak RSS "
        "| freshness median / p99 | Flagger check median / p99 | dashboard range median |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for st in stacks:
        lines.append(
            f"| {st['name']} | {st['cpu_s']:.2f} | {st['cpu_s_per_million']:.2f} "
            f"| {st['steady_rss'] / MIB:.1f} MiB | {st['peak_rss'] / MIB:.1f} MiB "
            f"| {st['freshness_median_ms']:.1f} / {st['freshness_p99_ms']:.1f} ms "
            f"| {st['flagger_median_ms']:.2f} / {st['flagger_p99_ms']:.2f} ms "
            f"| {st['dashboard_range_median_ms']:.2f} ms |"
        )
    lines += ["", "![CPU and memory of the whole job](benchmarks-whole-job.svg)", ""]
    by_name = {st["name"]: st for st in stacks}
    mm = by_name.get("meshmetrics")
    cmp = {c["stack"]: c for c in job.get("comparisons", [])}
    if mm and "meshmetrics" in cmp:
        c = cmp["meshmetrics"]
        lines += [
            "### Goals",
            "",
            "| goal | measured | |",
            "|---|---|---|",
            f"| whole-job CPU ≤ 0.1× the stack's | {c['cpu_ratio']:.3f}× | "
            f"{verdict(c['cpu_ratio'] <= 0.1)} |",
            f"| steady RSS ≤ 0.25× the stack's | {c['rss_ratio']:.3f}× | "
            f"{verdict(c['rss_ratio'] <= 0.25)} |",
            f"| every answer equal | {c['answers_equal']} of {c['answers']} | "
            f"{verdict(c['answers_equal'] == c['answers'])} |",
            f"| freshness median ≤ 100 ms | {mm['freshness_median_ms']:.1f} ms | "
            f"{verdict(mm['freshness_median_ms'] <= 100)} |",
            f"| freshness p99 ≤ 100 ms | {mm['freshness_p99_ms']:.1f} ms "
            f"({mm['freshness_probes']} probes) | {verdict(mm['freshness_p99_ms'] <= 100)} |",
            "",
        ]
        for d in c.get("differ", []):
            lines.append(f"- differs: {d}")
    return lines


def main():
    results, md_path, svg_path = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(os.path.join(results, "agents.json")) as f:
        agents = json.load(f)
    facade = None
    facade_path = os.path.join(results, "facade.json")
    if os.path.exists(facade_path):
        with open(facade_path) as f:
            facade = json.load(f)

    job = None
    job_path = os.path.join(results, "whole_job.json")
    if os.path.exists(job_path):
        with open(job_path) as f:
            job = json.load(f)

    by_name = {a["name"]: a for a in agents["agents"]}
    mm = by_name.get("meshmetrics (OTLP zstd)")
    gz = by_name.get("meshmetrics (OTLP gzip)")
    prom = by_name.get("Prometheus agent")
    vm = by_name.get("vmagent")
    per_s = agents["sidecars"] * agents["series_per_sidecar"] * 1000 / agents["interval_ms"]

    lines = [
        "# Benchmarks",
        "",
        "Generated by `scripts/bench.sh` (benches `whole_job`, `agents` and",
        "`facade_vs_prometheus`); do not",
        "edit by hand. Every figure comes from one run on one machine: compare the ratios, not",
        "the absolute numbers, with other machines.",
        "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores, Linux {platform.release()}",
        f"- meshmetrics: {version(['target/release/meshmetrics', '--version'])}, commit "
        # `-dirty` when the measured tree had uncommitted changes.
        + version(["git", "describe", "--always", "--dirty", "--abbrev=7"]),
        "- vmagent: Debian victoria-metrics "
        + version(["dpkg-query", "-W", "-f=${Version}", "victoria-metrics"]),
        f"- Prometheus: {version(['prometheus', '--version'])}",
        "",
        "## Scrape and forward",
        "",
        f"{agents['sidecars']} synthetic Istio sidecars on distinct loopback addresses,",
        f"{agents['series_per_sidecar']:,} series each (`istio_requests_total` and the three",
        "`istio_request_*` histograms with Istio's labels and 20 buckets, Envoy cluster",
        "counters, gauges and histograms for 20 clusters), scraped every",
        f"{agents['interval_ms'] / 1000:g} s: {per_s:,.0f} samples/s.",
        "Counters advance every interval. vmagent and Prometheus in agent mode remote-write to a",
        "sink that reads and discards; meshmetrics exports OTLP/HTTP (batch processor defaults)",
        "to the same sink. Each agent runs alone, after a warm-up; CPU is user + system time of",
        f"the whole process over {agents['measure_s']} s, from /proc.",
        "",
        "| agent | CPU-s per million samples | steady RSS | peak RSS | bytes per series "
        "| sent to sink | ceiling (samples/s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in agents["agents"]:
        sent = a["sink_bytes"] / max(a["samples"], 1)
        ceiling = a["ceiling_samples_per_s"]
        lines.append(
            f"| {a['name']} | {a['cpu_s_per_million']:.2f} | {a['steady_rss'] / MIB:.1f} MiB "
            f"| {a['peak_rss'] / MIB:.1f} MiB | {a['steady_rss'] / a['series']:,.0f} "
            f"| {sent:.2f} B/sample | {f'{ceiling:,.0f}' if ceiling else '–'} |"
        )
    sat = agents["saturation"]
    # meshmetrics' default: half the CPUs, at least one worker thread.
    workers = max(1, (os.cpu_count() or 1) // 2)
    lines += [
        "",
        f"The ceiling: {sat['sidecars']} sidecars every {sat['interval_ms']} ms, far more than any",
        "of them can scrape on this machine; the samples actually fetched per second is the rate",
        "at which the agent falls behind. The sidecars and the sink run in the benchmark process",
        "on the same two cores, so every agent shares the machine with them alike. Each agent",
        "runs with its defaults: vmagent and Prometheus use every core, meshmetrics half of them",
        f"({workers} worker thread{'s' if workers > 1 else ''} here).",
        "",
        "![CPU and memory per agent](benchmarks.svg)",
        "",
    ]
    rounds = agents.get("rounds", [])
    if rounds:
        lines += [
            "vmagent and meshmetrics (zstd) ran in turn, "
            f"{len(rounds)} times each; either one's memory moves by tens of",
            "percent between runs, so the memory goal is the median ratio of these pairs, and the",
            "table above shows each agent's run of the median pair.",
            "",
            "| round | vmagent steady RSS | meshmetrics steady RSS | ratio "
            "| vmagent CPU-s per million | meshmetrics CPU-s per million |",
            "|---|---|---|---|---|---|",
        ]
        for r in rounds:
            lines.append(
                f"| {r['round']} | {r['vmagent_steady_rss'] / MIB:.1f} MiB "
                f"| {r['meshmetrics_steady_rss'] / MIB:.1f} MiB "
                f"| {r['meshmetrics_steady_rss'] / r['vmagent_steady_rss']:.2f}× "
                f"| {r['vmagent_cpu_s_per_million']:.2f} | {r['meshmetrics_cpu_s_per_million']:.2f} |"
            )
        lines.append("")
    if mm and prom and vm:
        cpu_vs_prom = mm["cpu_s_per_million"] / prom["cpu_s_per_million"]
        peak_vs_vm = mm["peak_rss"] / vm["peak_rss"]
        if rounds:
            ratios = sorted(r["meshmetrics_steady_rss"] / r["vmagent_steady_rss"] for r in rounds)
            steady_vs_vm = ratios[len(ratios) // 2]
        else:
            steady_vs_vm = mm["steady_rss"] / vm["steady_rss"]
        ceiling = (
            mm["ceiling_samples_per_s"] / prom["ceiling_samples_per_s"]
            if prom["ceiling_samples_per_s"]
            else 0
        )
        lines += [
            "### Goals",
            "",
            "| goal | measured | |",
            "|---|---|---|",
            f"| CPU per sample ≤ 0.1× Prometheus agent (zstd) | {cpu_vs_prom:.3f}× | "
            f"{verdict(cpu_vs_prom <= 0.1)} |",
            f"| ≤ 1.0 CPU-s per million samples (zstd) | {mm['cpu_s_per_million']:.2f} | "
            f"{verdict(mm['cpu_s_per_million'] <= 1.0)} |",
        ]
        if gz:
            lines.append(
                f"| ≤ 1.5 CPU-s per million samples (gzip) | {gz['cpu_s_per_million']:.2f} | "
                f"{verdict(gz['cpu_s_per_million'] <= 1.5)} |"
            )
        lines += [
            f"| peak RSS ≤ vmagent's peak | {peak_vs_vm:.2f}× | {verdict(peak_vs_vm <= 1.0)} |",
            f"| steady RSS ≤ 1.2× vmagent's (median of {len(rounds)} alternating pairs) "
            f"| {steady_vs_vm:.2f}× | {verdict(steady_vs_vm <= 1.2)} |",
            f"| ceiling ≥ 3× Prometheus agent's | {ceiling:.2f}× | {verdict(ceiling >= 3)} |",
            "",
        ]
    if facade:
        lines += [
            "## Query façade against a Prometheus server",
            "",
            f"Both scrape the same {facade['sidecars']} sidecars ({facade['series']:,} series) for",
            "15 minutes of samples at a 5 s interval (explicit timestamps, fed as fast as they",
            "scrape), then, once both are idle, answer the same queries at the same instant;",
            "medians of repeated queries. Resident memory is read twice: holding the window",
            "before any query, and after the queries (what their evaluation left allocated).",
            "",
            "| query | meshmetrics | Prometheus | ratio | same answer |",
            "|---|---|---|---|---|",
        ]
        for q in facade["queries"]:
            lines.append(
                f"| {q['query']} | {q['meshmetrics_ms']:.2f} ms | {q['prometheus_ms']:.2f} ms "
                f"| {q['meshmetrics_ms'] / q['prometheus_ms']:.2f}× "
                f"| {'yes' if q['same_answer'] else 'no'} |"
            )
        series, samples = facade["series"], facade["samples"]
        lines += [
            "",
            "| process | resident after ingest | after the queries | bytes per series "
            "| bytes per sample (after ingest) |",
            "|---|---|---|---|---|",
        ]
        for name in ("meshmetrics", "prometheus"):
            rss = facade[f"{name}_rss"]
            idle = facade.get(f"{name}_rss_after_ingest", rss)
            lines.append(
                f"| {'Prometheus' if name == 'prometheus' else name} | {idle / MIB:.1f} MiB "
                f"| {rss / MIB:.1f} MiB | {idle / series:,.0f} | {idle / samples:.2f} |"
            )
        failed = facade.get("failed_scrapes", {})
        if failed:
            lines += [
                "",
                f"Scrapes that failed during the ingest (timeouts under load): meshmetrics "
                f"{failed.get('meshmetrics', 0):g}, Prometheus {failed.get('prometheus', 0):g}.",
                "Each target's step advances on every request, so a failed scrape leaves a gap",
                "in that scraper's data (fewer samples held, answers that may differ slightly).",
            ]
        lines += [
            "",
            "Memory ratio: "
            f"{facade.get('meshmetrics_rss_after_ingest', 0) / facade.get('prometheus_rss_after_ingest', 1):.2f}× "
            f"after ingest, {facade['meshmetrics_rss'] / facade['prometheus_rss']:.2f}× after the "
            "queries.",
            "",
        ]
        flagger = [q for q in facade["queries"] if q["query"].startswith("flagger")]
        memory = facade.get("meshmetrics_rss_after_ingest", 0) / facade.get(
            "prometheus_rss_after_ingest", 1
        )
        worst = max((q["meshmetrics_ms"] / q["prometheus_ms"] for q in flagger), default=0)
        lines += [
            "| goal | measured | |",
            "|---|---|---|",
            f"| façade memory ≤ 0.15× the Prometheus server's ({series:,} series) "
            f"| {memory:.2f}× | {verdict(memory <= 0.15)} |",
            f"| Flagger's checks ≤ 0.5× its latency | {worst:.2f}× (the slower of the two) "
            f"| {verdict(worst <= 0.5)} |",
            "",
        ]
    if job:
        # The whole job first: it is the comparison users make.
        insert_at = lines.index("## Scrape and forward")
        lines = lines[:insert_at] + whole_job_section(job) + lines[insert_at:]
    with open(md_path, "w") as f:
        f.write("\n".join(lines))
    cpu_and_memory_chart(
        "CPU seconds per million scraped samples (lower is better)",
        [(a["name"], a["cpu_s_per_million"]) for a in agents["agents"]],
        agents["agents"],
        svg_path,
    )
    if job:
        cpu_and_memory_chart(
            "Whole-job CPU seconds over the measured window (lower is better)",
            [(st["name"], st["cpu_s"]) for st in job["stacks"]],
            job["stacks"],
            svg_path.replace(".svg", "-whole-job.svg"),
        )


if __name__ == "__main__":
    main()
