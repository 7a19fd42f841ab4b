#!/usr/bin/env python3
"""Lays out what a Dockerfile's build stage sees, without a Docker daemon.

    scripts/docker-context.py deploy/Dockerfile DEST

Copies into the empty directory DEST exactly what the first stage's COPY/ADD lines bring
from the build context (the repository root, less what .dockerignore excludes), at the paths
they land on under the stage's WORKDIR. CI then runs the stage's build in DEST, so a file the
build needs that the Dockerfile forgets to copy fails CI rather than the first user's
`docker build`.
"""
import fnmatch
import os
import posixpath
import shlex
import shutil
import sys


def logical_lines(text):
    line = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not line and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            line += stripped[:-1] + " "
            continue
        line += stripped
        yield line
        line = ""
    if line:
        yield line


def ignored_patterns(context):
    path = os.path.join(context, ".dockerignore")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [p.strip().rstrip("/") for p in f if p.strip() and not p.startswith("#")]


def is_ignored(rel, patterns):
    parts = rel.split("/")
    for p in patterns:
        for i in range(1, len(parts) + 1):
            if fnmatch.fnmatch("/".join(parts[:i]), p):
                return True
    return False


def copy(context, src, dest, patterns):
    full = os.path.join(context, src)
    if not os.path.exists(full):
        sys.exit(f"error: COPY source {src!r} is not in the build context")
    if os.path.isdir(full):
        for root, dirs, files in os.walk(full):
            for name in files:
                path = os.path.join(root, name)
                rel = os.path.relpath(path, context)
                if is_ignored(rel, patterns):
                    continue
                target = os.path.join(dest, os.path.relpath(path, full))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(path, target)
    else:
        if is_ignored(src, patterns):
            return
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        shutil.copy2(full, dest)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    dockerfile, out = sys.argv[1], sys.argv[2]
    context = os.path.dirname(os.path.abspath(__file__)) + "/.."
    if os.path.exists(out) and os.listdir(out):
        sys.exit(f"error: {out} is not empty")
    os.makedirs(out, exist_ok=True)
    patterns = ignored_patterns(context)
    workdir = "/"
    stages = 0
    with open(dockerfile) as f:
        text = f.read()
    for line in logical_lines(text):
        words = shlex.split(line, comments=False)
        op = words[0].upper()
        if op == "FROM":
            stages += 1
            if stages > 1:
                break
        elif op == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, words[1]))
        elif op in ("COPY", "ADD"):
            args = [w for w in words[1:] if not w.startswith("--")]
            if any(w.startswith("--from") for w in words[1:]):
                continue
            *sources, dest = args
            dest_abs = posixpath.normpath(posixpath.join(workdir, dest))
            rel = posixpath.relpath(dest_abs, workdir)
            if rel.startswith(".."):
                sys.exit(f"error: COPY to {dest} lands outside WORKDIR {workdir}")
            for src in sources:
                target = os.path.join(out, rel)
                if not os.path.isdir(os.path.join(context, src)) and (
                    dest.endswith("/") or len(sources) > 1
                ):
                    target = os.path.join(target, os.path.basename(src))
                copy(context, src, target, patterns)
    if stages == 0:
        sys.exit(f"error: {dockerfile} has no FROM")


if __name__ == "__main__":
    main()
