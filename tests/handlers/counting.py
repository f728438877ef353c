"""Test handler: counts slowly, so a test can see chunks arrive while the job still runs.

Input: {"count": N, "delay": seconds between chunks, "fail_at": k (raise before chunk k),
"error_at": k (yield a structured error chunk at k), "hang": true (sleep forever), "sse": true (yield each count
as server-sent-event text, as an OpenAI-compatible worker does)}. Through RunPod's OpenAI route, the same keys come
inside ``openai_input``.
"""

import asyncio
import json
import os

import runpod


async def handler(job):
    params = job["input"]
    params = params.get("openai_input", params)
    count = int(params.get("count", 5))
    delay = float(params.get("delay", 0.05))
    if params.get("hang"):
        await asyncio.sleep(3600)
    for i in range(count):
        if params.get("fail_at") == i:
            raise RuntimeError(f"boom at {i}")
        if params.get("error_at") == i:
            yield {"seq": i, "type": "error", "error": {"code": "test_error", "message": f"error at {i}"}}
            return
        if params.get("exit_at") == i:
            os._exit(3)  # the worker process dies mid-stream
        chunk = {"seq": i, "type": "count", "value": i, "pid": os.getpid()}
        yield f"id: {i}\ndata: {json.dumps(chunk)}\n\n" if params.get("sse") else chunk
        await asyncio.sleep(delay)


if __name__ == "__main__":
    # COUNTING_CONCURRENCY > 1 makes the SDK take jobs in batches (its job-take-batch route).
    concurrency = int(os.environ.get("COUNTING_CONCURRENCY", "1"))
    runpod.serverless.start(
        {"handler": handler, "return_aggregate_stream": True, "concurrency_modifier": lambda _: concurrency}
    )
