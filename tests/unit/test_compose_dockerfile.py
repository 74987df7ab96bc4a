"""Static checks of the Dockerfile and .dockerignore, and of docker-compose.yml against them.

No Docker needed. The Dockerfile is split into stages and instructions by the small
line-based reader of :mod:`tests.unit._compose_schema`; the compose file is loaded and
validated as in test_compose.py. The services' commands run through the image's
ENTRYPOINT and their volumes cover directories the image prepares, so they are checked here.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

import pytest

from tests.unit._compose_schema import (
    DOCKERFILE,
    DOCKERIGNORE,
    EXPECTED_INVOCATIONS,
    PYPROJECT,
    Compose,
    Service,
    Stage,
    dockerfile_env,
    edited,
    image_entrypoint,
    load_compose,
    load_raw,
    parse_dockerfile,
)

TEXT = DOCKERFILE.read_text()
# The CLI's top-level commands (the brief's list; a service naming another fails).
PIPELINE_COMMANDS = frozenset(
    "up down status smoke topics migrate worker controller sql sim optimize policy demo".split()
)


@pytest.fixture(scope="module")
def compose() -> Compose:
    return load_compose(load_raw())


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(TEXT)


def edited_stages(old: str, new: str) -> list[Stage]:
    """The Dockerfile with ``old`` (which must be there) replaced by ``new``, parsed."""
    assert old in TEXT, f"{old!r} is no longer in the Dockerfile; update this test"
    return parse_dockerfile(TEXT.replace(old, new))


def test_the_splitter_joins_continuations_and_resolves_global_args() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"
        "ARG BASE=python:3.11-slim\n"
        "FROM --platform=linux/amd64 ${BASE} AS build\n"
        "RUN a \\\n"
        "    # a comment inside the continuation\n"
        "\n"
        "    && b\n"
        "from build\n"
        'env A=1 \\\n    B="two words"\n'
    )
    first, second = parse_dockerfile(text)
    assert (first.base, first.name, first.instructions) == (
        "python:3.11-slim",
        "build",
        [("RUN", "a && b")],
    )
    assert (second.base, second.name) == ("build", None)
    assert dockerfile_env(second) == {"A": "1", "B": "two words"}
    with pytest.raises(AssertionError, match="continuation"):
        parse_dockerfile("FROM x\nRUN a \\\n")
    with pytest.raises(AssertionError, match="before the first FROM"):
        parse_dockerfile("RUN a\nFROM x\n")


def test_dockerfile_is_multistage_on_python_311_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "expected a build stage and a runtime stage"
    names = {stage.name for stage in stages if stage.name}
    for stage in stages:
        assert stage.base in names or stage.base.startswith("python:3.11-slim"), stage.base
    copied_from = {
        m.group(1) for args in stages[-1].args_of("COPY") if (m := re.search(r"--from=(\S+)", args))
    }
    assert copied_from & names, "the runtime stage copies nothing from the build stage"


def check_non_root(stages: list[Stage]) -> None:
    users = stages[-1].args_of("USER")
    assert users, "the final stage never sets USER, so it runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0", ""), f"the final USER is {users[-1]}"


def test_dockerfile_runs_as_a_non_root_user(stages: list[Stage]) -> None:
    check_non_root(stages)


@pytest.mark.parametrize(
    ("new", "complaint"),
    [("USER root", "the final USER is root"), ("USER 0:0", "is 0:0"), ("", "never sets USER")],
)
def test_a_root_user_is_refused(new: str, complaint: str) -> None:
    with pytest.raises(AssertionError, match=complaint):
        check_non_root(edited_stages("USER 10001:10001", new))


def pip_install_args(run: str) -> list[list[str]]:
    """The arguments of each `pip install` in a RUN line."""
    segments: list[list[str]] = [[]]
    for token in shlex.split(run):
        if token in ("&&", ";", "||"):
            segments.append([])
        else:
            segments[-1].append(token)
    return [
        seg[seg.index("install") + 1 :]
        for seg in segments
        if "install" in seg and any(PurePosixPath(t).name.startswith("pip") for t in seg)
    ]


def check_installs(stages: list[Stage]) -> None:
    installs = [
        args for stage in stages for run in stage.args_of("RUN") for args in pip_install_args(run)
    ]
    packages = [arg for args in installs for arg in args if not arg.startswith("-")]
    assert ".[server]" in packages, f"no `pip install '.[server]'` in {installs}"
    assert any(p.startswith("psycopg2-binary") for p in packages), "mlflow needs psycopg2"


def test_dockerfile_installs_the_server_extra_and_postgres_driver(stages: list[Stage]) -> None:
    check_installs(stages)


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("'.[server]'", "'.'", "no `pip install"),
        (" 'psycopg2-binary>=2.9,<3'", "", "mlflow needs psycopg2"),
    ],
)
def test_a_missing_package_is_refused(old: str, new: str, complaint: str) -> None:
    with pytest.raises(AssertionError, match=complaint):
        check_installs(edited_stages(old, new))


def test_dockerfile_entrypoint_is_the_pipeline_script(stages: list[Stage]) -> None:
    assert image_entrypoint(stages) == ["pipeline"]
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert "pipeline" in scripts


def pipeline_invocations(service: Service, image_entrypoint: list[str]) -> list[list[str]]:
    """The argv after `pipeline` of every pipeline run the service makes."""
    entrypoint = service.entrypoint or []
    if service.build is not None and service.entrypoint is None:
        entrypoint = image_entrypoint
    commands = [entrypoint + (service.command or [])]
    if service.healthcheck:
        commands.append(service.healthcheck.test)
    runs: list[list[str]] = []
    for command in commands:
        for i, token in enumerate(command):
            if PurePosixPath(token).name == "pipeline":
                runs.append(command[i + 1 :])
            elif " " in token:  # a shell string, e.g. sh -c "pipeline migrate && ..."
                runs.extend(
                    shlex.split(m.group(1))
                    for m in re.finditer(r"(?:^|[\s;&|/])pipeline((?:\s+[\w-]+)*)", token)
                )
    return runs


def check_pipeline_commands(compose: Compose, stages: list[Stage]) -> None:
    entrypoint = image_entrypoint(stages)
    runs: dict[str, list[list[str]]] = {}
    for name, service in compose.services.items():
        for run in pipeline_invocations(service, entrypoint):
            assert run, f"{name} runs `pipeline` with no command"
            assert run[0] in PIPELINE_COMMANDS, f"{name} runs unknown `pipeline {run[0]}`"
            runs.setdefault(name, []).append(run)
    for name, expected in EXPECTED_INVOCATIONS.items():
        assert expected in runs.get(name, []), f"{name} must run `pipeline {' '.join(expected)}`"


def test_pipeline_commands_exist(compose: Compose, stages: list[Stage]) -> None:
    check_pipeline_commands(compose, stages)


@pytest.mark.parametrize(
    ("path", "value", "complaint"),
    [
        ("services.worker.command", ["wokrer"], "worker runs unknown `pipeline wokrer`"),
        ("services.migrate.command", "migrate --dry-run", "migrate must run `pipeline migrate`"),
        ("services.worker.healthcheck", {"test": ["CMD", "pipeline"]}, "with no command"),
        ("services.kafka-init.healthcheck", {"test": "pipeline topic check"}, "unknown"),
    ],
)
def test_a_wrong_pipeline_command_is_refused(
    stages: list[Stage], path: str, value: Any, complaint: str
) -> None:
    bad = load_compose(edited(load_raw(), path, value))
    with pytest.raises(AssertionError, match=complaint):
        check_pipeline_commands(bad, stages)


def check_mounted_directories(compose: Compose, stages: list[Stage]) -> None:
    # An empty volume takes the owner of the directory it covers; if the image
    # lacks it, the volume is root's and the non-root user cannot write.
    runs = " ".join(stages[-1].args_of("RUN"))
    owned = [
        path
        for m in re.finditer(r"chown\s+(?:-R\s+)?\S+\s+([^&;]+)", runs)
        for path in m.group(1).split()
    ]
    for name, service in compose.services.items():
        if service.build is None:
            continue  # not our image
        for mount in service.volumes:
            target = mount.target
            assert re.search(rf"mkdir\b[^&;]*\s{re.escape(target)}(\s|$)", runs), (
                f"{name} mounts {target}, which the image never creates"
            )
            assert any(target == p or target.startswith(p.rstrip("/") + "/") for p in owned), (
                f"{target} ({name}) is not owned by the service user"
            )


def test_dockerfile_prepares_the_mounted_directories(compose: Compose, stages: list[Stage]) -> None:
    check_mounted_directories(compose, stages)


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        (" /var/lib/mlflow/artifacts \\", " \\", "mlflow mounts /var/lib/mlflow/artifacts"),
        (
            "/var/lib/pipeline /var/lib/mlflow\n",
            "/var/lib/mlflow\n",
            "/var/lib/pipeline .* not owned",
        ),
    ],
)
def test_a_mounted_directory_the_image_lacks_is_refused(
    compose: Compose, old: str, new: str, complaint: str
) -> None:
    with pytest.raises(AssertionError, match=complaint):
        check_mounted_directories(compose, edited_stages(old, new))


def dockerignore_patterns(text: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "!"))]


def is_dockerignored(path: str, patterns: list[str]) -> bool:
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatchcase(prefix, pattern.strip("/").removeprefix("**/"))
        or fnmatch.fnmatchcase(prefix, pattern.strip("/"))
        for prefix in prefixes
        for pattern in patterns
    )


def check_dockerignore(patterns: list[str], stages: list[Stage]) -> None:
    for path in (".venv", ".state", ".git", ".env", "pipeline/__pycache__", "x.egg-info"):
        assert is_dockerignored(path, patterns), f"{path} would enter the build context"
    sources = [
        src
        for stage in stages
        for args in stage.args_of("COPY")
        if "--from=" not in args
        for src in shlex.split(args)[:-1]
        if not src.startswith("--")
    ]
    assert sources, "the Dockerfile copies nothing from the context"
    excluded = [src for src in sources if is_dockerignored(src, patterns)]
    assert not excluded, f".dockerignore drops what the Dockerfile copies: {excluded}"


def test_dockerignore_keeps_local_state_out_but_not_the_sources(stages: list[Stage]) -> None:
    check_dockerignore(dockerignore_patterns(DOCKERIGNORE.read_text()), stages)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda p: [x for x in p if x != ".env"], ".env would enter"),
        (lambda p: [x for x in p if x != "**/__pycache__"], "pipeline/__pycache__ would enter"),
        (lambda p: [*p, "policies"], "drops what the Dockerfile copies: \\['policies'\\]"),
        (lambda p: [*p, "infra"], "drops .*infra/kafka"),
    ],
)
def test_a_wrong_dockerignore_is_refused(
    stages: list[Stage], change: Callable[[list[str]], list[str]], complaint: str
) -> None:
    patterns = dockerignore_patterns(DOCKERIGNORE.read_text())
    with pytest.raises(AssertionError, match=complaint):
        check_dockerignore(change(patterns), stages)
