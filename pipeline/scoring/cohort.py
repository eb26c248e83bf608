"""Score a cohort at each patient's latest landmark (or a given hour): pure, raw tables in, frames out.

Which landmark: without ``at_hours``, each patient's *latest landmark* is the largest configured
landmark ``<=`` the patient's latest accepted measurement hour (the first landmark when every
measurement is before it). With ``at_hours`` every patient is scored at that hour.

Never scored (probability empty, a message says why): no accepted measurement at or before the
landmark, none of the markers the model relies on at or before it, or the target's event (or death)
already at or before it. Missing single markers or quarantined rows give a score *and* a message.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.definitions import analyte_feature_name
from pipeline import contracts as C
from pipeline.adapters.canonical import RawTable
from pipeline.cohort import EVENTS, MEASUREMENTS, OBSERVATIONS, PATIENTS, TREATMENTS
from pipeline.config import landmark_key
from pipeline.errors import UserError
from pipeline.grading.graded import graded_tables
from pipeline.ingestion import (
    IngestResult,
    all_quarantine,
    empty_observations,
    empty_treatments,
    ingest_tables,
    validate_measurements,
    validate_patients,
)
from pipeline.lookup import id_texts, positions, take_or_nan
from pipeline.model import Scores, ScoringSetup
from pipeline.registry import load_registry
from pipeline.scoring.covariates import CovariateCheck, annotate_unrecognised, check_covariates
from pipeline.scoring.messages import patient_universe, quarantine_messages

PREDICTION_COLUMNS = ["patient_id", "target", "landmark_hours", "probability", "band", "message"]


@dataclass
class PredictResult:
    #: One row per (patient, target) at the patient's landmark (PREDICTION_COLUMNS).
    predictions: pd.DataFrame
    #: Scored landmark rows (features): each patient's landmarks up to its own (the trajectory).
    landmarks: pd.DataFrame
    #: Per target, per row of ``landmarks``: calibrated probability, band, SHAP (fast path).
    scores: dict[str, Scores]
    #: Ingest output (accepted tables, quarantine, counts).
    ingest: IngestResult
    #: patient_id -> messages (data problems; shown in predictions.csv and on the page).
    messages: dict[str, list[str]] = field(default_factory=dict)
    #: Per target, the model matrix of ``landmarks`` (feature order of that target's model).
    matrices: dict[str, np.ndarray] = field(default_factory=dict)
    #: Per-run warnings (covariate columns the cohort lacks, patients scored without some covariates).
    warnings: list[str] = field(default_factory=list)
    #: The covariate check behind the warnings (chunks merge theirs: :func:`merge_warnings`).
    covariates: CovariateCheck | None = None
    #: The grade timeline the grade features came from (grade in force and its reason), for the pages.
    grades: pd.DataFrame | None = None


def _hour_range(measurements: pd.DataFrame, patient_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(first, latest) accepted measurement hour per patient (NaN without any)."""
    codes, uniques = pd.factorize(id_texts(measurements["patient_id"]))
    hours = measurements["hours_since_anchor"].to_numpy(dtype=float)
    first = np.full(len(uniques), np.inf)
    latest = np.full(len(uniques), -np.inf)
    np.minimum.at(first, codes, hours)
    np.maximum.at(latest, codes, hours)
    pos = positions(np.asarray(uniques, dtype=object), np.asarray(patient_ids, dtype=object))
    # Position -1 (no accepted measurement) picks the trailing NaN.
    first, latest = np.append(first, np.nan), np.append(latest, np.nan)
    return first[pos], latest[pos]


