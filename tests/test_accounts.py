"""The system accounts of ``geoml-hub up`` as root (:mod:`geoml_hub.hub.accounts`)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from geoml_hub.hub import accounts
from geoml_hub.hub.up import mode_line

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (accounts and mounts)")


def test_system_username_is_jupyter_name_and_never_shared():
    assert accounts.system_username("alice") == "jupyter-alice"
    long_a, long_b = "a" * 40, "a" * 39 + "b"
    ua, ub = accounts.system_username(long_a), accounts.system_username(long_b)
    assert ua != ub and len(ua) <= 32 and len(ub) <= 32 and ua.startswith("jupyter-")
    odd = accounts.system_username("Ann.Lee@example.org")
    assert odd.startswith("jupyter-ann-lee") and len(odd) <= 32
    assert accounts.system_username("Ann.Lee@example.org") == odd  # stable


def test_writable_by_others_finds_group_and_world_writable_entries(tmp_path):
    (tmp_path / "a").mkdir()
    f = tmp_path / "a" / "scene.tif"
    f.write_bytes(b"x")
    os.chmod(tmp_path, 0o755)
    os.chmod(tmp_path / "a", 0o755)
    os.chmod(f, 0o644)
    assert accounts.writable_by_others(tmp_path) == []
    os.chmod(f, 0o664)
    assert accounts.writable_by_others(tmp_path) == [f]
    os.chmod(f, 0o644)
    os.chmod(tmp_path / "a", 0o777)
    assert accounts.writable_by_others(tmp_path) == [tmp_path / "a"]


def test_reachable_by_others_names_the_closed_directory():
    base = Path(tempfile.mkdtemp(prefix="geoml-reach-", dir="/var/tmp"))
    try:
        os.chmod(base, 0o755)
        inner = base / "x" / "data"
        inner.mkdir(parents=True)
        os.chmod(inner, 0o755)
        os.chmod(base / "x", 0o755)
        assert accounts.reachable_by_others(inner) is None
        os.chmod(base / "x", 0o700)
        why = accounts.reachable_by_others(inner)
        assert why == f"{base / 'x'} is mode drwx------"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_mode_line_says_single_account_for_a_normal_user():
    line = mode_line({"system_users": False})
    assert line.startswith("single-account:") and "trusted colleagues" in line
    assert mode_line({"system_users": True, "homes_dir": "/home", "public_dir": "/srv/geoml-hub"}).startswith(
        "multi-user:")


@root_only
def test_a_world_writable_data_root_is_mounted_read_only():
    base = Path(tempfile.mkdtemp(prefix="geoml-ro-", dir="/var/tmp"))
    try:
        data = base / "data"
        data.mkdir()
        (data / "scene.tif").write_bytes(b"x")
        os.chmod(base, 0o755)
        os.chmod(data, 0o777)
        os.chmod(data / "scene.tif", 0o666)
        assert accounts.writable_by_others(data)
        target = base / "public" / "data"
        try:
            accounts.mount_read_only(data, target)
        except accounts.GeomlError as exc:
            pytest.skip(f"this machine refuses bind mounts: {exc}")
        try:
            assert accounts.is_mounted(target)
            assert (target / "scene.tif").read_bytes() == b"x"
            for cmd in (f"echo y > {target}/scene.tif", f"touch {target}/new.tif"):
                res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", cmd],
                                     capture_output=True, text=True)
                assert res.returncode != 0 and "Read-only file system" in res.stderr, res
            with pytest.raises(OSError):  # even root cannot write through the mount
                (target / "scene.tif").write_bytes(b"y")
        finally:
            accounts.unmount(target)
        assert not accounts.is_mounted(target) and not any(target.iterdir())
        assert (data / "scene.tif").read_bytes() == b"x"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@root_only
def test_ensure_account_creates_the_account_with_a_private_home():
    base = Path(tempfile.mkdtemp(prefix="geoml-acct-", dir="/var/tmp"))
    name = "jupyter-zz-geoml-test"
    try:
        entry = accounts.ensure_account(name, base)
        home = Path(entry.pw_dir)
        assert home == base / name and stat.S_IMODE(home.stat().st_mode) == 0o700
        assert home.stat().st_uid == entry.pw_uid != 0
        os.chmod(home, 0o755)  # repaired on the next spawn
        assert accounts.ensure_account(name, base).pw_uid == entry.pw_uid
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_security_doc_names_tests_that_exist():
    """docs/security.md proves each control with a test: every ``tests/...py::name`` it cites exists."""
    import re

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "docs" / "security.md").read_text(encoding="utf-8")
    cited = re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", text)
    assert len(cited) >= 15
    for path, name in cited:
        source = (repo / path).read_text(encoding="utf-8")
        assert not name or re.search(rf"^(async )?def {name}\(", source, re.M), f"{path}::{name} is not a test"
