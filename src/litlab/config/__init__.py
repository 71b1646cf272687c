"""Config: composing an experiment (`compose`), the resolvers its YAML uses, and checking the
files and values against the classes they name, all before torch is imported."""
