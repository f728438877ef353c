"""Test handler: reports which of the environment variables named in ``input.names`` its worker process has
(names only, never values), so a test can prove a secret was kept out of the workers."""

import os

import runpod


async def handler(job):
    names = job["input"].get("names", [])
    yield {"seq": 0, "type": "done", "kind": "environment", "present": [n for n in names if n in os.environ]}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
