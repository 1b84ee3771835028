"""prefmatch: how RLHF regularizers bias an aligned model.

Subpackages: :mod:`prefmatch.theory` (regularizer objects, derivations, checks),
:mod:`prefmatch.tabular` (bandit simulations), :mod:`prefmatch.llm` (SFT / reward model / PPO).
"""
__version__ = "0.1.0"
