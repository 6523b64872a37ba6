"""hashserve: mine or serve."""

from hashserve.cpu_env import drop_unusable_openblas_coretype

drop_unusable_openblas_coretype()  # before anything imports numpy (hashserve/cpu_env.py)
