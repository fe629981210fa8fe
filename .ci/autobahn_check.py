#!/usr/bin/env python3
"""Autobahn conformance gate: check a kosoku/Autobahn index.json.

Usage:
    autobahn_check.py REPORT_DIR/index.json EXPECTED.json [--agent NAME] [--write] [--partial]

Policy (always applied):
  * every case outside sections 12-13 must have behavior OK or INFORMATIONAL
    (so FAILED, NON-STRICT, UNCLEAN, ERROR and UNIMPLEMENTED all fail);
  * sections 12-13 (permessage-deflate) may additionally be UNIMPLEMENTED;
  * every case's behaviorClose must be OK or INFORMATIONAL.

Baseline: every case's [behavior, behaviorClose] must equal EXPECTED.json
(a {case_id: [behavior, behaviorClose]} map); changed, missing and extra
cases are all differences. --write regenerates EXPECTED.json from the index
instead of diffing (the policy is still checked). --partial ignores expected
cases that are absent from the index (for runs on a case subset).

Exit status: 0 pass, 1 policy violation or baseline difference, 2 bad input.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

OK_BEHAVIOR = {"OK", "INFORMATIONAL"}
OK_BEHAVIOR_UNIMPL_SECTIONS = {"12", "13"}
OK_CLOSE = {"OK", "INFORMATIONAL"}
BEHAVIOR_ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "UNCLEAN", "ERROR"]


class InputError(Exception):
    pass


def case_key(case_id: str) -> tuple:
    """Numeric sort key: 1.2.10 after 1.2.9."""
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def load_json(path: Path, what: str):
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read {what} {path}: {e}") from None


def load_index(path: Path, agent: str | None) -> tuple[str, dict[str, tuple[str, str]]]:
    if path.is_dir():
        path = path / "index.json"
    if not path.exists():
        raise InputError(
            f"index not found: {path}\n"
            "  kosoku writes index.json only when the client calls /updateReports?agent=... "
            "and at least one case was run; check the client's and kosoku's output."
        )
    index = load_json(path, "index")
    if not isinstance(index, dict) or not index:
        raise InputError(f"index {path} is empty or not an {{agent: {{case: ...}}}} object")
    agents = sorted(index)
    if agent is None:
        if len(agents) != 1:
            raise InputError(f"index {path} has several agents {agents}; pick one with --agent")
        agent = agents[0]
    elif agent not in index:
        raise InputError(f"agent {agent!r} not in index {path}; agents present: {agents}")
    cases = {}
    for case_id, entry in index[agent].items():
        try:
            cases[case_id] = (str(entry["behavior"]), str(entry["behaviorClose"]))
        except (TypeError, KeyError) as e:
            raise InputError(f"index {path}: malformed entry for case {case_id}: {e}") from None
    if not cases:
        raise InputError(f"index {path}: agent {agent!r} has no cases")
    return agent, cases


def load_expected(path: Path) -> dict[str, tuple[str, str]]:
    data = load_json(path, "expected file")
    if not isinstance(data, dict):
        raise InputError(f"expected file {path} must be a {{case: [behavior, behaviorClose]}} object")
    out = {}
    for case_id, v in data.items():
        if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)):
            raise InputError(f"expected file {path}: case {case_id}: want [behavior, behaviorClose], got {v!r}")
        out[case_id] = (v[0], v[1])
    return out


def write_expected(path: Path, cases: dict[str, tuple[str, str]]) -> None:
    # One case per line so that baseline changes show up as readable diffs.
    ids = sorted(cases, key=case_key)
    lines = [f"  {json.dumps(c)}: {json.dumps(list(cases[c]))}" for c in ids]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    tmp.replace(path)


def policy_violations(cases: dict[str, tuple[str, str]]) -> list[str]:
    bad = []
    for c in sorted(cases, key=case_key):
        behavior, close = cases[c]
        allowed = set(OK_BEHAVIOR)
        if c.split(".")[0] in OK_BEHAVIOR_UNIMPL_SECTIONS:
            allowed.add("UNIMPLEMENTED")
        if behavior not in allowed or close not in OK_CLOSE:
            bad.append(f"  {c}: behavior={behavior} behaviorClose={close}")
    return bad


def baseline_diff(
    cases: dict[str, tuple[str, str]], expected: dict[str, tuple[str, str]], partial: bool
) -> list[str]:
    diffs = []
    for c in sorted(set(cases) | set(expected), key=case_key):
        got, want = cases.get(c), expected.get(c)
        if got == want:
            continue
        if got is None:
            if not partial:
                diffs.append(f"  {c}: expected {list(want)}, missing from index (case not run)")
        elif want is None:
            diffs.append(f"  {c}: got {list(got)}, not in expected file")
        else:
            diffs.append(f"  {c}: expected {list(want)}, got {list(got)}")
    return diffs


def summary(agent: str, cases: dict[str, tuple[str, str]]) -> str:
    counts = Counter(b for b, _ in cases.values())
    order = [b for b in BEHAVIOR_ORDER if b in counts] + sorted(set(counts) - set(BEHAVIOR_ORDER))
    parts = " ".join(f"{b}={counts[b]}" for b in order)
    close_bad = Counter(cl for _, cl in cases.values() if cl not in OK_CLOSE)
    close_part = (" | close: " + " ".join(f"{k}={v}" for k, v in sorted(close_bad.items()))) if close_bad else ""
    return f"autobahn [{agent}]: {len(cases)} cases: {parts}{close_part}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Check a kosoku/Autobahn index.json against policy and a baseline.")
    ap.add_argument("index", type=Path, help="REPORT_DIR/index.json (or REPORT_DIR)")
    ap.add_argument("expected", type=Path, help="EXPECTED.json: {case: [behavior, behaviorClose]}")
    ap.add_argument("--agent", help="agent name in the index (default: the only one)")
    ap.add_argument("--write", action="store_true", help="write EXPECTED.json from the index instead of diffing")
    ap.add_argument("--partial", action="store_true", help="ignore expected cases missing from the index")
    args = ap.parse_args(argv)

    try:
        agent, cases = load_index(args.index, args.agent)
        print(summary(agent, cases))

        failed = False
        bad = policy_violations(cases)
        if bad:
            failed = True
            print(f"FAIL: {len(bad)} case(s) violate the policy "
                  "(behavior must be OK/INFORMATIONAL, UNIMPLEMENTED allowed only in 12.x/13.x; "
                  "behaviorClose must be OK/INFORMATIONAL):")
            print("\n".join(bad))

        if args.write:
            write_expected(args.expected, cases)
            print(f"wrote {len(cases)} cases to {args.expected}")
        elif not args.expected.exists():
            failed = True
            print(f"FAIL: expected file {args.expected} does not exist; create it from this run with:\n"
                  f"  python3 {sys.argv[0]} {args.index} {args.expected} --agent {agent} --write")
        else:
            diffs = baseline_diff(cases, load_expected(args.expected), args.partial)
            if diffs:
                failed = True
                print(f"FAIL: {len(diffs)} case(s) differ from {args.expected} "
                      "(if the change is intended, refresh it with --write):")
                print("\n".join(diffs))
            else:
                print(f"baseline: all cases match {args.expected}")
    except InputError as e:
        print(f"autobahn_check: error: {e}", file=sys.stderr)
        return 2

    print("autobahn: FAILED" if failed else "autobahn: PASSED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
