"""Printing a float the way LoRAX prints an f32.

LoRAX holds logprobs, scores, embeddings and sampling parameters as Rust ``f32`` and
serde_json prints them with ryu: the shortest decimal that reads back as the same f32,
in plain notation when 1e-6 <= |v| < 1e13 and as ``1.234e-7`` otherwise (docs/wire.md,
"Response bodies"). Python's ``repr`` works on f64 and switches notation
at other thresholds, so ``-0.34`` stored in a double would print as
``-0.3400000035762787`` after an f32 round trip, and ``0.000012`` as ``1.2e-05``.
"""

from __future__ import annotations

import math
import struct
from decimal import Decimal

_PACK = struct.Struct("<f")
_CACHE: dict[float, str] = {}
_CACHE_LIMIT = 65536


def to_f32(value: float) -> float:
    """Round a double to the nearest f32 (raises OverflowError past f32's range)."""
    result: float = _PACK.unpack(_PACK.pack(value))[0]
    return result


def format_f32(value: float) -> str | None:
    """Return ryu's f32 text for `value`, or None when it is not finite as an f32.

    None is what LoRAX prints as JSON ``null`` (NaN and the infinities).
    """
    if value == 0.0:
        # Not cached: 0.0 and -0.0 are equal as dict keys but print differently.
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    cached = _CACHE.get(value)
    if cached is not None:
        return cached
    if not math.isfinite(value):
        return None
    try:
        single = to_f32(value)
    except OverflowError:
        return None
    text = _format(single)
    if len(_CACHE) < _CACHE_LIMIT:
        _CACHE[value] = text
    return text


def _round_trips(text: str, single: float) -> bool:
    try:
        return to_f32(float(text)) == single
    except OverflowError:  # a rounded-up decimal past f32's largest finite value
        return False


def _shortest_digits(single: float) -> tuple[str, int]:
    # The fewest significant digits whose decimal reads back as the same f32; among
    # those, the closest to the value, which is what ryu picks. '%.*e' rounds to
    # nearest, so it gives the closest decimal of each length. At a power of two the
    # gap below the value is half the gap above, so that closest decimal can fall just
    # outside the interval while the next one up is inside: ryu then prints the one
    # above (2**-96 is 1.2621775e-29, not 1.26217745e-29).
    for precision in range(9):
        text = f"{single:.{precision}e}"
        mantissa, _, exponent = text.partition("e")
        number = int(mantissa.replace(".", ""))
        exp10 = int(exponent) - precision  # the value is number * 10**exp10
        if _round_trips(text, single):
            break
        if _round_trips(f"{number + 1}e{exp10}", single):
            number += 1
            break
    digits = str(number)
    return digits.rstrip("0") or "0", exp10 + len(digits) - 1


def format_f64(value: float) -> str | None:
    """Return ryu's f64 text (serde_json's, for LoRAX's f64 fields), or None if not finite."""
    if not math.isfinite(value):
        return None
    if value == 0.0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    # repr gives the shortest round-trip digits of a double; only the layout differs.
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    assert isinstance(exponent, int)
    exp10 = len(digits) + exponent - 1
    digits = digits.rstrip("0") or "0"
    return _layout("-" if value < 0 else "", digits, exp10, upper=16, lower=-5)


def _format(single: float) -> str:
    if single == 0.0:  # an f64 too small for f32 underflows to a signed zero
        return "-0.0" if math.copysign(1.0, single) < 0 else "0.0"
    sign = "-" if single < 0 else ""
    digits, exp10 = _shortest_digits(abs(single))
    return _layout(sign, digits, exp10, upper=13, lower=-6)


def _layout(sign: str, digits: str, exp10: int, *, upper: int, lower: int) -> str:
    # ryu's `format32` / `format64`: plain notation for 10**lower <= |v| < 10**upper,
    # otherwise `d.ddde-N` with no '+' and no zero padding.
    length = len(digits)
    kk = exp10 + 1  # 10**(kk-1) <= |v| < 10**kk
    k = kk - length
    if k >= 0 and kk <= upper:
        return f"{sign}{digits}{'0' * k}.0"
    if 0 < kk <= upper:
        return f"{sign}{digits[:kk]}.{digits[kk:]}"
    if lower < kk <= 0:
        return f"{sign}0.{'0' * -kk}{digits}"
    if length == 1:
        return f"{sign}{digits}e{kk - 1}"
    return f"{sign}{digits[0]}.{digits[1:]}e{kk - 1}"
