"""The scripts' shared flags: --set KEY=VALUE, its precedence and its errors (in-process, no training)."""

from __future__ import annotations

import pytest

import finetune_quantized
import train
from snn.cli import config_from_args, parse_overrides
from snn.config import CONFIG_DIR, DEFAULT_CONFIG, load_config


def _config(script, argv, **kwargs):
    return config_from_args(script.parse_args(argv), **kwargs)


def test_set_overrides_the_yaml_and_a_named_flag_overrides_set():
    sets = ["--set", "tau=3", "--set", "crop_size=null", "--set", "num_epochs=5", "--set", "lr_schedule=constant"]
    cfg = _config(train, [*sets, "--epochs", "2"])
    assert (cfg.tau, cfg.crop_size, cfg.num_epochs, cfg.lr_schedule) == (3.0, None, 2, "constant")
    assert load_config(DEFAULT_CONFIG).crop_size is not None  # null really replaced the YAML's crop
    later = _config(train, ["--set", "seed=1", "--set", "seed=2"])
    assert later.seed == 2  # the last --set of a key wins, as with any repeated flag


def test_finetune_quantized_takes_set_too():
    q8 = str(CONFIG_DIR / "event_snn_lite_8bit.yaml")
    cfg = _config(
        finetune_quantized,
        ["--config", q8, "--pretrained", "x.pth", "--set", "distill_weight=1.0", "--set", "learn_scale=true"],
        default_config=None,
    )
    assert (cfg.distill_weight, cfg.learn_scale, cfg.quantization_enabled) == (1.0, True, True)


def test_set_num_epochs_scales_the_schedule_like_epochs():
    progressive = str(CONFIG_DIR / "event_snn_lite_progressive.yaml")
    scaled = _config(train, ["--config", progressive, "--set", "num_epochs=24"])
    assert scaled.quantization_schedule == {0: 8, 8: 4, 16: 2}
    given = _config(
        train, ["--config", progressive, "--set", "num_epochs=24", "--set", "quantization_schedule={0: 8, 4: 4}"]
    )
    assert given.quantization_schedule == {0: 8, 4: 4}  # an explicit schedule is taken as given


def test_parse_overrides_reads_yaml_values():
    assert parse_overrides(["distill_weight=1.0", "learn_scale=true", "crop_size=null", "scale_weights=[1, 0.5]"]) == {
        "distill_weight": 1.0,
        "learn_scale": True,
        "crop_size": None,
        "scale_weights": [1, 0.5],
    }


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (
            "learning_rat=0.1",
            "--set 'learning_rat=0.1': unknown config key 'learning_rat' (did you mean learning_rate?)",
        ),
        ("tau", "--set 'tau': expected KEY=VALUE"),
        ("=1", "--set '=1': expected KEY=VALUE"),
        ("scale_weights=[1", "--set 'scale_weights=[1': the value is not valid YAML"),
        ("tau=-1", "with --set tau=-1: key 'tau' must be > 0, got -1.0"),
        ("tau=.nan", "with --set tau=.nan: key 'tau' must be a finite number, got nan"),
        ("batch_size=eight", "with --set batch_size=eight: key 'batch_size' must be int, got 'eight'"),
    ],
)
def test_a_bad_set_is_one_line_naming_it_before_anything_is_created(setting, expected, tmp_path, capsys):
    ckpt, logs = tmp_path / "ckpt", tmp_path / "logs"
    rc = train.main(["--set", setting, "--checkpoint-dir", str(ckpt), "--log-dir", str(logs), "--device", "cpu"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert expected in line
    assert not ckpt.exists() and not logs.exists()
