"""Run the ``run:`` steps of a GitHub workflow job or a composite action here, as a runner would.

No library runs GitHub Actions steps locally without Docker and the network (act needs both), so this is a small
stand-in: ``${{ }}`` expressions are evaluated (literals, contexts, ``! == != && ||``, ``always()``), ``env`` is
layered workflow -> job -> step, ``GITHUB_OUTPUT``/``GITHUB_PATH``/``GITHUB_STEP_SUMMARY`` are real files, and
each script runs as ``bash --noprofile --norc -eo pipefail``. ``uses:`` steps are not run: the caller says what
stands in for each (for hubkit's action: the hubkit under test on PATH), and their evaluated ``with:`` is kept.
The scratch model repo the workflow tests share (``init_model_repo``, ``hubkit_on_path``) is made here too.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: The action a scratch model repo's workflows use (``hubkit init --action``); a stand-in runs in its place.
ACTION = "acme/hubkit@0123456789abcdef0123456789abcdef01234567"
REPO_ROOT = Path(__file__).resolve().parent.parent
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.S)
TOKEN = re.compile(r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||[!()])"
                   r"|(?P<name>[A-Za-z_][A-Za-z0-9_.-]*(?:\(\))?))")  # fmt: skip


def evaluate(expression: str, contexts: dict[str, Any]) -> Any:
    """A GitHub Actions expression: ``inputs.manifest || 'hubkit.toml'``, ``always() && steps.x.outputs.y != ''``."""
    tokens: list[tuple[str, str]] = []
    position, text = 0, expression.strip()
    while position < len(text):
        match = TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"cannot evaluate {expression!r} at {text[position:]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    tokens.append(("end", ""))
    index = 0

    def take() -> tuple[str, str]:
        nonlocal index
        index += 1
        return tokens[index - 1]

    def peek() -> str:
        return tokens[index][1]

    def primary() -> Any:
        kind, value = take()
        if value == "(":
            result = either()
            take()
            return result
        if value == "!":
            return not primary()
        if kind == "string":
            return value[1:-1].replace("''", "'")
        if kind == "number":
            return float(value)
        if value in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[value]
        if value in ("always()", "success()"):
            return True
        if value in ("failure()", "cancelled()"):
            return False
        current: Any = contexts
        for part in value.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        return current

    def comparison() -> Any:
        left = primary()
        while peek() in ("==", "!="):
            operator, right = take()[1], primary()
            left = (_text(left) == _text(right)) == (operator == "==")
        return left

    def both() -> Any:
        left = comparison()
        while peek() == "&&":
            take()
            right = comparison()
            left = right if left else left
        return left

    def either() -> Any:
        left = both()
        while peek() == "||":
            take()
            right = both()
            left = left if left else right
        return left

    return either()


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def substitute(value: Any, contexts: dict[str, Any]) -> str:
    return EXPRESSION.sub(lambda m: _text(evaluate(m.group(1), contexts)), _text(value))


@dataclass
class StepRun:
    name: str
    ran: bool
    code: int = 0
    output: str = ""
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class JobRun:
    steps: list[StepRun] = field(default_factory=list)
    uses: dict[str, dict[str, str]] = field(default_factory=dict)  # action -> evaluated `with:`
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    summary: str = ""

    @property
    def passed(self) -> bool:
        return all(step.code == 0 for step in self.steps)

    def step(self, name: str) -> StepRun:
        return next(step for step in self.steps if step.name == name)


def run_steps(
    steps: list[dict[str, Any]],
    workdir: Path,
    contexts: dict[str, Any],
    env: dict[str, str],
    stand_ins: dict[str, Callable[[dict[str, str], dict[str, str]], None]],
    runner_temp: Path,
) -> JobRun:
    """Run ``steps`` in order in ``workdir``; a failed step skips the rest except ``if: always()`` ones.

    ``stand_ins`` maps the start of a ``uses:`` value to a function given the step's evaluated ``with:`` and the
    job's environment (which it may change, e.g. PATH); other ``uses:`` steps are only recorded."""
    job = JobRun(outputs=dict(contexts.get("steps", {})))  # the outputs of earlier steps, if any
    contexts = {**contexts, "steps": job.outputs}
    files = {name: runner_temp / f"{name.lower()}.txt" for name in ("GITHUB_OUTPUT", "GITHUB_PATH", "GITHUB_ENV")}
    summary = runner_temp / "step_summary.md"
    failed = False
    for number, step in enumerate(steps):
        name = str(step.get("name") or step.get("uses") or f"step {number}")
        contexts["env"] = env
        condition = str(step.get("if", "success()")).strip()
        condition = EXPRESSION.sub(lambda m: m.group(1), condition)
        if (failed and "always()" not in condition) or not evaluate(condition, contexts):
            job.steps.append(StepRun(name, ran=False))
            continue
        step_env = {**env, **{k: substitute(v, contexts) for k, v in (step.get("env") or {}).items()}}
        if "uses" in step:
            arguments = {k: substitute(v, contexts) for k, v in (step.get("with") or {}).items()}
            job.uses[step["uses"]] = arguments
            for prefix, stand_in in stand_ins.items():
                if step["uses"].startswith(prefix):
                    stand_in(arguments, env)
            job.steps.append(StepRun(name, ran=True, env=step_env))
            continue
        for path in (*files.values(), summary):
            path.touch()
        for path in files.values():
            path.write_text("")
        step_env |= {key: str(path) for key, path in files.items()}
        step_env |= {"GITHUB_STEP_SUMMARY": str(summary), "RUNNER_TEMP": str(runner_temp)}
        cwd = workdir / substitute(step.get("working-directory", "."), contexts)
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", substitute(step["run"], contexts)],
            cwd=cwd, env=step_env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        job.steps.append(StepRun(name, True, result.returncode, result.stdout + result.stderr, step_env))
        failed = failed or result.returncode != 0
        if "id" in step:
            lines = files["GITHUB_OUTPUT"].read_text().splitlines()
            job.outputs[step["id"]] = {"outputs": dict(line.split("=", 1) for line in lines if "=" in line)}
        for directory in files["GITHUB_PATH"].read_text().splitlines():
            env["PATH"] = f"{directory}{os.pathsep}{env['PATH']}"
    job.summary = summary.read_text() if summary.exists() else ""
    return job


