"""Pattern config files: round trips, the version migration, and errors that name the field."""

import copy
import json

import pytest

from mminference import (AShape, Auto, Dense, Grid, HeadConfig, Modality, QBoundary, TwoDBoundary,
                         VerticalSlash)
from mminference.config import (CURRENT_VERSION, MIGRATIONS, ConfigError, config_from_dict, config_to_dict,
                                load_config, migrate, read_config, save_config)

T, I, V = Modality.TEXT, Modality.IMAGE, Modality.VIDEO


def _config() -> HeadConfig:
    k_boundary = TwoDBoundary({(mq, mk): Grid(strides=(64,), local=32) if mk == V else AShape(16, 0)
                               for mq in Modality for mk in (T, V)})
    return HeadConfig([
        [AShape(64, 512), VerticalSlash(100, 200, 10, 20), Grid(strides=(32,), sink=64, use_hlines=False),
         QBoundary({T: VerticalSlash(), V: Grid(local=64)})],
        [TwoDBoundary({(V, V): Grid(), (V, T): AShape(64, 0), (T, T): VerticalSlash(50, 60, 5, 6),
                       (T, V): VerticalSlash(50, 60, 5, 6)}), k_boundary, Dense(),
         Auto(grid_lift=3.5, ashape=AShape(32, 256))],
        AShape(128, 1024),  # one pattern for every head of the layer
    ])


def _scores():
    return [[{"kept_mass": 0.9 + 0.01 * h, "output_error": 0.1, "cost": 1e-6 * (h + 1), "cost_fraction": 0.1,
              "budget": 5e-6} for h in range(4)] for _ in range(2)] + [[{"kept_mass": 0.5}]]


def test_round_trip_through_a_file(tmp_path):
    config = _config()
    path = tmp_path / "cfg.json"
    save_config(config, path, scores=_scores(), metadata={"model": "m", "budget": 0.1})
    loaded = read_config(path)
    assert loaded.head_config == config
    assert load_config(str(path)) == config
    assert loaded.scores == _scores()
    assert loaded.metadata == {"model": "m", "budget": 0.1}
    assert (loaded.num_layers, loaded.num_heads) == (3, 4)
    data = json.loads(path.read_text())
    assert data["version"] == CURRENT_VERSION
    kinds = [h["boundary"] for h in data["layers"][0]["heads"] + data["layers"][1]["heads"]]
    assert kinds == ["none", "none", "none", "q", "2d", "k", "none", "none"]
    assert data["layers"][1]["heads"][1]["patterns"]["video"]["strides"] == [64]
    # Every layer / head resolves to the same pattern after loading.
    for layer in range(3):
        assert loaded.head_config.for_layer(layer, 4) == config.for_layer(layer, 4)


def test_uniform_config_and_dict_input():
    config = HeadConfig(Grid(strides=(256,)))
    data = config_to_dict(config)
    assert "all_layers" in data and config_from_dict(data) == config
    assert load_config(copy.deepcopy(data)) == config


def _v0_fixture():
    """A version-0 file: no boundaries, short pattern names, flat head lists."""
    return {"version": 0, "num_heads": 2, "layers": [
        [{"type": "ashape", "sink": 64, "local": 512}, {"type": "vs", "vertical": 300, "slash": 400}],
        [{"type": "grid", "stride": 256, "local": 128, "hlines": False, "vlines": True}, {"type": "dense"}],
    ]}


def test_version_0_loads_through_the_migration(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(_v0_fixture()))
    loaded = read_config(path)
    assert loaded.head_config == HeadConfig([
        [AShape(64, 512), VerticalSlash(num_vertical=300, num_slash=400)],
        [Grid(strides=(256,), local=128, use_hlines=False, use_vlines=True), Dense()]])
    assert loaded.metadata == {"migrated_from_version": 0}
    assert migrate(_v0_fixture())["version"] == CURRENT_VERSION
    # Saving writes the current version, which loads to the same config.
    save_config(loaded.head_config, tmp_path / "new.json")
    assert load_config(tmp_path / "new.json") == loaded.head_config


