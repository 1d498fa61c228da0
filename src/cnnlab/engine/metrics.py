"""Classification metrics from predicted and true labels."""

from __future__ import annotations

import torch


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[true, predicted] counts."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predictions == labels).float().mean()) if len(labels) else float("nan")


def per_class_accuracy(confusion: torch.Tensor) -> list[float]:
    """Recall of each class (diagonal over row sums); NaN for a class absent from the labels."""
    totals = confusion.sum(1).double()
    return (confusion.diag().double() / totals).tolist()


def topk(logits: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, class indices) of the k most likely classes per row."""
    probs = logits.float().softmax(-1)
    return probs.topk(min(k, probs.shape[-1]), dim=-1)
