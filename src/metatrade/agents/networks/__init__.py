"""The network families behind ``metatrade.agents.policies``, one module each (``base``,
``mlp``, ``gru``, ``moe``, ``linear``) with their building blocks in ``layers``. Import them from
``metatrade.agents.policies``, which also builds them (``make_policy`` / ``make_value_net``)."""
