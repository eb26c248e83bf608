"""Hostile and messy input cannot hurt the report outputs (issue 12): page file names from any id stay
valid, unique and inside their folder; links are relative and encoded; any cell value renders; the
pseudonym key is a real secret (``crs keygen``)."""

from __future__ import annotations

import dataclasses
import html
import os
import re
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipeline import predict, report, reporting
from pipeline.cli import app
from pipeline.errors import UserError
from pipeline.explanation import explain_landmarks
from pipeline.io import write_parquet
from pipeline.reporting import clinical_text as ct
from pipeline.reporting import ids
from pipeline.reporting.cohort_bands import MarkerBands
from pipeline.reporting.pages import render_pages, write_pages
from pipeline.reporting.patient_data import ReportData
from tests.pipeline.test_explain import Run, trained_run
from tests.pipeline.test_predict import build_bundle, write_csv_cohort
from tests.pipeline.test_report import stage_inputs

HOSTILE_IDS = [
    "..", ".", "../../pwned", "../../../../tmp/x", "a/b", "a\\b", "nul\x00byte", "A" * 300, "é" * 150,
    "index", "INDEX", "Index.html", "model_card", "javascript:alert(1)", "con", "CON", "Com1", "lpt9.txt",
    "P0001", "p0001", ".hidden", "-rf", "", " ", "<script>alert(1)</script>", "x" * 80 + "~" + "0" * 16,
]
HREF = re.compile(r'<a href="([^"]*)"')


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    return trained_run(tmp_path_factory)


#: Written independently of ids.RESERVED_STEMS: the report's own names and Windows device names.
RESERVED = {"index", "model_card", "con", "prn", "aux", "nul"} | {f"{p}{n}" for p in ("com", "lpt") for n in range(10)}


def assert_safe_names(names: list[str], folder: Path) -> None:
    """Valid, bounded, not hidden, not reserved, inside ``folder``, unique even when case is ignored."""
    for name in names:
        assert not set(name) & {"/", "\\", "\x00", ":"}, name
        assert len(name.encode()) <= 100 and name.isascii(), name
        assert not name.startswith(".") and name.endswith(".html"), name
        stem = name.removesuffix(".html").lower()
        assert stem not in RESERVED and stem.split(".")[0] not in RESERVED, name
        assert (folder / name).resolve().parent == folder.resolve(), name
    assert len({n.lower() for n in names} | {"index.html"}) == len(names) + 1


# --------------------------------------------------------------------------- page file names


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(), st.sampled_from(HOSTILE_IDS), st.text(min_size=200, max_size=400)),
                unique=True, max_size=30))
def test_page_names_of_any_ids_are_valid_unique_and_inside_the_folder(id_list):
    folder = Path("/tmp/report-names")
    assert_safe_names([reporting.page_filename(i) for i in id_list], folder)


def test_page_names_of_the_hostile_ids():
    names = {i: reporting.page_filename(i) for i in HOSTILE_IDS}
    assert_safe_names(list(names.values()), Path("/tmp/report-names"))
    assert names["P0001"] == "P0001.html" and names["p0001"] != "p0001.html"  # case can never collide
    assert names["INDEX"] != "INDEX.html" and names["CON"] != "CON.html"
    # Case-insensitive twins differ (also on macOS and Windows file systems).
    assert reporting.page_filename("Abc").lower() != reporting.page_filename("abc").lower()


def test_a_name_leaving_its_folder_is_a_bug_not_a_write(tmp_path: Path):
    for name in ("../x.html", "/etc/x.html", "a/b.html"):
        with pytest.raises(RuntimeError):
            ids.page_path(tmp_path, name)


# --------------------------------------------------------------------------- pages for hostile ids