def run_job(
    workflow: Path,
    job_id: str,
    workdir: Path,
    *,
    inputs: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    variables: dict[str, str] | None = None,
    github: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    env_overrides: dict[str, str] | None = None,
    stand_ins: dict[str, Callable[[dict[str, str], dict[str, str]], None]] | None = None,
    runner_temp: Path,
) -> JobRun:
    """Run one job of ``workflow`` in ``workdir`` (the checkout). ``env_overrides`` replace values the workflow
    sets (a runner's data volume, say); ``inputs`` default as ``workflow_dispatch`` declares them."""
    document = yaml.safe_load(workflow.read_text())
    declared = ((document.get(True) or document.get("on") or {}).get("workflow_dispatch") or {}).get("inputs") or {}
    values = {name: spec.get("default") for name, spec in declared.items()} | (inputs or {})
    github = {"repository": "example-org/model", "ref": "refs/heads/main", "ref_name": "main"} | (github or {})
    contexts: dict[str, Any] = {
        "inputs": values, "secrets": secrets or {}, "vars": variables or {}, "github": github,
        "runner": {"temp": str(runner_temp), "os": "Linux"}, "matrix": {},
    }  # fmt: skip
    job = document["jobs"][job_id]
    environment = dict(env if env is not None else os.environ)
    environment |= {"GITHUB_REPOSITORY": github["repository"], "GITHUB_WORKSPACE": str(workdir), "CI": "true"}
    for layer in (document.get("env") or {}, job.get("env") or {}):
        contexts["env"] = environment
        environment |= {k: substitute(v, contexts) for k, v in layer.items()}
    environment |= env_overrides or {}
    return run_steps(job["steps"], workdir, contexts, environment, stand_ins or {}, runner_temp)


def hubkit_on_path(bin_dir: Path) -> dict[str, str]:
    """An environment whose ``hubkit`` (and ``nvidia-smi``, which only logs GPU facts) are the ones under test."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    scripts = {
        "hubkit": f'#!/bin/sh\nexec "{sys.executable}" -m hubkit "$@"\n',
        "nvidia-smi": "#!/bin/sh\necho 'nvidia-smi stand-in: no GPU on this test machine'\n",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "HF_TOKEN", "HF_OIDC"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def install_stand_in(installs: list[dict[str, str]]) -> Callable[[dict[str, str], dict[str, str]], None]:
    """The stand-in for hubkit's action: record its inputs; hubkit is already on PATH (``hubkit_on_path``)."""
    return lambda arguments, env: installs.append(arguments)


def init_model_repo(hubkit, folder: Path, *args: str) -> Path:
    result = hubkit("init", folder, *args)
    assert result.code == 0, result.err
    return folder
