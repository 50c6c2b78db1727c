"""TensorBoard without TensorFlow.

TensorBoard's own switch to its bundled TensorFlow stub is the existence of the module `tensorboard.compat.notf`.
Without it, Lightning's TensorBoardLogger (`asit pretrain`, `asit demo`) and s3prl's import reach
torch.utils.tensorboard, whose first `tf.io.gfile` lookup imports all of TensorFlow (installed for heareval):
seconds of start-up and oneDNN/absl banners, for event files the stub writes just as well. TensorFlow itself stays
importable; heareval and hearvalidator run as subprocesses.
"""

from __future__ import annotations

import sys
import types

TENSORBOARD_NO_TF = "tensorboard.compat.notf"


def tensorboard_without_tensorflow() -> None:
    """Idempotent; call before TensorBoard is first used."""
    if TENSORBOARD_NO_TF not in sys.modules:
        sys.modules[TENSORBOARD_NO_TF] = types.ModuleType(TENSORBOARD_NO_TF, "asit-hear: TensorBoard's switch to its "
                                                          "TensorFlow stub (upstream.tensorboard_shim)")


__all__ = ["TENSORBOARD_NO_TF", "tensorboard_without_tensorflow"]
