"""The judge: the classifier ``eval`` uses to tell which class a generated image shows.

- :mod:`.arch`: the networks (a small CNN, ResNets).
- :mod:`.classifier`: :class:`Judge` (logits and penultimate features), loading, saving and training it.
- :mod:`.verdicts`: judging images and samples (recognition rates, predicted class shares).
"""

from __future__ import annotations

from .classifier import Judge, load_judge

__all__ = ["Judge", "load_judge"]
