"""K_i, the training samples per class, as a buffer of the modules whose output depends on it."""
from __future__ import annotations

import torch

from ..validation import require_counts

__all__ = ["ClassCounts"]


class ClassCounts:
    """K_i as a long buffer ``class_counts``, zero until :meth:`set_class_counts` (fastreid's
    trainer calls it after ``import leap_plugin``), for modules whose output depends on K_i.
    Checkpoints carry the buffer; every rank counts the same training set, so it is the same
    on all ranks."""

    def _register_class_counts(self, num_classes: int) -> None:
        self.register_buffer("class_counts", torch.zeros(num_classes, dtype=torch.long))

    def set_class_counts(self, counts) -> None:
        """Set K_i, one count >= 1 per class id (fastreid's relabelled ids)."""
        counts = torch.as_tensor(counts, dtype=torch.long)
        if counts.shape != self.class_counts.shape:
            raise ValueError(f"{type(self).__name__}: class counts must have shape "
                             f"{tuple(self.class_counts.shape)}, got {tuple(counts.shape)}")
        self.class_counts.copy_(require_counts(counts))

    def checked_counts(self) -> torch.Tensor:
        """K_i; raises ``RuntimeError`` when they were never set."""
        # A zero count can only mean "never set": training on it would silently use wrong margins.
        if not bool(self.class_counts.all()):
            raise RuntimeError(f"{type(self).__name__} needs the class counts K_i: train with fastreid's "
                               "DefaultTrainer after `import leap_plugin`, or call set_class_counts(counts)")
        return self.class_counts
