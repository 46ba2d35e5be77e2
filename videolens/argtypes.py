"""Argparse types shared by the command line and the checkpoint families' options
(``weights_conversion.options``): each reads one argument's text and refuses bad text in one line
(argparse prints it as ``argument --flag: expected ...``).
"""

from __future__ import annotations

import argparse
import math

__all__ = ["int_at_least", "positive_int", "non_negative_int", "bounded_float", "int_triple", "positive_int_or"]


def int_at_least(low: int, what: str):
    """An argparse type: an integer >= ``low`` (``what`` names it in the error)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v

    parse.__name__ = "integer"
    return parse


positive_int = int_at_least(1, "a positive integer")
non_negative_int = int_at_least(0, "an integer >= 0")


def positive_int_or(word: str):
    """An argparse type: a positive integer, or ``word`` itself (e.g. ``auto``)."""
    number = int_at_least(1, f"a positive integer or {word!r}")

    def parse(text: str):
        return word if text.strip().lower() == word else number(text)

    parse.__name__ = "integer"
    return parse


def bounded_float(low: float = float("-inf"), high: float = float("inf"), low_open: bool = False):
    """An argparse type: a finite float in ``[low, high]`` (``(low, high]`` when ``low_open``);
    NaN and infinity are refused."""
    where = f"{'(' if low_open else '['}{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(v) or v < low or v > high or (low_open and v == low):
            raise argparse.ArgumentTypeError(f"expected a finite number in {where}, got {text!r}")
        return v

    parse.__name__ = "number"
    return parse


def int_triple(text: str) -> tuple:
    """``"8-12-12"`` (or ``8,12,12``) -> ``(8, 12, 12)``: three positive integers."""
    parts = text.replace(",", "-").split("-")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected three positive integers T-H-W such as 8-12-12, got {text!r}")
    return tuple(int(p) for p in parts)


int_triple.__name__ = "shape"
