"""Stop-string handling in streamed text: text that may begin a stop string is held back
until it cannot, and text is cut where a stop string starts."""

from __future__ import annotations

from node_agent.backends.stop_strings import StopStringFilter


def feed(stops: list[str], steps: list[str]) -> tuple[list[str], StopStringFilter]:
    f = StopStringFilter(stops)
    text = ""
    shown: list[str] = []
    for step in steps:
        text += step
        shown.append(f.push(text))
        if f.stopped:
            break
    return shown, f


def test_no_stop_strings_passes_everything_through() -> None:
    shown, f = feed([], ["Hel", "lo"])
    assert shown == ["Hel", "lo"] and f.text == "Hello" and f.flush() == ""


def test_possible_prefix_is_held_then_released() -> None:
    # "<|im" could start "<|im_end|>", so it waits; "<|imx" cannot, so all of it goes out.
    shown, f = feed(["<|im_end|>"], ["Hi ", "<|im", "x"])
    assert shown == ["Hi ", "", "<|imx"]
    assert not f.stopped and f.text == "Hi <|imx"


def test_cut_at_the_stop_string() -> None:
    shown, f = feed(["<|im_end|>"], ["Done", ".<|im_", "end|> trailing"])
    assert shown == ["Done", ".", ""]
    assert f.stopped and f.text == "Done." and f.flush() == ""


def test_flush_releases_held_text_when_generation_ends_otherwise() -> None:
    shown, f = feed(["STOP"], ["abc", "ST"])
    assert shown == ["abc", ""]
    assert f.flush() == "ST" and f.text == "abcST"


def test_earliest_of_several_stop_strings_wins() -> None:
    shown, f = feed(["END", "##"], ["a##b END"])
    assert shown == ["a"] and f.stopped
