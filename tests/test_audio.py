"""Audio DSP: Realtime formats, G.711 against the ITU-T reference values, resampling."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from voxgate.audio import (
    PCM16,
    PCMA,
    PCMU,
    AudioFormat,
    InputConverter,
    OutputConverter,
    Resampler,
    alaw_to_pcm16,
    decode_to_pcm16,
    encode_from_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    resample,
    ulaw_to_pcm16,
)

ALL_CODES = bytes(range(256))


def samples(pcm: bytes) -> npt.NDArray[np.int64]:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int64)


def pcm(values: list[int] | npt.NDArray[np.integer]) -> bytes:
    return np.asarray(values, dtype="<i2").tobytes()


def sine(freq: float, seconds: float, rate: int, amplitude: float = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return pcm(np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16))


def dominant_frequency(data: bytes, rate: int) -> float:
    x = samples(data).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` cut into pieces of the given sizes (cycled), odd sizes included."""
    out: list[bytes] = []
    i = k = 0
    while i < len(data):
        out.append(data[i : i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
        k += 1
    return out


# --- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "rate", "width"),
    [("audio/pcm", 24000, 2), ("audio/pcmu", 8000, 1), ("audio/pcma", 8000, 1)],
)
def test_format_from_type(type_: str, rate: int, width: int) -> None:
    fmt = AudioFormat.from_type(type_)
    assert (fmt.type, fmt.rate, fmt.bytes_per_sample) == (type_, rate, width)


def test_unknown_format_names_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"'audio/opus'.*'audio/pcm', 'audio/pcmu', 'audio/pcma'"):
        AudioFormat.from_type("audio/opus")


def test_ms_bytes_arithmetic() -> None:
    assert PCM16.bytes_to_ms(48000) == 1000.0
    assert PCMU.bytes_to_ms(160) == 20.0
    assert PCM16.ms_to_bytes(20) == 960
    assert PCMA.ms_to_bytes(20) == 160
    # A pcm16 sample lasts 1/24 ms: partial samples round down, never to an odd byte count.
    assert PCM16.ms_to_bytes(0.03) == 0
    assert PCM16.ms_to_bytes(0.05) == 2
    assert PCM16.ms_to_bytes(-5) == 0


@pytest.mark.parametrize("fmt", [PCM16, PCMU, PCMA])
def test_ms_to_bytes_inverts_bytes_to_ms(fmt: AudioFormat) -> None:
    for n in range(0, 20000, fmt.bytes_per_sample * 7):
        assert fmt.ms_to_bytes(fmt.bytes_to_ms(n)) == n


# --- G.711 ---------------------------------------------------------------------------------

# (code, linear value) pairs from the ITU-T G.191 reference implementation of G.711.
ULAW_KNOWN = [(0xFF, 0), (0x7F, 0), (0xFE, 8), (0x7E, -8), (0x80, 32124), (0x00, -32124)]
ALAW_KNOWN = [(0xD5, 8), (0x55, -8), (0xD4, 24), (0xAA, 32256), (0x2A, -32256)]


@pytest.mark.parametrize(("code", "value"), ULAW_KNOWN)
def test_ulaw_decodes_reference_values(code: int, value: int) -> None:
    assert samples(ulaw_to_pcm16(bytes([code]))).tolist() == [value]


@pytest.mark.parametrize(("code", "value"), ALAW_KNOWN)
def test_alaw_decodes_reference_values(code: int, value: int) -> None:
    assert samples(alaw_to_pcm16(bytes([code]))).tolist() == [value]


def test_encoders_hit_reference_codes() -> None:
    assert pcm16_to_ulaw(pcm([0, -1, 32767, -32768, 8])) == bytes([0xFF, 0x7F, 0x80, 0x00, 0xFE])
    # Negative samples are one's-complemented first, so -4 still counts as zero and 4 does not.
    assert pcm16_to_ulaw(pcm([4, -4, -5])) == bytes([0xFE, 0x7F, 0x7E])
    assert pcm16_to_alaw(pcm([0, 8, -1, 32767, -32768])) == bytes([0xD5, 0xD5, 0x55, 0xAA, 0x2A])


def test_alaw_round_trips_every_code() -> None:
    assert pcm16_to_alaw(alaw_to_pcm16(ALL_CODES)) == ALL_CODES


def test_ulaw_round_trips_every_code_but_negative_zero() -> None:
    # 0x7F is µ-law's "negative zero": it decodes to 0, which encodes as the positive zero.
    expected = bytes(0xFF if c == 0x7F else c for c in ALL_CODES)
    assert pcm16_to_ulaw(ulaw_to_pcm16(ALL_CODES)) == expected


