# The one thing pyproject.toml cannot say: src/'s packages (litlab, and hydra_plugins, where
# Hydra finds litlab's launcher) plus litlab.conf.
from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages("src", include=["litlab*", "hydra_plugins*"]), "litlab.conf"]
)
