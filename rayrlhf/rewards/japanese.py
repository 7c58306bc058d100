"""Japanese sentiment as a reward: asari's positive/negative classifier (``asari==0.2.0``).

asari runs a scikit-learn pipeline exported to ONNX (TF-IDF over janome's tokens, then a linear
classifier) with ``onnxruntime``. Its string normaliser asks for the ``en_US.UTF-8`` locale,
which minimal images lack; without root, ``localedef`` builds it into a folder that glibc reads
through ``LOCPATH``. :func:`ensure_locale` does that once per machine (under
``~/.cache/rayrlhf/locale``) in the process that scores, before the ONNX session starts, so
reward workers on any node need nothing set up by hand.

Installed by ``launch/setup.sh --japanese``: asari with ``--no-deps`` (it pins ``packaging<22``
and pulls scikit-learn and skl2onnx, which only its training script needs), ``janome<0.5`` and
``onnxruntime``.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

LOCALE = "en_US.UTF-8"


def _locale_loads() -> bool:
    """Whether glibc can load ``en_US.UTF-8`` now (with the current ``LOCPATH``)."""
    libc = ctypes.CDLL(None)
    libc.newlocale.restype = ctypes.c_void_p
    handle = libc.newlocale(ctypes.c_int(1), LOCALE.encode(), None)  # LC_CTYPE_MASK
    if handle:
        libc.freelocale(ctypes.c_void_p(handle))
    return bool(handle)


def ensure_locale(folder: Path | None = None) -> str | None:
    """Make ``en_US.UTF-8`` loadable in this process; returns the ``LOCPATH`` it set (None when
    the system already has the locale). Raises ``RuntimeError`` naming the fix when it cannot."""
    if _locale_loads():
        return None
    folder = folder or Path.home() / ".cache" / "rayrlhf" / "locale"
    if not (folder / LOCALE).is_dir():
        localedef = shutil.which("localedef")
        if localedef is None:
            raise RuntimeError(
                f"asari needs the {LOCALE} locale and this machine has neither it nor localedef; "
                "install the locale (e.g. locales-all) or glibc's localedef"
            )
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{LOCALE}.{os.getpid()}"
        done = subprocess.run(
            [localedef, "-i", "en_US", "-f", "UTF-8", str(tmp)], capture_output=True, text=True
        )
        # localedef exits 1 on mere warnings: what counts is whether the locale now loads.
        if not (tmp / "LC_CTYPE").exists():
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(
                f"asari needs the {LOCALE} locale; localedef could not build it "
                f"({done.stderr.strip() or done.returncode}); install the locale "
                "(e.g. the locales or locales-all package) or its definitions"
            )
        try:
            tmp.rename(folder / LOCALE)  # another process may have built it meanwhile
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    # For this process and its children; glibc then reads locales from this folder only, which
    # holds the one this process needs.
    os.environ["LOCPATH"] = str(folder)
    if not _locale_loads():
        raise RuntimeError(f"built {folder / LOCALE}, but glibc still cannot load {LOCALE}")
    return str(folder)


@lru_cache(maxsize=1)
def _sonar():  # noqa: ANN202 - asari has no type hints
    ensure_locale()
    from asari.api import Sonar

    return Sonar()


def positive_probability(texts: list[str]) -> list[float]:
    """asari's probability that each text is positive, in [0, 1]."""
    sonar = _sonar()
    out = []
    for text in texts:
        classes = {c["class_name"]: float(c["confidence"]) for c in sonar.ping(text)["classes"]}
        out.append(classes["positive"])
    return out


def asari_positive(prompts: list[str], responses: list[str]) -> list[float]:
    """Reward: 2·P(positive) − 1 of each continuation read after its opening, in [−1, 1].

    The whole sentence (opening + continuation) is scored, as a reader judges it; a continuation
    that turns a neutral opening positive scores high. An empty continuation scores what the
    opening alone does.
    """
    texts = [opening + rest for opening, rest in zip(prompts, responses, strict=True)]
    return [2.0 * p - 1.0 for p in positive_probability(texts)]