@pytest.mark.parametrize(
    ("encode", "decode"), [(pcm16_to_ulaw, ulaw_to_pcm16), (pcm16_to_alaw, alaw_to_pcm16)]
)
def test_g711_error_is_within_half_a_segment_step(
    encode: Callable[[bytes], bytes], decode: Callable[[bytes], bytes]
) -> None:
    every_sample = np.arange(-32768, 32768)
    restored = samples(decode(encode(pcm(every_sample))))
    error = np.abs(restored - every_sample)
    # Logarithmic companding: the error grows with the level, staying under 1/16 of it.
    assert np.all(error <= np.abs(every_sample) / 16 + 16)
    assert np.all(np.diff(restored) >= 0)  # and it never reorders levels


def test_format_level_codec_functions() -> None:
    data = bytes([0x00, 0x55, 0xD5, 0xFF])
    for fmt in (PCMU, PCMA):
        assert encode_from_pcm16(fmt, decode_to_pcm16(fmt, data)) == data
    assert decode_to_pcm16(PCM16, b"\x01\x02") == b"\x01\x02"
    assert len(decode_to_pcm16(PCMU, data)) == 8


# --- resampling ----------------------------------------------------------------------------


def test_resample_keeps_pitch_and_duration() -> None:
    out = resample(sine(1000, 1.0, 24000), 24000, 8000)
    assert len(out) == 2 * 8000
    assert dominant_frequency(out, 8000) == pytest.approx(1000, abs=2)


def test_equal_rates_are_identity() -> None:
    data = sine(440, 0.1, 16000)
    assert resample(data, 16000, 16000) == data
    r = Resampler(16000, 16000)
    assert b"".join(r.process(c) for c in chunked(data, [3, 7, 100])) + r.flush() == data


def test_bad_rate_is_rejected() -> None:
    with pytest.raises(ValueError, match="positive"):
        Resampler(0, 8000)


@pytest.mark.parametrize(("src", "dst"), [(22050, 24000), (24000, 8000), (8000, 16000)])
def test_streaming_matches_one_shot(src: int, dst: int) -> None:
    data = sine(440, 1.0, src) + sine(880, 1.0, src)
    r = Resampler(src, dst)
    streamed = b"".join(r.process(c) for c in chunked(data, [1, 441, 2000, 37, 960]))
    streamed += r.flush()
    whole = resample(data, src, dst)
    assert len(streamed) == len(whole)
    # Different internal block sizes only change rounding: no seam, click or lost sample.
    assert np.max(np.abs(samples(streamed) - samples(whole))) <= 4


def test_resampler_is_reusable_after_flush() -> None:
    data = sine(300, 0.5, 22050)
    r = Resampler(22050, 24000)
    first = r.process(data) + r.flush()
    second = r.process(data) + r.flush()
    assert first == second
    assert len(first) == 2 * 12000


# --- converters ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [PCM16, PCMU, PCMA])
def test_output_converter_streams_engine_audio_to_wire_format(fmt: AudioFormat) -> None:
    engine_audio = sine(500, 1.0, 22050)
    conv = OutputConverter(22050, fmt)
    wire = b"".join(conv.process(c) for c in chunked(engine_audio, [881, 1, 2205]))
    wire += conv.flush()
    assert fmt.bytes_to_ms(len(wire)) == pytest.approx(1000, abs=0.5)
    decoded = decode_to_pcm16(fmt, wire)
    assert dominant_frequency(decoded, fmt.rate) == pytest.approx(500, abs=2)


@pytest.mark.parametrize("fmt", [PCM16, PCMU, PCMA])
def test_input_converter_brings_wire_audio_to_engine_rate(fmt: AudioFormat) -> None:
    wire = encode_from_pcm16(fmt, sine(700, 1.0, fmt.rate))
    conv = InputConverter(fmt, 16000)
    engine_audio = b"".join(conv.process(c) for c in chunked(wire, [161, 3, 1000]))
    engine_audio += conv.flush()
    assert len(engine_audio) == 2 * 16000
    assert dominant_frequency(engine_audio, 16000) == pytest.approx(700, abs=2)


def test_input_converter_keeps_half_samples_between_chunks() -> None:
    conv = InputConverter(PCM16, 24000)
    assert conv.process(b"\x01") == b""
    assert conv.process(b"\x02\x03") == b"\x01\x02"
    assert conv.process(b"\x04") == b"\x03\x04"
