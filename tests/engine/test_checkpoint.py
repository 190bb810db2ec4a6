import os

import pytest
import torch
from torch import nn

from vitssl.engine.checkpoint import (
    CheckpointError,
    keep_rolling_copy,
    load_checkpoint,
    load_matching_state,
    load_newest_readable,
    resume_candidates,
    save_checkpoint,
)


def test_round_trip_and_no_temp_files_left(tmp_path):
    path = save_checkpoint({"w": torch.arange(3), "step": 5}, tmp_path / "c.pt")
    assert load_checkpoint(path)["step"] == 5
    assert os.listdir(tmp_path) == ["c.pt"]


def test_run_folder_resolves_to_checkpoint(tmp_path):
    save_checkpoint({"a": 1}, tmp_path / "checkpoint.pt")
    assert load_checkpoint(tmp_path) == {"a": 1}


def test_missing_truncated_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    path = save_checkpoint({"w": torch.randn(100)}, tmp_path / "c.pt")
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "text.pt")


class Foreign:
    """A pickled class: weights_only loading must refuse it."""


def test_arbitrary_objects_are_refused_by_weights_only(tmp_path):
    torch.save({"obj": Foreign()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.pt")


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    path = save_checkpoint({"v": 1}, tmp_path / "c.pt")

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_checkpoint({"v": Boom()}, path)
    assert load_checkpoint(path) == {"v": 1}
    assert os.listdir(tmp_path) == ["c.pt"]


def test_other_architecture_is_named():
    with pytest.raises(CheckpointError, match=r"shape mismatch: weight \(3, 4\) vs \(2, 4\)"):
        load_matching_state(nn.Linear(4, 2), nn.Linear(4, 3).state_dict())
    with pytest.raises(CheckpointError, match="missing: bias"):
        load_matching_state(nn.Linear(4, 2), {"weight": torch.zeros(2, 4)})


def test_rolling_copies_are_pruned_to_k_and_snapshots_are_kept(tmp_path):
    save_checkpoint({"step": 0}, tmp_path / "checkpoint_epoch0001.pt")
    (tmp_path / "notes.pt").write_text("not ours")
    for step in (3, 10, 7, 12):
        latest = save_checkpoint({"step": step}, tmp_path / "checkpoint.pt")
        keep_rolling_copy(latest, step, keep=2)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-step0000010.pt", "checkpoint-step0000012.pt",
                                            "checkpoint.pt", "checkpoint_epoch0001.pt", "notes.pt"]
    assert [p.name for p in resume_candidates(tmp_path)] == [
        "checkpoint.pt", "checkpoint-step0000012.pt", "checkpoint-step0000010.pt", "checkpoint_epoch0001.pt"]
    assert load_checkpoint(tmp_path / "checkpoint-step0000012.pt") == {"step": 12}


def test_rolling_copy_without_hard_links(tmp_path, monkeypatch):
    def no_links(*args):
        raise OSError("no hard links here")

    monkeypatch.setattr(os, "link", no_links)
    latest = save_checkpoint({"step": 4}, tmp_path / "checkpoint.pt")
    keep_rolling_copy(latest, 4, keep=1)
    assert load_checkpoint(tmp_path / "checkpoint-step0000004.pt") == {"step": 4}
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-step0000004.pt", "checkpoint.pt"]


def test_fallback_past_a_corrupt_latest(tmp_path):
    save_checkpoint({"step": 1}, tmp_path / "checkpoint_epoch0001.pt")
    latest = save_checkpoint({"step": 2}, tmp_path / "checkpoint.pt")
    latest.write_bytes(b"")  # a zero-length file, as a lost write can leave
    path, payload = load_newest_readable(tmp_path)
    assert path.name == "checkpoint_epoch0001.pt" and payload == {"step": 1}
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt.corrupt", "checkpoint_epoch0001.pt"]
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_newest_readable(tmp_path / "empty")
