"""``voicepod deploy --direct``: load-balancing endpoints through RunPod's v2 REST API, with no network (a
``httpx.MockTransport`` stands in for both APIs and records what was sent)."""

from __future__ import annotations

import json

import httpx
import pytest
from voicepod.deploy import DIRECT_PORT, gpu_pools, run

from tests.test_deploy import IMAGES, KEY, FakeRunPod, deploy_args
from tests.test_deploy import api_key as api_key  # noqa: F401 - its autouse fixture: the key set, no deploy.toml

# Fields of the v2 API's CreateEndpointRequest as runpod/runpod-mcp sends them (src/_shared/mappers.ts).
V2_CREATE = {"name", "image", "args", "disk", "ports", "env", "registry", "gpu", "workers", "dataCenterIds",
             "networkVolumes", "timeout", "flashboot", "type", "scaling"}


class FakeV2:
    """RunPod's v2 serverless endpoints in memory; v1 calls go to a :class:`FakeRunPod`."""

    def __init__(self) -> None:
        self.endpoints: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict | None]] = []
        self.v1 = FakeRunPod()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != "v2-rest.runpod.io":
            return self.v1(request)
        assert request.headers["authorization"] == f"Bearer {KEY}" and request.headers["user-agent"]
        body = json.loads(request.content) if request.content else None
        path = request.url.path.removeprefix("/v2")
        self.requests.append((request.method, path, body))
        if request.method == "GET":
            return httpx.Response(200, json={"endpoints": list(self.endpoints.values())})
        if request.method == "POST":
            ident = f"lb{len(self.endpoints) + 1:04d}"
            self.endpoints[ident] = {"id": ident, **body, "requestUrls": {"base": f"https://{ident}.api.runpod.ai"}}
        else:
            ident = path.rsplit("/", 1)[1]
            assert "type" not in body  # fixed at creation: the API refuses it on PATCH
            self.endpoints[ident].update(body)
        return httpx.Response(200, json=self.endpoints[ident])


def test_dry_run_shows_a_load_balancing_endpoint_its_port_and_ping_port(capsys) -> None:
    assert run(deploy_args(*IMAGES, "--worker", "llm", "--direct", "--dry-run"), httpx.MockTransport(FakeV2())) == 0
    out = capsys.readouterr().out
    assert KEY not in out and "POST https://v2-rest.runpod.io/v2/serverless" in out
    assert "rest.runpod.io/v1" not in out  # no queue endpoint, no template
    body = json.loads(out[out.index("{"):])
    assert set(body) <= V2_CREATE
    assert body["type"] == "LOAD_BALANCER" and body["name"] == "voicepod-llm-direct"
    assert body["ports"] == [f"{DIRECT_PORT}/http"]
    assert {k: body["env"][k] for k in ("VOICEPOD_MODE", "PORT", "PORT_HEALTH")} == \
        {"VOICEPOD_MODE": "direct", "PORT": str(DIRECT_PORT), "PORT_HEALTH": str(DIRECT_PORT)}
    assert body["scaling"] == {"type": "REQUEST_COUNT", "requestCount": 8}
    assert body["gpu"] == {"pools": ["ADA_24", "AMPERE_24"], "count": 1}  # L4; A5000 and 3090


def test_deploy_creates_direct_endpoints_then_updates_them_by_name_and_prints_their_urls(capsys) -> None:
    fake = FakeV2()
    assert run(deploy_args(*IMAGES, "--direct"), httpx.MockTransport(fake)) == 0
    assert [(m, p) for m, p, _ in fake.requests] == [("GET", "/serverless")] + [("POST", "/serverless")] * 3
    assert fake.v1.requests == []
    out = capsys.readouterr().out
    assert "llm: load-balancing endpoint https://lb0002.api.runpod.ai" in out and KEY not in out
    fake.requests.clear()
    assert run(deploy_args("--image", "llm=me/llm:2", "--worker", "llm", "--direct"), httpx.MockTransport(fake)) == 0
    assert [(m, p) for m, p, _ in fake.requests] == [("GET", "/serverless"), ("PATCH", "/serverless/lb0002")]
    assert fake.endpoints["lb0002"]["image"] == "me/llm:2" and len(fake.endpoints) == 3


def test_queue_and_direct_endpoints_deploy_side_by_side(tmp_path, capsys) -> None:
    config = tmp_path / "deploy.toml"
    config.write_text('[stt]\nimage = "me/stt:1"\n[llm]\nimage = "me/llm:1"\nendpoint_type = "direct"\n')
    fake = FakeV2()
    assert run(deploy_args("--config", str(config), "--worker", "stt", "--worker", "llm"),
               httpx.MockTransport(fake)) == 0
    assert [p for m, p, _ in fake.v1.requests if m == "POST"] == ["/templates", "/endpoints"]
    assert [p for m, p, _ in fake.requests if m == "POST"] == ["/serverless"]
    out = capsys.readouterr().out
    assert "stt: endpoint en0001" in out and "llm: load-balancing endpoint" in out


@pytest.mark.parametrize(("extra", "message"), [
    (["--gpu", "NVIDIA RTX A4000", "--gpu", "NVIDIA H100 NVL"], "'NVIDIA H100 NVL' is in none of RunPod's GPU pools"),
])
def test_what_a_load_balancing_endpoint_cannot_take_is_refused(extra, message) -> None:
    with pytest.raises(SystemExit, match=message):
        run(deploy_args(*IMAGES, "--direct", "--dry-run", *extra), httpx.MockTransport(FakeV2()))


def test_queue_delay_scaling_is_refused_for_a_load_balancer(tmp_path) -> None:
    config = tmp_path / "deploy.toml"
    config.write_text('[deploy]\nscaler_type = "QUEUE_DELAY"\nscaler_value = 2\n[tts]\nimage = "me/tts:1"\n')
    with pytest.raises(SystemExit, match="no queue to scale on"):
        run(deploy_args("--config", str(config), "--worker", "tts", "--direct", "--dry-run"),
            httpx.MockTransport(FakeV2()))


def test_pools_keep_the_order_of_the_gpu_types() -> None:
    assert gpu_pools(("NVIDIA GeForce RTX 3090", "NVIDIA L4", "NVIDIA RTX A5000")) == ["AMPERE_24", "ADA_24"]
