"""Running `digest`: in-process through click's CliRunner, or as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from click.testing import CliRunner, Result

from digest.cli import main
from digest.config import ENV_OVERRIDES
from tests.support.paths import ROOT

# Nothing from the machine's environment may steer these runs: every variable the config
# reads (and any other DIGEST_* one) is unset.
CLEAN_ENV: dict[str, str | None] = (
    {var: None for var in ENV_OVERRIDES}
    | {"DIGEST_CONFIG": None, "DIGEST_SMTP_PASSWORD": None}
    | {k: None for k in os.environ if k.startswith("DIGEST_")}
)


def cli(config: Path | None, *args: str, env: Mapping[str, str | None] | None = None) -> Result:
    """`digest [--config CONFIG] ARGS` in this process; DIGEST_* variables unset unless
    `env` sets them."""
    argv = ["--config", str(config), *args] if config is not None else list(args)
    return CliRunner().invoke(main, argv, env={**CLEAN_ENV, **(env or {})})


def process_env(**extra: str) -> dict[str, str]:
    """This process's environment without DIGEST_* variables, with `extra` on top, and
    the worktree on PYTHONPATH so `-m digest` and `-m tests.support...` import."""
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    return env | {"PYTHONPATH": str(ROOT)} | extra


def digest_command(config: Path | None, *args: str) -> list[str]:
    """The argv of `python -m digest [--config CONFIG] ARGS`."""
    head = [sys.executable, "-m", "digest"]
    return [*head, "--config", str(config), *args] if config is not None else [*head, *args]


def run_digest(
    config: Path | None,
    *args: str,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """`digest [--config CONFIG] ARGS` as its own process; output captured as text."""
    return subprocess.run(
        digest_command(config, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=dict(env) if env is not None else process_env(),
    )