def choose_landmarks(latest_hours: np.ndarray, landmarks_hours: Sequence[float], at_hours: float | None) -> np.ndarray:
    """Landmark per patient: ``at_hours``, else the largest configured landmark <= the latest measurement
    hour (the first landmark when all measurements precede it); NaN without any accepted measurement."""
    latest = np.asarray(latest_hours, dtype=float)
    if at_hours is not None:
        return np.where(np.isnan(latest), np.nan, float(at_hours))
    grid = np.asarray(sorted(landmarks_hours), dtype=float)
    pos = np.searchsorted(grid, np.nan_to_num(latest, nan=grid[0]), side="right") - 1
    return np.where(np.isnan(latest), np.nan, grid[np.clip(pos, 0, len(grid) - 1)])


def _ingest(raw: Mapping[str, RawTable], with_report: bool) -> IngestResult:
    """Ingest rules; without a report and with no events, treatments or observations to check (one new
    patient, the API hot path), only the two validators that have rows run: same rules, ~5 ms less."""
    empty = all(name not in raw or raw[name].n_rows == 0 for name in (EVENTS.name, TREATMENTS.name, OBSERVATIONS.name))
    if with_report or not empty:
        return ingest_tables(dict(raw))
    patients = validate_patients(raw[PATIENTS.name])
    measurements = validate_measurements(raw[MEASUREMENTS.name], patients.accepted, load_registry())
    tables = {"patients": patients.accepted, "measurements": measurements.accepted,
              "events": _no_events().copy(deep=False),
              "treatments": empty_treatments(), "observations": empty_observations()}
    quarantine = all_quarantine([patients, measurements])  # rows, then the blanked covariate cells
    return IngestResult(tables=tables, quarantine=quarantine, report={})


@functools.cache
def _no_events() -> pd.DataFrame:
    """The accepted events table of a request without events (a template: callers get shallow copies)."""
    return pd.DataFrame({"patient_id": pd.array([], dtype="string"), "event": pd.array([], dtype="string"),
                         "grade": np.zeros(0, dtype=np.int8), "hours_since_anchor": np.zeros(0)})


def _landmark_frame(tables: dict[str, pd.DataFrame], setup: ScoringSetup, chosen: pd.Series, scored_ids: list[str],
                    trajectory: bool) -> pd.DataFrame:
    """Features at each scored patient's own landmark (and, with ``trajectory``, the grid landmarks before)."""
    grid = sorted(setup.config.landmarks_hours)
    hours_chosen = chosen.to_numpy(dtype=float)
    wanted = set(np.unique(hours_chosen[~np.isnan(hours_chosen)]).tolist())
    if trajectory and wanted:
        wanted |= {h for h in grid if h <= max(wanted)}
    if not (wanted and scored_ids):
        return pd.DataFrame({C.PATIENT_ID: pd.array([], dtype="str"), C.LANDMARK_HOURS: np.zeros(0)})
    if trajectory or len(wanted) == 1:
        frame = setup.featurize(tables, sorted(wanted))
    else:
        frame = _own_landmarks(tables, setup, chosen)
    setup.check_features(frame)
    frame = frame.reset_index(drop=True)  # (even on featurize's RangeIndex: later column reads got faster)
    own = take_or_nan(chosen.to_numpy(dtype=float), positions(chosen.index.to_numpy(dtype=object),
                                                              id_texts(frame[C.PATIENT_ID])))
    hours = frame[C.LANDMARK_HOURS].to_numpy()
    keep = (hours == own) | (trajectory & (hours <= own) & np.isin(hours, grid))
    return frame if keep.all() else frame[keep].reset_index(drop=True)  # one patient: its one row, kept


def _own_landmarks(tables: dict[str, pd.DataFrame], setup: ScoringSetup, chosen: pd.Series) -> pd.DataFrame:
    """Each patient featurized at its own landmark only (one featurize per distinct landmark, on that
    landmark's patients; features at L read each patient's own rows <= L only), in patient-id order."""
    own = chosen.dropna()
    hours, group = np.unique(own.to_numpy(dtype=float), return_inverse=True)
    position = pd.Index(own.index, dtype=object)
    split = {}
    for name, table in tables.items():
        if table is None or C.PATIENT_ID not in table.columns:
            split[name] = [table] * len(hours)
            continue
        at = position.get_indexer(table[C.PATIENT_ID].astype(str).to_numpy(dtype=object))
        split[name] = _split(table, np.where(at >= 0, group.ravel()[np.maximum(at, 0)], -1), len(hours))
    parts = []
    for k, landmark in enumerate(hours):
        sub = {name: tables_k[k] for name, tables_k in split.items()}
        parts.append(setup.featurize(sub, [float(landmark)]))
    frame = pd.concat(parts, ignore_index=True)
    order = np.argsort(frame[C.PATIENT_ID].astype(str).to_numpy(dtype=object), kind="stable")
    return frame.iloc[order].reset_index(drop=True)


