"""``voicepod deploy``: create or update the RunPod templates and serverless endpoints of the three workers.

Settings come from ``deploy.toml`` (see ``deploy.toml.example``: a ``[deploy]`` table of defaults and one table
per worker) and from flags, which win. Each worker gets one template (its image) and one endpoint (GPU types,
scaling, FlashBoot); both are found by name, so running it again updates them in place and keeps the endpoint
ids. The API key is read from ``RUNPOD_API_KEY`` and never printed.

Request bodies follow RunPod's REST API (https://rest.runpod.io/v1, reference at
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
    return httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30.0,
                        transport=transport)


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
    }.items() if value is not None}
    try:
        deployments = load_deployments(_read_config(args.config), args.worker or list(WORKERS), overrides,
                                       _pairs(args.image), _pairs(args.model, "--model", "MODEL"))
    except (ValueError, OSError) as exc:
        raise SystemExit(f"voicepod deploy: {exc}") from None
    api_key = os.environ.get("RUNPOD_API_KEY") or None
    # Whoever deploys should know what they may do with what they deploy, before anything is sent.
    print("models (what each image baked, as deploy.toml's `model` or --model says) and their licences:")
    for line in licence_lines(deployments):
        print(f"  {line}")
    print()
    if args.dry_run:
        print("# dry run: nothing is sent. A first deployment sends these requests; a later one finds the\n"
              "# templates and endpoints by name (GET /templates, GET /endpoints) and PATCHes them instead.\n")
        for request in planned_requests(deployments):
            print(format_request(request, args.api_url, api_key) + "\n")
        return 0
    if not api_key:
        raise SystemExit("voicepod deploy: set RUNPOD_API_KEY (RunPod console, Settings, API Keys)")
    with make_client(api_key, args.api_url, transport) as client:
        try:
            ids = deploy(deployments, client)
        except (RuntimeError, httpx.HTTPError) as exc:
            print(f"voicepod deploy: {exc}", file=sys.stderr)
            return 1
    for worker, endpoint_id in ids.items():
        print(f"{worker}: endpoint {endpoint_id}    voicepod.Endpoint({endpoint_id!r})")
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
    parser.add_argument("--api-url", default=API_URL, help=argparse.SUPPRESS)
    parser.add_argument("--dry-run", action="store_true", help="print the requests instead of sending them")
    parser.set_defaults(func=run)
