"""The end-of-turn model (Smart Turn v3.2 on onnxruntime, voicepod.phone.turn_model) on speech in our own TTS
worker's Piper voice: its features and probabilities are Pipecat's own analyser's, and it tells finished questions
from clauses cut off at a pause, through a phone's 8 kHz mu-law as at 16 kHz.

The model file is what ``make models`` bakes (voicepod.phone.turn_model_bake); pipecat-ai, installed in the dev
environment, is the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from voicepod.phone.log_mel import log_mel
from voicepod.phone.turn_model import TurnModel, TurnModelMissing, line_audio_16k, model_input
from voicepod.phone.vad import Pause, SileroVad, TurnDetector, TurnSettings

from benchmarks.utterances import COMPLETE, UNFINISHED, of_kind, spoken_set

pytestmark = pytest.mark.slow

# Unfinished utterances whose first part the model hears as unfinished by a wide margin (benchmarks/turn_model.py:
# p < 0.2 on both lines); it takes others ("...a table for,") for finished, which the text rule is for.
HEARD_UNFINISHED = ("I want to order a pizza and", "I'm calling because")


@pytest.fixture(scope="module")
def model() -> TurnModel:
    try:
        return TurnModel.load()
    except TurnModelMissing as exc:
        pytest.fail(f"{exc} (make models bakes it)")


@pytest.fixture(scope="module")
def clips():
    return spoken_set()


def first_pause(clip, encoding: str, rate: int) -> bytes:
    """The audio of the first 0.2 s pause the call's turn detector reports on ``clip``, in the line's format."""
    data = clip.mulaw(1.0) if encoding == "mulaw" else clip.pcm16(rate, 1.0)
    detector = TurnDetector(TurnSettings(pause_s=0.2, end_silence_s=30.0), SileroVad(rate), encoding, rate)
    step = rate // 50 * (1 if encoding == "mulaw" else 2)
    for start in range(0, len(data), step):
        for event in detector.feed(data[start:start + step]):
            if isinstance(event, Pause):
                return event.audio
    raise AssertionError(f"no pause found in {clip.utterance.text!r}")


def test_features_are_pipecats_and_transformers_on_real_speech(clips):
    from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features
    from transformers import WhisperFeatureExtractor

    reference = WhisperFeatureExtractor(chunk_length=8)
    for clip in clips[:3] + of_kind(clips, UNFINISHED)[:2]:
        heard = line_audio_16k(clip.mulaw(0.2), "mulaw", 8000)
        samples = np.concatenate([np.zeros(128000 - len(heard), np.float32), heard])  # the 8 s window, padded
        ours = log_mel(samples)
        np.testing.assert_array_equal(model_input(heard)[0], ours)
        np.testing.assert_allclose(ours, compute_whisper_log_mel_features(samples), atol=1e-5)
        theirs = reference(samples, sampling_rate=16000, padding="max_length", max_length=128000, truncation=True,
                           do_normalize=True, return_tensors="np").input_features[0]
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_probabilities_are_pipecats_analyser_on_the_same_audio(model, clips):
    from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
    from voicepod.phone.turn_model import default_model_path

    pipecat = LocalSmartTurnAnalyzerV3(smart_turn_model_path=str(default_model_path()), sample_rate=16000)
    for clip in of_kind(clips, COMPLETE)[:3] + of_kind(clips, UNFINISHED)[:3]:
        audio = line_audio_16k(first_pause(clip, "mulaw", 8000), "mulaw", 8000)
        theirs = pipecat._predict_endpoint(audio)["probability"]
        assert model.probability(audio) == pytest.approx(theirs, abs=1e-5)


@pytest.mark.parametrize("encoding,rate", [("mulaw", 8000), ("pcm16", 16000)])
def test_finished_questions_are_done_at_a_short_pause(model, clips, encoding, rate):
    for clip in of_kind(clips, COMPLETE)[:6]:
        p = model.probability(line_audio_16k(first_pause(clip, encoding, rate), encoding, rate))
        assert p > 0.5, (clip.utterance.text, p)


@pytest.mark.parametrize("encoding,rate", [("mulaw", 8000), ("pcm16", 16000)])
def test_a_clause_cut_at_a_conjunction_is_not_done(model, clips, encoding, rate):
    for clip in of_kind(clips, UNFINISHED):
        if clip.utterance.before in HEARD_UNFINISHED:
            pause = first_pause(clip, encoding, rate)
            assert len(pause) / (rate * (1 if encoding == "mulaw" else 2)) < clip.pause_s[1]  # at the pause
            p = model.probability(line_audio_16k(pause, encoding, rate))
            assert p < 0.5, (clip.utterance.before, p)


def test_the_model_reads_only_the_last_8_seconds(model, clips):
    audio = line_audio_16k(clips[0].mulaw(0.2), "mulaw", 8000)
    noise = np.random.default_rng(0).standard_normal(16000 * 5).astype(np.float32) * 0.3
    assert model.probability(np.concatenate([noise, np.zeros(16000 * 8, np.float32), audio])) == pytest.approx(
        model.probability(np.concatenate([np.zeros(16000 * 8, np.float32), audio])), abs=1e-6)


def test_line_audio_comes_to_16_khz_from_either_line():
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.float32)
    from voicepod.audio import float_to_pcm16, mulaw_encode

    from_phone = line_audio_16k(mulaw_encode(tone), "mulaw", 8000)
    from_page = line_audio_16k(float_to_pcm16(np.repeat(tone, 2)), "pcm16", 16000)
    assert len(from_phone) == len(from_page) == 16000
    with pytest.raises(ValueError, match="mulaw' or 'pcm16"):
        line_audio_16k(b"\x00\x00", "opus", 48000)


def test_a_missing_model_file_says_how_to_bake_it(tmp_path):
    with pytest.raises(TurnModelMissing, match="make models"):
        TurnModel.load(tmp_path / "nothing.onnx")