@dataclass
class _Coverage:
    """Per landmark row: some accepted measurement at or before L, and which key markers are present."""

    has_data: np.ndarray
    present: np.ndarray  # rows x key analytes (bool)
    codes: list[str]

    @property
    def scoreable(self) -> np.ndarray:
        return self.has_data & self.present.any(axis=1)


def _coverage(frame: pd.DataFrame, first_hour: pd.Series, setup: ScoringSetup) -> _Coverage:
    pid = id_texts(frame[C.PATIENT_ID])
    hours = frame[C.LANDMARK_HOURS].to_numpy(dtype=float)
    has_data = take_or_nan(first_hour.to_numpy(dtype=float), positions(first_hour.index.to_numpy(dtype=object), pid)) <= hours
    counts = {code: frame[analyte_feature_name(code, "count")].to_numpy(dtype=float)
              for code in setup.key_analytes if analyte_feature_name(code, "count") in frame.columns}
    present = np.stack([c > 0 for c in counts.values()], axis=1) if counts else np.ones((len(frame), 1), bool)
    return _Coverage(has_data, present, list(counts))


def _score_targets(frame: pd.DataFrame, setup: ScoringSetup, scoreable: np.ndarray, with_shap: bool
                   ) -> tuple[dict[str, Scores], dict[str, np.ndarray]]:
    """Scores per target for the scoreable rows (the others stay NaN: never shown, never computed)."""
    scores: dict[str, Scores] = {}
    matrices: dict[str, np.ndarray] = {}
    matrix: np.ndarray | None = None
    hours = frame[C.LANDMARK_HOURS].to_numpy(dtype=float)
    rows = np.flatnonzero(scoreable)
    n = len(frame)
    for target in setup.targets:
        model = setup.bundle.targets[target]
        X = matrix if (matrix is not None and setup.shared_specs) else model.matrix_array(frame)
        matrix = matrices[target] = X
        some = model.score_array(X[rows], hours[rows], with_shap=with_shap)
        s = Scores(probability=np.full(n, np.nan), margin=np.full(n, np.nan), base_value=np.full(n, np.nan),
                   shap=np.zeros((n, X.shape[1])) if with_shap else None)
        s.probability[rows], s.margin[rows], s.base_value[rows] = some.probability, some.margin, some.base_value
        if with_shap:
            s.shap[rows] = some.shap
        scores[target] = s
    return scores, matrices


def _hours_text(hours: np.ndarray) -> np.ndarray:
    """:func:`landmark_key` per value ('' for NaN), formatted once per distinct value."""
    values, inverse = np.unique(np.asarray(hours, dtype=float), return_inverse=True)
    texts = np.array([landmark_key(h) if not math.isnan(h) else "" for h in values] or [""], dtype=object)
    return texts[inverse.ravel()] if len(hours) else np.zeros(0, dtype=object)


#: Up to this many patients, :func:`_coverage_notes` words each patient's missing markers itself.
FEW_PATIENTS = 64


