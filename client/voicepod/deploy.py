"""``voicepod deploy``: create or update the RunPod templates and serverless endpoints of the three workers.

Settings come from ``deploy.toml`` (see ``deploy.toml.example``: a ``[deploy]`` table of defaults and one table
per worker) and from flags, which win. Each worker gets one template (its image) and one endpoint (GPU types,
scaling, FlashBoot); both are found by name, so running it again updates them in place and keeps the endpoint
ids. The API key is read from ``RUNPOD_API_KEY`` and never printed.

A worker with ``endpoint_type = "direct"`` (or ``--direct``) gets a load-balancing endpoint instead, through RunPod's
v2 REST API (:func:`deploy_direct`; docs/deploy.md, "Queue or direct"). Queue request bodies follow RunPod's REST
API (https://rest.runpod.io/v1, reference at
https://docs.runpod.io/api-reference): ``POST /templates`` (TemplateCreateInput), ``PATCH /templates/{id}``,
``POST /endpoints`` (EndpointCreateInput: templateId, gpuTypeIds, workersMin, workersMax, idleTimeout,
flashboot, scalerType, scalerValue, executionTimeoutMs, allowedCudaVersions...) and ``PATCH /endpoints/{id}``
(EndpointUpdateInput). GPU type ids are the "GPU ID" column of https://docs.runpod.io/references/gpu-types.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .gpus import find_gpu_ids, load_prices
from .licences import IMAGE_DEFAULT_MODELS, describe
from .registry import NAMES

API_URL = "https://rest.runpod.io/v1"
WORKERS = NAMES
# 24 GB cards, RunPod's cheapest tier that fits Whisper large-v3-turbo, a 1.5B LLM in bf16 or a VITS voice
# ($0.00019 per second flex, serverless pricing page): L4, then A5000 and 3090 when the first is scarce. The ids
# come from the price table, the one naming of GPU types that `voicepod cost` uses too.
DEFAULT_GPU_TYPES = tuple(find_gpu_ids("L4 (24 GB)", load_prices()[0]))
# The images are built on CUDA 12.8: hosts whose driver offers less cannot run them.
DEFAULT_CUDA_VERSIONS = ("12.8", "12.9", "13.0")
SCALER_TYPES = ("REQUEST_COUNT", "QUEUE_DELAY")
ENDPOINT_TYPES = ("queue", "direct")
# REQUEST_COUNT runs one worker per scaler_value jobs (queued and running): a worker takes several jobs at once
# (MAX_CONCURRENCY, its GPU default: stt 4, llm 16, tts 8), so the value is the jobs one worker should carry.
# STT and TTS: their concurrency, a new worker starts when the others are full. LLM: half of its 16, because each
# stream slows as the batch grows, so the next worker starts while the first still streams at conversation speed.
DEFAULT_SCALER_VALUES = {"stt": 4, "llm": 8, "tts": 8}


@dataclass(frozen=True)
class WorkerDeployment:
    """How one worker runs on RunPod.

    ``name`` names both the template and the endpoint. ``model`` is the model the image baked (its ``MODEL_NAME``
    build argument; the Dockerfile's default when not given), whose licence deploy prints. ``workers_min`` workers
    stay running (active, billed all the time, no cold start); up to ``workers_max`` start on demand and stop after
    ``idle_timeout`` idle seconds. ``scaler_type`` ``REQUEST_COUNT`` (the default) runs one worker per
    ``scaler_value`` jobs queued and running, which fits workers that take several jobs at once (default per worker:
    :data:`DEFAULT_SCALER_VALUES`); ``QUEUE_DELAY`` adds a worker when a job has waited ``scaler_value`` seconds.
    ``endpoint_type``: ``queue`` (RunPod's queue, ``/run``) or ``direct`` (a load-balancing endpoint, named
    ``NAME-direct``, that calls the worker's own HTTP server: :func:`direct_endpoint_body`).
    """

    worker: str
    image: str
    name: str
    gpu_types: tuple[str, ...] = DEFAULT_GPU_TYPES
    workers_min: int = 0
    workers_max: int = 3
    idle_timeout: int = 5
    flashboot: bool = True
    container_disk_gb: int = 20
    execution_timeout_ms: int = 600_000
    scaler_type: str = "REQUEST_COUNT"
    scaler_value: int = 4
    allowed_cuda_versions: tuple[str, ...] = DEFAULT_CUDA_VERSIONS
    env: dict[str, str] = field(default_factory=dict)
    endpoint_type: str = "queue"
    model: str = ""


@dataclass(frozen=True)
class ApiRequest:
    """One call to RunPod's REST API; ``path`` is relative to the API URL."""

    method: str
    path: str
    body: dict[str, Any] | None = None


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise TypeError("a non-empty list of strings")
    return tuple(str(item) for item in value)


def _gpu_ids(value: Any) -> tuple[str, ...]:
    """GPU types as RunPod ids, each given as an id or any unambiguous part ("4090", "L4 (24 GB)")."""
    prices = load_prices()[0]
    ids = [gpu_id for query in _strings(value) for gpu_id in find_gpu_ids(query, prices)]
    return tuple(dict.fromkeys(ids))


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError("a whole number, 0 or more")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("true or false")
    return value


def _scaler_type(value: Any) -> str:
    if value not in SCALER_TYPES:
        raise TypeError(f"one of {', '.join(SCALER_TYPES)}")
    return value


def _endpoint_type(value: Any) -> str:
    if value not in ENDPOINT_TYPES:
        raise TypeError(f"one of {', '.join(ENDPOINT_TYPES)}")
    return value


def _positive(value: Any) -> int:
    if _integer(value) < 1:
        raise TypeError("a whole number, 1 or more")
    return value


_SETTINGS = {
    "gpu_types": _gpu_ids,
    "workers_min": _integer,
    "workers_max": _integer,
    "idle_timeout": _integer,
    "flashboot": _boolean,
    "container_disk_gb": _integer,
    "execution_timeout_ms": _integer,
    "scaler_type": _scaler_type,
    "scaler_value": _positive,
    "allowed_cuda_versions": _strings,
    "endpoint_type": _endpoint_type,
}


def load_deployments(config: dict[str, Any], workers: list[str], overrides: dict[str, Any],
                     images: dict[str, str], models: dict[str, str] | None = None) -> list[WorkerDeployment]:
    """Combine a parsed deploy.toml, flag overrides and image flags into one deployment per worker.

    Args:
        config: The parsed TOML: ``[deploy]`` holds defaults (and ``name_prefix``), ``[stt]``/``[llm]``/``[tts]``
            hold ``image``, ``env`` and any setting for that worker alone.
        workers: Which workers to deploy, a subset of ``stt``, ``llm``, ``tts``.
        overrides: Settings from flags, applied to every worker over the file's values.
        images: Image names from flags, by worker, over the file's ``image``.
        models: What each image baked (its ``MODEL_NAME``), from flags, over the file's ``model``; default
            :data:`~voicepod.licences.IMAGE_DEFAULT_MODELS`.
    """
    unknown = set(config) - {"deploy", *WORKERS}
    if unknown:
        raise ValueError(f"deploy.toml: unknown table(s) {sorted(unknown)}; expected [deploy], [stt], [llm], [tts]")
    defaults = dict(config.get("deploy", {}))
    prefix = defaults.pop("name_prefix", "voicepod")
    deployments = []
    for worker in workers:
        section = dict(config.get(worker, {}))
        image = images.get(worker) or section.pop("image", None)
        section.pop("image", None)
        if not image:
            raise ValueError(f"no image for {worker}: set [{worker}] image in deploy.toml or --image {worker}=IMAGE")
        model = (models or {}).get(worker) or section.pop("model", None) or IMAGE_DEFAULT_MODELS.get(worker, "")
        section.pop("model", None)
        env = {str(k): str(v) for k, v in section.pop("env", {}).items()}
        name = section.pop("name", f"{prefix}-{worker}")
        settings = {**defaults, **section, **overrides}
        bad = set(settings) - set(_SETTINGS)
        if bad:
            raise ValueError(f"deploy.toml: unknown setting(s) {sorted(bad)} for {worker}")
        typed = {}
        for key, value in settings.items():
            try:
                typed[key] = _SETTINGS[key](value)
            except TypeError as exc:
                raise ValueError(f"{worker}: {key} must be {exc}, got {value!r}") from None
        if "scaler_value" not in typed and typed.get("scaler_type", "REQUEST_COUNT") == "REQUEST_COUNT":
            typed["scaler_value"] = DEFAULT_SCALER_VALUES.get(worker, WorkerDeployment.scaler_value)
        if typed.get("workers_min", 0) > typed.get("workers_max", WorkerDeployment.workers_max):
            raise ValueError(f"{worker}: workers_min is above workers_max")
        deployments.append(WorkerDeployment(worker=worker, image=image, name=name, env=env, model=model, **typed))
    return deployments


def template_body(d: WorkerDeployment) -> dict[str, Any]:
    """``POST /templates``: a serverless template for the image (no volume: the model is in the image)."""
    return {
        "name": d.name,
        "imageName": d.image,
        "isServerless": True,
        "containerDiskInGb": d.container_disk_gb,
        "volumeInGb": 0,
        "env": dict(d.env),
    }


def template_update_body(d: WorkerDeployment) -> dict[str, Any]:
    """``PATCH /templates/{id}``: a new image or env rolls the endpoint's workers over to it."""
    return {"imageName": d.image, "containerDiskInGb": d.container_disk_gb, "env": dict(d.env)}


def endpoint_body(d: WorkerDeployment, template_id: str) -> dict[str, Any]:
    """``POST /endpoints`` (and ``PATCH /endpoints/{id}``, which takes the same fields)."""
    return {
        "name": d.name,
        "templateId": template_id,
        "computeType": "GPU",
        "gpuTypeIds": list(d.gpu_types),
        "gpuCount": 1,
        "allowedCudaVersions": list(d.allowed_cuda_versions),
        "workersMin": d.workers_min,
        "workersMax": d.workers_max,
        "idleTimeout": d.idle_timeout,
        "flashboot": d.flashboot,
        "scalerType": d.scaler_type,
        "scalerValue": d.scaler_value,
        "executionTimeoutMs": d.execution_timeout_ms,
    }


def _update_body(body: dict[str, Any]) -> dict[str, Any]:
    # computeType is fixed when an endpoint is created; EndpointUpdateInput has no such field.
    return {key: value for key, value in body.items() if key != "computeType"}


def _base_name(name: str) -> str:
    # RunPod's older API marked FlashBoot by appending "-fb" to the endpoint's name; match either form.
    return name.removesuffix("-fb").rstrip()


def _by_name(items: Any) -> dict[str, dict[str, Any]]:
    return {_base_name(item["name"]): item for item in items if item.get("name")}


def deploy(deployments: list[WorkerDeployment], client: httpx.Client) -> dict[str, str]:
    """Create or update each deployment's template and endpoint; return the endpoint ids by worker.

    Args:
        deployments: What to deploy.
        client: An ``httpx.Client`` whose base URL is the REST API and whose headers carry the API key.
    """
    templates = _by_name(_send(client, ApiRequest("GET", "/templates")))
    endpoints = _by_name(_send(client, ApiRequest("GET", "/endpoints")))
    ids = {}
    for d in deployments:
        if (template := templates.get(d.name)) is not None:
            _send(client, ApiRequest("PATCH", f"/templates/{template['id']}", template_update_body(d)))
            template_id = template["id"]
        else:
            template_id = _send(client, ApiRequest("POST", "/templates", template_body(d)))["id"]
        body = endpoint_body(d, template_id)
        if (endpoint := endpoints.get(d.name)) is not None:
            _send(client, ApiRequest("PATCH", f"/endpoints/{endpoint['id']}", _update_body(body)))
            ids[d.worker] = endpoint["id"]
        else:
            ids[d.worker] = _send(client, ApiRequest("POST", "/endpoints", body))["id"]
    return ids


def planned_requests(deployments: list[WorkerDeployment]) -> list[ApiRequest]:
    """The writes a first deployment sends (nothing exists yet), with placeholders for ids not yet known."""
    requests = []
    for d in deployments:
        requests.append(ApiRequest("POST", "/templates", template_body(d)))
        requests.append(ApiRequest("POST", "/endpoints", endpoint_body(d, f"<id of template {d.name}>")))
    return requests


def _send(client: httpx.Client, request: ApiRequest) -> Any:
    response = client.request(request.method, request.path, json=request.body)
    if response.is_error:
        raise RuntimeError(f"{request.method} {request.path}: HTTP {response.status_code}: {response.text[:500]}")
    return response.json()


def format_request(request: ApiRequest, api_url: str, api_key: str | None) -> str:
    """The request as text, with the API key masked."""
    auth = "Bearer ***" if api_key else "Bearer $RUNPOD_API_KEY"
    lines = [f"{request.method} {api_url}{request.path}", f"Authorization: {auth}"]
    if request.body is not None:
        lines += ["Content-Type: application/json", "", json.dumps(request.body, indent=2)]
    return "\n".join(lines)


def make_client(api_key: str, api_url: str = API_URL, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """A client for RunPod's REST API; ``transport`` replaces the network (tests)."""
    # RunPod's v2 control plane refuses clients that do not name themselves (runpod/runpod-mcp's notes).
    return httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {api_key}",
                                                   "User-Agent": "voicepod-deploy"}, timeout=30.0,
                        transport=transport)


# --- load-balancing endpoints (endpoint_type = "direct") ----------------------------------------------------
# RunPod's v1 REST API (API_URL) has no endpoint type: what it creates is a queue endpoint. Its v2 REST API creates
# a load-balancing one from `"type": "LOAD_BALANCER"` on POST /v2/serverless, image-based (no template), its GPUs as
# pools (runpod/runpod-mcp src/_shared/mappers.ts; runpod-plugins-official golden path 14, live-verified). The
# type is fixed at creation, so a direct endpoint has a name of its own beside the queue one.
DIRECT_API_URL = "https://v2-rest.runpod.io/v2"
# The port the worker's server listens on. Set explicitly (PORT and PORT_HEALTH, and exposed), as RunPod's guide
# says a worker must; not RunPod's default of 80, which the images' unprivileged user (10001) cannot bind.
DIRECT_PORT = 8000
# RunPod's GPU pools and the GPU types each holds (docs.runpod.io, flash/configuration/gpu-types, read 2026-12-07).
GPU_POOLS = {
    "AMPERE_16": ("NVIDIA RTX A4000", "NVIDIA RTX 4000 Ada Generation", "NVIDIA RTX 2000 Ada Generation"),
    "AMPERE_24": ("NVIDIA RTX A4500", "NVIDIA RTX A5000", "NVIDIA GeForce RTX 3090"),
    "ADA_24": ("NVIDIA L4", "NVIDIA GeForce RTX 4090"),
    "ADA_32_PRO": ("NVIDIA GeForce RTX 5090",),
    "AMPERE_48": ("NVIDIA A40", "NVIDIA RTX A6000"),
    "ADA_48_PRO": ("NVIDIA L40S", "NVIDIA L40", "NVIDIA RTX 6000 Ada Generation"),
    "AMPERE_80": ("NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB"),
    "ADA_80_PRO": ("NVIDIA H100 80GB HBM3",),
    "BLACKWELL_96": ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "NVIDIA RTX PRO 6000 Blackwell Workstation "
                     "Edition", "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition"),
    "HOPPER_141": ("NVIDIA H200",),
    "BLACKWELL_180": ("NVIDIA B200",),
}