def small_data(run: Run, n: int = 3) -> ReportData:
    """Report data of ``n`` patients of the shared run, with every driver group shown."""
    pids = run.landmarks["patient_id"].astype(str).unique()[:n]

    def mine(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["patient_id"].astype(str).isin(pids)].reset_index(drop=True)

    landmarks = mine(run.landmarks)
    config = run.config.model_copy(update={"report": run.config.report.model_copy(update={"top_drivers": 50})})
    return ReportData.build(config=config, bundle=run.bundle, explanations=explain_landmarks(run.bundle, landmarks, config),
                            landmarks=landmarks, measurements=mine(run.measurements), treatments=mine(run.treatments),
                            cohort_bands=None, metrics=None)


@pytest.fixture(scope="module")
def data(run: Run) -> ReportData:
    return small_data(run)


def written_pages(data: ReportData, out: Path) -> tuple[str, dict[str, str]]:
    index, pages = render_pages(data)
    write_pages(out, index, pages)
    return (out / "index.html").read_text(encoding="utf-8"), dict(pages)


def assert_index_links(index: str, out: Path, n_pages: int) -> None:
    """index.html is the index, and every link is a relative, encoded name of a page in ``out``."""
    assert "<h1>Patients by current risk</h1>" in index
    hrefs = [html.unescape(h) for h in HREF.findall(index)]
    assert len(hrefs) == n_pages
    for href in hrefs:
        parts = urlsplit(href)
        assert not parts.scheme and not parts.netloc and re.fullmatch(r"[A-Za-z0-9._~%-]+", href), href
        assert (out / unquote(href)).is_file(), href
    assert sorted(p.name for p in out.iterdir()) == sorted(["index.html", *map(unquote, hrefs)])


@pytest.mark.parametrize("hostile", [["index", "INDEX", "con"], ["A" * 300, "a/b", "../../pwned"],
                                     ["javascript:alert(1)", "P0001", "p0001"]])
def test_pages_for_hostile_display_ids(data: ReportData, tmp_path: Path, hostile: list[str]):
    """id ``index`` does not overwrite index.html, 300 bytes or ``/`` do not crash, every link is relative."""
    mapping = dict(zip(data.patients(), hostile, strict=True))
    out = tmp_path / "patients"
    index, pages = written_pages(dataclasses.replace(data, to_id=mapping.__getitem__), out)
    assert_index_links(index, out, len(hostile))
    assert list(tmp_path.iterdir()) == [out]
    for pid in hostile:
        assert html.escape(pid) in (out / reporting.page_filename(pid)).read_text(encoding="utf-8")
    assert 'href="javascript:' not in index


MESSY = st.one_of(
    st.text(max_size=40), st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**30), 10**30),
    st.sampled_from(["unknown", "<script>alert(1)</script>", "x" * 100_000, 1e308, -1e308, np.inf, None, pd.NA]),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(display=st.lists(st.text(), min_size=3, max_size=3, unique=True), cells=st.lists(MESSY, min_size=8),
       note=st.text())
def test_fuzz_pages_with_any_ids_and_cell_values(data: ReportData, tmp_path_factory, display, cells, note):
    """Random ids, data-quality notes and landmark cells (text in numeric columns, inf, NaN, 1e308, huge
    strings, HTML): every page renders and is written, no markup from the data gets through."""
    mapping = dict(zip(data.patients(), display, strict=True))
    records = [{k: (v if k == "patient_id" else cells[j % len(cells)]) for j, (k, v) in enumerate(r.items())}
               for r in data.landmark_records]
    values = data.measurements.columns["value"].copy()
    values[: len(cells)] = [c if isinstance(c, float) else np.nan for c in cells][: len(values)]
    messy = dataclasses.replace(
        data, to_id=mapping.__getitem__, landmark_records=records,
        messages={pid: [note] for pid in data.patients()},
        measurements=dataclasses.replace(data.measurements, columns={**data.measurements.columns, "value": values}),
    )
    out = tmp_path_factory.mktemp("fuzz") / "patients"
    index, pages = written_pages(messy, out)
    assert_index_links(index, out, len(display))
    for text in (index, *pages.values()):
        assert "<script>alert" not in text