def _coverage_notes(accepted: np.ndarray, landmark: np.ndarray, row: np.ndarray, cov: _Coverage) -> np.ndarray:
    """Per patient: why it is not scored, or which key markers it is scored without ('' when complete).
    ``row``: the patient's own landmark row in ``cov`` (-1: none)."""
    n = len(accepted)
    has_row = row >= 0
    safe = np.where(has_row, row, 0)
    has_data = has_row & (cov.has_data[safe] if len(cov.has_data) else has_row)
    present = cov.present[safe] if len(cov.present) else np.zeros((n, max(len(cov.codes), 1)), bool)
    some = has_data & present.any(axis=1)
    at = _hours_text(landmark)
    codes = np.asarray(cov.codes, dtype=object)
    missing = np.full(n, "", dtype=object)
    if codes.size and n <= FEW_PATIENTS:  # a few patients (one request): each its own text
        missing = np.array([", ".join(codes[~p]) for p in present] or [""], dtype=object)[:n]
    elif codes.size:  # one text per distinct pattern of present markers
        patterns, inverse = np.unique(present, axis=0, return_inverse=True)
        missing = np.array([", ".join(codes[~p]) for p in patterns], dtype=object)[inverse.ravel()]
    relies = ", ".join(cov.codes)
    return np.select(
        [~accepted, np.isnan(landmark), ~has_data, ~some, missing != ""],
        ["not in the patients table", "no usable measurements: not scored",
         "no measurement at or before " + at + " h: not scored",
         f"none of the markers the model relies on ({relies}) measured at or before " + at + " h: not scored",
         "no " + missing + " at or before " + at + " h: scored without them"],
        default="",
    ).astype(object)


def _already_notes(frame: pd.DataFrame, setup: ScoringSetup, target: str, rows: np.ndarray,
                   landmark: np.ndarray) -> np.ndarray:
    """"Already recorded" notes for the landmark rows ``rows`` (one per row)."""
    onset = frame[C.onset_column(target)].to_numpy(dtype=float)[rows]
    definition = setup.config.targets.get(target)
    what = f"{definition.event} grade >= {definition.min_grade}" if definition else target
    when = np.where(np.isnan(onset), " (or death)", " at " + np.char.mod("%.1f", onset).astype(object) + " h")
    at = _hours_text(landmark)
    return (what + " already recorded" + when.astype(object) + ", at or before " + at + " h: not at risk").astype(object)