def gpu_pools(gpu_types: tuple[str, ...]) -> list[str]:
    """The pools that hold ``gpu_types``, in their order. A pool may hold more types than asked for (``ADA_24``:
    the L4 and the dearer RTX 4090): the v2 API selects GPUs by pool only."""
    pools = []
    for gpu in gpu_types:
        pool = next((name for name, members in GPU_POOLS.items() if gpu in members), None)
        if pool is None:
            raise ValueError(f"{gpu!r} is in none of RunPod's GPU pools that a load-balancing endpoint takes")
        pools.append(pool)
    return list(dict.fromkeys(pools))


def check_direct(d: WorkerDeployment) -> None:
    """Exit with the reason when ``d`` cannot be a load-balancing endpoint."""
    if d.scaler_type != "REQUEST_COUNT":
        raise SystemExit(f"voicepod deploy: {d.worker}: a load-balancing endpoint has no queue to scale on "
                         f"({d.scaler_type}): use scaler_type = \"REQUEST_COUNT\"")
    try:
        gpu_pools(d.gpu_types)
    except ValueError as exc:
        raise SystemExit(f"voicepod deploy: {d.worker}: {exc}") from None


def direct_name(d: WorkerDeployment) -> str:
    return f"{d.name}-direct"


def direct_endpoint_body(d: WorkerDeployment) -> dict[str, Any]:
    """``POST /v2/serverless``: a load-balancing endpoint running the worker's image in ``VOICEPOD_MODE=direct``,
    its server on :data:`DIRECT_PORT` (exposed, and ``/ping`` there too), scaled on requests in flight."""
    env = {**d.env, "VOICEPOD_MODE": "direct", "PORT": str(DIRECT_PORT), "PORT_HEALTH": str(DIRECT_PORT)}
    return {
        "name": direct_name(d),
        "image": d.image,
        "type": "LOAD_BALANCER",
        "gpu": {"pools": gpu_pools(d.gpu_types), "count": 1},
        "disk": d.container_disk_gb,
        "ports": [f"{DIRECT_PORT}/http"],
        "env": env,
        "workers": {"min": d.workers_min, "max": d.workers_max, "idleTimeout": d.idle_timeout},
        # REQUEST_COUNT is the only scaler a load balancer takes (it has no queue to measure).
        "scaling": {"type": "REQUEST_COUNT", "requestCount": d.scaler_value},
        "timeout": d.execution_timeout_ms,
        "flashboot": "FLASHBOOT" if d.flashboot else "OFF",
    }


