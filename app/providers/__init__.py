"""Provider adapters: embedded local ones (offline) and the production cloud ones."""
