import os
import subprocess
import sys

from fit3d.body_models.anny_assets import model_data_path

FAKE_BUILD = """
import shutil, sys, time
from pathlib import Path
import fit3d.body_models.anny_assets as a

def fake_build(path):  # a slow build that counts itself, then the real data
    with open(sys.argv[2], "a") as f:
        f.write("built\\n")
    time.sleep(2)
    shutil.copy(sys.argv[1], path)

a.build_model_data = fake_build
a.load_model_data()
"""


def test_concurrent_first_runs_build_the_anny_cache_once(tmp_path, anny_model):
    real = model_data_path()  # built by the anny_model fixture
    env = dict(os.environ, FIT3D_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    counter = tmp_path / "builds.txt"
    procs = [subprocess.Popen([sys.executable, "-c", FAKE_BUILD, str(real), str(counter)], env=env,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    assert counter.read_text().count("built") == 1  # the others waited on the lock, then loaded