def direct_update_body(d: WorkerDeployment) -> dict[str, Any]:
    """``PATCH /v2/serverless/{id}``: the same fields but ``type``, which the API refuses on an update."""
    return {key: value for key, value in direct_endpoint_body(d).items() if key != "type"}


def direct_url(endpoint: dict[str, Any]) -> str:
    """A load-balancing endpoint's URL, as its record gives it (``requestUrls.base``) or RunPod's docs spell it."""
    urls = endpoint.get("requestUrls")
    return urls["base"] if isinstance(urls, dict) and urls.get("base") else f"https://{endpoint['id']}.api.runpod.ai"


def _listed(reply: Any) -> list[dict[str, Any]]:
    if isinstance(reply, dict):  # an envelope ({"endpoints": [...]}) around the list
        reply = next((value for value in reply.values() if isinstance(value, list)), [])
    return reply if isinstance(reply, list) else []


def deploy_direct(deployments: list[WorkerDeployment], client: httpx.Client) -> dict[str, str]:
    """Create or update each deployment's load-balancing endpoint (found by name); return their URLs by worker.

    Args:
        deployments: What to deploy, each with ``endpoint_type`` ``direct``.
        client: An ``httpx.Client`` whose base URL is the v2 REST API (:data:`DIRECT_API_URL`), with the key.
    """
    existing = _by_name(_listed(_send(client, ApiRequest("GET", "/serverless"))))
    urls = {}
    for d in deployments:
        if (endpoint := existing.get(direct_name(d))) is not None:
            _send(client, ApiRequest("PATCH", f"/serverless/{endpoint['id']}", direct_update_body(d)))
        else:
            endpoint = _send(client, ApiRequest("POST", "/serverless", direct_endpoint_body(d)))
        urls[d.worker] = direct_url(endpoint)
    return urls


