"""prefmatch.llm.battery: the trainers' convergence batteries. Each trains every accepted configuration on
tabular policies (the trainers' ``from_modules`` seam) and compares the result with the regularizer's exact
optimum; all three are deterministic and their tables are kept in ``docs/results/``.

* ``ppo``  the PPO trainer's battery (``python -m prefmatch.llm.battery.ppo``), and the tabular problems
           and modules the other two reuse
* ``dpo``  the DPO trainer's battery (``python -m prefmatch.llm.battery.dpo``)
* ``trl``  TRL's GRPO/RLOO with a prefmatch regularizer (``python -m prefmatch.llm.battery.trl``; needs trl)
"""