def test_migration_hook_is_applied_in_order(monkeypatch):
    calls = []

    def fake_v1_to_v2(data):
        calls.append(data["version"])
        return {**data, "version": 2}

    monkeypatch.setattr("mminference.config.CURRENT_VERSION", 2)
    monkeypatch.setitem(MIGRATIONS, 1, fake_v1_to_v2)
    assert migrate(_v0_fixture())["version"] == 2
    assert calls == [1]


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["layers"][1]["heads"][3]["pattern"].update(type="foo"),
     r"layers\[1\].heads\[3\].pattern: unknown pattern 'foo'"),
    (lambda d: d["layers"][0]["heads"].pop(), r"layers\[0\].heads: 3 heads, but num_heads is 4"),
    (lambda d: d["metadata"].update(budget=-1), r"metadata.budget: must be a finite number >= 0"),
    (lambda d: d["layers"][0]["heads"][0]["score"].update(budget=-2.0),
     r"layers\[0\].heads\[0\].score.budget: must be a finite number >= 0"),
    (lambda d: d["layers"][0]["heads"][0]["pattern"].update(sink=-5), r"layers\[0\].heads\[0\].pattern: sink must be >= 0"),
    (lambda d: d["layers"][0]["heads"][1]["pattern"].update(sinks=3),
     r"layers\[0\].heads\[1\].pattern.sinks: unknown field"),
    (lambda d: d["layers"][0]["heads"][2]["pattern"].update(local=2.5), r"layers\[0\].heads\[2\].pattern.local: must be an int"),
    (lambda d: d["layers"][0]["heads"][3].update(boundary="x"), r"layers\[0\].heads\[3\].boundary: unknown boundary 'x'"),
    (lambda d: d["layers"][0]["heads"][3]["patterns"].update(audio={"type": "dense"}),
     r"layers\[0\].heads\[3\].patterns.audio: unknown modality 'audio'"),
    (lambda d: d["layers"][1]["heads"][0]["patterns"].update({"video-text": {"type": "dense"}}),
     r"layers\[1\].heads\[0\].patterns.video-text: a 2D pair must be 'query->key'"),
    (lambda d: d["layers"][0]["heads"][3]["patterns"]["video"].update(sink=16),
     r"layers\[0\].heads\[3\].patterns.video.sink: a grid inside a boundary pattern has no sink"),
    (lambda d: d.update(num_layers=5), r"layers: 3 entries, but num_layers is 5"),
    (lambda d: d.update(version=7), r"version: 7 is newer"),
    (lambda d: d.update(format="other"), r"format: expected 'mminference.head_config'"),
    (lambda d: d["layers"][0]["heads"][0]["score"].update(kept_mass=1.5), r"score.kept_mass: must be <= "),
])
def test_bad_configs_raise_errors_naming_the_field(mutate, message):
    data = config_to_dict(_config(), scores=_scores(), metadata={"budget": 0.2})
    data = json.loads(json.dumps(data))
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        load_config(data)


def test_bad_version_0_entries_name_the_field():
    data = _v0_fixture()
    data["layers"][1][0]["type"] = "lines"
    with pytest.raises(ConfigError, match=r"layers\[1\]\[0\].type: unknown version-0 pattern 'lines'"):
        load_config(data)


def test_save_rejects_mismatched_scores_and_bad_metadata(tmp_path):
    with pytest.raises(ConfigError, match=r"scores\[0\]: 1 entries for 4 heads"):
        save_config(_config(), tmp_path / "x.json", scores=[[{"kept_mass": 1.0}], [], []])
    with pytest.raises(ConfigError, match="metadata.budget"):
        save_config(_config(), tmp_path / "x.json", metadata={"budget": -0.5})
    with pytest.raises(ConfigError, match="metadata: must be JSON-serialisable"):
        save_config(_config(), tmp_path / "x.json", metadata={"x": object()})
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(ConfigError, match="is not valid JSON"):
        (tmp_path / "broken.json").write_text("{")
        load_config(tmp_path / "broken.json")
