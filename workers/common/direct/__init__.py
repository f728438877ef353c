"""Load-balancing mode: a worker serves its handler from its own HTTP server, as RunPod's load-balancing
endpoints call it (``https://ENDPOINT_ID.api.runpod.ai/<path>``, no queue). ``VOICEPOD_MODE=direct`` picks it;
the same image runs the runpod SDK's queue loop without it (:func:`workers.common.sdk.start_worker`).

- :mod:`.settings`: the mode and where to listen (``PORT``, ``PORT_HEALTH``), as RunPod sets them.
- :mod:`.server`: the server's life: ``/ping`` 204 while the model loads, 200 once the worker serves.
- :mod:`.jobs`: one job through the handler, within ``MAX_CONCURRENCY`` slots.
- :mod:`.stream_route`: ``POST /stream``, a job's chunks as server-sent events.
- :mod:`.websocket_route`: ``/ws``, a session that runs job after job on one connection.
- :mod:`.openai_route`: ``/openai/v1/...`` (and ``/v1/...``), the LLM's OpenAI-compatible routes.
"""
