"""Loading the config schema is cheap: `vitssl.config` (and building its dataclasses, checks
included) pulls in neither the training loop nor data loading nor augmentation."""

import json
import subprocess
import sys

HEAVY = ("vitssl.engine.trainer", "vitssl.data", "vitssl.augment")


def test_the_config_schema_does_not_import_the_trainer_data_or_augmentation():
    probe = ("import json, sys; import vitssl.config as c; c.RunConfig(); "
             "print(json.dumps(sorted(m for m in sys.modules if m.startswith('vitssl'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert "vitssl.config" in loaded and "vitssl.engine.train_config" in loaded  # the probe did run
    assert [m for m in loaded if m in HEAVY or m.startswith(tuple(f"{h}." for h in HEAVY))] == []
