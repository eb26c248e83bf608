from pathlib import Path

import pytest

from pipeline.config import load_config, parse_config
from pipeline.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def test_repository_params_parse_with_contract_keys():
    config = load_config(REPO / "params.yaml")
    assert config.cohort.path == Path("data/raw/synthetic")
    assert config.targets["crs_severe"].event == "CRS"
    assert config.targets["crs_severe"].min_grade == 3
    assert config.targets["icans_severe"].event == "ICANS"
    assert config.landmarks_hours == sorted(config.landmarks_hours)
    # Contract columns a real cohort can supply; derived covariates are computed by the pipeline.
    assert {"tumor_burden", "dose", "product"} <= set(config.static_features)
    assert not {"tumor_burden_std", "dose_rel", "costim"} & set(config.static_features)
    assert config.simulate.n_patients == 1000


def test_every_path_dvc_yaml_interpolates_is_in_params_and_matches_the_config_default():
    """dvc.yaml reads ``${paths.*}`` from params.yaml: a path missing there makes every dvc command fail."""
    import re

    import yaml

    from pipeline.config import PathsConfig

    used = set(re.findall(r"\$\{paths\.(\w+)\}", (REPO / "dvc.yaml").read_text()))
    in_params = yaml.safe_load((REPO / "params.yaml").read_text())["paths"]
    assert used and not used - set(in_params), sorted(used - set(in_params))
    defaults = PathsConfig()
    assert {k: Path(v) for k, v in in_params.items()} == {k: getattr(defaults, k) for k in in_params}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"cohort": {"pth": "x"}}, "unknown key 'cohort.pth'"),
        ({"train": {"max_dept": 4}}, "unknown key 'train.max_dept'"),
        ({"landmark_hours": [24]}, "unknown key 'landmark_hours'"),
        ({"targets": {"x": {"event": "CRS", "min_grade": 9}}}, "key 'targets.x.min_grade'"),
        ({"landmarks_hours": "48"}, "key 'landmarks_hours'"),
        ({"landmarks_hours": [24, 24]}, "landmarks must be distinct"),
    ],
)
def test_bad_keys_are_errors_naming_the_key(raw, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_config(raw, Path("params.yaml"))


def test_event_names_are_upper_cased():
    config = parse_config({"targets": {"death": {"event": "death", "min_grade": 5}}})
    assert config.targets["death"].event == "DEATH"


def test_missing_params_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="parameters file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"featurize": {"analytes": ["IL-6"]}}, r"key 'featurize\.analytes'.*'IL-6' is not a canonical analyte code"),
        ({"report": {"markers": ["CRP", "XYZ"]}}, r"key 'report\.markers'.*'XYZ'"),
        ({"report": {"cohort_band_target": "nope"}}, r"cohort_band_target 'nope' is not one of the targets"),
    ],
)
def test_lists_of_codes_and_targets_are_checked(raw, message):
    with pytest.raises(UserError, match=message):
        parse_config(raw, Path("params.yaml"))
