"""MARL-library algorithms as search algorithms: MAPPO and IPPO (:mod:`agents.marl.ppo`), IQL, VDN and QMIX
(:mod:`agents.marl.q`), built from TorchRL's multi-agent components (``pip install "ma2ml[torchrl]"``) and
run on the decision-per-step view (:class:`ma2ml_env.stepwise.DecisionLayout`): one pipeline is one
episode, ``propose(n)`` rolls out ``n`` episodes at once and ``observe`` gives each its shared score as the
terminal reward (:mod:`agents.marl.common`). Parameters are shared across agents; each observation holds
the agent's id.

Why TorchRL 0.14 directly and not BenchMARL (checked December 2026): ``benchmarl`` 1.5.2 installs with
torch 2.14.1 in a fresh virtualenv (pip resolves torchrl 0.11.1 and tensordict 0.11.0), imports, and ran a
two-iteration MAPPO experiment on VMAS's ``balance`` task on the CPU (6.3 s per iteration of 200 frames).
But it requires ``torchrl>=0.10,<0.12``, which cannot be installed beside the torchrl 0.14.1 our env's
TorchRL support is tested with, and its ``Experiment`` drives environments through collectors in its own
loop, not the propose/observe interface a search algorithm needs; its algorithms are configurations of
the same TorchRL losses used here (``ClipPPOLoss``, ``QMixerLoss``, ``DQNLoss``). So the project does not
depend on it.
"""
