"""Process-wide logging and warning settings, applied by entry points only: the CLI's ``main``
and, through Ray's worker set-up hook, each actor process of a Ray that rayrlhf starts. Importing
a rayrlhf module changes nothing of the kind."""

from __future__ import annotations

import warnings


def quiet_libraries() -> None:
    """Keep transformers' per-load bars and advice, and torch.distributed's deprecation notes
    (DeepSpeed triggers one per collective), out of a run's console."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