def test_text_in_a_numeric_covariate_renders():
    """``age=unknown`` (a text cell in a numeric column) and other odd values are shown, not a crash."""
    assert ct.describe_group("age", {"age": "unknown"}, {}) == "Age: unknown"
    assert ct.describe_group("tumor_burden_std", {"tumor_burden_std": "n/a"}, {}) == "Tumour burden: n/a"
    assert ct.describe_group("CAR_HEMATOTOX", {"car_hematotox__baseline": "high"}, {}).endswith("not computable "
                                                                                                "(a baseline blood count or CRP/ferritin missing)")
    assert ct.format_number(np.inf) == "∞" and ct.format_number(1e308) == "1e+308"
    assert ct.format_number("x" * 10_000).endswith("…") and len(ct.format_number("x" * 10_000)) <= ct.MAX_TEXT_CHARS
    assert ct.describe_analyte("IL6", {"il6__latest": 5.0, "il6__baseline": 1.0, "il6__fold_change": "abc",
                                       "il6__slope_24h": 1e308, "il6__n_below_limit": np.inf}, "pg/mL")


@pytest.mark.parametrize("values", [[1e308, 1.0], [5e-324, 2e-320], [5e-324, 1e308], [-1e308, 0.0, 3.0]])
def test_marker_chart_of_extreme_values_has_finite_coordinates(values):
    """Found by the page fuzz: 1e308 overflowed the log ticks and a subnormal value the linear ones."""
    svg = reporting.charts.svg_marker("IL-6", "pg/mL", np.array([-24.0, 12.0][: len(values)] + [20.0] * (len(values) - 2)),
                                      np.array(values), np.zeros(len(values), bool), MarkerBands(), [], 24.0, "CRS")
    numbers = re.findall(r'(?:x|y|x1|x2|y1|y2|cx|cy|points)="([^"]*)"', svg)
    assert numbers and not any(w in " ".join(numbers).lower() for w in ("inf", "nan"))
    assert 'class="chart"' in svg


def test_autoescape_stays_on():
    env = reporting.pages.environment()
    assert env.autoescape("patient.html.j2") and env.autoescape("index.html.j2")


# --------------------------------------------------------------------------- the stages


def tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_report_stage_traversal_id_writes_nothing_outside_reports(run: Run, tmp_path: Path):
    """``crs report`` with ids ``../../pwned``, ``index`` and 300 bytes: pages only under reports/patients."""
    inputs = stage_inputs(run)
    old = list(run.landmarks["patient_id"].astype(str).unique()[:3])
    rename = dict(zip(old, ["../../pwned", "index", "B" * 300], strict=True))

    def renamed(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(patient_id=frame["patient_id"].astype(str).replace(rename))

    data_dir, reports = tmp_path / "data", tmp_path / "reports"
    for name, frame in (("measurements", inputs.measurements), ("treatments", inputs.treatments),
                        ("patients", inputs.patients)):
        write_parquet(renamed(frame), data_dir / "interim" / f"{name}.parquet")
    write_parquet(renamed(run.landmarks), data_dir / "landmarks.parquet")
    write_parquet(renamed(inputs.oof), data_dir / "oof.parquet")
    config = run.config.model_copy(update={"paths": run.config.paths.model_copy(update={
        "interim_dir": data_dir / "interim", "landmarks": data_dir / "landmarks.parquet", "oof": data_dir / "oof.parquet",
        "shap_dir": data_dir / "shap", "patients_dir": reports / "patients",
        "cohort_bands": reports / "cohort_bands.parquet", "model_card": reports / "model_card.html"})})
    before = tree(tmp_path)
    report.main(config, pseudonymise=False)
    new = tree(tmp_path) - before
    assert new and all(p.is_relative_to(reports) for p in new), sorted(new)
    index = (reports / "patients" / "index.html").read_text(encoding="utf-8")
    assert_index_links(index, reports / "patients", run.landmarks["patient_id"].nunique())
    assert not (tmp_path / "pwned.html").exists()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    return build_bundle(tmp_path_factory.mktemp("predict_safety"), n_patients=80)


def test_predict_hostile_ids_write_nothing_outside_out(bundle, tmp_path: Path):
    """``crs predict --reports`` with ids ``../../../../tmp/x``, ``index``, ``javascript:``, 300 bytes."""
    config, _, models = bundle
    hostile = ["../../../../tmp/x", "index", "javascript:alert(1)", "C" * 300, "a/b", "con"]
    rows = [f'"{pid}",{60 + i},axi-cel' for i, pid in enumerate(hostile)]
    measurements = [f'"{pid}",{t},{a},{v},{u}' for pid in hostile
                    for t, a, v, u in ((-10, "IL6", 4, "pg/mL"), (20, "IL6", 80, "pg/mL"), (20, "CRP", 3, "mg/dL"))]
    cohort = write_csv_cohort(tmp_path / "cohort", {
        "patients": "patient_id,age,product\n" + "\n".join(rows),
        "measurements": "patient_id,time,analyte,value,unit\n" + "\n".join(measurements),
    })
    out = tmp_path / "out"
    before = tree(tmp_path)
    predict.main(config, cohort, models, out)
    new = tree(tmp_path) - before
    assert all(p.is_relative_to(out) for p in new), sorted(new)
    index = (out / "patients" / "index.html").read_text(encoding="utf-8")
    assert_index_links(index, out / "patients", len(hostile))


# --------------------------------------------------------------------------- the pseudonym key

KEY = "3f9a0c5e7b21d4468e0f9a3c5b7d2e1f4a6c8e0b2d4f6a8c1e3b5d7f9a0c2e4b"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (ids.KEY_ENV, ids.KEY_FILE_ENV, ids.LEGACY_SALT_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("key", ["a", "ab" * 16, "zz" * 32, "a" * 64, "0123456789abcdef" * 4, "00" * 40])
def test_weak_keys_are_refused_in_one_line(clean_env: pytest.MonkeyPatch, key: str):
    clean_env.setenv(ids.KEY_ENV, key)
    with pytest.raises(UserError, match=ids.KEY_ENV) as error:
        reporting.id_mapper(True)
    assert "\n" not in str(error.value) and (len(key) < 8 or key not in str(error.value))


def test_the_old_salt_is_refused_with_the_reason(clean_env: pytest.MonkeyPatch):
    clean_env.setenv(ids.LEGACY_SALT_ENV, "a")
    with pytest.raises(UserError, match=r"CRS_PSEUDONYM_SALT is no longer used.*crs keygen"):
        reporting.id_mapper(True)


def test_pseudonyms_are_keyed_stable_and_64_bits(clean_env: pytest.MonkeyPatch):
    clean_env.setenv(ids.KEY_ENV, KEY)
    to_id = reporting.id_mapper(True)
    alias = to_id("P0001")
    assert re.fullmatch(r"PS-[0-9A-F]{16}", alias) and to_id("P0001") == alias != to_id("P0002")
    assert reporting.page_filename(alias) == f"{alias}.html"
    assert alias != reporting.pseudonym("P0001", bytes.fromhex(KEY[::-1]))


def test_keygen_writes_a_private_key_once(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    path = tmp_path / "pseudonym.key"
    result = CliRunner().invoke(app, ["keygen", "--out", str(path)])
    assert result.exit_code == 0, result.output
    key = path.read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", key) and key not in result.output
    assert ids.KEY_FILE_ENV in result.output
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = CliRunner().invoke(app, ["keygen", "--out", str(path)])
    assert again.exit_code != 0 and path.read_text().strip() == key  # never overwritten
    clean_env.setenv(ids.KEY_FILE_ENV, str(path))
    assert reporting.id_mapper(True)("P1") == reporting.pseudonym("P1", bytes.fromhex(key))
    shown = CliRunner().invoke(app, ["keygen", "--out", str(tmp_path / "k2"), "--stdout"])
    assert (tmp_path / "k2").read_text().strip() in shown.stdout


def test_a_missing_key_file_is_one_line(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    clean_env.setenv(ids.KEY_FILE_ENV, str(tmp_path / "nope.key"))
    with pytest.raises(UserError, match=ids.KEY_FILE_ENV):
        reporting.id_mapper(True)
