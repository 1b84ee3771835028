"""prefmatch regularizers inside other libraries' trainers.

* :mod:`prefmatch.llm.integrations.trl` — TRL's GRPO and RLOO trainers with their built-in KL
  term replaced by any prefmatch regularizer (``pip install prefmatch[trl]``, TRL 1.16).

Nothing here is imported by the rest of the package: the optional library is needed only by the
module that uses it.
"""
