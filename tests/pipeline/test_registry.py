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
