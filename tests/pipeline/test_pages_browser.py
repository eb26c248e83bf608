"""Pages at desktop and phone width, and on paper, in headless Debian Chromium (issue 13's done-when test).

A high-risk and a low-risk patient page, the index and the model card, built from the small trained model
the other report tests share: each screenshotted at 1280 and 390 px (not blank), its DOM checked for what a
clinician reads first (risk, band, alert status, data as of, drivers, simulated-model banner: present and
visible at both widths), the page body never wider than a phone, and a patient page printed on one A4 sheet.
Without a browser: band and chart colours stay apart under simulated colour blindness, badges stay legible.
"""

from __future__ import annotations

import html
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import reporting
from pipeline.model.setup import trained_on_simulated
from tests.pipeline.test_explain import trained_run
from tests.pipeline.test_report import write_pages
from tests.pipeline.test_report_browser import assert_not_blank, chromium, require_browser, screenshot

WIDTHS = {"desktop": 1280, "phone": 390}
A4_POINTS = (595.0, 842.0)
#: What the harness reads from each page in its frame: text (or None when absent) and whether it is drawn.
PROBES = {"risk": "#risk .risk .p", "band": "#risk .band", "alert": ".alert-status", "as_of": "#data-as-of",
          "driver": "ol.drivers li", "high_band": "#risk .band.high",
          "low_band": "#risk .band.low", "simulated": "#simulated-model", "rows": "#patients tr", "index_band": "#patients .band",
          "card": "#performance table"}
