"""crs predict --no-pages in chunks: the same bytes as one chunk and as the whole-cohort scoring path,
whatever the chunk size; nothing half-written when a chunk fails."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from pipeline import predict
from pipeline.adapters.frames import read_new_cohort
from pipeline.errors import UserError
from pipeline.io import to_csv
from pipeline.predict import load_setup
from pipeline.scoring import cohort as scoring_cohort
from pipeline.scoring import score_cohort
from tests.pipeline.test_predict import build_bundle, write_csv_cohort


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    return build_bundle(tmp_path_factory.mktemp("chunks"), n_patients=60)


def _edge_cohort(directory):
    """Ids with blanks around them, a conflicting duplicate, records of an unknown patient and without an
    id, a bad covariate cell, an event before the landmark, a patient without data: every message kind."""
    return write_csv_cohort(directory, {
        "patients": "patient_id,age,product\nA,60,axi-cel\n B ,50,tisa-cel\nC,70,axi-cel\nC,71,axi-cel\n"
                    "D,abc,axi-cel\nE,55,axi-cel\nF,58,unknown-cel\nG,61,axi-cel",
        "measurements": "patient_id,time,analyte,value,unit\n"
                        "A,-10,IL6,4,pg/mL\nA,30,IL-6,80,pg/mL\nA,30,CRP,3,mg/dL\nB,-5,CRP,5,mg/L\nB,50,CRP,50,mg/L\n"
                        "C,10,IL6,9,pg/mL\nD,20,IL6,-5,pg/mL\nD,26,IL6,30,pg/mL\nZ,10,IL6,9,pg/mL\n,10,IL6,9,pg/mL\n"
                        "F,25,FERRITIN,900,ng/mL\nG,-2,IL6,5,pg/mL\nG,30,IL6,70,pg/mL\nG,30,IFNG,20,pg/mL",
        "events": "patient_id,time,event,grade\nG,10,CRS,3\nA,200,ICANS,1",
    })


def _run(config, cohort, models, out, chunk_size):
    predict.main(config, cohort, models, out, reports=False, chunk_size=chunk_size)
    return {name: (out / name).read_bytes() for name in ("predictions.csv", "quarantine.csv", "ingest.json")}


@pytest.mark.parametrize("which", ["simulated", "edge cases"])
def test_chunks_give_the_same_bytes_as_one_chunk(bundle, tmp_path, which, monkeypatch):
    config, cohort, models = bundle
    if which == "edge cases":
        cohort = _edge_cohort(tmp_path / "edge")
    whole = _run(config, cohort, models, tmp_path / "whole", None)
    preds = pd.read_csv(io.BytesIO(whole["predictions.csv"]), keep_default_na=False)
    assert preds["patient_id"].nunique() > 6 and (preds["probability"] != "").any() and (preds["message"] != "").any()
    if which == "edge cases":  # not vacuous: the per-patient message kinds are there
        for text in ("already recorded at 10.0 h", "patient not in the patients table", "scored without them",
                     "no usable measurements", "conflicting duplicate", "left blank"):
            assert preds["message"].str.contains(text, regex=False).any(), text
    for chunk_size in (1, 2, 3, 10**9):
        chunked = _run(config, cohort, models, tmp_path / f"chunks{chunk_size}", chunk_size)
        assert chunked == whole, chunk_size
    # Measurements validated in blocks of whole patients (ingest.chunk_rows), cut into the chunks block by block.
    blocked = config.model_copy(update={"ingest": config.ingest.model_copy(update={"chunk_rows": 4})})
    blocks_seen = []
    real_parts = scoring_cohort._parts_of_blocks

    def spy(blocks, bounds, n_chunks):
        blocks_seen.append(len(blocks))
        return real_parts(blocks, bounds, n_chunks)

    monkeypatch.setattr(scoring_cohort, "_parts_of_blocks", spy)
    for chunk_size in (1, 3, 10**9):
        chunked = _run(blocked, cohort, models, tmp_path / f"blocks{chunk_size}", chunk_size)
        assert chunked == whole, f"blocks, chunk size {chunk_size}"
    assert len(blocks_seen) == 3 and min(blocks_seen) > 2  # the block path ran, with several blocks
    # ... and the whole-cohort scoring path behind the pages and the MLflow model writes the same file.
    reference = score_cohort(read_new_cohort(cohort), load_setup(models, config)).predictions
    buffer = tmp_path / "reference.csv"
    to_csv(reference, buffer)
    assert buffer.read_bytes() == whole["predictions.csv"]


def test_a_failing_chunk_leaves_no_output(bundle, tmp_path, monkeypatch):
    config, cohort, models = bundle
    calls = []
    real = predict.score_in_chunks

    def failing(*args, **kwargs):
        ingest, chunks = real(*args, **kwargs)

        def broken():
            for chunk in chunks:
                calls.append(1)
                if len(calls) == 3:
                    raise UserError("chunk 3 failed")
                yield chunk
        return ingest, broken()

    monkeypatch.setattr(predict, "score_in_chunks", failing)
    out = tmp_path / "out"
    with pytest.raises(UserError, match="chunk 3 failed"):
        predict.main(config, cohort, models, out, reports=False, chunk_size=5)
    assert len(calls) == 3 and not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary directory left either
