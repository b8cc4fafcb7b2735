"""The container and the Lambda package, as far as they can be proven without building an image
(no base image can be pulled here): the Dockerfile's shape, the build context the CDK stages
through .dockerignore, and the node run from that context with only runtime/requirements.txt
installed and configured only by the environment the task definition sets.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from websockets.sync.client import connect

from infra.origin import ASSET_EXCLUDES
from runtime.local.provision import provision
from runtime.names import ResourceNames
from tests.aws import MotoEndpoint
from tests.infra.imports import import_closure, module_name, python_modules
from tests.infra.synth import ROOT, SynthesizedStack

DOCKERFILE = ROOT / "runtime" / "Dockerfile"
REQUIREMENTS = ROOT / "runtime" / "requirements.txt"
NODE_ONLY_PACKAGES = ("websockets", "uvloop", "httptools")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


# An image reference pinned by digest: the tag may stay beside it for readers.
PINNED_IMAGE = re.compile(r"[^\s@]+@sha256:[0-9a-f]{64}")


def base_images() -> list[str]:
    """The image of every FROM, without its --platform= option or its `AS name`."""
    froms = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "FROM"]
    return [
        next(word for word in arguments.split() if not word.startswith("--")) for arguments in froms
    ]


def test_dockerfile_uses_the_slim_official_python_base() -> None:
    assert [image.partition("@")[0] for image in base_images()] == ["python:3.11-slim"]


def test_every_base_image_is_pinned_by_its_digest() -> None:
    """A tag moves (python:3.11-slim is rebuilt every few weeks); a digest names fixed bytes."""
    images = base_images()
    assert images
    for image in images:
        assert PINNED_IMAGE.fullmatch(image), f"{image} is not pinned by an @sha256: digest"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "USER"]
    assert users, "no USER: the node would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    run = " ".join(
        arguments for keyword, arguments in dockerfile_instructions() if keyword == "RUN"
    )
    assert f"--uid {user}" in run  # the user exists in the image


def test_dockerfile_entrypoint_serves_with_configuration_from_the_environment() -> None:
    instructions = dockerfile_instructions()
    entrypoints = [arguments for keyword, arguments in instructions if keyword == "ENTRYPOINT"]
    assert [json.loads(entrypoint) for entrypoint in entrypoints] == [
        ["python", "-m", "runtime", "serve"]
    ]
    assert not [keyword for keyword, _arguments in instructions if keyword == "CMD"]
    environment = " ".join(arguments for keyword, arguments in instructions if keyword == "ENV")
    names = set(re.findall(r"([A-Z_]+)=", environment))
    assert names and all(name.startswith(("PYTHON", "PIP_")) for name in names), names


def test_dockerfile_installs_only_the_nodes_requirements() -> None:
    installs = [
        arguments
        for keyword, arguments in dockerfile_instructions()
        if keyword == "RUN" and "pip install" in arguments
    ]
    assert len(installs) == 1
    words = shlex.split(installs[0])
    assert words[words.index("-r") + 1] == "/app/runtime/requirements.txt"
    assert sum(word == "-r" for word in words) == 1 and "-e" not in words


def asset_directories(stack: SynthesizedStack, kind: str) -> list[Path]:
    """Staged asset directories of the stack: `dockerImages` or (zipped) `files`."""
    manifest = json.loads((stack.outdir / f"{stack.name}.assets.json").read_text())
    sources = [asset["source"] for asset in manifest[kind].values()]
    return [
        stack.outdir / (source.get("directory") or source["path"])
        for source in sources
        if source.get("packaging", "zip") == "zip" or "directory" in source
    ]


@pytest.fixture(scope="module")
def docker_context(stacks: dict[str, SynthesizedStack]) -> Path:
    (directory,) = asset_directories(stacks["wsgw-dev-us-east-1"], "dockerImages")
    return directory


@pytest.fixture(scope="module")
def lambda_package(stacks: dict[str, SynthesizedStack]) -> Path:
    directories = [
        directory
        for directory in asset_directories(stacks["wsgw-dev-us-east-1"], "files")
        if (directory / "runtime").is_dir()
    ]
    assert len(directories) == 1
    return directories[0]


def caches(directory: Path) -> list[Path]:
    return [
        path
        for pattern in ("__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache")
        for path in directory.rglob(pattern)
    ]


def test_docker_build_context_holds_the_runtime_package_only(docker_context: Path) -> None:
    assert sorted(path.name for path in docker_context.iterdir()) == [".dockerignore", "runtime"]
    assert (docker_context / "runtime" / "Dockerfile").is_file()
    assert (docker_context / "runtime" / "requirements.txt").is_file()
    assert (docker_context / "runtime" / "__main__.py").is_file()
    assert caches(docker_context) == []


def test_lambda_package_holds_the_runtime_package_only(lambda_package: Path) -> None:
    assert [path.name for path in lambda_package.iterdir()] == ["runtime"]
    assert not (lambda_package / "runtime" / "Dockerfile").exists()
    assert caches(lambda_package) == []


PROJECT_TREE = [
    "runtime/__init__.py",
    "runtime/Dockerfile",
    "runtime/requirements.txt",
    "runtime/node/server.py",
    "runtime/names.py",
    "runtime/wire/commands.py",
    "runtime/wire/events.py",
    "runtime/origin/client.py",
    "runtime/origin/examples/chat.py",
    "runtime/local/system.py",
    "runtime/local/provision.py",
    "runtime/local/demo/chat.html",
    "runtime/__pycache__/config.cpython-311.pyc",
    "runtime/node/__pycache__/server.cpython-311.pyc",
    "runtime/stray.pyc",
    "runtime/.pytest_cache/v/cache",
    "tests/test_x.py",
    "tests/doubles/memory.py",
    "infra/stack.py",
    "app.py",
    ".venv/lib/site.py",
    "cdk.out/manifest.json",
    "bench/run.py",
]


def _copy_with_ignores(tmp_path: Path, exclude: list[str], mode: Any) -> list[str]:
    """What the CDK stages from a project like ours, through these ignore patterns."""
    source, staged = tmp_path / "project", tmp_path / "staged"
    for name in PROJECT_TREE:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text("x")
    (source / ".dockerignore").write_text((ROOT / ".dockerignore").read_text())
    cdk.FileSystem.copy_directory(
        str(source), str(staged), cdk.CopyOptions(exclude=exclude, ignore_mode=mode)
    )
    return sorted(str(path.relative_to(staged)) for path in staged.rglob("*") if path.is_file())


def test_dockerignore_keeps_tests_caches_the_sdk_and_the_local_system_out_of_the_context(
    tmp_path: Path,
) -> None:
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    staged = _copy_with_ignores(tmp_path, patterns, cdk.IgnoreMode.DOCKER)
    assert staged == [
        "runtime/Dockerfile",
        "runtime/__init__.py",
        "runtime/names.py",
        "runtime/node/server.py",
        "runtime/requirements.txt",
        "runtime/wire/commands.py",
        "runtime/wire/events.py",
    ]


def test_lambda_package_excludes_all_but_the_sdk_and_what_it_imports(tmp_path: Path) -> None:
    staged = _copy_with_ignores(tmp_path, ASSET_EXCLUDES, cdk.IgnoreMode.GIT)
    assert staged == [
        "runtime/__init__.py",
        "runtime/names.py",
        "runtime/origin/client.py",
        "runtime/origin/examples/chat.py",
        "runtime/wire/commands.py",
    ]


# The one import the node's modules make that the image does not hold: `python -m runtime local`.
LOCAL_BRANCH = {("runtime.__main__", "runtime.local"), ("runtime.__main__", "runtime.local.system")}


def test_every_module_in_the_build_context_is_one_the_node_runs(docker_context: Path) -> None:
    """The image holds the node and nothing beside it: no local system, demo page, origin SDK or
    test double, and every import the node's entry point can reach (the serve path) is there."""
    closure = import_closure(docker_context, ["runtime.__main__"])
    assert closure.missing == LOCAL_BRANCH
    assert sorted(python_modules(docker_context)) == sorted(closure.found)
    files = sorted(
        str(path.relative_to(docker_context))
        for path in docker_context.rglob("*")
        if path.is_file() and path.suffix != ".py"
    )
    assert files == [".dockerignore", "runtime/Dockerfile", "runtime/requirements.txt"]
    for absent in ("runtime/local", "runtime/origin", "tests"):
        assert not (docker_context / absent).exists(), absent


