"""The simulated words: speech spans from silencedetect, the script, its formats."""

from __future__ import annotations

from service.media import script
from service.media.pipeline import speech_spans
from service.media.tools import FfmpegProgress

LOG = """\
[silencedetect @ 0x1] silence_start: 0
[silencedetect @ 0x1] silence_end: 1.25 | silence_duration: 1.25
size=N/A time=00:00:05.00 bitrate=N/A speed= 100x
[silencedetect @ 0x1] silence_start: 4.5
[silencedetect @ 0x1] silence_end: 6 | silence_duration: 1.5
"""


def test_speech_is_where_silence_is_not() -> None:
    assert speech_spans(LOG, 10.0) == [(1.25, 4.5), (6.0, 10.0)]
    assert speech_spans("", 3.0) == [(0.0, 3.0)]  # no silence at all
    # silence running to the end is never closed
    assert speech_spans("silence_start: 2.0\n", 3.0) == [(0.0, 2.0)]


def test_the_script_is_timed_to_the_speech_and_seeded() -> None:
    cues = script.transcribe("7/1", [(1.25, 4.5), (6.0, 10.0)])
    assert [(c.start_s, c.end_s) for c in cues] == [(1.25, 4.5), (6.0, 8.0), (8.0, 10.0)]
    assert script.transcribe("7/1", [(1.25, 4.5), (6.0, 10.0)]) == cues
    texts = {tuple(c.text for c in script.transcribe(f"7/{n}", [(0, 20)])) for n in range(5)}
    assert len(texts) > 1  # another job, other words
    assert script.transcribe("x", [(0.0, 0.2)]) == []  # too short to say anything


def test_translation_uses_the_phrase_book_or_marks_a_pseudo_translation() -> None:
    cues = [script.Cue(0.0, 2.5, "Thank you for watching.")]
    assert script.translate(cues, "es")[0].text == "Gracias por ver."
    assert script.translate(cues, "pt-BR")[0].text == "Obrigado por assistir."
    assert script.translate(cues, "en")[0].text == "Thank you for watching."
    assert script.translate(cues, "sw")[0].text == "[sw] Thànk yõü fõr wàtchîng."


def test_srt_and_vtt_formats() -> None:
    cues = [script.Cue(0.0, 2.5, "Hola."), script.Cue(2.5, 3725.042, "Adiós.")]
    assert script.srt(cues) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHola.\n\n2\n00:00:02,500 --> 01:02:05,042\nAdiós.\n"
    )
    assert script.vtt(cues) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHola.\n\n00:00:02.500 --> 01:02:05.042\nAdiós.\n"
    )


def test_ffmpeg_progress_lines_become_fractions() -> None:
    seen: list[float] = []
    progress = FfmpegProgress(4.0, seen.append)
    for line in [
        "frame=3",
        "out_time_us=1000000",
        "out_time_us=N/A",
        "out_time_ms=3000000",
        "progress=continue",
        "out_time_us=-5",
        "progress=end",
    ]:
        progress(line)
    assert seen == [0.25, 0.75, 0.0, 1.0]
