"""The demo app under examples/superbook passes its own tests (SQLite, local memory cache)."""

from __future__ import annotations

import hashlib
import re
import secrets
import sys

from conftest import ROOT, run, tail, tool_env

APP = ROOT / "examples" / "superbook"
VENV = ROOT / ".cache" / "superbook-venv"


def app_python():
    """A virtualenv with the app's pinned requirements, rebuilt when they change."""
    stamp = VENV / ".requirements.sha256"
    want = hashlib.sha256((APP / "requirements.txt").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != want:
        proc = run([sys.executable, "-m", "venv", "--clear", VENV], log="superbook/venv.log")
        assert proc.returncode == 0, proc.stdout
        proc = run([VENV / "bin" / "pip", "install", "-q", "-r", APP / "requirements.txt"], log="superbook/pip.log")
        assert proc.returncode == 0, tail(proc.stdout)
        stamp.write_text(want)
    return VENV / "bin" / "python"


def test_demo_app_own_tests(tmp_path):
    env = tool_env()
    env.update(
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        CACHE_URL="locmem://",
        DJANGO_STATIC_ROOT=str(tmp_path / "static"),
        DJANGO_MEDIA_ROOT=str(tmp_path / "media"),
    )
    proc = run([app_python(), "manage.py", "test", "--noinput"], log="superbook/test.log", cwd=APP, env=env)
    assert proc.returncode == 0, tail(proc.stdout, 80)
    assert re.search(r"^Ran [1-9][0-9]* tests? ", proc.stdout, re.M), tail(proc.stdout)
    assert re.search(r"^OK$", proc.stdout, re.M), tail(proc.stdout)
