"""Sub-commands of ``nas``; each module has ``register(subparsers)``."""
