"""Built-in unlearning methods, one per file, registered through the public ``register_methods`` hook."""

from __future__ import annotations

from unlearnctl import hookimpl

from .blindspot import Blindspot
from .erasediff import EraseDiff
from .finetune import FineTune
from .joint import Joint
from .neggrad import NegGrad
from .random_label import RandomLabel
from .retrain import Retrain
from .salun import SalUn
from .selective_amnesia import SelectiveAmnesia


@hookimpl
def register_methods(register) -> None:
    register(EraseDiff)
    # the baselines of shared/spec/erasediff.md (docs/baselines.md)
    for baseline in (Retrain, FineTune, NegGrad, RandomLabel, Joint, SalUn, Blindspot, SelectiveAmnesia):
        register(baseline)
