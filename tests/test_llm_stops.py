"""The stop-string matcher and the prompt templates of the LLM worker, without a model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workers.llm.prompt import PLAIN_STOPS, chat_prompt, raw_prompt
from workers.llm.stops import StopMatcher


def run(pieces: list[str], stops: list[str]) -> tuple[list[str], bool]:
    matcher = StopMatcher(stops)
    out = [matcher.feed(piece) for piece in pieces]
    out.append(matcher.flush())
    return out, matcher.stopped


def expected(text: str, stops: list[str]) -> str:
    # Read one character at a time: the first character that completes a stop ends the text, cut at the
    # earliest start among the stops completing there.
    for end in range(1, len(text) + 1):
        starts = [end - len(stop) for stop in stops if stop and text[:end].endswith(stop)]
        if starts:
            return text[: min(starts)]
    return text


def split_at(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(cut, len(text)) for cut in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def test_stop_split_at_every_position_never_leaks() -> None:
    text = "The capital of France is Paris.\nUser: and then more"
    for cut in range(len(text) + 1):
        for second in range(cut, len(text) + 1):
            out, stopped = run(split_at(text, [cut, second]), ["\nUser:"])
            assert "".join(out) == "The capital of France is Paris."
            assert stopped
            assert not any("\n" in piece for piece in out)


def test_one_character_at_a_time() -> None:
    out, stopped = run(list("abc STOP def"), ["STOP"])
    assert "".join(out) == "abc "
    assert stopped


def test_partial_stop_is_released_when_it_does_not_complete() -> None:
    matcher = StopMatcher(["\nUser:"])
    assert matcher.feed("Paris.\nUs") == "Paris."
    assert matcher.feed("ually") == "\nUsually"
    assert matcher.feed("\nUse") == ""
    assert matcher.flush() == "\nUse"
    assert not matcher.stopped


def test_earliest_of_several_stops_wins() -> None:
    out, _ = run(["one two ", "three four"], ["four", "two"])
    assert "".join(out) == "one "


def test_overlapping_stop_prefixes() -> None:
    # "aab" only becomes a stop after a false start "aa" + "a": the held tail must shift, not be dropped.
    out, stopped = run(["xa", "a", "a", "b", "c"], ["aab"])
    assert "".join(out) == "xa"
    assert stopped


def test_text_after_the_stop_is_dropped() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.feed("ok END more") == "ok "
    assert matcher.feed("even more") == ""
    assert matcher.flush() == ""


@given(
    text=st.text(alphabet="ab\nU:se r", max_size=40),
    stops=st.lists(st.text(alphabet="ab\nU:se r", min_size=1, max_size=6), min_size=1, max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=12),
)
def test_any_split_gives_the_text_up_to_the_first_stop(text: str, stops: list[str], cuts: list[int]) -> None:
    out, stopped = run(split_at(text, cuts), stops)
    assert "".join(out) == expected(text, stops)
    assert stopped == any(stop in text for stop in stops)


class _TemplateTokenizer:
    chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):  # noqa: ANN001, ANN201
        assert not tokenize and add_generation_prompt
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


class _BaseTokenizer:
    chat_template = None


def test_plain_template_for_base_models() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Capital of France?"},
    ]
    prompt = chat_prompt(_BaseTokenizer(), messages)
    assert prompt.text == "System: Be brief.\nUser: Hi\nAssistant: Hello.\nUser: Capital of France?\nAssistant:"
    assert prompt.stops == PLAIN_STOPS
    assert prompt.add_special_tokens and prompt.strip_leading


def test_chat_template_is_used_when_the_tokenizer_has_one() -> None:
    prompt = chat_prompt(_TemplateTokenizer(), [{"role": "user", "content": "Hi"}])
    assert prompt.text == "<user>Hi<assistant>"
    assert prompt.stops == () and not prompt.add_special_tokens


def test_raw_prompt_is_continued_as_is() -> None:
    prompt = raw_prompt("Once upon a time")
    assert prompt.text == "Once upon a time" and prompt.stops == ()


def test_overlapping_stops_cut_where_the_first_completes_whatever_the_split() -> None:
    # "U" completes at the third character, before ":U:" can: the same cut in one piece or in two.
    assert "".join(run(["::U:"], ["U", ":U:"])[0]) == "::"
    assert "".join(run(["::U", ":"], ["U", ":U:"])[0]) == "::"
    assert "".join(run(["a:U:b"], [":U:", "U"])[0]) == "a:"
    assert "".join(run(["aUb"], ["aU", "U"])[0]) == ""  # both complete at "U": the earlier start wins
