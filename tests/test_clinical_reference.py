"""docs/clinical.md, the project's own clinical reference: cited instead of notes outside the project, every
link to one of its sections resolves, and its unit table and published cut-offs agree with the code."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pandas as pd

from features import definitions, scores

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "clinical.md"
EXTERNAL = "CLINICAL" + ".md"  # the shared notes outside the repository (spelled so this file does not cite them)
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".csv", ".j2", ".html", ".toml", ".txt", ".cfg", ""}


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    files = [ROOT / name for name in listed if Path(name).suffix in TEXT_SUFFIXES]
    return [f for f in files if f.is_file() and not f.name.endswith((".min.js",))
            and "dvc_plots_template" not in f.parts and f.stat().st_size < 2_000_000]


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors() -> set[str]:
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", DOC.read_text(encoding="utf-8"), re.M)}


def test_docs_cite_the_projects_clinical_reference_not_external_notes():
    assert DOC.is_file()
    citing = [f.relative_to(ROOT).as_posix() for f in tracked_text_files()
              if EXTERNAL in f.read_text(encoding="utf-8", errors="replace")]
    assert citing == [], f"cite docs/clinical.md instead of {EXTERNAL}: {citing}"


def test_links_to_clinical_doc_sections_resolve():
    known = anchors()
    assert {"published-scores", "reference-incidences", "kinetics-and-treatment-effects",
            "reporting-checklist-tripodai", "crs-grading-astct-2019", "icans-grading-and-the-ice-score",
            "limitations-of-this-project"} <= known
    links = []
    for f in tracked_text_files():
        text = f.read_text(encoding="utf-8", errors="replace")
        links += [(f.name, a) for a in re.findall(r"clinical\.md#([\w-]+)", text)]
        if f == DOC:
            links += [(f.name, a) for a in re.findall(r"\]\(#([\w-]+)\)", text)]
    assert len(links) >= 15
    broken = sorted({(name, a) for name, a in links if a not in known})
    assert broken == [], f"links to sections docs/clinical.md does not have: {broken}"


def test_unit_table_matches_the_registry():
    registry = pd.read_csv(ROOT / "pipeline" / "registry" / "analytes.csv").set_index("code")["canonical_unit"]
    section = DOC.read_text(encoding="utf-8").split("## Biomarkers, units and conversions", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| ") and "`" in r.split("|")[1]]
    assert len(rows) >= 10
    checked = 0
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        unit = re.sub(r" \(.*\)$", "", cells[1].replace("*", ""))  # "C (degrees Celsius)" -> "C"
        for code in re.findall(r"`(\w+)`", cells[0]):
            assert registry[code] == unit, f"{code}: docs say {unit}, registry {registry[code]}"
            checked += 1
    assert checked >= 14


def test_published_cut_offs_in_the_doc_are_the_codes():
    text = DOC.read_text(encoding="utf-8")
    assert scores.CRP_MG_PER_L_PER_MG_PER_DL == 10.0 and "divide by 10" in text
    assert f"fever >= {definitions.HAY_FEVER_CELSIUS} °C" in text
    assert f"MCP-1 >= {definitions.HAY_MCP1_PG_ML} pg/mL within the first {definitions.HAY_WINDOW_HOURS:.0f} h" in text
    assert f"a temperature >= {definitions.FEVER_CELSIUS} °C" in text
    # CAR-HEMATOTOX as tabled: each row's edges give the points the doc says
    none = dict(platelets_1e9_per_l=200.0, anc_1e9_per_l=2.0, haemoglobin_g_per_dl=12.0, crp_mg_per_l=5.0,
                ferritin_ng_per_ml=100.0)
    cases = [("platelets_1e9_per_l", 175.0, 1), ("platelets_1e9_per_l", 75.0, 1), ("platelets_1e9_per_l", 74.9, 2),
             ("anc_1e9_per_l", 1.2, 1), ("haemoglobin_g_per_dl", 9.0, 1), ("crp_mg_per_l", 30.0, 1),
             ("crp_mg_per_l", 29.9, 0), ("ferritin_ng_per_ml", 650.0, 1), ("ferritin_ng_per_ml", 2000.0, 1),
             ("ferritin_ng_per_ml", 2000.1, 2)]
    assert scores.car_hematotox(**none) == 0
    for name, value, points in cases:
        assert scores.car_hematotox(**{**none, name: value}) == points, (name, value)
    assert "75-175 (both ends included)" in text and "650-2000 (both ends included)" in text
