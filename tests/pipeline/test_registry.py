import pytest

from pipeline.registry import load_registry, normalize_unit

REQUIRED_CODES = (
    "CRP FERRITIN IL6 IFNG IL10 IL8 IL2 IL2R IL1B IL1RA TNFA MCP1 MIP1A MIP1B IP10 GMCSF SGP130 IL15 IL18 "
    "LDH PLT CREAT ANC ALC HGB DDIMER FIBRINOGEN TEMP"
).split()


def test_registry_covers_required_analytes():
    registry = load_registry()
    assert set(REQUIRED_CODES) <= set(registry.analytes.index)
    assert (registry.analytes["plausible_min"] < registry.analytes["plausible_max"]).all()


@pytest.mark.parametrize(
    ("given", "code"),
    [("IL6", "IL6"), ("il-6", "IL6"), ("INTLK6", "IL6"), ("Interleukin 6", "IL6"), ("26881-3", "IL6"),
     ("  interleukin   6 ", "IL6"), ("IFN-gamma", "IFNG"), ("C-reactive protein", "CRP"), ("Hemoglobin", "HGB")],
)
def test_synonyms_are_case_insensitive(given, code):
    from pipeline.registry import normalize_name

    assert load_registry().synonyms[normalize_name(given)] == code


@pytest.mark.parametrize(
    ("code", "unit", "value", "expected"),
    [
        ("CRP", "mg/dL", 2.5, 25.0),
        ("CREAT", "umol/L", 88.4, 1.0),
        ("CREAT", "µmol/L", 176.8, 2.0),
        ("TEMP", "F", 98.6, 37.0),
        ("PLT", "x10E3/uL", 150, 150),
        ("ANC", "/uL", 1200, 1.2),
        ("HGB", "g/L", 95, 9.5),
        ("FIBRINOGEN", "mg/dL", 300, 3.0),
        ("LDH", "ukat/L", 5, 300),
        ("FERRITIN", "ug/L", 800, 800),
        ("IL6", "ng/mL", 0.05, 50),
        ("DDIMER", "ng/mL FEU", 500, 0.5),
    ],
)
def test_conversions_to_canonical_units(code, unit, value, expected):
    scale, offset = load_registry().conversions[(code, normalize_unit(unit))]
    assert value * scale + offset == pytest.approx(expected)


CYTOKINE_STORM_PANEL = "IL4 IL5 IL12 IL13 IL17A GCSF PCT ALB BILI ALT AST LYMPH_PCT NEUT_PCT".split()


def test_registry_covers_cytokine_storm_panel():
    analytes = load_registry().analytes
    assert set(CYTOKINE_STORM_PANEL) <= set(analytes.index)
    assert analytes.loc["ALB", "canonical_unit"] == "g/L"
    assert analytes.loc["BILI", "canonical_unit"] == "mg/dL"
    assert analytes.loc["LYMPH_PCT", "plausible_max"] == 100


# Hand-written: (name as a cohort spells it, unit, value) -> (canonical code, canonical value).
HAND_TABLE = [
    ("Albumin", "g/dL", 3.5, "ALB", 35.0),  # 3.5 g/dL x 10 = 35 g/L
    ("ALB", "mg/dL", 3500, "ALB", 35.0),  # 3500 mg/dL / 100 = 35 g/L
    ("Serum albumin", "g/L", 28, "ALB", 28.0),
    ("Total bilirubin", "umol/L", 17.104, "BILI", 1.0),  # 17.104 umol/L = 1 mg/dL
    ("TBIL", "mg/dL", 2.3, "BILI", 2.3),
    ("SGPT", "ukat/L", 1, "ALT", 60.0),  # 1 ukat/L = 60 U/L
    ("AST", "IU/L", 45, "AST", 45.0),
    ("LDH", "ukat/L", 5, "LDH", 300.0),  # LDH kept its conversion after the *U/L group row
    ("Procalcitonin", "ug/L", 0.5, "PCT", 0.5),  # ug/L = ng/mL
    ("PCT", "pg/mL", 250, "PCT", 0.25),
    ("Lymphocyte %", "%", 12.5, "LYMPH_PCT", 12.5),
    ("NEUT%", "% of WBC", 80, "NEUT_PCT", 80.0),
    ("IL-12p70", "ng/L", 7, "IL12", 7.0),
    ("G-CSF", "ng/mL", 0.2, "GCSF", 200.0),  # ng/mL x 1000 = pg/mL
    ("IL-17A", "pg/mL", 3, "IL17A", 3.0),
    ("IL-4", "pg/mL", 1, "IL4", 1.0),
    ("IL-5", "pg/mL", 1, "IL5", 1.0),
    ("Interleukin-13", "pg/mL", 1, "IL13", 1.0),
    # What the COVID-19 Tongji cohort uses (names and units as its hospital reports them).
    ("DDIMER", "ug/mL FEU", 2.1, "DDIMER", 2.1),
    ("FIBRINOGEN", "g/L", 4.2, "FIBRINOGEN", 4.2),
    ("IL2R", "U/mL", 700, "IL2R", 700.0),
    ("IL1B", "pg/mL", 5, "IL1B", 5.0),
    ("IL8", "pg/mL", 20, "IL8", 20.0),
    ("TNFA", "pg/mL", 8, "TNFA", 8.0),
    ("ALC", "10^9/L", 0.8, "ALC", 0.8),
    ("FERRITIN", "ug/L", 900, "FERRITIN", 900.0),
    ("CREAT", "umol/L", 88.4, "CREAT", 1.0),
    ("HGB", "g/L", 120, "HGB", 12.0),
]


@pytest.mark.parametrize(("name", "unit", "value", "code", "expected"), HAND_TABLE)
def test_hand_table_of_synonyms_and_units(name, unit, value, code, expected):
    from pipeline.registry import normalize_name

    registry = load_registry()
    assert registry.synonyms[normalize_name(name)] == code
    scale, offset = registry.conversions[(code, normalize_unit(unit))]
    assert value * scale + offset == pytest.approx(expected, rel=1e-4)
