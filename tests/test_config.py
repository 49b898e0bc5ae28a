import inspect

import pytest

from snn.config import CONFIG_DIR, DEFAULT_CONFIG, ConfigError, load_config


def _write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_shipped_config_loads():
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.model == "EventSNNFlowNetLiteV2", path


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = _write(tmp_path, f"base: {DEFAULT_CONFIG}\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown key\(s\) learning_rat"):
        load_config(path)


def test_wrong_type_and_out_of_range_values_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="key 'batch_size' must be int"):
        load_config(DEFAULT_CONFIG, {"batch_size": "eight"})
    with pytest.raises(ConfigError, match="key 'weight_ema' must lie in"):
        load_config(DEFAULT_CONFIG, {"weight_ema": 1.0})
    with pytest.raises(ConfigError, match="key 'crop_size' must be a positive multiple of 8"):
        load_config(DEFAULT_CONFIG, {"crop_size": 50})
    five_steps = {"bins_per_step": 1}
    with pytest.raises(ConfigError, match=r"key 'input_bins' must lie in \[1, num_bins / bins_per_step = 5\], got 6"):
        load_config(DEFAULT_CONFIG, {**five_steps, "input_bins": 6})
    with pytest.raises(ConfigError, match="key 'input_bins' must lie in"):
        load_config(DEFAULT_CONFIG, {**five_steps, "input_bins": 0})
    assert load_config(DEFAULT_CONFIG, {**five_steps, "input_bins": 5}).model_args()["input_bins"] == 5
    for bad in ([2], [0, 1], [1.5, 2], "two"):
        with pytest.raises(ConfigError, match="key 'bottleneck_dilation' must be"):
            load_config(DEFAULT_CONFIG, {"bottleneck_dilation": bad})
    assert load_config(DEFAULT_CONFIG, {"bottleneck_dilation": [2, 4]}).model_args()["bottleneck_dilation"] == [2, 4]
    with pytest.raises(ConfigError, match="key 'head_input' must be"):
        load_config(DEFAULT_CONFIG, {"head_input": "membrane"})
    for bad in (0, -5, True):
        with pytest.raises(ConfigError, match="key 'epoch_samples' must be"):
            load_config(DEFAULT_CONFIG, {"epoch_samples": bad})
    assert load_config(DEFAULT_CONFIG, settings={"epoch_samples": None}).epoch_samples is None


def test_bins_per_step_must_divide_num_bins_and_bounds_input_bins():
    with pytest.raises(ConfigError, match="key 'bins_per_step' must divide num_bins = 5, got 2"):
        load_config(DEFAULT_CONFIG, {"bins_per_step": 2})
    with pytest.raises(ConfigError, match=r"key 'input_bins' must lie in \[1, num_bins / bins_per_step = 1\], got 2"):
        load_config(DEFAULT_CONFIG, {"bins_per_step": 5, "input_bins": 2})
    assert load_config(DEFAULT_CONFIG, {"bins_per_step": 1}).model_args()["bins_per_step"] == 1


def test_base_inheritance_and_overrides(tmp_path):
    path = _write(tmp_path, f"base: {DEFAULT_CONFIG}\nnum_epochs: 3\n")
    cfg = load_config(path, {"batch_size": 2, "seed": None})
    default = load_config(DEFAULT_CONFIG)
    assert (cfg.num_epochs, cfg.batch_size, cfg.seed) == (3, 2, default.seed)
    assert cfg.learning_rate == default.learning_rate
    assert isinstance(load_config(DEFAULT_CONFIG, {"learning_rate": 1}).learning_rate, float)


def test_a_missing_base_says_where_it_looked(tmp_path):
    path = _write(tmp_path, "base: event_snn_lit.yaml\nnum_epochs: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    beside, shipped = tmp_path.resolve() / "event_snn_lit.yaml", CONFIG_DIR.resolve() / "event_snn_lit.yaml"
    assert str(err.value) == (f"{path}: base config 'event_snn_lit.yaml' not found; looked for {beside} and {shipped}")


def test_a_bare_base_name_is_found_among_the_shipped_configs(tmp_path):
    # The advice of the empty-file error ('base: event_snn_lite.yaml') works from any folder.
    cfg = load_config(_write(tmp_path, "base: event_snn_lite_8bit.yaml\nnum_epochs: 3\n"))
    assert (cfg.num_epochs, cfg.quantization_enabled) == (3, True)
    # A file of that name beside the config comes first.
    _write(tmp_path, "num_epochs: 7\n", "event_snn_lite_8bit.yaml")
    cfg = load_config(_write(tmp_path, "base: event_snn_lite_8bit.yaml\n"))
    assert (cfg.num_epochs, cfg.quantization_enabled) == (7, False)


def test_a_base_loop_is_an_error(tmp_path):
    _write(tmp_path, "base: b.yaml\n", "a.yaml")
    _write(tmp_path, "base: a.yaml\n", "b.yaml")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "a.yaml")


