"""`dvc plots show` pages render offline: Vega inlined from dvc_plots_template/, checked in headless Chromium.

One plain `dvc plots show` (no --html-template: the template must come from `.dvc/config`) runs in a copy
of the project's dvc.yaml, params.yaml, .dvc/config, template and tracked reports/plots/. Chromium opens
the page with every host name unresolvable, so nothing can load from a CDN; every plot dvc.yaml defines
must come out as an SVG chart with its line, axis titles and title, and no script error may be logged.
A control page carrying DVC's own CDN script tags instead of the inlined libraries renders nothing and
logs errors under the same rules, which shows the checks can fail.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.pipeline.test_report_browser import chromium, require_browser

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = ROOT / "dvc_plots_template"
DVC = Path(sys.executable).parent / "dvc"
# No host name resolves, so nothing can load from a CDN; console messages go to stderr.
OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0"]


def load_build():
    spec = importlib.util.spec_from_file_location("dvc_plots_template_build", TEMPLATE_DIR / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def vega_plots() -> dict[str, dict]:
    """Div id DVC gives each data file of each x/y plot in dvc.yaml -> that plot's x, y and title."""
    paths = yaml.safe_load((ROOT / "params.yaml").read_text())["paths"]
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    expected = {}
    for stage in stages.values():
        for entry in stage.get("plots", []):
            (key, props), = entry.items()
            if not isinstance(props, dict) or "x" not in props:
                continue  # image folders (reports/figures) are not Vega charts
            folder = re.sub(r"\$\{paths\.(\w+)\}", lambda m: str(paths[m.group(1)]), key)
            files = sorted((ROOT / folder).rglob("*.csv"))
            assert files, f"dvc.yaml plot {folder} has no data files in the repo"
            for file in files:
                div_id = re.sub(r"[^A-Za-z0-9]", "_", file.relative_to(ROOT).as_posix())
                expected[div_id] = props
    return expected


def project_copy(tmp_path: Path) -> Path:
    """The files `dvc plots show` reads, in a fresh git repo (the workspace may be busy with a repro)."""
    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".dvc/config"):
        shutil.copy2(ROOT / name, repo / name)
    shutil.copytree(TEMPLATE_DIR, repo / TEMPLATE_DIR.name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "reports" / "plots", repo / "reports" / "plots")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    return repo


def dom_of(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and the page's uncaught JavaScript errors."""
    result = chromium([*OFFLINE, "--dump-dom", page.as_uri()], profile)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, [line for line in result.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]


def rendered_charts(dom: str, div_ids: list[str]) -> dict[str, str]:
    """Each plot div's markup in the rendered DOM (up to the next plot div)."""
    starts = sorted((dom.index(f'<div id="{i}"'), i) for i in div_ids if f'<div id="{i}"' in dom)
    bounds = [s for s, _ in starts[1:]] + [len(dom)]
    return {i: dom[s:end] for (s, i), end in zip(starts, bounds, strict=True)}


def test_template_is_built_from_the_vendored_files():
    build = load_build()
    assert (TEMPLATE_DIR / "index.html").read_text(encoding="utf-8") == build.render(), (
        "dvc_plots_template/index.html is stale: run .venv/bin/python dvc_plots_template/build.py")
    for package, version, filename, _ in build.LIBRARIES:
        assert (TEMPLATE_DIR / "vendor" / filename).is_file()
        assert "Redistribution and use" in (TEMPLATE_DIR / "vendor" / f"LICENSE.{package}").read_text()
        assert version in (TEMPLATE_DIR / "README.md").read_text()
    config = (ROOT / ".dvc" / "config").read_text()
    assert re.search(r"^\[plots\]\s*\n\s*html_template = \.\./dvc_plots_template/index\.html$", config, re.M)


def test_dvc_plots_show_renders_offline_in_chromium(tmp_path: Path):
    require_browser()
    assert DVC.exists(), f"{DVC} not found: the project venv installs dvc (requirements.lock)"
    expected = vega_plots()
    assert len(expected) >= 8
    repo = project_copy(tmp_path)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([str(DVC), "plots", "show", "-o", "out"], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    page = repo / "out" / "index.html"
    assert page.is_file(), "dvc plots show wrote no page:\n" + result.stdout[-2000:] + result.stderr[-2000:]
    text = page.read_text(encoding="utf-8")

    assert "Generated by dvc_plots_template/build.py" in text, "dvc plots show ignored .dvc/config"
    assert not re.search(r"<script\b[^>]*\bsrc\s*=", text, re.I), "a script loads from a URL"
    assert not re.search(r"<link\b[^>]*\bhref\s*=\s*[\"']?(https?:)?//", text, re.I)
    assert "cdn.jsdelivr.net" not in text
    embedded = set(re.findall(r"vegaEmbed\('#(\w+)'", text))
    assert set(expected) <= embedded, f"plots missing from the page: {sorted(set(expected) - embedded)}"

    dom, errors = dom_of(page, tmp_path / "profile")
    assert errors == [], errors[:3]
    assert not re.search(r"<script\b[^>]*\bsrc\s*=", dom, re.I), "a script element with src was added"
    charts = rendered_charts(dom, sorted(expected))
    assert sorted(charts) == sorted(expected), "plot divs missing from the rendered page"
    for div_id, props in expected.items():
        chart = charts[div_id]
        assert '<svg' in chart and 'class="marks"' in chart, f"{div_id}: no chart rendered"
        lines = re.findall(r'class="mark-line role-mark[^"]*"[^>]*>\s*<path[^>]*\bd="(M[^"]+)"', chart)
        assert lines and max(len(re.findall(r"[ML]", d)) for d in lines) >= 2, f"{div_id}: no line drawn"
        texts = {html.unescape(t).strip() for t in re.findall(r"<text[^>]*>([^<]*)</text>", chart)}
        assert {props["x"], props["y"], props["title"]} <= texts, f"{div_id}: axis titles or title missing"

    # Control: the same page with DVC's default CDN tags instead of the inlined libraries stays blank
    # under the same offline rules, so the checks above can fail.
    from dvc_render.vega import VegaRenderer

    inlined = list(re.finditer(r"<script>/\* vega[\w-]*@[\d.]+ \(npm\).*?</script>", text, re.S))
    assert len(inlined) == 3
    cdn_page = tmp_path / "cdn.html"
    cdn_page.write_text(text[:inlined[0].start()] + VegaRenderer.SCRIPTS + text[inlined[-1].end():],
                        encoding="utf-8")
    blank, errors = dom_of(cdn_page, tmp_path / "profile")
    assert errors, "the CDN page raised no error offline: is the console log still read?"
    assert "cdn.jsdelivr.net/npm/vega@" in blank
    assert 'class="marks"' not in blank and 'class="mark-line' not in blank
