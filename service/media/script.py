"""The simulated words: a caption script timed to the speech, its "translation", SRT and WebVTT.

Nothing here listens or understands: the script's text is drawn from a fixed set of lines by a
generator seeded with the job (so a job always gets the same words), and each line is placed
over the part of the input where there is sound. The translation is a small built-in phrase
book per language, or, for a language it doesn't know, a visible pseudo-translation.
"""

from __future__ import annotations

import random
from typing import Final

import msgspec

SOURCE: Final = (
    "Welcome back to the channel.",
    "Today we are going to try something new.",
    "Let me show you how it works.",
    "This part is really important.",
    "Thank you for watching.",
    "See you in the next video.",
    "Here is the first step.",
    "It only takes a few minutes.",
)

PHRASES: Final[dict[str, tuple[str, ...]]] = {
    "es": (
        "Bienvenidos de nuevo al canal.",
        "Hoy vamos a probar algo nuevo.",
        "Déjame mostrarte cómo funciona.",
        "Esta parte es muy importante.",
        "Gracias por ver.",
        "Nos vemos en el próximo video.",
        "Este es el primer paso.",
        "Solo toma unos minutos.",
    ),
    "fr": (
        "Bon retour sur la chaîne.",
        "Aujourd'hui, nous allons essayer quelque chose de nouveau.",
        "Laissez-moi vous montrer comment ça marche.",
        "Cette partie est vraiment importante.",
        "Merci de nous avoir regardés.",
        "À la prochaine vidéo.",
        "Voici la première étape.",
        "Cela ne prend que quelques minutes.",
    ),
    "de": (
        "Willkommen zurück auf dem Kanal.",
        "Heute probieren wir etwas Neues aus.",
        "Ich zeige dir, wie es funktioniert.",
        "Dieser Teil ist wirklich wichtig.",
        "Danke fürs Zuschauen.",
        "Bis zum nächsten Video.",
        "Hier ist der erste Schritt.",
        "Es dauert nur ein paar Minuten.",
    ),
    "it": (
        "Bentornati sul canale.",
        "Oggi proviamo qualcosa di nuovo.",
        "Lascia che ti mostri come funziona.",
        "Questa parte è davvero importante.",
        "Grazie per la visione.",
        "Ci vediamo nel prossimo video.",
        "Ecco il primo passo.",
        "Ci vogliono solo pochi minuti.",
    ),
    "pt": (
        "Bem-vindos de volta ao canal.",
        "Hoje vamos tentar algo novo.",
        "Deixe-me mostrar como funciona.",
        "Esta parte é muito importante.",
        "Obrigado por assistir.",
        "Até o próximo vídeo.",
        "Aqui está o primeiro passo.",
        "Leva só alguns minutos.",
    ),
}

CUE_S: Final = 2.5  # a caption line lasts about this long
MIN_CUE_S: Final = 0.5
_ACCENTS: Final = str.maketrans("aeiouAEIOU", "àéîõüÀÉÎÕÜ")


class Cue(msgspec.Struct, frozen=True):
    start_s: float
    end_s: float
    text: str


def transcribe(seed: str, speech: list[tuple[float, float]]) -> list[Cue]:
    """A script over the spans with sound: lines of about CUE_S, text chosen by `seed`."""
    rng = random.Random(seed)
    cues: list[Cue] = []
    for start, end in speech:
        length = end - start
        if length < MIN_CUE_S:
            continue
        count = max(1, round(length / CUE_S))
        step = length / count
        for i in range(count):
            text = SOURCE[rng.randrange(len(SOURCE))]
            cues.append(Cue(round(start + i * step, 3), round(start + (i + 1) * step, 3), text))
    return cues


def translate(cues: list[Cue], language: str) -> list[Cue]:
    """The script in `language`: the phrase book's line, or a marked pseudo-translation."""
    base = language.split("-")[0].lower()
    book = PHRASES.get(base)
    out = []
    for cue in cues:
        if base == "en":
            text = cue.text
        elif book is not None:
            text = book[SOURCE.index(cue.text)]
        else:
            text = f"[{language}] {cue.text.translate(_ACCENTS)}"
        out.append(Cue(cue.start_s, cue.end_s, text))
    return out


def _stamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def srt(cues: list[Cue]) -> str:
    blocks = [
        f"{i}\n{_stamp(c.start_s, ',')} --> {_stamp(c.end_s, ',')}\n{c.text}\n"
        for i, c in enumerate(cues, 1)
    ]
    return "\n".join(blocks)


def vtt(cues: list[Cue]) -> str:
    blocks = [f"{_stamp(c.start_s, '.')} --> {_stamp(c.end_s, '.')}\n{c.text}\n" for c in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)
