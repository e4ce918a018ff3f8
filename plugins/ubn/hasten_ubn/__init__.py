"""hasten-ubn: Unsupervised Batch Normalization (docs/methods.md section 1).

``ubn`` holds the functional core (two-step and joint UBN forwards),
``diagnostics`` the labeled-vs-unlabeled feature statistics (Table 2.1) and
Monte-Carlo BN uncertainty, ``plugin`` the thin adapter to hasten's hooks,
``report`` the ``hasten ubn-report`` command.
"""

from hasten_ubn.ubn import UBNModel, batch_moments, find_batchnorm, joint_forward, two_step_forward

__all__ = ["UBNModel", "batch_moments", "find_batchnorm", "joint_forward", "two_step_forward"]
