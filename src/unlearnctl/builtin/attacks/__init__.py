"""The mathematics of ``unlearnctl audit``'s attacks on an unlearned model, as plain functions.

- :mod:`.mia`: membership-inference scores (loss / t-error, PIA, SecMI); a higher score always means
  "more likely a member";
- :mod:`.roc`: ROC figures of a membership score (AUC, balanced accuracy, TPR at low FPR) and their
  bootstrap confidence intervals;
- :mod:`.relearn`: fine-tune a copy of a model on a few images (the relearning attack) and evaluate it
  along the way;
- :mod:`.embedding`: optimise a fresh class embedding of a class-conditional UNet (the embedding attack)
  and install it as a new label.

The submodules import torch lazily, inside their functions: importing them costs nothing at start-up.
"""
