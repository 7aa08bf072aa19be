"""espeak-ng through ctypes, from the `espeakng-loader` wheel (no system package, no root).

espeak-ng keeps global state and is not thread-safe: one `Espeak` per process. Synthesis is synchronous; a C
callback collects the int16 chunks it hands back. The native rate is 22050 Hz.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
# espeak_PARAMETER
RATE, VOLUME, PITCH, RANGE, PUNCTUATION, CAPITALS, WORDGAP = 1, 2, 3, 4, 5, 6, 7

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

# Voice variants from espeak-ng-data/voices/!v that still sound like speech (whisper, croak, robots and the
# like are left out: they teach a recogniser little about people).
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "adam", "Alex", "Andy", "anika", "aunty", "boris", "david", "ed", "edward", "iven", "iven2", "iven3",
    "john", "klatt", "klatt3", "linda", "max", "michel", "norbert", "paul", "pedro", "quincy", "rob", "robert",
    "steph", "travis", "victor", "zac", "grandma", "grandpa", "Annie", "belinda", "Lee", "Mike", "Reed",
)
# Russian language voices; ru-LV is Russian with a Latvian accent, a different set of phoneme rules.
LANGUAGES = ("ru", "ru", "ru", "ru-lv")


@dataclass(frozen=True)
class VoiceSettings:
    language: str = "ru"
    variant: str = "m3"
    rate: int = 170  # words per minute, espeak's default is 175
    pitch: int = 50  # 0..100
    pitch_range: int = 50  # 0..100, intonation width
    word_gap: int = 0  # extra pause between words, in units of 10 ms

    @property
    def name(self) -> str:
        return f"{self.language}+{self.variant}"


class Espeak:
    """One initialised espeak-ng engine; `synth(text, voice)` → int16 samples at `sample_rate`."""

    def __init__(self):
        import espeakng_loader

        self._lib = lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        # The path is the folder that holds espeak-ng-data (every espeak-ng version accepts that form).
        root = os.path.dirname(os.path.abspath(espeakng_loader.get_data_path()))
        self.sample_rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, root.encode(), 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.sample_rate}) with data under {root}")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # keep a reference: espeak calls it later
        lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    def _collect(self, wav, n, _events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = go on

    def set_voice(self, voice: VoiceSettings) -> None:
        if voice.name != self._voice:
            if self._lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {voice.name!r}")
            self._voice = voice.name
        for param, value in ((RATE, voice.rate), (PITCH, voice.pitch), (RANGE, voice.pitch_range),
                             (WORDGAP, voice.word_gap)):
            self._lib.espeak_SetParameter(param, int(value), 0)

    def synth(self, text: str, voice: VoiceSettings) -> np.ndarray:
        """int16 samples of `text` spoken by `voice`, at `self.sample_rate`."""
        self.set_voice(voice)
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        err = self._lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth returned {err} for {text!r}")
        chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


def available_variants() -> list[str]:
    """The variants of VARIANTS present in this wheel's data folder."""
    import espeakng_loader

    folder = os.path.join(espeakng_loader.get_data_path(), "voices", "!v")
    present = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    return [v for v in VARIANTS if v in present]
