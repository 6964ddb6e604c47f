"""The seed's workload: its greeting prompt and its twenty names, one copy for the package.

The workshop began from a script that greeted twenty users with one chat completion each; the
exercises, the benchmarks and the client-cost measurement send that same request so that their
figures speak of the workload a learner knows. ``scripts/speed_test.py`` keeps its own copy on
purpose: it is one self-contained file a learner can take away (notebook 03 writes it).
"""

from __future__ import annotations

__all__ = ["GREETING_PROMPT", "SEED_NAMES", "seed_name"]

GREETING_PROMPT = (
    "Dis bonjour au nouvel utilisateur sur Paradigm ! "
    "Donne un accueil court d'une phrase hautement personnalisé à : {name}"
)
SEED_NAMES = (
    "Alice", "Bob", "Charlie", "David", "Emma", "Frank", "Grace", "Hannah", "Ian", "Jessica",
    "Kevin", "Linda", "Michael", "Nancy", "Olivia", "Peter", "Quincy", "Rachel", "Samuel",
    "Tiffany",
)  # fmt: skip


def seed_name(index: int) -> str:
    """The ``index``-th name of a batch: the seed's, cycled with a suffix beyond 20 ("Alice 2"),
    so that every request of a large batch differs."""
    name = SEED_NAMES[index % len(SEED_NAMES)]
    round_number = index // len(SEED_NAMES) + 1
    return name if round_number == 1 else f"{name} {round_number}"
