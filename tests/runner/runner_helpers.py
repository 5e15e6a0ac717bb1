import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlfw.testing import free_port

HERE = Path(__file__).resolve().parent
TOYS = HERE / "runner_toys.py"


def script_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_script(save_dir, *overrides, nproc: int = 1, timeout: int = 120, expect: int | None = 0
               ) -> subprocess.CompletedProcess:
    """Run the toy config through vlfw.runner.run in a fresh process (torchrun when nproc > 1);
    `expect`: the exit code it must end with (None: any)."""
    if nproc > 1:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
                   "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(TOYS), str(save_dir), *overrides]
    else:
        command = [sys.executable, str(TOYS), str(save_dir), *overrides]
    result = subprocess.run(command, env=script_env(), capture_output=True, text=True, timeout=timeout)
    assert expect is None or result.returncode == expect, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture
def toy_config(tmp_path):
    import runner_toys

    def make(**overrides):
        return runner_toys.make_config(tmp_path / "run", **overrides)

    return make