HARNESS_JS = """
window.addEventListener("load", () => {
  const out = {};
  for (const frame of document.querySelectorAll("iframe")) {
    const d = frame.contentDocument, e = d.documentElement;
    const probe = sel => { const el = d.querySelector(sel); if (!el) return null;
      const r = el.getBoundingClientRect();
      return {text: el.textContent.trim(), visible: r.width > 0 && r.height > 0, n: d.querySelectorAll(sel).length}; };
    const overflow = [...d.body.querySelectorAll("*")]
      .filter(x => x.getBoundingClientRect().right > e.clientWidth + 0.5 && !x.closest(".scroll"))
      .slice(0, 5).map(x => x.tagName.toLowerCase() + (x.id ? "#" + x.id : ""));
    out[frame.id] = {scrollWidth: e.scrollWidth, clientWidth: e.clientWidth, overflow,
                     probes: Object.fromEntries(Object.entries(PROBES).map(([k, s]) => [k, probe(s)]))};
  }
  const pre = document.createElement("pre"); pre.id = "measurements"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    """Index, every patient page and the model card of the shared small model, in one folder."""
    require_browser()  # before training the fixture model: a skip costs nothing
    run = trained_run(tmp_path_factory)
    out = tmp_path_factory.mktemp("site")
    ids = run.landmarks["patient_id"].astype(str).unique()
    anchors = pd.DataFrame({"patient_id": ids, "anchor_time": pd.Timestamp("2024-03-01 08:00", tz="UTC")})
    index = write_pages(run, out, patients=anchors)[0]
    metrics = json.loads(run.config.paths.metrics.read_text())
    card = reporting.write_model_card(
        out / "model_card.html", config=run.config, bundle=run.bundle, metrics=metrics, landmarks=run.landmarks,
        patients=None, oof=pd.read_parquet(run.config.paths.oof),
        figures=reporting.read_figures(run.config.paths.figures_dir, list(run.bundle.targets)))
    high, low = high_and_low(index.read_text())
    return {"run": run, "pages": {"high": out / f"{high}.html", "low": out / f"{low}.html", "index": index,
                                  "model_card": card}}


def high_and_low(index_html: str) -> tuple[str, str]:
    """The index's first patient (highest risk) with a HIGH band, and its last (lowest) with a LOW band and none
    HIGH (the small fixture model puts nobody low for ICANS)."""
    bands = {m.group(1): re.findall(r'class="band sm \w+">(\w*)</span>', m.group(0))
             for m in re.finditer(r'<a href="(P\d+)\.html">.*?</tr>', index_html, re.S)}
    high = [p for p, b in bands.items() if "high" in b]
    low = [p for p, b in bands.items() if "low" in b and "high" not in b][-1:]
    assert high and low, f"the fixture model has no high-risk or no low-risk patient: {bands}"
    return high[0], low[-1]


def measure(pages: dict[str, Path], tmp_path: Path) -> dict:
    """Every page in a same-origin frame at each width (a media query sees the frame's width, and the
    window cannot be narrower than 500 px in headless Chromium); the harness writes what it measured into
    its own DOM, which ``--dump-dom`` returns."""
    frames = "".join(
        f'<iframe id="{name}-{label}" style="width:{w}px;height:900px;border:0;display:block" '
        f'srcdoc="{html.escape(page.read_text(), quote=True)}"></iframe>'
        for name, page in pages.items() for label, w in WIDTHS.items())
    harness = tmp_path / "harness.html"
    harness.write_text(f"<!DOCTYPE html><html><body style='margin:0'>{frames}<script>const PROBES = "
                       f"{json.dumps(PROBES)};{HARNESS_JS}</script></body></html>", encoding="utf-8")
    result = chromium(["--hide-scrollbars", "--window-size=1400,900", "--dump-dom", harness.as_uri()],
                      tmp_path / "profile")
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'<pre id="measurements">(.*?)</pre>', result.stdout, re.S)
    assert found, "harness wrote no measurements"
    return json.loads(html.unescape(found.group(1)))


def assert_patient_dom(probes: dict, simulated: bool, where: str) -> None:
    assert re.fullmatch(r"(<1|\d{1,3})%", probes["risk"]["text"]), (where, probes["risk"])
    assert probes["band"]["text"] in ("low", "intermediate", "high"), (where, probes["band"])
    assert re.match(r"(Above|Below) the validated alert threshold \(\d+\.\d%\)", probes["alert"]["text"]), where
    assert re.fullmatch(r"Data as of 2024-\d\d-\d\d \d\d:\d\d UTC, [\d.]+ h after infusion \(newest value used\)",
                        probes["as_of"]["text"]), (where, probes["as_of"])
    assert probes["driver"]["n"] >= 3 and re.search(r"pushes the estimate (up|down)$", probes["driver"]["text"])
    assert (probes["simulated"] is not None) == simulated, where
    for key in ("risk", "band", "alert", "as_of", "driver") + (("simulated",) if simulated else ()):
        assert probes[key]["visible"], f"{where}: {key} not drawn"


def test_pages_at_desktop_and_phone_width(site: dict, tmp_path: Path):
    pages, run = site["pages"], site["run"]
    simulated = trained_on_simulated(run.bundle)
    measured = measure(pages, tmp_path)
    for name in pages:
        for label, width in WIDTHS.items():
            m = measured[f"{name}-{label}"]
            assert m["clientWidth"] == width, m
            assert m["scrollWidth"] <= width, f"{name} at {width} px scrolls sideways: {m['overflow']}"
            probes, where = m["probes"], f"{name} at {width} px"
            if name in ("high", "low"):
                assert_patient_dom(probes, simulated, where)
            elif name == "index":
                assert probes["rows"]["n"] > run.landmarks["patient_id"].nunique(), where
                assert probes["index_band"]["visible"] and (probes["simulated"] is not None) == simulated, where
            else:
                assert probes["card"]["visible"], where
                assert ("<strong>Simulated data.</strong>" in pages[name].read_text()) == simulated
    for label in WIDTHS:
        high, low = measured[f"high-{label}"]["probes"], measured[f"low-{label}"]["probes"]
        assert high["high_band"]["visible"] and high["high_band"]["text"] == "high"
        assert low["low_band"]["visible"] and low["low_band"]["text"] == "low" and low["high_band"] is None
    shots = [(name, label, width) for name in pages for label, width in WIDTHS.items()]
    with ThreadPoolExecutor(max_workers=2) as pool:  # two browsers at a time, each with its own profile
        images = pool.map(lambda s: screenshot(pages[s[0]], tmp_path / f"{s[0]}-{s[1]}.png",
                                               tmp_path / f"profile-{s[0]}-{s[1]}", f"{s[2]},1400"), shots)
        for (name, _, width), pixels in zip(shots, images, strict=True):
            assert pixels.shape[1] == width
            assert_not_blank(pixels)
            colours = np.unique((pixels[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3), axis=0)
            assert len(colours) > 50, f"{name} at {width} px: only {len(colours)} colours"


def test_patient_page_prints_on_one_a4_sheet(site: dict, tmp_path: Path):
    for name in ("high", "low"):
        pdf = tmp_path / f"{name}.pdf"
        result = chromium(["--no-pdf-header-footer", f"--print-to-pdf={pdf}", site["pages"][name].as_uri()],
                          tmp_path / "profile")
        assert result.returncode == 0 and pdf.exists(), result.stderr[-2000:]
        data = pdf.read_bytes()
        pages = re.findall(rb"/Type\s*/Page(?![s\w])", data)
        boxes = {tuple(float(v) for v in box.split()[2:]) for box in re.findall(rb"/MediaBox\s*\[([^\]]*)\]", data)}
        assert len(pages) == 1, f"{name} page prints on {len(pages)} sheets"
        assert boxes and all(np.allclose(b, A4_POINTS, atol=1) for b in boxes), boxes


# --------------------------------------------------------------------------- colours (no browser needed)

#: Machado, Oliveira & Fernandes (2009) simulation of full dichromacy, on linear RGB.
DICHROMACY = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}
BASE_TEMPLATE = Path(reporting.__file__).parent / "templates" / "_base.html.j2"


def linear_rgb(hex_colour: str) -> np.ndarray:
    c = np.array([int(hex_colour.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4)])
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def cielab(rgb: np.ndarray) -> np.ndarray:
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ np.clip(rgb, 0, 1)
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def contrast(a: str, b: str) -> float:
    la, lb = (float(np.array([0.2126, 0.7152, 0.0722]) @ linear_rgb(c)) for c in (a, b))
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


@pytest.mark.parametrize("vision", ["normal", *DICHROMACY])
def test_band_and_chart_colours_stay_apart_for_colour_blind_readers(vision: str):
    from pipeline.reporting.charts import BAND_COLOURS, DOWN_COLOUR, GROUP_COLOURS, UP_COLOUR

    simulate = np.eye(3) if vision == "normal" else np.array(DICHROMACY[vision])
    for colours in ([BAND_COLOURS[b] for b in ("low", "intermediate", "high")], [UP_COLOUR, DOWN_COLOUR],
                    list(GROUP_COLOURS.values())):
        lab = [cielab(simulate @ linear_rgb(c)) for c in colours]
        gaps = [np.linalg.norm(a - b) for i, a in enumerate(lab) for b in lab[i + 1:]]
        assert min(gaps) > 15, f"{colours} too close under {vision}: delta E {min(gaps):.1f}"


def test_band_badges_match_the_charts_and_are_legible():
    from pipeline.reporting.charts import BAND_COLOURS

    css = BASE_TEMPLATE.read_text()
    for band in ("low", "intermediate", "high"):
        colour = re.search(rf"--{band}: (#[0-9A-Fa-f]{{6}})", css).group(1)
        assert colour.lower() == BAND_COLOURS[band].lower(), band
        ink = re.search(rf"\.band\.{band} {{ background: var\(--{band}\); color: (#[0-9a-f]{{3,6}}); }}", css).group(1)
        ink = "#" + "".join(ch * 2 for ch in ink[1:]) if len(ink) == 4 else ink
        assert contrast(colour, ink) >= 4.5, f"{band} badge text contrast {contrast(colour, ink):.1f}"