def test_a_bare_model_is_the_default_configs_model():
    from snn.models import EventSNNFlowNetLiteV2

    defaults = inspect.signature(EventSNNFlowNetLiteV2).parameters
    args = load_config(DEFAULT_CONFIG).model_args()

    def plain(value):  # a tuple default is the YAML's list
        return list(value) if isinstance(value, tuple) else value

    differing = {k: (defaults[k].default, v) for k, v in args.items() if plain(defaults[k].default) != v}
    assert not differing, f"model default vs default config: {differing}"


def test_the_config_dataclass_defaults_are_the_default_yaml():
    from snn.config import Config

    assert Config().to_dict() == load_config(DEFAULT_CONFIG).to_dict()


def test_synthetic_section_is_typed_and_its_errors_name_the_file(tmp_path):
    from snn.data.synthetic_config import SyntheticDataset

    cfg = load_config(DEFAULT_CONFIG, {"synthetic": {"num_train": 5, "height": 96}})
    assert isinstance(cfg.synthetic, SyntheticDataset)
    assert (cfg.synthetic.num_train, cfg.synthetic.num_test, cfg.synthetic.scene.height) == (5, 16, 96)
    assert cfg.to_dict()["synthetic"]["height"] == 96  # saved as one flat mapping again
    for text, match in [
        ("synthetic: {num_train: -1}", "num_train"),
        ("synthetic: {hieght: 96}", "hieght"),
        ("synthetic: {height: 4}", "height"),
        ("synthetic: [1, 2]", "mapping"),
    ]:
        path = tmp_path / "bad.yaml"
        path.write_text(text + "\n")
        with pytest.raises(ConfigError, match=match) as err:
            load_config(path)
        assert str(path) in str(err.value) and "synthetic" in str(err.value)


def test_yaml_1_1_exponent_strings_are_read_as_floats(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("learning_rate: 1e-3\nweight_decay: 5e-5\n")  # YAML 1.1 reads both as strings
    cfg = load_config(path)
    assert cfg.learning_rate == 0.001 and cfg.weight_decay == 5e-5
    path.write_text("learning_rate: fast\n")
    with pytest.raises(ConfigError, match="learning_rate' must be float, got 'fast'"):
        load_config(path)


def test_an_empty_config_file_is_an_error(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match=f"{path}: the config file is empty"):
        load_config(path)


def test_an_epoch_budget_scales_the_schedule_and_keeps_every_phase():
    progressive = CONFIG_DIR / "event_snn_lite_progressive.yaml"
    assert load_config(progressive).quantization_schedule == {0: 8, 30: 4, 60: 2}
    assert load_config(progressive, {"num_epochs": 24}).quantization_schedule == {0: 8, 8: 4, 16: 2}
    assert load_config(progressive, {"num_epochs": 3}).quantization_schedule == {0: 8, 1: 4, 2: 2}
    with pytest.raises(ConfigError, match="3 phases.*at least 3 epochs"):
        load_config(progressive, {"num_epochs": 2})
    # An explicit schedule is taken as given, and one that cannot run is an error.
    with pytest.raises(ConfigError, match=r"epoch\(s\) \[30, 60\].*num_epochs is 20"):
        load_config(progressive, {"num_epochs": 20}, scale_schedule=False)


def test_config_changes_ignore_the_epoch_budget_and_compare_paths_resolved(tmp_path, monkeypatch):
    from snn.config import config_changes

    monkeypatch.chdir(tmp_path)
    a = load_config(DEFAULT_CONFIG, {"checkpoint_dir": "ck"})
    b = load_config(DEFAULT_CONFIG, {"checkpoint_dir": str(tmp_path / "ck"), "num_epochs": 40, "device": "cpu"})
    assert config_changes(a, b) == {}
    c = load_config(DEFAULT_CONFIG, {"checkpoint_dir": "ck", "learning_rate": 1e-3})
    assert config_changes(a, c) == {"learning_rate": (0.006, 0.001)}


def _float_keys():
    import typing

    from snn.config import Config, _takes_float

    return [name for name, annotation in typing.get_type_hints(Config).items() if _takes_float(annotation)]


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "nan", "inf"])  # YAML floats, and strings float() reads
@pytest.mark.parametrize("key", _float_keys())
def test_every_float_key_refuses_nan_and_infinity_by_name(tmp_path, key, value):
    path = _write(tmp_path, f"{key}: {value}\n")
    with pytest.raises(ConfigError, match=rf"{path}: key '{key}' must be a finite number, got") as err:
        load_config(path)
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("scale_weights: [1.0, .nan, 0.25]", "scale_weights"),
        ("scale_weights: [1.0, .inf]", "scale_weights"),
        ("firing_rate_band: [.nan, 0.5]", "firing_rate_band"),
        ("firing_rate_band: [0.1, .inf]", "firing_rate_band"),
        ("synthetic: {fps: .inf}", "fps"),
        ("synthetic: {noise_rate_hz: .nan}", "noise_rate_hz"),
        ("synthetic: {background_speed: [0.5, .inf]}", "background_speed"),
    ],
)
def test_lists_and_the_synthetic_section_refuse_nan_and_infinity(tmp_path, text, key):
    path = _write(tmp_path, text + "\n")
    with pytest.raises(ConfigError, match=key) as err:
        load_config(path)
    assert str(path) in str(err.value)
