# The one thing pyproject.toml cannot say: find src/litlab's packages and add litlab.conf.
from setuptools import find_packages, setup

setup(packages=[*find_packages("src"), "litlab.conf"])
