"""Fault injection for tests and drills: a documented knob, comma-separated in $LIBAI_VIT_FAULT.

save_sleep=SECONDS   every rank sleeps after writing a checkpoint's data, before publishing it
                     (kill the run then)
save_enospc[=NAME]   rank 0's writer raises OSError(ENOSPC) after writing the first entry of
                     checkpoint NAME (every checkpoint when no NAME is given)
nan_loss=ITER        the batch of iteration ITER is multiplied by NaN
"""

import os

FAULT_ENV = "LIBAI_VIT_FAULT"


def fault(name):
    """Fault-injection knob `name`'s value in $LIBAI_VIT_FAULT ("" if set without one), or None."""
    for item in os.environ.get(FAULT_ENV, "").split(","):
        key, _, value = item.partition("=")
        if key.strip() == name:
            return value.strip()
    return None
