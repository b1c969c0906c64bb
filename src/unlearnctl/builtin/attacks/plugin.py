"""Built-in attacks of ``unlearnctl audit``, registered through the public ``register_attacks`` hook.

Each attack's ``run(ctx)`` is called once per audited model -- the unlearned model, its base model and,
given ``--against``, a retrained reference -- with an ``unlearnctl.AuditContext``; every random draw comes
from ``ctx.generator(stream)`` or ``ctx.sample(..., stream=...)``, so each role faces the same attack.

- ``membership-loss``, ``membership-pia``, ``membership-secmi``: membership inference (members: the forget
  set; non-members: held-out images of its classes), AUC, best balanced accuracy, TPR at 1% and 0.1% FPR,
  with bootstrap confidence intervals (:mod:`.mia`, :mod:`.roc`);
- ``relearn``: fine-tune on k forget images (and on remaining data only) and judge the forgotten class
  along the way (:mod:`.relearn`);
- ``embedding``: learn a new class embedding on held-out images of the forgotten class (:mod:`.embedding`);
- ``seed-search`` and ``null-leakage``: sample and judge (:mod:`.sampling_attacks`).

The attack classes live in :mod:`.membership_attacks` (the three membership attacks) and
:mod:`.generation_attacks` (the others); this module only registers them. None of these modules imports
torch or the attacks' mathematics: ``unlearnctl list attacks`` stays fast.
"""

from __future__ import annotations

from unlearnctl import hookimpl

from .generation_attacks import Embedding, NullLeakage, Relearn, SeedSearch
from .membership_attacks import MembershipLoss, MembershipPIA, MembershipSecMI


@hookimpl
def register_attacks(register) -> None:
    register(MembershipLoss)
    register(MembershipPIA)
    register(MembershipSecMI)
    register(Relearn)
    register(Embedding)
    register(SeedSearch)
    register(NullLeakage)