def test_the_lambda_package_holds_the_sdk_and_what_it_imports(lambda_package: Path) -> None:
    sdk = [module_name(ROOT, path) for path in sorted((ROOT / "runtime" / "origin").rglob("*.py"))]
    closure = import_closure(lambda_package, sdk)
    assert closure.missing == set()
    assert sorted(python_modules(lambda_package)) == sorted(closure.found)
    for absent in ("runtime/local", "runtime/node", "runtime/transports", "runtime/__main__.py"):
        assert not (lambda_package / absent).exists(), absent


@pytest.fixture(scope="module")
def node_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with runtime/requirements.txt and nothing else."""
    venv = tmp_path_factory.mktemp("node-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    install = subprocess.run(
        [*pip, "install", "-q", "-r", str(REQUIREMENTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    return python


def test_the_handler_resolves_from_the_lambda_package_with_boto3_alone(
    node_python: Path, lambda_package: Path
) -> None:
    """Lambda's Python runtime provides boto3; the handler must need nothing else."""
    check = (
        "import sys, runtime.origin.examples.chat as chat\n"
        "assert callable(chat.handler)\n"
        f"loaded = sorted(set({NODE_ONLY_PACKAGES!r}) & {{m.split('.')[0] for m in sys.modules}})\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [str(node_python), "-s", "-c", check],
        cwd=lambda_package,  # Lambda puts the package root (LAMBDA_TASK_ROOT) on sys.path
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_serve_help_runs_from_the_build_context(node_python: Path, docker_context: Path) -> None:
    result = subprocess.run(
        [str(node_python), "-m", "runtime", "serve", "--help"],
        cwd=docker_context,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "--peers-dns" in result.stdout


def test_local_says_it_is_not_in_the_build_context(node_python: Path, docker_context: Path) -> None:
    result = subprocess.run(
        [str(node_python), "-m", "runtime", "local", "--help"],
        cwd=docker_context,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
        timeout=60,
    )
    assert result.returncode == 2
    assert "the local system is not installed here" in result.stderr, result.stderr


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def task_environment(stack: SynthesizedStack) -> dict[str, Any]:
    task = next(iter(stack.resources("AWS::ECS::TaskDefinition").values()))
    container = task["Properties"]["ContainerDefinitions"][0]
    return {item["Name"]: item["Value"] for item in container["Environment"]}


@pytest.fixture
def node_process(
    node_python: Path,
    docker_context: Path,
    stacks: dict[str, SynthesizedStack],
    moto_endpoint: MotoEndpoint,
    environment_name: str,
    tmp_path: Path,
) -> Iterator[tuple[subprocess.Popen[bytes], int, Any]]:
    """The node as ECS starts it: the dev task definition's environment, pointed at moto."""
    sqs, sns = moto_endpoint.client("sqs"), moto_endpoint.client("sns")
    resources = provision(sqs, sns, ResourceNames(environment_name))
    environment = task_environment(stacks["wsgw-dev-us-east-1"])
    ws_port, peer_port = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    environment.update(
        # Values the stack resolves at deploy time, and addresses of this machine.
        EVENTS_QUEUE_URL=resources.events_queue_url,
        COMMANDS_QUEUE_URL=resources.commands_queue_url,
        DOMAIN_NAME="localhost",
        LISTEN=f"127.0.0.1:{ws_port}",
        PEER_LISTEN=f"127.0.0.1:{peer_port}",
        PEERS_DNS=f"localhost:{peer_port}",
        REGION=moto_endpoint.region,
        AWS_REGION=moto_endpoint.region,
        # The target group's watcher is tested against moto's ELBv2 in tests/node; off here.
        TARGET_GROUP_ARN="",
    )
    assert all(isinstance(value, str) for value in environment.values()), environment
    environment.update(PEER_SECRET=secrets.token_urlsafe(32))  # the ECS secret
    log = (tmp_path / "node.log").open("wb")
    process = subprocess.Popen(
        [str(node_python), "-m", "runtime", "serve"],
        cwd=docker_context,
        env={"PATH": os.environ["PATH"], **environment, **moto_endpoint.environment()},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process, ws_port, resources
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
        if process.returncode not in (0, None):
            sys.stderr.write((tmp_path / "node.log").read_text()[-4000:])


def _healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_node_serves_with_the_task_definitions_environment(
    node_process: tuple[subprocess.Popen[bytes], int, Any], moto_endpoint: MotoEndpoint
) -> None:
    process, port, resources = node_process
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, "the node exited at start"
        try:
            if _healthz(port) == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "GET /healthz never answered 200"
        time.sleep(0.2)

    with connect(f"ws://127.0.0.1:{port}/?room=infra", open_timeout=10):
        pass  # CONNECT and DISCONNECT go to the events queue through SQS
    sqs = moto_endpoint.client("sqs")
    kinds: list[str] = []
    deadline = time.monotonic() + 20
    while "DISCONNECT" not in kinds and time.monotonic() < deadline:
        messages = sqs.receive_message(
            QueueUrl=resources.events_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        for message in messages:  # deleted, or FIFO holds back the rest of the group
            body = json.loads(message["Body"])  # packed, as the task's settings say
            kinds += [event["requestContext"]["eventType"] for event in body["events"]]
            sqs.delete_message(
                QueueUrl=resources.events_queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
    assert kinds[:2] == ["CONNECT", "DISCONNECT"]

    process.send_signal(signal.SIGTERM)  # what ECS sends at a deploy, before SIGKILL
    assert process.wait(timeout=20) == 0
