"""Test handler: a stuck worker. It streams ``before`` chunks, then blocks its event loop for ``stall_s``
seconds (time.sleep, not asyncio.sleep), so the SDK's loop cannot even read a stop signal: only the
endpoint's execution timeout can end the job. Input: {"before": N, "stall_s": seconds}.
"""

import time

import runpod


async def handler(job):
    params = job["input"]
    for i in range(int(params.get("before", 1))):
        yield {"seq": i, "type": "count", "value": i}
    time.sleep(float(params.get("stall_s", 5)))
    yield {"seq": int(params.get("before", 1)), "type": "done", "kind": "stall"}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
