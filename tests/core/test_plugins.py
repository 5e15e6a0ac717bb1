"""Plugin discovery, failure reporting, strict mode and disabling, with a real (fake-installed)
distribution on sys.path, each in a fresh interpreter."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def make_distribution(root: Path, name: str, module_source: str, version: str = "0.3") -> None:
    package = root / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(module_source))
    info = root / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[vlfw.plugins]\n{name} = {name}\n")


def run_python(code: str, path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(path), **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=environment, timeout=120)


@pytest.fixture()
def plugin_path(tmp_path):
    make_distribution(tmp_path, "brokenplug", "raise RuntimeError('boom in brokenplug')\n")
    make_distribution(tmp_path, "goodplug", """
        from vlfw.registry import LOSSES
        from vlfw.losses.base import Loss

        @LOSSES.register("goodplug_loss")
        class GoodLoss(Loss):
            def forward(self, batch, outputs):
                return outputs["x"].sum()
    """)
    return tmp_path


def test_discovery_imports_nothing(plugin_path):
    result = run_python("""
        import sys
        from vlfw import plugins
        names = [p.name for p in plugins.discover()]
        assert {"vlfw", "goodplug", "brokenplug"} <= set(names), names
        assert "goodplug" not in sys.modules and "vlfw.components" not in sys.modules
        print("ok")
    """, plugin_path)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_broken_plugin_is_reported_and_others_work(plugin_path):
    result = run_python("""
        from vlfw.registry import LOSSES, MODELS
        print(LOSSES.origin("goodplug_loss"))
        assert "late_fusion" in MODELS.names()
        try:
            MODELS.get("missing_model")
        except Exception as exc:
            print("ERROR:", exc)
    """, plugin_path)
    assert result.returncode == 0, result.stderr
    assert "goodplug 0.3 (entry point 'goodplug'" in result.stdout
    error_line = [line for line in result.stdout.splitlines() if line.startswith("ERROR:")][0]
    assert "brokenplug" in error_line and "boom in brokenplug" in error_line and "0.3" in error_line
    assert "plugin failed to load" in result.stderr  # logged once at load time


def test_strict_mode_stops_the_run(plugin_path):
    result = subprocess.run([sys.executable, "-m", "vlfw.cli.run", "plugins.strict=true", "training.max_updates=1"],
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(plugin_path)),
                            timeout=120)
    assert result.returncode == 2
    assert "brokenplug" in result.stderr and "boom in brokenplug" in result.stderr
    assert "Traceback" not in result.stderr


def test_disabled_plugins_are_not_loaded(plugin_path):
    result = run_python("""
        import sys
        from vlfw import plugins
        from vlfw.registry import MODELS
        MODELS.names()
        loaded = {p.name for p in plugins.loaded_plugins()}
        print("vlfw" in loaded, bool(loaded & {"brokenplug", "goodplug"}), plugins.failed_plugins())
        print("brokenplug" in sys.modules, "goodplug" in sys.modules)
    """, plugin_path, VLFW_DISABLE_PLUGINS="brokenplug, goodplug")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["True False []", "False False"]


def test_vlfw_list_shows_origins_and_failures(plugin_path):
    result = subprocess.run([sys.executable, "-m", "vlfw.cli.list", "losses"], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(plugin_path)), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "goodplug_loss" in result.stdout and "goodplug 0.3" in result.stdout
    assert "soft_bce" in result.stdout and "vlfw 0.1.0" in result.stdout
    assert "plugins that failed to load" in result.stdout and "brokenplug" in result.stdout


def test_a_failing_plugin_leaves_nothing_registered(tmp_path):
    make_distribution(tmp_path, "halfplug", """
        from vlfw.registry import LOSSES
        from vlfw.losses.base import Loss

        @LOSSES.register("halfplug_loss")
        class HalfLoss(Loss):
            def forward(self, batch, outputs):
                return outputs["x"].sum()

        raise RuntimeError("halfplug breaks after registering a loss")
    """)
    result = run_python("""
        from vlfw.registry import LOSSES
        print("halfplug_loss" in LOSSES.names(), "soft_bce" in LOSSES.names())
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]


def test_a_name_registered_by_two_packages_is_an_error_naming_both(tmp_path):
    make_distribution(tmp_path, "clashplug", """
        from vlfw.registry import LOSSES
        from vlfw.losses.base import Loss

        @LOSSES.register("soft_bce")
        class Clash(Loss):
            def forward(self, batch, outputs):
                return outputs["x"].sum()
    """)
    result = run_python("""
        from vlfw.registry import LOSSES
        try:
            LOSSES.get("soft_bce")
        except Exception as exc:
            print("ERROR:", exc)
        print("cross_entropy" in LOSSES.names())
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    error = [line for line in result.stdout.splitlines() if line.startswith("ERROR:")][0]
    assert "registered twice" in error and "vlfw 0.1.0" in error and "clashplug 0.3" in error
    assert result.stdout.splitlines()[-1] == "True"  # other names are unaffected


def test_no_core_entry_point_says_vlfw_is_not_installed(monkeypatch):
    from vlfw import plugins
    from vlfw.errors import RegistryError
    from vlfw.registry import MODELS

    monkeypatch.setattr(plugins, "discover", lambda: [])
    with pytest.raises(RegistryError, match="vlfw itself is not installed"):
        MODELS.get("no_such_model")