def _read_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        path = Path("deploy.toml")
        if not path.exists():
            return {}
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads(path.read_text())


def _pairs(values: list[str], flag: str = "--image", what: str = "IMAGE") -> dict[str, str]:
    parsed = {}
    for value in values:
        name, sep, image = value.partition("=")
        if not sep or name not in WORKERS or not image:
            raise SystemExit(f"voicepod deploy: {flag} must look like stt={what} (stt, llm or tts), got {value!r}")
        parsed[name] = image
    return parsed


def licence_lines(deployments: list[WorkerDeployment]) -> list[str]:
    """One line per deployment: the model its image baked and that model's licence."""
    return [f"{d.worker}: {describe(d.model)}" for d in deployments]


def run(args: argparse.Namespace, transport: httpx.BaseTransport | None = None) -> int:
    """Entry point of ``voicepod deploy``; ``transport`` replaces the network in tests."""
    overrides = {key: value for key, value in {
        "gpu_types": args.gpu or None,
        "workers_min": args.workers_min,
        "workers_max": args.workers_max,
        "idle_timeout": args.idle_timeout,
        "flashboot": False if args.no_flashboot else None,
        "endpoint_type": "direct" if args.direct else None,
    }.items() if value is not None}
    try:
        deployments = load_deployments(_read_config(args.config), args.worker or list(WORKERS), overrides,
                                       _pairs(args.image), _pairs(args.model, "--model", "MODEL"))
    except (ValueError, OSError) as exc:
        hint = ""
        if args.config is None and not Path("deploy.toml").exists():
            hint = " (there is no deploy.toml here: cp deploy.toml.example deploy.toml, then set your images in it)"
        raise SystemExit(f"voicepod deploy: {exc}{hint}") from None
    queued = [d for d in deployments if d.endpoint_type == "queue"]
    direct = [d for d in deployments if d.endpoint_type == "direct"]
    for d in direct:
        check_direct(d)
    api_key = os.environ.get("RUNPOD_API_KEY") or None
    # Whoever deploys should know what they may do with what they deploy, before anything is sent.
    print("models (what each image baked, as deploy.toml's `model` or --model says) and their licences:")
    for line in licence_lines(deployments):
        print(f"  {line}")
    print()
    if args.dry_run:
        print("# dry run: nothing is sent. A first deployment sends these requests; a later one finds the\n"
              "# templates and endpoints by name (GET /templates, GET /endpoints, GET /serverless) and PATCHes\n"
              "# them instead.\n")
        for request in planned_requests(queued):
            print(format_request(request, args.api_url, api_key) + "\n")
        for d in direct:
            request = ApiRequest("POST", "/serverless", direct_endpoint_body(d))
            print(format_request(request, args.direct_api_url, api_key) + "\n")
        return 0
    if not api_key:
        raise SystemExit("voicepod deploy: set RUNPOD_API_KEY (RunPod console, Settings, API Keys)")
    try:
        with make_client(api_key, args.api_url, transport) as client:
            ids = deploy(queued, client) if queued else {}
        with make_client(api_key, args.direct_api_url, transport) as client:
            urls = deploy_direct(direct, client) if direct else {}
    except (RuntimeError, ValueError, httpx.HTTPError) as exc:
        print(f"voicepod deploy: {exc}", file=sys.stderr)
        return 1
    for worker, endpoint_id in ids.items():
        print(f"{worker}: endpoint {endpoint_id}    voicepod.Endpoint({endpoint_id!r})")
    for worker, url in urls.items():
        print(f"{worker}: load-balancing endpoint {url}    voicepod.Endpoint({url!r})")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "deploy",
        description="Create or update one RunPod template and serverless endpoint per worker (FlashBoot on), "
        "from deploy.toml and flags, and print the endpoint ids. Needs RUNPOD_API_KEY unless --dry-run.",
    )
    parser.add_argument("--config", type=Path, default=None, help="settings file (default: ./deploy.toml if present)")
    parser.add_argument("--worker", action="append", choices=WORKERS, help="deploy only this worker (repeatable)")
    parser.add_argument("--image", action="append", default=[], metavar="WORKER=IMAGE", help="image of a worker")
    parser.add_argument("--model", action="append", default=[], metavar="WORKER=MODEL",
                        help="the model a worker's image baked (its MODEL_NAME build argument), for the licence "
                        "printed; default: the Dockerfile's")
    parser.add_argument("--gpu", action="append", metavar="GPU",
                        help="GPU type in priority order: a RunPod id ('NVIDIA L4') or any unambiguous part of one "
                        "('4090') (repeatable; replaces the file's list)")
    parser.add_argument("--workers-min", type=int, help="active workers, always running (no cold start)")
    parser.add_argument("--workers-max", type=int, help="most workers running at once")
    parser.add_argument("--idle-timeout", type=int, metavar="SECONDS", help="stop an idle worker after this")
    parser.add_argument("--no-flashboot", action="store_true", help="turn FlashBoot off")
    parser.add_argument("--direct", action="store_true",
                        help="create load-balancing endpoints (NAME-direct: no queue, the client calls the worker's "
                        "own server) instead of queue ones; the file's endpoint_type = \"direct\" does it per worker")
    parser.add_argument("--api-url", default=API_URL, help=argparse.SUPPRESS)
    parser.add_argument("--direct-api-url", default=DIRECT_API_URL, help=argparse.SUPPRESS)
    parser.add_argument("--dry-run", action="store_true", help="print the requests instead of sending them")
    parser.set_defaults(func=run)
