#!/usr/bin/env python3
"""Draws the soak run's RSS (and open file descriptors) over time as an SVG, from the samples
tests/soak.rs wrote, shading the backend outages. Usage: soak-report.py SAMPLES SUMMARY OUT."""
import csv
import json
import sys

samples_path, summary_path, out_path = sys.argv[1:4]
rows = list(csv.DictReader(open(samples_path)))
summary = json.load(open(summary_path))
if not rows:
    sys.exit("no samples")
t = [float(r["seconds"]) / 60 for r in rows]
rss = [int(r["rss_kib"]) / 1024 for r in rows]
fds = [int(r["open_fds"]) for r in rows]
W, H, L, R, T, B = 760, 300, 60, 60, 30, 40
tmax = max(t[-1], 1e-9)
ymax = max(rss) * 1.25
fmax = max(fds) * 1.25


def x(v):
    return L + (W - L - R) * v / tmax


def y(v, top):
    return H - B - (H - T - B) * v / top


parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>']
# Outages, shaded.
start = None
for i, r in enumerate(rows + [{"outage": "0", "seconds": rows[-1]["seconds"]}]):
    if r["outage"] == "1" and start is None:
        start = t[i]
    if r["outage"] != "1" and start is not None:
        end = t[min(i, len(t) - 1)]
        parts.append(f'<rect x="{x(start):.1f}" y="{T}" width="{max(x(end) - x(start), 1):.1f}" height="{H - T - B}" fill="#fde2e2"/>')
        start = None
warm = summary["after_warm_up_seconds"] / 60
parts.append(f'<line x1="{x(warm):.1f}" y1="{T}" x2="{x(warm):.1f}" y2="{H - B}" stroke="#999" stroke-dasharray="4 3"/>')
parts.append(f'<text x="{x(warm) + 4:.1f}" y="{T + 12}" fill="#666">checks from here</text>')
pts = " ".join(f"{x(a):.1f},{y(b, ymax):.1f}" for a, b in zip(t, rss))
parts.append(f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{pts}"/>')
pts = " ".join(f"{x(a):.1f},{y(b, fmax):.1f}" for a, b in zip(t, fds))
parts.append(f'<polyline fill="none" stroke="#ff7f0e" stroke-width="1.5" points="{pts}"/>')
parts.append(f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>')
parts.append(f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>')
for i in range(5):
    v = ymax * i / 4
    parts.append(f'<text x="{L - 6}" y="{y(v, ymax) + 4:.1f}" text-anchor="end" fill="#1f77b4">{v:.0f}</text>')
    f = fmax * i / 4
    parts.append(f'<text x="{W - R + 6}" y="{y(f, fmax) + 4:.1f}" fill="#ff7f0e">{f:.0f}</text>')
for i in range(7):
    v = tmax * i / 6
    parts.append(f'<text x="{x(v):.1f}" y="{H - B + 16}" text-anchor="middle">{v:.0f}</text>')
parts.append(f'<text x="{(L + W - R) / 2}" y="{H - 6}" text-anchor="middle">minutes (shaded: backend outage)</text>')
parts.append(f'<text x="{L}" y="{T - 10}" fill="#1f77b4">RSS, MiB</text>')
parts.append(f'<text x="{W - R}" y="{T - 10}" text-anchor="end" fill="#ff7f0e">open file descriptors</text>')
parts.append("</svg>")
open(out_path, "w").write("\n".join(parts) + "\n")
print(json.dumps(summary, indent=2))
print(f"chart: {out_path}")