def _join(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Element-wise ``"; ".join`` of two message columns, skipping empty ones."""
    return np.where(left == "", right, np.where(right == "", left, left + "; " + right)).astype(object)


def _prediction_rows(frame: pd.DataFrame, setup: ScoringSetup, patient_ids: list[str], accepted: set[str],
                     chosen: pd.Series, cov: _Coverage, scores: dict[str, Scores],
                     messages: dict[str, list[str]]) -> pd.DataFrame:
    """One row per (patient, target) at the patient's own landmark; fills ``messages`` per patient."""
    ids = np.asarray(patient_ids, dtype=object)
    n = len(ids)
    pid = id_texts(frame[C.PATIENT_ID])
    chosen_ids, chosen_hours = chosen.index.to_numpy(dtype=object), chosen.to_numpy(dtype=float)
    own = np.flatnonzero(frame[C.LANDMARK_HOURS].to_numpy(dtype=float) == take_or_nan(
        chosen_hours, positions(chosen_ids, pid)))
    row = positions(pid[own], ids)
    row = np.where(row >= 0, own[np.maximum(row, 0)] if own.size else -1, -1)
    landmark = take_or_nan(chosen_hours, positions(chosen_ids, ids))
    is_accepted = np.fromiter((p in accepted for p in patient_ids), dtype=bool, count=n)
    before = [messages.get(p, []) for p in patient_ids]
    note = _coverage_notes(is_accepted, landmark, row, cov)
    note[~is_accepted & np.array([bool(m) for m in before], dtype=bool)] = ""  # the rejection says why
    text = _join(np.array(["; ".join(m) for m in before], dtype=object), note)
    scoreable = cov.scoreable
    extra: list[tuple[np.ndarray, np.ndarray]] = []  # already-recorded notes: (patient positions, notes)
    columns: dict[str, list[np.ndarray]] = {name: [] for name in ("target", "probability", "message")}
    for target in setup.targets:
        prob = np.full(n, np.nan)
        has = row >= 0
        prob[has] = scores[target].probability[row[has]]
        label = C.label_column(target)
        mine = np.full(n, "", dtype=object)
        if label in frame.columns and has.any():
            done = np.zeros(n, bool)
            done[has] = np.isnan(frame[label].to_numpy(dtype=float)[row[has]]) & scoreable[row[has]]
            if done.any():
                mine[done] = _already_notes(frame, setup, target, row[done], landmark[done])
                scores[target].probability[row[done]] = prob[done] = np.nan
        target_text = text
        for where, notes in extra:  # an earlier target's note travels with the later targets too
            earlier = np.full(n, "", dtype=object)
            earlier[where] = notes
            target_text = _join(target_text, earlier)
        columns["target"].append(np.full(n, target, dtype=object))
        columns["probability"].append(prob)
        columns["message"].append(_join(target_text, mine))
        extra.append((np.flatnonzero(mine != ""), mine[mine != ""]))
    _fill_messages(messages, patient_ids, before, note, extra)
    k = len(setup.targets)
    target = np.stack(columns["target"], axis=1).ravel() if n else np.zeros(0, object)
    hours = np.repeat(landmark, k)
    probability = np.stack(columns["probability"], axis=1).ravel() if n else np.zeros(0)
    return pd.DataFrame({  # PREDICTION_COLUMNS, built once (each column added after cost ~0.2 ms)
        C.PATIENT_ID: pd.array(np.repeat(ids, k) if n else np.zeros(0, object), dtype="str"),
        "target": target,
        C.LANDMARK_HOURS: hours,
        "probability": probability,
        "band": setup.bands(probability, target, hours),
        "message": np.stack(columns["message"], axis=1).ravel() if n else np.zeros(0, object),
    })


def _fill_messages(messages: dict[str, list[str]], patient_ids: list[str], before: list[list[str]],
                   note: np.ndarray, extra: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """``messages[p]``: what it had, its coverage note, then every target's "already recorded" note."""
    for p, old, add in zip(patient_ids, before, note, strict=True):
        messages[p] = [*old, add] if add else list(old)
    for where, notes in extra:
        for i, text in zip(where, notes, strict=True):
            messages[patient_ids[i]].append(text)


def _honesty_notes(raw: Mapping[str, RawTable], setup: ScoringSetup, at_hours: float | None) -> list[str]:
    """What the model cannot know for every patient of this request: whether the target already happened
    (no events given), and how good a risk is at an hour between the validated landmarks."""
    notes = []
    if setup.simulated:
        notes.append("model trained on simulated patients only: not validated on real patients, not for care")
    if EVENTS.name not in raw or raw[EVENTS.name].n_rows == 0:
        what = ", ".join(sorted({f"{t.event} grade >= {t.min_grade}" for t in setup.config.targets.values()
                                 if t.event}))
        notes.append(f"no events given: whether {what or 'the target'} already happened is unknown "
                     "(the risk assumes it has not)")
    if at_hours is not None and not any(math.isclose(at_hours, h) for h in setup.trained_landmarks):
        shown = ", ".join(landmark_key(h) for h in setup.trained_landmarks)
        notes.append(f"scored at {at_hours:g} h, between the validated landmarks ({shown} h): "
                     "performance not validated at this hour")
    return notes


def score_cohort(
    raw: Mapping[str, RawTable],
    setup: ScoringSetup,
    at_hours: float | None = None,
    *,
    trajectory: bool = True,
    with_shap: bool = True,
    with_report: bool = True,
) -> PredictResult:
    """Ingest, featurize at each patient's landmark (and, with ``trajectory``, at the configured landmarks
    before it) and score every target. Pure: nothing is read or written."""
    setup.validate_at(at_hours)
    result = _ingest(raw, with_report)
    return score_ingested(raw, result, setup, at_hours, trajectory=trajectory, with_shap=with_shap)


def score_ingested(
    raw: Mapping[str, RawTable],
    result: IngestResult,
    setup: ScoringSetup,
    at_hours: float | None = None,
    *,
    trajectory: bool = True,
    with_shap: bool = True,
) -> PredictResult:
    """:func:`score_cohort` after ingest: ``result`` holds the ingested tables (the whole cohort, or the
    patients of one chunk with their quarantine rows, see :func:`score_in_chunks`)."""
    covariates = check_covariates(result.tables["patients"], setup)
    tables = {**result.tables, "patients": covariates.patients}
    # The grades reached so far, graded as at training (cohort.grades stored with the model).
    graded = graded_tables(setup.config, tables, strict=False).tables
    tables.update(events=graded["events"], grades=graded["grades"])
    patient_ids = patient_universe(result, raw)
    accepted = set(id_texts(tables["patients"][C.PATIENT_ID]).tolist())
    messages = quarantine_messages(result, str(raw[PATIENTS.name].path))
    notes = _honesty_notes(raw, setup, at_hours)
    for pid in sorted(accepted):  # (a set's order changes with the hash seed)
        messages.setdefault(pid, []).extend(notes)
    for pid in covariates.per_patient:  # after the notes, as before; few patients have one
        note = covariates.message(pid)
        if note and pid in accepted:
            messages[pid].append(note)
    first_hour, latest_hour = _hour_range(tables["measurements"], patient_ids)
    chosen = pd.Series(choose_landmarks(latest_hour, setup.config.landmarks_hours, at_hours), index=patient_ids)
    ids = pd.Index(patient_ids, dtype=object)
    scored_ids = ids[ids.isin(list(accepted)) & ~np.isnan(chosen.to_numpy(dtype=float))].tolist()
    frame = _landmark_frame(tables, setup, chosen, scored_ids, trajectory)
    cov = _coverage(frame, pd.Series(first_hour, index=patient_ids), setup)
    scores, matrices = _score_targets(frame, setup, cov.scoreable, with_shap)
    predictions = _prediction_rows(frame, setup, patient_ids, accepted, chosen, cov, scores, messages)
    frame = annotate_unrecognised(frame, setup)
    return PredictResult(predictions, frame, scores, result, messages, matrices, [*notes, *covariates.run_warnings()],
                         covariates, graded["grades"])


def _chunk_of(ids: pd.Series, bounds: np.ndarray) -> np.ndarray:
    """Chunk number per row from its trimmed patient id (-1: no id; such rows belong to no patient)."""
    text = ids.astype(object).where(ids.notna(), None)
    trimmed = text.astype(str).str.strip().to_numpy(dtype=object)
    known = text.notna().to_numpy() & (trimmed != "")
    out = np.full(len(ids), -1, dtype=np.int64)
    out[known] = np.searchsorted(bounds, trimmed[known], side="right") - 1
    return out


def _pieces(frame: pd.DataFrame, chunk: np.ndarray) -> Iterator[tuple[int, pd.DataFrame]]:
    """(chunk, its rows of ``frame``) for every chunk that has rows (order kept; chunk -1: no chunk)."""
    order = np.argsort(chunk, kind="stable")
    present = np.unique(chunk[chunk >= 0])
    edges = np.searchsorted(chunk[order], np.append(present, present[-1] + 1 if len(present) else 0))
    for j, k in enumerate(present):
        yield int(k), frame.iloc[order[edges[j]:edges[j + 1]]]


def _split(frame: pd.DataFrame, chunk: np.ndarray, n_chunks: int) -> list[pd.DataFrame]:
    """Rows of ``frame`` per chunk (order kept within each chunk)."""
    parts = [frame.iloc[:0].reset_index(drop=True)] * n_chunks
    for k, piece in _pieces(frame, chunk):
        parts[k] = piece.reset_index(drop=True)
    return [part.copy(deep=False) for part in parts]


def _parts_of_blocks(blocks: list[pd.DataFrame], bounds: np.ndarray, n_chunks: int) -> list[pd.DataFrame]:
    """Per chunk, the rows of the ingest's accepted blocks (whole patients, in patient order; emptied as
    they are cut): the rows, order and dtypes of :func:`_split` on the blocks concatenated."""
    template = blocks[0].iloc[:0].reset_index(drop=True)  # validate_in_blocks hands over at least one block
    pieces: list[list[pd.DataFrame]] = [[] for _ in range(n_chunks)]
    while blocks:
        block = blocks.pop(0)
        for k, piece in _pieces(block, _chunk_of(block[C.PATIENT_ID], bounds)):
            pieces[k].append(piece)
    return [pd.concat(p, ignore_index=True) if p else template.copy() for p in pieces]


def score_in_chunks(
    raw: Mapping[str, RawTable],
    setup: ScoringSetup,
    at_hours: float | None,
    chunk_size: int,
    *,
    with_shap: bool = False,
    block_rows: int | None = None,
) -> tuple[IngestResult, Iterator[PredictResult]]:
    """The whole cohort ingested once (quarantine and counts as :func:`score_cohort`), then featurized and
    scored ``chunk_size`` patients at a time, in patient-id order: concatenating the chunks' predictions
    gives exactly :func:`score_cohort`'s (patients are independent). No trajectory (pages need it).

    ``block_rows`` (``ingest.chunk_rows``): a measurements table of more rows is validated in blocks of
    whole patients, as ``crs ingest`` does, and each block is cut into the chunks' parts and freed, so the
    whole accepted table never exists at once next to its validation's working memory."""
    if chunk_size < 1:
        raise UserError(f"chunk size {chunk_size}: must be a positive number of patients")
    setup.validate_at(at_hours)
    blocks: list[pd.DataFrame] = []
    by_block = block_rows is not None and MEASUREMENTS.name in raw and raw[MEASUREMENTS.name].n_rows > block_rows
    result = (ingest_tables(dict(raw), chunk_rows=block_rows, sink=blocks.append) if by_block
              else _ingest(raw, with_report=True))
    for table in raw.values():  # the pandas copies ingest made of the raw text: not needed again
        vars(table).pop("frame", None)
    universe = patient_universe(result, raw)
    bounds = np.asarray(universe[::chunk_size], dtype=object)
    n_chunks = len(bounds)
    parts = {name: _split(table, _chunk_of(table[C.PATIENT_ID], bounds), n_chunks)
             for name, table in result.tables.items()}
    if by_block:
        parts[MEASUREMENTS.name] = _parts_of_blocks(blocks, bounds, n_chunks)
    q = result.quarantine
    quarantine = _split(q, _chunk_of(q[C.PATIENT_ID], bounds), n_chunks) if C.PATIENT_ID in q.columns else (
        [q] + [q.iloc[0:0]] * (n_chunks - 1))

    def chunks() -> Iterator[PredictResult]:
        for k in range(n_chunks):
            part = IngestResult({name: tables[k] for name, tables in parts.items()}, quarantine[k], {})
            for tables in parts.values():
                tables[k] = None  # type: ignore[call-overload]  # freed once scored
            yield score_ingested(raw, part, setup, at_hours, trajectory=False, with_shap=with_shap)

    result.tables = {}  # the chunks hold them now
    return result, chunks()


def run_warnings(raw: Mapping[str, RawTable], setup: ScoringSetup, at_hours: float | None,
                 checks: Iterable[CovariateCheck]) -> list[str]:
    """The run's warnings (as :attr:`PredictResult.warnings`) from the covariate checks of all its chunks."""
    merged = CovariateCheck(pd.DataFrame())
    for check in checks:
        merged.absent_columns = check.absent_columns
        merged.per_patient.update(check.per_patient)
    return [*_honesty_notes(raw, setup, at_hours), *merged.run_warnings()]
