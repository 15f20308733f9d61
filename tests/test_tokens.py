"""Token counting: exact with a tiktoken encoding, approximate without one."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pytest
import tiktoken

from voxgate.engines import tokens
from voxgate.engines.tokens import TokenCounter, approximate_tokens

O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


def _byte_level_encoding() -> tiktoken.Encoding:
    """A real tiktoken encoding that needs no download: one token per byte, no merges."""
    return tiktoken.Encoding(
        "bytes",
        pat_str=r"\S+|\s+",
        mergeable_ranks={bytes([b]): b for b in range(256)},
        special_tokens={},
    )


def _unavailable() -> tiktoken.Encoding:
    raise OSError("offline: cannot download o200k_base.tiktoken")


def _o200k_is_cached() -> bool:
    # Mirrors tiktoken.load.read_file_cached: the cache file is named by the URL's sha1.
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return (Path(cache_dir) / hashlib.sha1(O200K_URL.encode()).hexdigest()).exists()


def test_counts_with_the_encoding_when_it_loads() -> None:
    counter = TokenCounter(_byte_level_encoding)
    assert counter.method == "tiktoken"
    assert counter.count("héllo") == 6  # 6 UTF-8 bytes, one token each
    assert counter.count("") == 0


def test_falls_back_to_approximation_when_the_encoding_cannot_load() -> None:
    counter = TokenCounter(_unavailable)
    assert counter.method == "approximate"
    assert counter.count("abcdefgh") == 2  # 8 characters / 4
    assert counter.count("a b c") == 3  # at least one per word
    assert counter.count("") == 0


def test_loads_only_once() -> None:
    calls: list[int] = []

    def load() -> tiktoken.Encoding:
        calls.append(1)
        return _byte_level_encoding()

    counter = TokenCounter(load)
    for text in ("one", "two", "three"):
        counter.count(text)
    assert counter.load() == "tiktoken"
    assert len(calls) == 1


def test_a_failed_load_is_not_retried_on_every_count() -> None:
    calls: list[int] = []

    def load() -> tiktoken.Encoding:
        calls.append(1)
        return _unavailable()

    counter = TokenCounter(load)
    counter.count("one")
    counter.count("two")
    assert len(calls) == 1


def test_approximation_is_close_for_english_prose() -> None:
    # BPE encodings give about one token per common English word plus one for the period.
    sentence = "The quick brown fox jumps over the lazy dog today."
    assert 8 <= approximate_tokens(sentence) <= 14


def test_module_level_counter_reports_its_method() -> None:
    method = tokens.counting_method()
    assert method in ("tiktoken", "approximate")
    expected = 2 if method == "tiktoken" else approximate_tokens("hello world")
    assert tokens.count_tokens("hello world") == expected


@pytest.mark.skipif(not _o200k_is_cached(), reason="o200k_base is not cached and needs network")
def test_real_o200k_counts() -> None:
    counter = TokenCounter()
    assert counter.method == "tiktoken"
    assert counter.count("hello world") == 2


def test_never_downloads_and_says_how_it_counts_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An empty cache: tiktoken would fetch the file from the network; voxgate must not try.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to download the encoding")

    monkeypatch.setattr("tiktoken.load.read_file", no_network)
    counter = TokenCounter()
    assert counter.method == "approximate"
    assert counter.count("abcdefgh") == 2
    assert caplog.records == []  # no warning, no network error
    line = tokens.describe("approximate")
    assert "\n" not in line and "approximate" in line and str(tmp_path) in line
    assert "tiktoken o200k_base" in tokens.describe("tiktoken")
