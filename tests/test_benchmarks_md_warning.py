"""benchmarks.md_warning: threshold from the stable runs, lead time of the collapsing ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.md_warning import lead_times


def test_lead_time_is_break_minus_first_crossing_of_the_stable_maximum():
    runs = {
        "stable": {"role": "stable", "time_ps": [0, 1, 2, 3], "max_force_std_eV_A": [0.1, 0.3, 0.2, float("nan")]},
        "early": {"role": "collapsing", "break_ps": 3.5, "time_ps": [0, 1, 2, 3],
                  "max_force_std_eV_A": [0.1, 0.35, 0.2, 0.5]},
        "silent": {"role": "collapsing", "break_ps": 2.0, "time_ps": [0, 1], "max_force_std_eV_A": [0.1, 0.3]},
    }
    assert lead_times(runs) == pytest.approx(0.3)
    assert runs["early"]["first_crossing_ps"] == 1 and runs["early"]["lead_time_ps"] == pytest.approx(2.5)
    assert runs["early"]["frames_above_threshold"] == 2
    assert runs["silent"]["first_crossing_ps"] is None and runs["silent"]["lead_time_ps"] is None
    with pytest.raises(ValueError, match="stable"):
        lead_times({"early": runs["early"]})


def test_watcher_trains_on_at_most_1000_train_split_frames_only(tmp_path):
    from benchmarks.md_warning import WATCHER_HEADS, watcher_config

    config = watcher_config(tmp_path / "watcher", data_root=tmp_path)
    (source,) = config.sources
    assert "train" in Path(source.path).name and "train" in Path(source.valid_path).name
    assert "test" not in Path(source.path).name and source.test_path is None
    first, stop = (int(x) for x in source.frames.split(":"))
    valid_first, valid_stop = (int(x) for x in source.valid_frames.split(":"))
    assert stop <= valid_first and valid_stop <= 1000 and first == 0
    assert config.init_from == "pretrained" and config.optim.threads == 1 and WATCHER_HEADS >= 2
