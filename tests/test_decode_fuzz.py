"""Fuzz the decoder: seeded byte mutations of small PNG, JPEG, GIF, BMP, WebP and TIFF files.

Whatever the damage, `decode_image` returns an (H, W, 3) uint8 image within the pixel limit
or raises featcache's `ImageError` naming the file; nothing else may come out, because one
bad file must never stop an extraction, a prediction or a request. The inputs are a fixed
seeded sequence (the same every run, so a failure reproduces from its index), and the pixel
limit is small, which bounds the work per input (about 0.3 ms each on this machine).
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest

from featcache.data.decode import decode_image
from featcache.errors import ImageError
from imagebytes import header_fields, overwrite, samples

INPUTS = 20_000
MAX_PIXELS = 1 << 16
SEED = 20_261_130
INTERESTING = (0, 1, 2, 3, 4, 7, 8, 15, 16, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF)
INTERESTING += (0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF)


def _mutate(kind: str, data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One mutation of `data` and a description of it (to reproduce a failure by hand)."""
    how = rng.randrange(4)
    if how == 0:
        out = bytearray(data)
        flips = [(rng.randrange(len(out)), rng.randrange(8)) for _ in range(rng.randint(1, 8))]
        for at, bit in flips:
            out[at] ^= 1 << bit
        return bytes(out), f"bit flips {flips}"
    if how == 1:
        end = rng.randrange(len(data))
        return data[:end], f"truncated to {end} bytes"
    if how == 2:
        at = rng.randrange(len(data) + 1)
        extra = rng.randbytes(rng.choice((1, 2, 4, 16, 64)))
        return data[:at] + extra + data[at:], f"inserted {extra.hex()} at {at}"
    field = rng.choice(header_fields(kind, data))
    value = rng.choice((*INTERESTING, rng.getrandbits(32), rng.randrange(1, 300)))
    return overwrite(kind, data, field, value), f"field {field} set to {value:#x}"


def _inputs() -> Iterator[tuple[str, bytes, str]]:
    rng = random.Random(SEED)
    corpus = sorted(samples().items())
    for i in range(INPUTS):
        name, data = corpus[i % len(corpus)]
        mutated, how = _mutate(name.split("/")[0], data, rng)
        yield f"{i}:{name}", mutated, how


# Pillow warns (and goes on) about damage it can read past, such as corrupt EXIF; let it
# go on as it does outside the tests, so the fuzz reaches the code after the warning.
@pytest.mark.filterwarnings("ignore::UserWarning:PIL")
def test_only_image_errors_come_out_of_mutated_files() -> None:
    outcomes: Counter[str] = Counter()
    escaped: list[str] = []
    for source, data, how in _inputs():
        try:
            rgb = decode_image(data, source, max_pixels=MAX_PIXELS)
        except ImageError as exc:
            outcomes["refused"] += 1
            if not str(exc).startswith(f"{source}: "):
                escaped.append(f"{source} ({how}): message does not name the file: {exc}")
        except Exception as exc:  # what the test is for: nothing else may escape
            escaped.append(f"{source} ({how}): {type(exc).__name__}: {exc}")
        else:
            outcomes["decoded"] += 1
            h, w = rgb.shape[:2]
            if rgb.dtype != np.uint8 or rgb.shape != (h, w, 3) or not 0 < h * w <= MAX_PIXELS:
                escaped.append(f"{source} ({how}): decoded to {rgb.dtype} {rgb.shape}")
    assert not escaped, f"{len(escaped)} bad outcome(s), first ones:\n" + "\n".join(escaped[:10])
    assert sum(outcomes.values()) == INPUTS >= 20_000
    # Both outcomes are common: the mutations neither all break the files nor all miss.
    assert min(outcomes["refused"], outcomes["decoded"]) > INPUTS // 10, outcomes


def test_mutations_are_seeded_and_cover_every_format() -> None:
    first = [(source, data) for source, data, _ in itertools.islice(_inputs(), 300)]
    again = [(source, data) for source, data, _ in itertools.islice(_inputs(), 300)]
    assert first == again
    kinds = {source.split(":")[1].split("/")[0] for source, _ in first}
    assert kinds == {"png", "jpeg", "gif", "bmp", "webp", "tiff"}
    for kind in sorted(kinds):
        name = next(n for n in samples() if n.startswith(kind))
        assert header_fields(kind, samples()[name]), f"no header fields found in {name}"
