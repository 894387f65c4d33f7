#!/usr/bin/env python3
"""Runs the README's examples against a live demo server and checks them.

  readme_check.py --addr HOST:PORT --token TOKEN --secret SECRET --bin PATH [--readme README.md]

Takes every ```sh block from "## Trying it with grpcurl" up to "## Filters"
(the walkthroughs), in order, in one bash session (so variables and shell
functions carry over from block to block, as for a reader pasting them), with
the demo address, token, JWT secret and binary of the caller substituted for
the README's (127.0.0.1:50051, .tools/demo-token, dev-secret-change-me,
target/debug/bi-data). A block preceded by a line `<!-- not run: why -->`
is skipped.

A block fails when grpcurl reports an error (an `ERROR:` / `Failed to` line),
the shell does (`command not found`, `No such file`), Python raises, or its
last command exits non-zero. A ```json or ```text block that follows a sh
block (no heading or other code block between) is what the README shows as
its output, and the run must still match it:
- an expected `ERROR:` needs an error with the same `Code:` lines;
- every JSON key ("key":) and every enum-like value ("UPPER_SNAKE") shown
  must occur in the output (ids, times, counts and scores vary by run and
  are not compared; "…" marks what the README left out), except inside a
  google.protobuf.Struct field (found in proto/), whose keys are data;
- a text block without JSON (CSV, plain lines) needs its first line verbatim.

Prints one line per block and a summary; exits 1 if any block failed.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

START = "## Trying it with grpcurl"
END = "## Filters"
FENCE = re.compile(r"^```(\w*)\s*$")
KEY = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)"\s*:')
ENUM = re.compile(r'"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)"')
CODE = re.compile(r"Code:\s*(\w+)")
FAILURE = re.compile(
    r"^(ERROR:|Failed to |Error invoking method|.*command not found|.*No such file or directory|Traceback)",
    re.M,
)


def blocks(text):
    """(kind, body, line, preceded_by_skip, heading_since_previous_block)."""
    out, lines = [], text.splitlines()
    i, heading, last_prose = 0, False, ""
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            start, body = i, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            out.append((m.group(1), "\n".join(body) + "\n", start + 1, last_prose.startswith("<!-- not run"), heading))
            heading, last_prose = False, ""
        else:
            if lines[i].startswith("#"):
                heading = True
            if lines[i].strip():
                last_prose = lines[i].strip()
        i += 1
    return out


def struct_fields(root):
    """The JSON names of every google.protobuf.Struct field in proto/."""
    names = set()
    for dirpath, _, files in os.walk(os.path.join(root, "proto")):
        for f in files:
            if f.endswith(".proto"):
                text = open(os.path.join(dirpath, f), encoding="utf-8").read()
                for name in re.findall(r"google\.protobuf\.Struct\s+(\w+)\s*=", text):
                    head, *rest = name.split("_")
                    names.add(head + "".join(w.title() for w in rest))
    return names


def without_structs(expected, fields):
    """`expected` with the contents of Struct-valued fields removed."""
    out, i = [], 0
    pattern = re.compile(r'"(%s)"\s*:\s*\{' % "|".join(map(re.escape, sorted(fields)))) if fields else None
    while pattern:
        m = pattern.search(expected, i)
        if not m:
            break
        out.append(expected[i : m.end()])
        depth, j = 1, m.end()
        while j < len(expected) and depth:
            depth += {"{": 1, "}": -1}.get(expected[j], 0)
            j += 1
        out.append("}")
        i = j
    out.append(expected[i:])
    return "".join(out)


def compare(expected, actual, structs=frozenset()):
    """Why the actual output no longer matches the README's, or None."""
    if "ERROR:" in expected:
        if "ERROR:" not in actual:
            return "the README shows an error, the run had none"
        for code in CODE.findall(expected):
            if not re.search(rf"Code:\s*{code}\b", actual):
                return f"the README shows Code: {code}"
        return None
    if "ERROR:" in actual:
        return "an error the README does not show"
    expected = without_structs(expected, structs)
    keys = set(KEY.findall(expected))
    for k in sorted(keys):
        if f'"{k}"' not in actual:
            return f'key "{k}" is not in the output'
    for e in sorted(set(ENUM.findall(expected))):
        if f'"{e}"' not in actual and e not in actual:
            return f"value {e} is not in the output"
    if not keys:
        first = expected.strip().splitlines()[0].strip() if expected.strip() else ""
        if first and first not in actual:
            return f"line not in the output: {first[:80]}"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--readme", default=os.path.join(os.path.dirname(__file__), "..", "README.md"))
    a = ap.parse_args()
    root = os.path.abspath(os.path.dirname(a.readme))
    text = open(a.readme, encoding="utf-8").read()
    if START not in text or END not in text:
        sys.exit(f"README has no '{START}' … '{END}' range")
    walk = text[text.index(START) : text.index(END)]
    first_line = text[: text.index(START)].count("\n")

    work = tempfile.mkdtemp(prefix="readme-check-")
    token_file = os.path.join(work, "demo-token")
    with open(token_file, "w") as f:
        f.write(a.token)

    def local(body):
        return (
            body.replace("127.0.0.1:50051", a.addr)
            .replace(".tools/demo-token", token_file)
            .replace("dev-secret-change-me", a.secret)
            .replace("target/debug/bi-data", a.bin)
        )

    found = blocks(walk)
    runs = []  # (index into found, script path, output path, rc path)
    script = ["cd " + subprocess.list2cmdline([root])]
    for n, (kind, body, line, skip, _) in enumerate(found):
        if kind != "sh" or skip:
            continue
        path = os.path.join(work, f"block{n}.sh")
        with open(path, "w") as f:
            f.write(local(body))
        out, rc = os.path.join(work, f"block{n}.out"), os.path.join(work, f"block{n}.rc")
        # Sourced, so the next block sees this one's variables and functions.
        script.append(f"source {path} > {out} 2>&1 </dev/null; echo $? > {rc}")
        runs.append((n, path, out, rc))
    proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=root, timeout=600)
    if proc.returncode not in (0, 1):
        print(f"bash exited {proc.returncode}")

    structs = struct_fields(root)
    failed = 0
    for n, _, out, rc in runs:
        kind, body, line, _, _ = found[n]
        readme_line = first_line + line
        actual = open(out, encoding="utf-8", errors="replace").read() if os.path.exists(out) else ""
        code = open(rc).read().strip() if os.path.exists(rc) else "not run"
        expected = None
        if n + 1 < len(found) and found[n + 1][0] in ("json", "text") and not found[n + 1][4]:
            expected = found[n + 1][1]
        problem = None
        if expected is not None:
            problem = compare(expected, actual, structs)
            if problem is None and "ERROR:" not in expected and code != "0":
                problem = f"exit {code}"
        else:
            bad = FAILURE.search(actual)
            if bad:
                problem = f"failed: {bad.group(0)[:100]}"
            elif code != "0":
                problem = f"exit {code}"
        first = body.strip().splitlines()[0][:70]
        if problem:
            failed += 1
            print(f"FAIL README.md:{readme_line}: {first}\n     {problem}\n     output:\n" +
                  "\n".join("       " + l for l in actual.splitlines()[:40]))
        else:
            print(f"ok   README.md:{readme_line}: {first}")
    print(f"{len(runs) - failed} of {len(runs)} README blocks ok")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
