"""benchmarks/demo_step.py: a short run of two variants of a demo preset prints one row each,
and a variant's overrides reach the run it times."""

import pytest
import torch

from helpers import benchmark_module


@pytest.fixture(scope="module")
def bench():
    yield from benchmark_module("demo_step")


def test_two_variants_each_get_a_row(bench, capsys):
    threads = torch.get_num_threads()
    times = bench.main(["--preset", "demo_digits", "--dataset", "digits", "--threads", "1", "--steps", "2",
                        "--skip", "0", "--rounds", "1", "--variant", "", "--variant", "train.batch_size=8"])
    assert list(times) == ["", "train.batch_size=8"] and all(len(t) == 1 and t[0] > 0 for t in times.values())
    assert torch.get_num_threads() == threads  # restored after timing at 1 thread
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("demo_digits on digits, 1 threads")
    assert lines[2].endswith("(the preset)") and lines[2].split()[-3] == "1.00"
    assert lines[3].endswith("train.batch_size=8") and float(lines[3].split()[-2]) > 0


def test_overrides_reach_the_timed_run(bench, monkeypatch):
    seen = []
    real = bench.start_demo_run

    def spy(preset, run_dir, dataset, epochs, seed, overrides):
        objs, method, trainer = real(preset, run_dir, dataset, epochs, seed, overrides)
        seen.append((objs.train.batch_size, objs.train.max_steps_per_epoch))
        return objs, method, trainer

    monkeypatch.setattr(bench, "start_demo_run", spy)
    assert bench.time_steps("demo_digits", "digits", ["train.batch_size=8"], steps=2, skip=1) > 0
    assert seen == [(8, 4)]  # steps + skip + 1: one gap per timed step
