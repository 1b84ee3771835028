"""Loaded by verl in each of its processes (the ``verl.plugins`` entry point, or
``VERL_USE_EXTERNAL_MODULES=prefmatch.llm.integrations.verl_plugin``): registers prefmatch's advantage
estimators and, when ``PREFMATCH_VERL_REGULARIZER`` holds one, the regularizer's reward
(:func:`prefmatch.llm.integrations.verl.register`)."""
from prefmatch.llm.integrations.verl import register

try:
    register()
except ImportError:  # imported where verl is not installed (the docs' API pages): nothing to register
    pass
