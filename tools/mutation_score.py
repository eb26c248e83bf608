"""Mutation score of the critical modules from a finished ``mutmut run`` (``make mutation``, issue 16).

Reads mutmut's per-file results (``mutants/**/*.py.meta``) and the list of equivalent mutants
(``tests/mutation_equivalents.txt``: ``<mutant name>: <one-line reason>``), prints one line per module and
the survivors that are neither killed nor listed, and exits 1 when the score is below ``--min-score``.

Score = killed / (killed + survived), equivalents excluded. A mutant no selected test runs ("no tests")
counts as survived: untested code is not a kill. A timeout counts as killed (the mutant hung the tests).

    .venv/bin/python tools/mutation_score.py [--min-score 85] [--list]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENTS = ROOT / "tests" / "mutation_equivalents.txt"


def read_equivalents(path: Path = EQUIVALENTS) -> dict[str, str]:
    """Mutant name -> reason, from ``name: reason`` lines (``#`` comments and blank lines skipped)."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, reason = line.partition(":")
            out[name.strip()] = reason.strip()
    return out


def read_statuses(mutants_dir: Path) -> dict[str, dict[str, str]]:
    """Module file -> {mutant name: status} for every ``.meta`` file mutmut wrote."""
    statuses = {}
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        module = str(meta.relative_to(mutants_dir)).removesuffix(".meta")
        statuses[module] = {name: status_by_exit_code[code] for name, code in codes.items()}
    return statuses


def tally(statuses: dict[str, str], equivalents: dict[str, str]) -> Counter:
    counts: Counter = Counter()
    for name, status in statuses.items():
        if status in ("survived", "no tests") and name in equivalents:
            counts["equivalent"] += 1
        elif status in ("killed", "timeout"):
            counts["killed"] += 1
        elif status in ("survived", "no tests"):
            counts["survived"] += 1
        else:  # not checked, suspicious, segfault, skipped: reported, not scored
            counts[status] += 1
    return counts


def score(counts: Counter) -> float:
    scored = counts["killed"] + counts["survived"]
    return 100.0 * counts["killed"] / scored if scored else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutants", type=Path, default=ROOT / "mutants")
    parser.add_argument("--min-score", type=float, default=85.0)
    parser.add_argument("--list", action="store_true", help="print every unlisted survivor")
    args = parser.parse_args()
    statuses = read_statuses(args.mutants)
    if not statuses:
        print(f"error: no mutmut results under {args.mutants} (run `make mutation`)", file=sys.stderr)
        return 2
    equivalents = read_equivalents()
    total: Counter = Counter()
    print(f"{'module':45} {'killed':>7} {'survived':>8} {'equiv.':>7} {'score':>7}")
    for module, by_name in statuses.items():
        counts = tally(by_name, equivalents)
        total += counts
        print(f"{module:45} {counts['killed']:7d} {counts['survived']:8d} {counts['equivalent']:7d} {score(counts):6.1f}%")
    print(f"{'all critical modules':45} {total['killed']:7d} {total['survived']:8d} {total['equivalent']:7d} "
          f"{score(total):6.1f}%")
    other = {k: v for k, v in total.items() if k not in ("killed", "survived", "equivalent")}
    if other:
        print(f"not scored: {dict(other)}")
    known = {name for by_name in statuses.values() for name in by_name}
    stale = sorted(set(equivalents) - known)
    if stale:
        print(f"note: {len(stale)} listed equivalents are no longer mutants (code changed): {', '.join(stale[:5])}")
    if args.list:
        for by_name in statuses.values():
            for name, status in by_name.items():
                if status in ("survived", "no tests") and name not in equivalents:
                    print(f"  {status}: {name}")
    return 0 if score(total) >= args.min_score else 1


if __name__ == "__main__":
    sys.exit(main())
