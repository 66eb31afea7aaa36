"""The one progress reporter of the job: a tqdm bar on stderr.

Shown only on a terminal (tqdm's ``disable=None``) and never under ``-q``, so logs of a
batch run, a workflow or a test stay free of carriage returns; the stage's own summary line
at INFO says what was done either way.
"""

from __future__ import annotations

import logging

from tqdm import tqdm


def progress(total: int, desc: str, unit: str = "it", unit_scale: bool = False) -> tqdm:
    """A bar for ``total`` units of work; ``with progress(...) as bar: bar.update(n)``."""
    quiet = logging.getLogger("job").getEffectiveLevel() > logging.INFO
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit_scale,
        disable=True if quiet else None,
        leave=False,
        dynamic_ncols=True,
    )
