#!/usr/bin/env python3
"""Mutation run: does the test suite catch small, realistic bugs?

    tools/mutate/mutate.py [--list tools/mutate/mutations.txt] [--work build/mutate]
                           [--only NAME[,NAME...]] [--timeout 900] [--jobs 2]

(`make mutate` runs it with the defaults.) The source tree (tracked and untracked
files git does not ignore) is copied to WORK/src and configured once into
WORK/src/build exactly as `make build` does (ccache makes unchanged objects cache
hits). Then for each mutation of the list: the one exact original text is replaced
in the copy, only the mutation's targets are rebuilt, its test commands run (from
WORK/src, each under the timeout) and the file is restored. A mutation is caught
when a command exits with a failure (not 0, and not 77, the skip code of
tests/support/skip.h); a build failure counts as "broken", not as caught.
Before any mutation the same commands run on the unmutated copy: a command that
fails there makes the run stop (the table would mean nothing).

The list (mutations.txt) is blocks separated by blank lines, '#' lines comments:
    name:    short-name
    file:    path/in/the/tree
    find:    exact original text (must occur exactly once; \\n for a newline)
    replace: the mutated text (may be empty)
    target:  cmake target to rebuild (one or more lines)
    test:    shell command that must fail under the mutation (one or more lines)
    note:    optional, printed in the table
Invariant: the working tree is never touched; only WORK/src is mutated, and each
mutated file is written back before the next mutation.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

SKIP_CODE = 77
KEYS = ("name", "file", "find", "replace", "target", "test", "note")


def parse(path):
    mutations, cur = [], {}

    def flush():
        if cur:
            for k in ("name", "file", "find", "target", "test"):
                if k not in cur:
                    sys.exit(f"{path}: mutation {cur.get('name', '?')} has no '{k}:' line")
            cur.setdefault("replace", [""])
            mutations.append(dict(cur))
            cur.clear()

    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if not line.strip():
            flush()
            continue
        if line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep or key not in KEYS:
            sys.exit(f"{path}: cannot read line {line!r} (expected one of {', '.join(KEYS)})")
        cur.setdefault(key, []).append(value.strip().replace("\\n", "\n"))
    flush()
    for m in mutations:
        for k in ("name", "file", "find", "replace", "note"):
            if k in m:
                m[k] = m[k][0]
    return mutations


def ran_no_test(log, cmd):
    """Whether the last run of cmd in the log said Catch2 ran no test case."""
    text = open(log, encoding="utf-8", errors="replace").read()
    return "No tests ran" in text[text.rfind(f"$ {cmd}\n"):]


def sh(cmd, cwd, timeout=None, log=None):
    """Runs cmd; returns (exit code, seconds). 124 on timeout."""
    t0 = time.time()
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        if log:
            out.write(f"\n$ {cmd}\n".encode())
            out.flush()
        p = subprocess.Popen(cmd, shell=True, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)  # the command's own process group only
            p.wait()
            rc = 124
    finally:
        if log:
            out.close()
    return rc, time.time() - t0


def copy_tree(root, dst):
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           check=True, capture_output=True).stdout.split(b"\0")
    for f in files:
        if not f:
            continue
        rel = f.decode()
        src = os.path.join(root, rel)
        if not os.path.isfile(src):
            continue  # deleted in the working tree, or a submodule
        out = os.path.join(dst, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        # Unchanged files keep their timestamps: the reused build stays up to date.
        if not os.path.exists(out) or open(src, "rb").read() != open(out, "rb").read():
            shutil.copy2(src, out)


def main():
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], check=True, capture_output=True,
                          text=True).stdout.strip()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--list", default=os.path.join(root, "tools/mutate/mutations.txt"))
    ap.add_argument("--work", default=os.path.join(root, "build/mutate"))
    ap.add_argument("--only", default="", help="comma-separated mutation names")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per test command")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()

    mutations = parse(args.list)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {m["name"] for m in mutations}
        if unknown:
            sys.exit(f"no mutation named {', '.join(sorted(unknown))} in {args.list}")
        mutations = [m for m in mutations if m["name"] in wanted]
    src = os.path.join(os.path.abspath(args.work), "src")
    log = os.path.join(os.path.abspath(args.work), "mutate.log")
    os.makedirs(src, exist_ok=True)
    open(log, "w").close()
    print(f"copying the tree to {src}; build and test output in {log}", flush=True)
    copy_tree(root, src)

    for m in mutations:  # every mutation must apply to the tree as it is
        text = open(os.path.join(src, m["file"]), encoding="utf-8").read()
        n = text.count(m["find"])
        if n != 1:
            sys.exit(f"mutation {m['name']}: the original text occurs {n} times in {m['file']} (must be once); "
                     f"update {args.list}")

    build = os.path.join(src, "build")
    if not os.path.exists(os.path.join(build, "build.ninja")):
        rc, _ = sh(f"cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release", src, log=log)
        if rc:
            sys.exit(f"configuring the copy failed; see {log}")
    targets = sorted({t for m in mutations for t in m["target"]})
    print(f"baseline: building {' '.join(targets)} and running every listed test unmutated", flush=True)
    rc, _ = sh(f"cmake --build build -j {args.jobs} --target {' '.join(targets)}", src, log=log)
    if rc:
        sys.exit(f"the unmutated copy does not build; see {log}")
    for cmd in sorted({c for m in mutations for c in m["test"]}):
        rc, secs = sh(cmd, src, args.timeout, log)
        if rc not in (0, SKIP_CODE):
            sys.exit(f"baseline: `{cmd}` fails without any mutation (exit {rc}); fix that first (see {log})")
        # A command that runs no test here cannot catch anything (say, tests another
        # branch adds): listed, not an error.
        note = "  (runs no test on this tree)" if ran_no_test(log, cmd) else ""
        print(f"  ok {secs:6.1f} s  {cmd}{note}", flush=True)

    rows = []
    for m in mutations:
        path = os.path.join(src, m["file"])
        original = open(path, encoding="utf-8").read()
        try:
            open(path, "w", encoding="utf-8").write(original.replace(m["find"], m["replace"], 1))
            t0 = time.time()
            rc, _ = sh(f"cmake --build build -j {args.jobs} --target {' '.join(m['target'])}", src, log=log)
            if rc:
                verdict, by = "broken", "(does not build)"
            else:
                verdict, by = "MISSED", ""
                for cmd in m["test"]:
                    rc, _ = sh(cmd, src, args.timeout, log)
                    if rc not in (0, SKIP_CODE):
                        verdict, by = "caught", f"{cmd} (exit {rc})"
                        break
            secs = time.time() - t0
        finally:
            open(path, "w", encoding="utf-8").write(original)
        rows.append((m["name"], m["file"], verdict, by, secs, m.get("note", "")))
        print(f"  {verdict:6}  {m['name']:28} {secs:6.0f} s  {by}", flush=True)

    w = max(len(r[0]) for r in rows) if rows else 4
    print()
    print(f"| {'mutation':{w}} | file | result | caught by | s |")
    print(f"|{'-' * (w + 2)}|------|--------|-----------|---|")
    for name, file, verdict, by, secs, note in rows:
        print(f"| {name:{w}} | {file} | {verdict} | {by}{' — ' + note if note else ''} | {secs:.0f} |")
    missed = [r for r in rows if r[2] != "caught"]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
