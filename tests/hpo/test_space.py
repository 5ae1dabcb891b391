import pytest

from odorch.hpo.space import SpaceError, amt_ranges, check_names, grid, parse_space


def test_kinds_parse():
    space = parse_space({
        "lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
        "batch_size": {"type": "int", "low": 4, "high": 16, "step": 4},
        "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
    })
    assert space["lr"].log and space["lr"].kind == "float"
    assert space["batch_size"].step == 4
    assert space["optimizer"].choices == ("sgd", "adamw")


@pytest.mark.parametrize("spec, words", [
    ({"lr": {"type": "float", "low": 0.1, "high": 0.01}}, ["lr", "below"]),
    ({"lr": {"type": "float", "low": 0, "high": 1, "log": True}}, ["lr", "log"]),
    ({"lr": {"type": "double", "low": 0, "high": 1}}, ["lr", "type"]),
    ({"opt": {"type": "categorical", "choices": []}}, ["opt", "choices"]),
    ({"bs": {"type": "int", "low": 1.5, "high": 4}}, ["bs", "whole"]),
    ({"lr": {"type": "float", "low": 0.1, "high": 1, "step": 2}}, ["lr", "step"]),
    ({"lr": {"type": "float", "low": 0.1, "high": 1, "bogus": 1}}, ["lr", "bogus"]),
    ({"lr": 0.1}, ["lr", "mapping"]),
])
def test_errors_name_key_and_problem(spec, words):
    with pytest.raises(SpaceError) as e:
        parse_space(spec)
    for word in words:
        assert word in str(e.value)


def test_check_names():
    space = parse_space({"lr": {"type": "float", "low": 0.01, "high": 0.1}, "nope": {"type": "categorical", "choices": [1]}})
    with pytest.raises(SpaceError, match="nope"):
        check_names(space, valid=["lr"], fixed={})
    with pytest.raises(SpaceError, match="lr"):
        check_names({"lr": space["lr"]}, valid=["lr"], fixed={"lr": "0.1"})


def test_amt_ranges_and_grid():
    space = parse_space({
        "lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
        "epochs": {"type": "int", "low": 1, "high": 3},
        "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
    })
    r = amt_ranges(space)
    assert r["ContinuousParameterRanges"] == [{"Name": "lr", "MinValue": "0.001", "MaxValue": "0.1", "ScalingType": "Logarithmic"}]
    assert r["IntegerParameterRanges"] == [{"Name": "epochs", "MinValue": "1", "MaxValue": "3", "ScalingType": "Linear"}]
    assert r["CategoricalParameterRanges"] == [{"Name": "optimizer", "Values": ["sgd", "adamw"]}]
    with pytest.raises(SpaceError, match="lr"):
        grid(space)
    g = grid(parse_space({"bs": {"type": "int", "low": 4, "high": 12, "step": 4},
                          "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]}}))
    assert g == {"bs": [4, 8, 12], "optimizer": ["sgd", "adamw"]}
    with pytest.raises(SpaceError, match="bs"):
        amt_ranges(parse_space({"bs": {"type": "int", "low": 4, "high": 12, "step": 4}}))


def test_a_space_file_with_yaml_aliases_or_bad_bytes_is_refused(tmp_path):
    """A space file is user input like odorch.yaml: an alias bomb would expand to gigabytes."""
    from odorch.hpo.space import load_space

    bomb = tmp_path / "space.yaml"
    bomb.write_text("a: &a [1, 1, 1]\nlr: *a\n")
    with pytest.raises(SpaceError, match=r"space.yaml:2:5: YAML aliases \(\*name\) are not allowed"):
        load_space(bomb)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("lr: {type: float, low: 0.01, high: 0.1}  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpaceError, match="not UTF-8"):
        load_space(latin)
