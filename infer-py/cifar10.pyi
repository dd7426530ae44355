"""Type stubs for the `cifar10` module (a compiled extension): classify 32x32 RGB images
with the CIFAR-10 tutorial model, numpy arrays in and numpy arrays out."""

import os
from typing import Any, Union

import numpy as np
import numpy.typing as npt

__version__: str
NUM_CLASSES: int

class Classifier:
    """A CIFAR-10 model, ready to classify. `model` is a model file's path or its bytes;
    each call uses up to `threads` threads (1 to 256; None: one per core)."""

    def __init__(
        self, model: Union[str, "os.PathLike[str]", bytes, bytearray], threads: Union[int, None] = None
    ) -> None: ...
    @staticmethod
    def bundled(int8: bool = False, threads: Union[int, None] = None) -> "Classifier":
        """One of the two models that ship inside the module: float32, or int8."""
        ...
    def classify(
        self, images: npt.NDArray[np.uint8]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """uint8 [N, 32, 32, 3] (or one [32, 32, 3]) -> (classes int64 [N], probabilities float32 [N, 10])."""
        ...
    def logits(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Preprocessed float32 [N, 3, 24, 24] -> logits float32 [N, 10]."""
        ...
    @property
    def class_names(self) -> list[str]: ...
    @property
    def threads(self) -> int: ...
    @property
    def metadata(self) -> dict[str, Any]: ...
