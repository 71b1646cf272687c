"""A run: its directory (`RunDir`), its checkpoints, resuming it, and which way its metrics
improve. Everything that reads or writes one run goes through here."""
